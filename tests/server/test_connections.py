"""The connection guards (server/connections.py) on a real uvicorn, without the engine: a tiny
ASGI app behind `guarded_protocol`, driven by raw sockets, since they subclass uvicorn internals
(pinned in pyproject.toml to the range these tests pass on)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from server.connections import MAX_TRAILERS, guarded_protocol
from tests.raw_http import closed_within, read_response
from tests.uvicorn_thread import serve_in_thread

KEEP_ALIVE_S = 1
HEADER_TIMEOUT_S = 1.5
MAX_HEADER_BYTES = 4096
CAP = 6  # limit_concurrency: connections before 503s


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers its size and how many headers the request had."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"%d %d" % (size, len(scope["headers"]))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def guarded_server() -> Iterator[int]:
    protocol = guarded_protocol(MAX_HEADER_BYTES, HEADER_TIMEOUT_S)
    with serve_in_thread(
        echo_app, http=protocol, timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=CAP
    ) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with guarded_server() as port:
        yield port


@pytest.fixture
def fresh_port() -> Iterator[int]:
    """A server of its own: connections other tests refused may linger on the shared one for a
    keep-alive, and a cap test must count only its own."""
    with guarded_server() as port:
        yield port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def get(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_crlf_trickle_does_not_extend_keep_alive(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(get())
        assert read_response(sock)[0] == 200
        took = closed_within(sock, KEEP_ALIVE_S + 3, trickle=b"\r\n")
    assert took is not None, "a CRLF trickle kept the connection open"
    assert took <= KEEP_ALIVE_S + 1


def test_a_new_request_still_resets_keep_alive(port: int) -> None:
    with connect(port) as sock:
        for _ in range(3):  # three requests, spaced by most of the keep-alive time
            sock.sendall(get())
            assert read_response(sock)[0] == 200
            time.sleep(KEEP_ALIVE_S * 0.6)


def test_crlf_trickle_on_a_new_connection_meets_the_head_clock(port: int) -> None:
    with connect(port) as sock:
        took = closed_within(sock, HEADER_TIMEOUT_S + 3, trickle=b"\r\n")
    assert took is not None and took <= HEADER_TIMEOUT_S + 1


def chunked_post(trailers: int, line: bytes = b"ab: cd\r\n") -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"5\r\nhello\r\n0\r\n" + line * trailers + b"\r\n"


def test_a_few_trailers_pass_and_never_join_the_headers(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(chunked_post(3))
        status, body = read_response(sock)
    assert status == 200
    assert body.endswith(b"\r\n\r\n5 2")  # the body; Host and Transfer-Encoding, no trailer


def test_a_trailer_flood_is_refused_and_closed(port: int) -> None:
    with connect(port) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(chunked_post(MAX_TRAILERS * 4))
        status, body = read_response(sock)
        assert status == 431
        assert b"trailers" in body
        assert closed_within(sock, 3) is not None


def test_one_endless_trailer_line_is_refused(port: int) -> None:
    head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    with connect(port) as sock:
        sock.sendall(head + b"x-long: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(MAX_HEADER_BYTES // 1024 * 16):
                sock.sendall(b"a" * 1024)
        assert read_response(sock)[0] == 431


def status_of(port: int, path: str) -> int:
    with connect(port) as sock:
        sock.sendall(get(path))
        return read_response(sock)[0]


def wait_below_cap(port: int) -> None:
    """Until the connections earlier tests refused (and lingered on) are gone: at most 3 s."""
    deadline = time.monotonic() + 3
    while status_of(port, "/") != 200:
        assert time.monotonic() < deadline, "the connection cap stayed full"
        time.sleep(0.1)


def test_pipelined_requests_with_bodies_are_not_framing(port: int) -> None:
    """Several requests in one read: their bodies are not the first one's chunk framing."""
    wait_below_cap(port)
    body = b"x" * (MAX_HEADER_BYTES * 2)
    one = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with connect(port) as sock:
        sock.sendall(one * 4)
        answers = b""
        while answers.count(b"HTTP/1.1 ") < 4:  # several may come in one read
            chunk = sock.recv(65536)
            assert chunk, answers
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 ") == 4, answers


def test_probes_pass_a_full_connection_cap(fresh_port: int) -> None:
    port = fresh_port
    # uvicorn counts the arriving connection too: CAP - 1 held ones fill the cap.
    held = [connect(port) for _ in range(CAP - 1)]
    try:
        for sock in held:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")  # stalls
        deadline = time.monotonic() + 5  # until the server has accepted the held ones
        while status_of(port, "/") != 503:
            assert time.monotonic() < deadline, "the held connections never filled the cap"
            time.sleep(0.1)
        assert (status_of(port, "/health"), status_of(port, "/ready")) == (200, 200)
    finally:
        for sock in held:
            sock.close()
