"""A real PostgreSQL server for tests, from the distribution's package (`make tools` installs
it): a fresh cluster in a temporary directory, on a free 127.0.0.1 port, stopped at the end.

PostgreSQL refuses to run as root: as root, the cluster is made and run as the `postgres`
user the package creates."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: run `make tools` (Debian's postgresql)")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.getuid() == 0 else command


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A URL of a fresh, running PostgreSQL; the cluster is gone after the block."""
    root = Path(tempfile.mkdtemp(prefix="facellm-pg-"))
    data, port = root / "data", free_port()
    if os.getuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    run = _as_postgres
    subprocess.run(
        run([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root}"
    pg_ctl = [_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    subprocess.run(
        run([*pg_ctl, "-o", options, "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(run([*pg_ctl, "-m", "fast", "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
