"""The benchmark's child processes: each in its own session, so stopping one ends all it started."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

log = logging.getLogger("loadtests.bench")

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240


def free_port() -> int:
    """A port the OS picks for us, not the first free one of a fixed range: a server takes a
    minute to listen, and meanwhile another benchmark on the machine would pick the same port,
    and each would then measure the other's server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Managed:
    """A process in its own session, so stopping it also ends the engine processes it started."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, url: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"not ready in {START_TIMEOUT_S} s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group; return once every member has gone."""
        group = self.proc.pid
        for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 15)):
            if self.proc.poll() is None:
                os.killpg(group, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    self.proc.poll()
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)
        log.warning("process group %d outlived SIGKILL", group)
