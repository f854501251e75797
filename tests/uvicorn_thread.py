"""An ASGI app on uvicorn in a background thread, on a free 127.0.0.1 port: for clients that
need a real HTTP server (CLIs, SDKs) in fast tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

START_TIMEOUT_S = 10.0


@contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """Serve `app` (lifespan included) until the block ends; yields its base URL. `config`:
    more `uvicorn.Config` arguments (the HTTP protocol class, limits, timeouts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
