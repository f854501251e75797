"""The faces workload against the real app on a fake engine (no vLLM), in a thread: what it sends,
and the figures it makes of the answers and of the server's own /metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from loadtests.bench import load
from loadtests.bench.client import RequestFailed
from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.faces import (
    METRICS_CACHE_S,
    FaceSample,
    FacesPlan,
    asks_confidence,
    detection_totals,
    detector_figures,
    face_figures,
    face_requests,
    post_faces,
    run_faces,
)
from loadtests.photos import PhotoKind
from model.fake_engine import FakeEngine
from server.answers import CONFIDENCE_LOGPROBS
from server.app import create_app
from server.config import Settings
from server.metrics import SCRAPE_CACHE_S
from tests.uvicorn_thread import serve_in_thread

SMALL = (640, 480)  # the photos' layout at a size that is quick to make; the detector finds both
NO_NOISE = NoisePolicy(own_groups=frozenset(), max_share=math.inf, quiet_wait_s=0)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def server(tmp_path: Path, engine: FakeEngine) -> Iterator[str]:
    with serve_in_thread(create_app(Settings(model_cache_dir=tmp_path), engine)) as url:
        yield url


@pytest.fixture(autouse=True)
def no_quiet_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    async def quiet(policy: NoisePolicy, window_s: float = 1.0) -> float:
        return 0.0

    monkeypatch.setattr(load, "wait_for_quiet", quiet)


def test_it_waits_out_the_servers_metrics_cache() -> None:
    assert METRICS_CACHE_S >= SCRAPE_CACHE_S


def test_latency_points_interleave_plain_and_confidence_on_distinct_photos() -> None:
    asked = [asks_confidence(i, interleave=True) for i in range(8)]
    assert asked == [False, True, True, False, False, True, True, False]
    assert not any(asks_confidence(i, interleave=False) for i in range(8))
    reqs = face_requests("two_faces", 4, 50, True, SMALL)
    bodies = [json.loads(r.body) for r in reqs]
    assert [b.get("confidence", False) for b in bodies] == [False, True, True, False]
    assert len({b["image"] for b in bodies}) == 4 and all(r.faces == 2 for r in reqs)
    assert set(bodies[0]) == {"image"}  # every served attribute: the endpoint's default


def test_points_cover_both_kinds_at_one_and_at_the_throughput_concurrency() -> None:
    plan = FacesPlan(latency_requests=6, concurrency=8, throughput_requests=16, warmup=1)
    assert [(k, p.concurrency, p.requests, p.first_image) for k, p in plan.points()] == [
        ("one_face", 1, 6, 0),
        ("one_face", 8, 16, 6),
        ("two_faces", 1, 6, 22),
        ("two_faces", 8, 16, 28),
    ]


def test_detector_ms_per_photo_comes_from_the_histogram_deltas() -> None:
    def exposition(seconds: float, count: int) -> str:
        return (
            "# HELP facellm_face_detection_seconds Face detection.\n"
            "# TYPE facellm_face_detection_seconds histogram\n"
            f'facellm_face_detection_seconds_bucket{{le="+Inf"}} {count}.0\n'
            f"facellm_face_detection_seconds_count {count}.0\n"
            f"facellm_face_detection_seconds_sum {seconds}\n"
            "# TYPE facellm_image_decode_seconds histogram\n"
            "facellm_image_decode_seconds_sum 99.0\n"
            "facellm_image_decode_seconds_count 7.0\n"
        )

    before, after = detection_totals(exposition(0.5, 10)), detection_totals(exposition(0.74, 22))
    assert before == (0.5, 10.0)
    figures = detector_figures(before, after)
    assert figures["detected_photos"] == 12
    assert figures["detector_ms_per_photo"] == pytest.approx(20.0)
    assert detector_figures(before, before)["detector_ms_per_photo"] is None


def sample(e2e_s: float, faces: int, tokens: int, confidence: bool) -> FaceSample:
    return FaceSample(e2e_s, e2e_s, tokens, 100, faces, 4, confidence)


def test_face_figures_count_tokens_per_face_and_compare_the_two_sides() -> None:
    samples = [
        sample(0.2, 2, 8, False),
        sample(0.3, 2, 8, True),
        sample(0.4, 2, 8, True),
        sample(0.1, 2, 10, False),
    ]
    figures = face_figures(samples, wall_s=2.0)
    assert figures["faces"] == 8 and figures["faces_per_s"] == 4.0
    assert figures["tokens_per_face"] == pytest.approx(34 / 8)
    assert figures["attributes_per_face"] == 4
    assert figures["plain_p50_ms"] == pytest.approx(150.0)
    assert figures["confidence_p50_ms"] == pytest.approx(350.0)
    assert figures["confidence_ratio"] == pytest.approx(350 / 150)
    plain_only = face_figures([s for s in samples if not s.confidence], wall_s=1.0)
    assert "confidence_p50_ms" not in plain_only and "confidence_ratio" not in plain_only


async def test_the_workload_measures_every_point_on_the_real_app(
    server: str, engine: FakeEngine
) -> None:
    plan = FacesPlan(latency_requests=4, concurrency=2, throughput_requests=3, warmup=1, size=SMALL)
    (points,) = (
        await run_faces(server, plan, image_offset=0, noise=NO_NOISE, server_group=0)
    ).values()
    assert [(p["kind"], p["concurrency"], p["requests"], p["errors"]) for p in points] == [
        ("one_face", 1, 4, 0),
        ("one_face", 2, 3, 0),
        ("two_faces", 1, 4, 0),
        ("two_faces", 2, 3, 0),
    ]
    for p in points:
        # Exactly the point's photos: the warm-up and the previous point stay out of it.
        assert p["detected_photos"] == p["requests"]
        assert p["detector_ms_per_photo"] > 0
        assert p["faces"] == p["requests"] * (1 if p["kind"] == "one_face" else 2)
        # The fake engine answers each attribute's question with one token, as the real one must.
        assert p["attributes_per_face"] >= 2
        assert p["tokens_per_face"] == p["attributes_per_face"]
    latency = [p for p in points if p["concurrency"] == 1]
    assert all(p["plain_requests"] == p["confidence_requests"] == 2 for p in latency)
    assert all(p["confidence_ratio"] > 0 for p in latency)
    assert all("confidence_requests" not in p for p in points if p["concurrency"] == 2)
    asked = [r.sampling.logprobs for r in engine.requests]
    assert CONFIDENCE_LOGPROBS in asked and None in asked


@pytest.mark.parametrize(
    ("kind", "faces", "confidence", "error"),
    [("one_face", 2, False, "1 faces in the answer, not 2"), ("two_faces", 2, True, "shape")],
)
async def test_an_answer_that_is_not_what_was_asked_fails(
    server: str, kind: PhotoKind, faces: int, confidence: bool, error: str
) -> None:
    (req,) = face_requests(kind, 1, 7, False, SMALL)
    wrong = type(req)(req.body, faces, confidence)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RequestFailed, match=error):
            await post_faces(session, f"{server}/v1/faces/analyze", wrong)


async def test_a_noisy_attempt_is_measured_again_and_only_the_last_one_counts(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shares = iter([1.0])  # the first attempt of the first point was noisy; every other is quiet
    monkeypatch.setattr(load, "others_share", lambda *args: next(shares, 0.0))
    noise = NoisePolicy(own_groups=frozenset(), max_share=0.5, attempts=2, quiet_wait_s=0)
    plan = FacesPlan(latency_requests=2, concurrency=2, throughput_requests=2, warmup=0, size=SMALL)
    points = (await run_faces(server, plan, image_offset=0, noise=noise, server_group=0))["faces"]
    assert [p["attempts"] for p in points] == [2, 1, 1, 1]
    first = points[0]
    assert first["others_cpu_share"] == 0.0 and first["errors"] == 0
    # The detector's figure is that of the attempt that counted, not of both.
    assert first["detected_photos"] == first["requests"] == 2
