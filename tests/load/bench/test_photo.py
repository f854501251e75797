"""The photo workload's client, against a stand-in server on 127.0.0.1 (no engine, no photos)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from loadtests.bench import load, photo
from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.photo import chat_bodies, plan_photo, run_photo

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


async def chat(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for delta in ({"role": "assistant"}, {"content": "a face"}):
        await resp.write(f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\n".encode())
    await resp.write(
        f"data: {json.dumps({'choices': [], 'usage': USAGE})}\n\ndata: [DONE]\n\n".encode()
    )
    return resp


@asynccontextmanager
async def serve() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_plan_gives_two_photos_per_user_and_at_least_the_minimum() -> None:
    plan = plan_photo([1, 8], min_requests=8, warmup=2)
    assert [(p.concurrency, p.requests, p.first_image) for p in plan.chat_points] == [
        (1, 8, 0),
        (8, 16, 8),
    ]
    assert plan.meta()["warmup"] == 2


def test_bodies_are_chat_requests_and_are_made_once() -> None:
    first = chat_bodies(2, 10, "demo", 16)
    assert chat_bodies(2, 10, "demo", 16) is first  # the next system gets the very same bytes
    sent = json.loads(first[1])
    assert sent["stream"] is True and sent["max_tokens"] == 16
    assert sent["messages"][0]["content"][0]["image_url"]["url"].endswith("chat11")


async def test_run_photo_measures_every_chat_point() -> None:
    plan = plan_photo([1, 2], min_requests=3, warmup=1)
    noise = NoisePolicy(own_groups=frozenset(), max_share=math.inf, quiet_wait_s=0)
    async with serve() as base:
        result = await run_photo(
            base, plan, image_offset=0, max_tokens=4, noise=noise, server_group=0
        )
    assert set(result) == {"photo_chat"}
    assert [(p["concurrency"], p["requests"], p["errors"]) for p in result["photo_chat"]] == [
        (1, 3, 0),
        (2, 4, 0),
    ]
    assert all(p["prompt_tokens"] == [300] and p["body_mb"] > 0 for p in result["photo_chat"])
