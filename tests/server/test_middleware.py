"""The request middleware (server/middleware.py), on the fake engine: request ids, the access log,
the body cap, and the clocks on slow clients — bodies that stop arriving get 408 and hold no
admission slot; a client that stops taking the response is cut off and its slot freed (ASGI level).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from model.fake_engine import FakeEngine
from server.middleware import _declared_length
from tests.conftest import MakeClient
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"


def chat_body(**extra: object) -> dict[str, object]:
    return {"messages": image_message(data_url(astronaut())), "max_tokens": 8, **extra}


# --- request ids, the access log, the body cap ----------------------------------------------


async def test_request_id_is_echoed_when_well_formed(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    bad = await client.get("/v1/models", headers={"X-Request-Id": "no spaces\tor tabs!"})
    assert bad.headers["x-request-id"] != "no spaces\tor tabs!"
    assert len(bad.headers["x-request-id"]) == 32


async def test_oversized_body_is_413_in_the_envelope(make_client: MakeClient) -> None:
    async with make_client(max_body_bytes=4096) as client:
        r = await client.post(CHAT, json=chat_body())
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert "x-request-id" in r.headers
        assert (
            await client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
        ).status_code == 200


async def test_images_are_logged_as_digests_and_timed(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = data_url(astronaut())
    with caplog.at_level("INFO"):
        assert (await client.post(CHAT, json=chat_body())).status_code == 200
    (record,) = [r for r in caplog.records if r.name == "server.access"]
    (image,) = record.images  # type: ignore[attr-defined]
    assert (image["width"], image["height"], len(image["sha256_16"])) == (512, 512, 16)
    payload = url.split(",", 1)[1]
    assert not any(payload[:64] in str(r.__dict__) for r in caplog.records)
    scraped = (await client.get("/metrics")).text
    assert "facellm_image_decode_seconds_count 1.0" in scraped


# --- slow and stalled clients, at the ASGI level -----------------------------------------------


def scope(path: str = CHAT, length: int = 100) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % length)],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }


@pytest.fixture
async def app_and_engine(make_client: MakeClient) -> AsyncIterator[tuple[FastAPI, FakeEngine]]:
    engine = FakeEngine(step_delay_s=0.001, responder=lambda _: " ".join(["word"] * 500))
    clocks = {"body_idle_timeout_s": 0.2, "body_timeout_s": 1, "write_timeout_s": 0.2}
    async with make_client(engine, **clocks) as client:
        yield client.app, engine


async def never() -> dict[str, Any]:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def test_a_body_that_stops_arriving_gets_408_and_holds_no_slot(
    app_and_engine: tuple[FastAPI, FakeEngine],
) -> None:
    app, _ = app_and_engine
    parts = [{"type": "http.request", "body": b'{"messages": [', "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return parts.pop(0) if parts else await never()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(app(scope(), receive, send))
    await asyncio.sleep(0.1)
    assert app.state.facellm.admission.in_flight == 0  # waiting for the body: no slot taken
    await asyncio.wait_for(task, 5)
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "body_timeout"


async def test_a_client_that_stops_reading_is_cut_off_and_its_request_aborted(
    app_and_engine: tuple[FastAPI, FakeEngine],
) -> None:
    app, engine = app_and_engine
    body = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 500}
    ).encode()
    parts = [{"type": "http.request", "body": body, "more_body": False}]
    writes = 0

    async def receive() -> dict[str, Any]:
        return parts.pop(0) if parts else await never()

    async def send(message: dict[str, Any]) -> None:
        nonlocal writes
        writes += 1
        if writes > 3:  # the client's socket is full from here on
            await never()

    await asyncio.wait_for(app(scope(length=len(body)), receive, send), 5)
    await asyncio.sleep(0.05)  # the abandoned stream's cleanup runs on the loop
    assert app.state.facellm.admission.in_flight == 0
    assert len(engine.aborted) == 1 and not engine.running
    scrape = app.state.facellm.metrics.exposition().decode()
    assert (
        'facellm_http_requests_total{method="POST",route="/v1/chat/completions",status="499"}'
        in (scrape)
    )


@pytest.mark.parametrize(
    ("header", "length"),
    [(b"123", 123), (b"9" * 18, int("9" * 18)), (b"9" * 5001, 2**63), (b"12a", 0), (b"", 0)],
)
def test_content_length_parsing_never_raises(header: bytes, length: int) -> None:
    assert _declared_length({"headers": [(b"content-length", header)]}) == length
