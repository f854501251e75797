"""One request's scope (server/context.py) at work (fake engine): admission by work, one deadline
for every engine call of a request, keys checked before the body, and decodes that end with their
request."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image

from model.engine import GenerationRequest
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from server.context import RequestScope, bind, unbind
from server.errors import Timeout
from server.generation import run_generation
from server.watchdog import EngineMonitor
from tests.conftest import MakeClient
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"
FACES = "/v1/faces/analyze"


def chat_body(**extra: object) -> dict[str, object]:
    return {"messages": image_message(data_url(astronaut())), "max_tokens": 8, **extra}


async def test_a_request_past_the_work_budget_gets_429_before_its_images_decode(
    make_client: MakeClient,
) -> None:
    async with make_client(FakeEngine(step_delay_s=0.05), admission_work_tokens=100) as client:
        decodes = client.state.metrics.image_decode
        slow = asyncio.create_task(client.post(CHAT, json=chat_body(max_tokens=80)))
        for _ in range(200):  # until the first holds its work (bounded: 2 s)
            if client.state.admission.work:
                break
            await asyncio.sleep(0.01)
        before = decodes._sum.get()  # type: ignore[attr-defined]
        refused = await client.post(CHAT, json=chat_body(max_tokens=40))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert "work" in refused.json()["error"]["message"]
        assert decodes._sum.get() == before  # type: ignore[attr-defined]  # nothing decoded
        assert (await slow).status_code == 200
        assert client.state.admission.work == 0  # given back with the response
        assert (await client.post(CHAT, json=chat_body(max_tokens=40))).status_code == 200


async def test_one_request_larger_than_the_budget_still_runs_alone(
    make_client: MakeClient,
) -> None:
    async with make_client(admission_work_tokens=10) as client:
        assert (await client.post(CHAT, json=chat_body(max_tokens=50))).status_code == 200


async def test_engine_calls_share_the_request_deadline() -> None:
    """Two calls that each fit a fresh timeout, but not one shared deadline: the second ends
    at the deadline with the request's 504."""
    engine = FakeEngine(step_delay_s=0.05)  # 5 steps: ≈ 0.25 s a call
    monitor = EngineMonitor()
    scope = RequestScope(deadline=asyncio.get_running_loop().time() + 0.4, timeout_s=0.4)
    token = bind(scope)
    try:
        async for _ in run_generation(engine, monitor, GenerationRequest("a", ()), 10.0):
            pass
        with pytest.raises(Timeout) as info:
            async for _ in run_generation(engine, monitor, GenerationRequest("b", ()), 10.0):
                pass
    finally:
        unbind(token)
    assert "0.4 s" in info.value.message
    assert engine.aborted == ["b"] and not engine.running


async def test_a_faces_request_past_its_deadline_gets_one_504_and_leaves_nothing_running(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(step_delay_s=2.0)  # one step is past the deadline
    async with make_client(engine, request_timeout_s=0.5) as client:
        body = {"image": data_url(astronaut()), "confidence": True}
        r = await client.post(FACES, json=body)
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "request_timeout"
        assert not engine.running  # every engine request of the request was aborted


async def test_a_keyless_request_is_refused_before_its_body_is_read() -> None:
    app = create_app(Settings(api_keys=["k"]), FakeEngine())  # type: ignore[list-item]
    read: list[str] = []

    async def receive() -> dict[str, Any]:
        read.append("body")
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", b"20000000")]
    scope = {
        "type": "http",
        "method": "POST",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
        "state": {},
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 401
    assert (b"connection", b"close") in sent[0]["headers"]
    assert not read


def large_png(side: int = 3000) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 100, 50)).save(buf, "PNG")
    return "data:image/png;base64," + __import__("base64").b64encode(buf.getvalue()).decode()


async def test_decodes_stop_when_the_first_image_fails(make_client: MakeClient) -> None:
    big = large_png()
    content: list[dict[str, object]] = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        *({"type": "image_url", "image_url": {"url": big, "detail": "high"}} for _ in range(3)),
        {"type": "text", "text": "hi"},
    ]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
    async with make_client(max_images_per_prompt=4, image_pixel_budget=10**7) as client:
        r = await client.post(CHAT, json=body)
        assert r.status_code == 400
        budget = client.state.chat.images.budget
        for _ in range(100):  # bounded: 1 s
            if budget.reserved == 0:
                break
            await asyncio.sleep(0.01)
        assert budget.reserved == 0
