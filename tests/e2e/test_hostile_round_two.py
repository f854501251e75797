"""Hostile bytes and connections, round two, against one real server process: keep-alive CRLF
trickles, trailer floods, JPEG scan bombs, decodes that outlive their request, one deadline per
request, admission by work, and keys checked before the body.

Raw sockets for the byte-level attacks. The server runs with short clocks, a small connection
cap and a small work budget, so each attack shows within seconds.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from loadtests.images import scan_bomb
from server.metrics import SCRAPE_CACHE_S
from tests.conftest import ServerProcess, gauge, start_server
from tests.images import astronaut, cat, data_url, image_message, two_faces
from tests.raw_http import closed_within, read_response

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

KEY = "round-two-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
KEEP_ALIVE_S = 2
MAX_CONNECTIONS = 12
WORK_BUDGET = 4096  # one n=2 × 2,048-token request fills it
TIMEOUT_S = 10.0  # request_timeout_s: the one deadline of a generation request
CHAT = "/v1/chat/completions"
FACES = "/v1/faces/analyze"
MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("hostile2") / "server.log",
        api_keys=json.dumps([KEY]),
        keep_alive_timeout_s=str(KEEP_ALIVE_S),
        header_timeout_s="3",
        max_connections=str(MAX_CONNECTIONS),
        admission_work_tokens=str(WORK_BUDGET),
        request_timeout_s=str(TIMEOUT_S),
        max_images_per_prompt="4",
    )
    yield proc
    proc.stop_soon()


def connect(server: ServerProcess) -> socket.socket:
    port = int(server.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def rss_mb(server: ServerProcess) -> float:
    status = open(f"/proc/{server.proc.pid}/status").read()  # noqa: SIM115
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def chat(server: ServerProcess, body: dict[str, object], timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{server.base_url}{CHAT}", json=body, headers=AUTH, timeout=timeout)


def models_request() -> bytes:
    return f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()


# --- 1. keep-alive CRLF trickles; probes past a full connection cap ------------------------------


def test_a_crlf_trickle_is_closed_within_the_keep_alive_timeout(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(models_request())
        assert read_response(sock)[0] == 200
        took = closed_within(sock, KEEP_ALIVE_S + 5, trickle=b"\r\n")
    assert took is not None, "a CRLF trickle kept the connection open"
    print(f"CRLF trickle closed after {took:.2f} s (keep-alive {KEEP_ALIVE_S} s)")
    assert took <= KEEP_ALIVE_S + 1


def test_health_answers_with_the_cap_full_of_tricklers(server: ServerProcess) -> None:
    tricklers = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = connect(server)
            sock.sendall(models_request())
            read_response(sock)  # 200, or 503 once the cap is reached
            tricklers.append(sock)
        for sock in tricklers:
            sock.sendall(b"\r\n")
        health = httpx.get(f"{server.base_url}/health", timeout=10)
        ready = httpx.get(f"{server.base_url}/ready", timeout=10)
        assert (health.status_code, ready.status_code) == (200, 200)
    finally:
        for sock in tricklers:
            sock.close()


# --- 2. trailer floods ---------------------------------------------------------------------------


def test_a_trailer_flood_ends_in_4xx_and_a_close_with_little_memory(
    server: ServerProcess,
) -> None:
    before = rss_mb(server)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{\r\n0\r\n"
    ).encode()
    sent = 0
    with connect(server) as sock:
        sock.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(20_000):  # ≤ 150 MB, as the flood; refused long before
                sock.sendall(b"ab:cd\r\n" * 1024)
                sent += 7 * 1024
        status, _ = read_response(sock)
        assert 400 <= status < 500
        assert closed_within(sock, 5) is not None
    grown = rss_mb(server) - before
    print(f"trailer flood: {sent / MiB:.1f} MB sent before the close, RSS grew {grown:.1f} MB")
    assert grown <= 100
    assert chat(server, {"messages": image_message(data_url(cat())), "max_tokens": 2}).is_success


# --- 3. JPEG scan bombs --------------------------------------------------------------------------


def test_a_scan_bomb_gets_400_and_a_progressive_photo_still_decodes(
    server: ServerProcess,
) -> None:
    bomb = "data:image/jpeg;base64," + base64.b64encode(scan_bomb(4096, 1000)).decode()
    start = time.monotonic()
    r = chat(server, {"messages": image_message(bomb), "max_tokens": 2})
    print(f"scan bomb refused in {(time.monotonic() - start) * 1000:.0f} ms (round trip)")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "too_many_scans"
    buf = io.BytesIO()
    astronaut().save(buf, "JPEG", progressive=True)
    photo = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    assert chat(server, {"messages": image_message(photo), "max_tokens": 2}).status_code == 200


# --- 4. decodes end with their request ------------------------------------------------------------


def test_the_pixel_budget_returns_to_zero_after_a_first_image_fails(
    server: ServerProcess,
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 4000), (200, 100, 50)).save(buf, "PNG")
    big = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content: list[dict[str, object]] = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        *({"type": "image_url", "image_url": {"url": big, "detail": "high"}} for _ in range(3)),
        {"type": "text", "text": "hi"},
    ]
    r = chat(server, {"messages": [{"role": "user", "content": content}], "max_tokens": 2})
    assert r.status_code == 400
    start = time.monotonic()
    # Within 1 s, as /metrics shows it: its values may be SCRAPE_CACHE_S old.
    while gauge(server, "facellm_image_pixels_reserved") != 0:
        assert time.monotonic() - start < 1.0 + SCRAPE_CACHE_S, "decodes outlived their request"
        time.sleep(0.05)


# --- 5. one deadline per request ------------------------------------------------------------------


def test_a_faces_request_past_its_deadline_gets_one_504_and_leaves_no_engine_request(
    server: ServerProcess,
) -> None:
    """The body trickles in for most of the deadline, so what is left of it runs out in the
    image loading, detection or engine calls: one 504, and nothing stays with the engine."""
    body = json.dumps({"image": data_url(two_faces()), "confidence": True}).encode()
    head = (
        f"POST {FACES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    pieces = 10
    step = len(body) // pieces + 1
    with connect(server) as sock:
        sock.sendall(head)
        for i in range(pieces):
            sock.sendall(body[i * step : (i + 1) * step])
            time.sleep((TIMEOUT_S - 0.3) / pieces)
        status, data = read_response(sock)
    assert status == 504, data[:300]
    assert b"request_timeout" in data
    start = time.monotonic()
    while gauge(server, r"vllm:num_requests_running\{[^}]*\}") != 0:
        assert time.monotonic() - start < 5, "an engine request stayed behind"
        time.sleep(0.1)


# --- 6. admission by work -------------------------------------------------------------------------


def test_with_the_work_budget_full_a_request_gets_429_before_any_decode(
    server: ServerProcess,
) -> None:
    hog = {
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 2048,
        "n": 2,
        "temperature": 1.0,
        "ignore_eos": True,
    }
    client = httpx.Client(base_url=server.base_url, headers=AUTH, timeout=60)
    with client, client.stream("POST", CHAT, json={**hog, "stream": True}) as held:
        assert held.status_code == 200  # its work is reserved until its last byte
        decodes = gauge(server, "facellm_image_decode_seconds_count")
        body = {"messages": image_message(data_url(astronaut())), "max_tokens": 16}
        refused = client.post(CHAT, json=body)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert gauge(server, "facellm_image_decode_seconds_count") == decodes
    start = time.monotonic()
    while (
        chat(server, {"messages": image_message(data_url(cat())), "max_tokens": 2}).status_code
        == 429
    ):
        assert time.monotonic() - start < 10, "the work never came back"
        time.sleep(0.2)


# --- 7. keys before the body ----------------------------------------------------------------------


def test_a_keyless_20_mb_upload_gets_401_before_its_body_is_sent(server: ServerProcess) -> None:
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {20 * MiB}\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        sock.sendall(head)  # and not one byte of the body
        status, data = read_response(sock)
        assert status == 401
        assert b'"authentication_error"' in data or b"API key" in data
        assert closed_within(sock, 5) is not None
