"""The fake engine (model/fake_engine.py) keeps the engine contract the HTTP tests rely on."""

from __future__ import annotations

import pytest

from model.engine import EngineAborted, GenerationRequest
from model.fake_engine import FakeEngine


async def test_fake_engine_aborts_after_the_chunks_it_was_told() -> None:
    engine = FakeEngine(abort_after=2)
    texts: list[str] = []

    async def drain() -> None:
        async for chunk in engine.generate(GenerationRequest("r", ())):
            texts.append(chunk.text)

    with pytest.raises(EngineAborted):
        await drain()
    assert texts == ["fake", " answer"] and not engine.running and not engine.aborted
