"""The HTTP floor speaks the streaming protocol the benchmark client reads (on the fake engine)."""

from __future__ import annotations

import httpx

from loadtests.bench.client import chat_body, events, has_token
from loadtests.bench.floor import build_app
from loadtests.images import face_data_urls
from model.fake_engine import FakeEngine


async def test_floor_streams_tokens_then_usage() -> None:
    engine = FakeEngine()
    app = build_app(engine)  # type: ignore[arg-type]  # duck-typed: generate/start/shutdown
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
            assert (await client.get("/health")).status_code == 200
            body = chat_body(face_data_urls(1, 64, start=0)[0], "demo", 16)
            r = await client.post("/v1/chat/completions", content=body)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    parsed = list(events(r.content))
    assert not has_token(parsed[0]) and all(has_token(e) for e in parsed[1:-1])
    assert "".join(e["choices"][0]["delta"]["content"] for e in parsed[1:-1]) == (
        "fake answer with 1 image(s)"
    )
    assert parsed[-1]["usage"]["completion_tokens"] == 5
    (request,) = engine.requests
    assert request.messages[0].parts[0].size == (64, 64)  # type: ignore[union-attr]
