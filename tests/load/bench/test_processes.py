"""The benchmark's managed child processes."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from loadtests.bench.processes import Managed, free_port


def test_stopping_a_managed_process_ends_its_whole_group(tmp_path: Path) -> None:
    sleeper = "import time; time.sleep(60)"
    spawn = f"subprocess.Popen([sys.executable, '-c', {sleeper!r}])"
    child = f"import subprocess, sys, time; {spawn}; {sleeper}"
    proc = Managed([sys.executable, "-c", child], tmp_path / "p.log", dict(os.environ))
    proc.stop()
    assert proc.proc.returncode is not None
    try:
        os.killpg(proc.proc.pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError("a member of the process group survived")


def test_ports_are_the_oss_pick_and_free() -> None:
    ports = {free_port() for _ in range(3)}
    assert all(p >= 1024 for p in ports)
    port = ports.pop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nobody holds it
