"""The confidence benchmark's client, against the real app on a fake engine (no vLLM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench import confidence
from model.fake_engine import FakeEngine
from server.answers import CONFIDENCE_LOGPROBS
from server.app import create_app
from server.config import Settings
from tests.uvicorn_thread import serve_in_thread


def test_it_measures_both_sides_on_the_same_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    engine = FakeEngine()
    real_send = confidence.send

    def send(client: object, url: str, side: confidence.Side) -> None:
        sent.append(f"{side.name}:{url[-12:]}")
        real_send(client, url, side)  # type: ignore[arg-type]

    monkeypatch.setattr(confidence, "send", send)
    with serve_in_thread(create_app(Settings(model_cache_dir=tmp_path), engine)) as url:
        result = confidence.run(url, requests=2, warmup=1)
    assert set(result) == {"plain", "confidence"}
    assert all(side["p50_ms"] > 0 for side in result.values())
    measured = [s.split(":", 1) for s in sent[2:]]  # after the warm-up pair
    assert [name for name, _ in measured] == ["plain", "confidence"] * 2
    assert measured[0][1] == measured[1][1] and measured[2][1] == measured[3][1]
    asked = [r.sampling.logprobs for r in engine.requests]
    assert asked.count(None) == asked.count(CONFIDENCE_LOGPROBS) > 0  # plain and scored alike
