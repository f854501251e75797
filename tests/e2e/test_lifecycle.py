"""Real server, real engine: disconnects free engine slots; SIGTERM drains; logs hold no images."""

from __future__ import annotations

import base64
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server
from tests.images import astronaut, cat, data_url, encode, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

LONG = 2000  # tokens: unconstrained, the demo model runs to max_tokens
# Tokens of the requests a drain must let finish: seconds of work on the demo model, so they are
# still running when /metrics (cached 1 s) shows them (300 could all end before it did).
DRAINED = 1500


def running(base_url: str) -> float:
    """vLLM's own gauge of requests the engine is generating for."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    assert values, "vllm:num_requests_running missing from /metrics"
    return sum(float(v) for v in values)


def wait_until(condition, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


def long_body(stream: bool) -> dict[str, object]:
    return {"messages": image_message(data_url(cat())), "max_tokens": LONG, "stream": stream}


def seconds_for_long_request(base_url: str) -> float:
    """How long the engine needs for LONG tokens alone, from a 200-token sample."""
    start = time.monotonic()
    r = httpx.post(
        f"{base_url}/v1/chat/completions", timeout=120, json={**long_body(False), "max_tokens": 200}
    )
    assert r.json()["usage"]["completion_tokens"] == 200
    return (time.monotonic() - start) * LONG / 200


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_aborts_engine_request(real_server: ServerProcess, stream: bool) -> None:
    base = real_server.base_url
    full = seconds_for_long_request(base)
    assert running(base) == 0
    if stream:
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json=long_body(True), timeout=60
        ) as r:
            lines = r.iter_lines()
            for _ in range(5):
                next(lines)
            wait_until(lambda: running(base) == 1, timeout_s=5)  # /metrics may be 1 s old
        # leaving the block closes the connection mid-stream
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/chat/completions", json=long_body(False), timeout=0.5)
    freed_after = wait_until(lambda: running(base) == 0, timeout_s=full / 2)
    assert freed_after < full / 2, (freed_after, full)


def test_sigterm_drains_in_flight_then_exits_zero(tmp_path: Path) -> None:
    server = start_server(tmp_path / "drain.log", drain_timeout_s="30")
    base = server.base_url
    url = f"{base}/v1/chat/completions"
    images = [astronaut(), astronaut().transpose(0), cat()]
    results: list[httpx.Response] = []
    truncated = base64.b64encode(encode(cat())[:3000]).decode()
    bad = {"messages": image_message(f"data:image/jpeg;base64,{truncated}"), "max_tokens": 4}
    assert httpx.post(url, json=bad, timeout=30).status_code == 400  # the error path logs too

    def in_flight(i: int) -> None:
        body = {
            "messages": image_message(data_url(images[i])),
            "max_tokens": DRAINED,
            "ignore_eos": True,  # exactly DRAINED tokens, whatever the demo model says
        }
        results.append(httpx.post(url, json=body, timeout=60))

    threads = [threading.Thread(target=in_flight, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: running(base) >= 1, timeout_s=10)
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 503, timeout_s=2)
    refused = httpx.post(url, json={"messages": image_message(data_url(cat())), "max_tokens": 4})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "draining"
    for t in threads:
        t.join(60)
    assert [r.status_code for r in results] == [200, 200, 200]
    assert all(r.json()["usage"]["completion_tokens"] == DRAINED for r in results)
    assert server.proc.wait(30) == 0
    assert_no_image_bytes_in(server.logs(), images)


def assert_no_image_bytes_in(logs: str, images: list[object]) -> None:
    assert "request_id" in logs  # the access log ran, so there was something to leak into
    for image in images:
        for encoded in (base64.b64encode(encode(image)).decode(),):  # type: ignore[arg-type]
            for start in range(0, len(encoded) - 32, len(encoded) // 16):
                assert encoded[start : start + 32] not in logs
    assert "/9j/" not in logs  # the base64 opening of every JPEG
    assert "data:image" not in logs
