"""An engine-side abort is an error, never a completion (fake engine with `abort_after`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from model.engine import EngineAborted, GenerationRequest
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from tests.images import astronaut, data_url

CHAT, FACES = "/v1/chat/completions", "/v1/faces/analyze"
HI = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@asynccontextmanager
async def serve(tmp_path: Path, engine: FakeEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_cache_dir=tmp_path), engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_fake_engine_aborts_after_the_chunks_it_was_told() -> None:
    engine = FakeEngine(abort_after=2)
    texts: list[str] = []

    async def drain() -> None:
        async for chunk in engine.generate(GenerationRequest("r", ())):
            texts.append(chunk.text)

    with pytest.raises(EngineAborted):
        await drain()
    assert texts == ["fake", " answer"] and not engine.running and not engine.aborted


@pytest.mark.parametrize("after", [0, 2])
async def test_aborted_completion_is_503_engine_aborted(tmp_path: Path, after: int) -> None:
    async with serve(tmp_path, FakeEngine(abort_after=after)) as client:
        r = await client.post(CHAT, json=HI)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert (error["code"], error["type"]) == ("engine_aborted", "server_error")
        assert "fake answer" not in r.text


async def test_aborted_stream_ends_with_an_in_band_error_not_a_stop(tmp_path: Path) -> None:
    async with serve(tmp_path, FakeEngine(abort_after=2)) as client:
        r = await client.post(CHAT, json={**HI, "stream": True})
        assert r.status_code == 200  # the headers went out with the first chunk
        frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        assert json.loads(frames[-2])["error"]["code"] == "engine_aborted"
        chunks = [json.loads(f) for f in frames[:-2]]
        reasons = {c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")}
        assert reasons == {None}  # nothing claims the answer finished


async def test_aborted_stream_before_any_chunk_is_a_503(tmp_path: Path) -> None:
    async with serve(tmp_path, FakeEngine(abort_after=0)) as client:
        r = await client.post(CHAT, json={**HI, "stream": True})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_aborted"


async def test_aborted_face_is_503(tmp_path: Path) -> None:
    # A face's answer is one chunk (compact JSON): aborted before it.
    async with serve(tmp_path, FakeEngine(abort_after=0)) as client:
        r = await client.post(FACES, json={"image": data_url(astronaut())})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_aborted"
