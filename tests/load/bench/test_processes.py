"""The benchmark's managed child processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loadtests.bench.processes import Managed


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
