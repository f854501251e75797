"""Admission (server/admission.py): a cap on requests in flight, refused at once past it with 429
and Retry-After, and the drain switch (fake engine)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"


def chat_body(**extra: object) -> dict[str, object]:
    return {"messages": image_message(data_url(astronaut())), "max_tokens": 8, **extra}


async def test_burst_past_admission_limit_gets_429_with_retry_after(
    make_client: MakeClient,
) -> None:
    async with make_client(FakeEngine(step_delay_s=0.05), max_concurrent_requests=2) as client:
        responses = await asyncio.gather(*(client.post(CHAT, json=chat_body()) for _ in range(10)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1
        assert set(statuses) <= {200, 429}
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        scraped = (await client.get("/metrics")).text
        assert f"facellm_admission_rejections_total {statuses.count(429)}.0" in scraped
        assert (await client.post(CHAT, json=chat_body())).status_code == 200  # slots came back


async def test_draining_refuses_new_work_and_fails_readiness(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    app.state.facellm.admission.draining = True
    r = await client.post(CHAT, json=chat_body())
    assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
    assert (await client.get("/ready")).status_code == 503
    assert (await client.get("/health")).status_code == 200
