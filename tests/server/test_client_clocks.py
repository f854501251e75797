"""Slow and stalled clients at the ASGI level (fake engine): bodies that stop arriving get 408 and
hold no admission slot; a client that stops taking the response is cut off and its slot freed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from server.middleware import _declared_length

CHAT = "/v1/chat/completions"


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
async def app_and_engine(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, FakeEngine]]:
    settings = Settings(
        model_cache_dir=tmp_path, body_idle_timeout_s=0.2, body_timeout_s=1, write_timeout_s=0.2
    )
    engine = FakeEngine(step_delay_s=0.001, responder=lambda _: " ".join(["word"] * 500))
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        yield app, engine


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
