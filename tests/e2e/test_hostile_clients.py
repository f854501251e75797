"""Bad clients against a real server process: absurd headers, stalled uploads and heads, clients
that stop reading. Each must cost the server nothing lasting, and good clients keep being served.

Raw sockets, since HTTP client libraries refuse to misbehave. The server runs with short clocks
so the test does not wait for production defaults.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, gauge, start_server
from tests.images import cat, data_url, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLOCK_S = 2.0  # header, body-idle and write timeouts of the server under test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("hostile") / "server.log",
        api_keys=json.dumps([KEY]),
        header_timeout_s=str(CLOCK_S),
        body_idle_timeout_s=str(CLOCK_S),
        write_timeout_s=str(CLOCK_S),
        max_header_bytes="8192",
    )
    yield proc
    proc.stop_soon()


def port_of(server: ServerProcess) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def connect(server: ServerProcess, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port_of(server)))
    return sock


def status_of(sock: socket.socket) -> int:
    """The status of the response on `sock`, which the server must then close."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    assert match, data[:200]
    return int(match.group(1))


def send_raw(server: ServerProcess, raw: bytes) -> int:
    with connect(server) as sock:
        # Refused before the client finished sending: the status is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        return status_of(sock)


def connection_dropped(sock: socket.socket) -> bool:
    """Whether the server dropped the connection: the socket ends or resets within a few reads
    of what was already delivered."""
    sock.settimeout(5)
    try:
        for _ in range(10_000):
            if not sock.recv(1 << 20):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def good_chat(server: ServerProcess) -> httpx.Response:
    body = {"messages": image_message(data_url(cat())), "max_tokens": 4}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)


def test_absurd_headers_get_4xx_and_the_server_stays_healthy(server: ServerProcess) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
    digits = b"9" * 5001
    assert 400 <= send_raw(server, head + b"Content-Length: " + digits + b"\r\n\r\n{}") < 500
    long_line = b"X-Long: " + b"a" * 100_000 + b"\r\n"
    assert send_raw(server, head + long_line + b"\r\n") == 431
    flood = b"".join(b"X-H%d: v\r\n" % i for i in range(3000))
    assert send_raw(server, head + flood + b"\r\n") == 431
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    assert good_chat(server).status_code == 200


def test_a_head_that_never_finishes_is_cut_at_the_header_timeout(server: ServerProcess) -> None:
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        assert status_of(sock) == 408
        assert CLOCK_S - 0.5 < time.monotonic() - start < CLOCK_S + 5
        assert sock.recv(65536) == b""  # closed


def stalled_upload(server: ServerProcess, auth: bool) -> socket.socket:
    """Headers for a 100 KB body, then 1 KB of it, then nothing."""
    sock = connect(server)
    key = f"Authorization: Bearer {KEY}\r\n".encode() if auth else b""
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + key
        + b"Content-Length: 100000\r\n\r\n"
        + b'{"messages": ['
        + b" " * 1000
    )
    return sock


def test_stalled_uploads_hold_no_slot_then_get_408(server: ServerProcess) -> None:
    """140 stalls — more than the 128 admission slots — half of them with a valid key. Those
    without one are refused (401) on their head, before their body is awaited."""
    stalls = [stalled_upload(server, auth=i % 2 == 0) for i in range(140)]
    try:
        time.sleep(0.5)
        assert gauge(server, "facellm_requests_in_flight") == 0
        assert good_chat(server).status_code == 200
        for i, sock in enumerate(stalls[:10]):
            assert status_of(sock) == (408 if i % 2 == 0 else 401)
    finally:
        for sock in stalls:
            sock.close()
    assert good_chat(server).status_code == 200


def test_a_streaming_client_that_never_reads_is_cut_off(server: ServerProcess) -> None:
    # 20 alternatives per token: ≈ 5 MB of events, more than loopback's socket buffers take in.
    request = {"messages": image_message(data_url(cat())), "max_tokens": 2000, "stream": True}
    body = json.dumps(request | {"logprobs": True, "top_logprobs": 20}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n" % (KEY.encode(), len(body))
    )
    with connect(server, rcvbuf=4096) as sock:
        sock.sendall(head + body)
        start = time.monotonic()
        deadline = start + 60
        while gauge(server, "facellm_requests_in_flight") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        while gauge(server, "facellm_requests_in_flight") > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        freed_after = time.monotonic() - start
        assert gauge(server, "facellm_requests_in_flight") == 0
        assert gauge(server, "vllm:num_requests_running{[^}]*}") == 0
        assert connection_dropped(sock)  # not left open with megabytes queued for it
    logs = server.logs()
    assert '"status": 499' in logs, logs[-2000:]  # cut off mid-response, not finished
    assert "without completing response" not in logs
    assert freed_after < 60
    assert good_chat(server).status_code == 200
