"""HTTP/1.1 on a raw socket, for tests of clients that HTTP libraries refuse to be: read one
response, and time how long the server keeps a connection that keeps sending."""

from __future__ import annotations

import re
import socket
import time


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The next response's status, and its head and body (Content-Length framed, or whatever
    came with the head when it has none)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data[:200]!r}"
        data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    assert match, data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    if length := re.search(rb"content-length: (\d+)", head, re.I):
        while len(body) < int(length.group(1)):
            more = sock.recv(65536)
            assert more, "closed in the middle of the body"
            body += more
    return int(match.group(1)), head + b"\r\n\r\n" + body


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` while `trickle` goes out every 0.2 s; None if it
    is still open after `seconds`."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - start
        try:
            if trickle:
                sock.sendall(trickle)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    return None
