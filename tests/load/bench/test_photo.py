"""The photo workload's client, against a stand-in server on 127.0.0.1 (no engine, no photos)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from loadtests.bench import load, photo
from loadtests.bench.client import RequestFailed
from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.photo import chat_bodies, face_bodies, face_body, plan_photo, run_photo
from server.protocol import FaceAnalysisRequest

USAGE = {"prompt_tokens": 300, "completion_tokens": 4, "total_tokens": 304}


@pytest.fixture(autouse=True)
def tiny_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in photos (making real ones takes 0.2 s each), and no waiting for a quiet machine."""

    def urls(kind: str, count: int, start: int = 0) -> list[str]:
        return [f"data:image/jpeg;base64,{kind}{i}" for i in range(start, start + count)]

    async def quiet(policy: NoisePolicy, window_s: float = 1.0) -> float:
        return 0.0

    monkeypatch.setattr(photo, "photo_data_urls", urls)
    monkeypatch.setattr(load, "wait_for_quiet", quiet)
    chat_bodies.cache_clear()
    face_bodies.cache_clear()


async def chat(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for delta in ({"role": "assistant"}, {"content": "a face"}):
        await resp.write(f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\n".encode())
    await resp.write(
        f"data: {json.dumps({'choices': [], 'usage': USAGE})}\n\ndata: [DONE]\n\n".encode()
    )
    return resp


def faces_handler(found: int, status: int) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["image"].startswith("data:image/jpeg;base64,faces")
        faces: list[dict[str, object]] = [{"bbox": {}, "attributes": {}}] * found
        return web.json_response({"faces": faces, "usage": USAGE}, status=status)

    return handle


@asynccontextmanager
async def serve(found: int = 2, status: int = 200) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/faces/analyze", faces_handler(found, status))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_plan_gives_two_photos_per_user_and_at_least_the_minimum() -> None:
    plan = plan_photo([1, 8], min_requests=8, face_requests=5, warmup=2)
    assert [(p.concurrency, p.requests, p.first_image) for p in plan.chat_points] == [
        (1, 8, 0),
        (8, 16, 8),
    ]
    assert plan.meta()["face_requests"] == 5 and plan.meta()["face_concurrency"] == 1


def test_bodies_are_what_each_endpoint_takes_and_are_made_once() -> None:
    body = face_body("data:image/jpeg;base64,AAAA")
    assert FaceAnalysisRequest.model_validate_json(body).image == "data:image/jpeg;base64,AAAA"
    first = chat_bodies(2, 10, "demo", 16)
    assert chat_bodies(2, 10, "demo", 16) is first  # the next system gets the very same bytes
    sent = json.loads(first[1])
    assert sent["stream"] is True and sent["max_tokens"] == 16
    assert sent["messages"][0]["content"][0]["image_url"]["url"].endswith("chat11")


async def test_run_photo_measures_chat_points_then_faces_on_this_server() -> None:
    plan = plan_photo([1, 2], min_requests=3, face_requests=3, warmup=1)
    noise = NoisePolicy(own_groups=frozenset(), max_share=math.inf, quiet_wait_s=0)
    async with serve() as base:
        ours = await run_photo(
            base, plan, faces=True, image_offset=0, max_tokens=4, noise=noise, server_group=0
        )
        theirs = await run_photo(
            base, plan, faces=False, image_offset=0, max_tokens=4, noise=noise, server_group=0
        )
    assert set(ours) == {"photo_chat", "photo_faces"} and set(theirs) == {"photo_chat"}
    assert [(p["concurrency"], p["requests"], p["errors"]) for p in ours["photo_chat"]] == [
        (1, 3, 0),
        (2, 4, 0),
    ]
    (faces,) = ours["photo_faces"]
    assert (faces["concurrency"], faces["requests"], faces["errors"]) == (1, 3, 0)
    assert faces["prompt_tokens"] == [300] and faces["body_mb"] > 0


@pytest.mark.parametrize(("found", "status", "error"), [(1, 200, "1 faces"), (2, 422, "HTTP 422")])
async def test_a_face_answer_that_is_not_two_faces_fails(
    found: int, status: int, error: str
) -> None:
    body = face_body("data:image/jpeg;base64,faces0")
    async with serve(found, status) as base, aiohttp.ClientSession() as session:
        with pytest.raises(RequestFailed, match=error):
            await photo.post_faces(session, f"{base}/v1/faces/analyze", body)
