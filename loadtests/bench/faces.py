"""The faces workload of the benchmark: `/v1/faces/analyze` on 12-MP photos, this server only.

vLLM's server has no such endpoint. Photos with ONE face and with TWO (`loadtests.photos`), a
different photo in every request, every served attribute asked. Per photo kind:

- concurrency 1: plain requests and `confidence: true` ones interleaved (plain, confidence;
  confidence, plain; …), so drift in the machine hits both sides alike — p50 and p95 of each,
  and the cost of confidence as the ratio of their p50s. Each request has its own photo: the
  same photo twice would let the second ride vLLM's image and prefix caches;
- concurrency 8 (`--face-concurrency`): plain requests — faces per second.

Every point also gives output tokens per face (`usage.completion_tokens` ÷ faces; the goal is one
token per attribute asked) and the detector's milliseconds per photo, from the server's own
`facellm_face_detection_seconds` histogram: its _sum and _count deltas over the point (over
the attempt that counted, when a noisy one was measured again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from loadtests.bench.client import JSON_HEADERS, TIMEOUT, RequestFailed
from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.load import (
    RETRY_STRIDE,
    WARMUP_FIRST_IMAGE,
    Point,
    Sample,
    closed_loop,
    quantile,
    run_point,
)
from loadtests.photos import PHOTO_SIZE, PhotoKind, photo_data_urls

log = logging.getLogger("loadtests.bench")

FACES_PATH = "/v1/faces/analyze"
FACES_IN: dict[PhotoKind, int] = {"one_face": 1, "two_faces": 2}
DETECTION_METRIC = "facellm_face_detection_seconds"
# The server renders /metrics at most once a second and serves that rendering meanwhile
# (server/metrics.py): a scrape waits this long after the last request it must see.
METRICS_CACHE_S = 1.0


@dataclass(frozen=True)
class FacesPlan:
    """What the faces workload sends in each repeat, for each photo kind."""

    latency_requests: int  # at concurrency 1, half plain and half with confidence
    concurrency: int  # of the throughput point
    throughput_requests: int
    warmup: int  # photos of each kind sent both ways before measuring
    size: tuple[int, int] = PHOTO_SIZE

    def points(self) -> list[tuple[PhotoKind, Point]]:
        """Concurrency 1, then the throughput point, for each kind; disjoint photo ranges."""
        points, start = [], 0
        for kind in FACES_IN:
            for c, n in ((1, self.latency_requests), (self.concurrency, self.throughput_requests)):
                points.append((kind, Point(c, n, start)))
                start += n
        return points

    def meta(self) -> dict[str, Any]:
        return {
            "latency_requests": self.latency_requests,
            "concurrency": self.concurrency,
            "throughput_requests": self.throughput_requests,
            "warmup": self.warmup,
            "photo_size": list(self.size),
        }


@dataclass(frozen=True)
class FaceRequest:
    body: bytes
    faces: int  # the photo shows this many
    confidence: bool


@dataclass(frozen=True)
class FaceSample(Sample):
    faces: int
    attributes: int  # per face, as answered
    confidence: bool


def asks_confidence(index: int, interleave: bool) -> bool:
    """Pairs of requests, alternately plain first and confidence first: P C, C P, P C, …"""
    return interleave and (index + index // 2) % 2 == 1


def face_requests(
    kind: PhotoKind, count: int, first: int, interleave: bool, size: tuple[int, int]
) -> tuple[FaceRequest, ...]:
    """`count` requests over photos `first`…, every served attribute; made before the clock."""
    urls = photo_data_urls(kind, count, first, size)
    requests = []
    for i, url in enumerate(urls):
        confidence = asks_confidence(i, interleave)
        body = {"image": url, "confidence": True} if confidence else {"image": url}
        requests.append(FaceRequest(json.dumps(body).encode(), FACES_IN[kind], confidence))
    return tuple(requests)


async def post_faces(session: aiohttp.ClientSession, url: str, req: FaceRequest) -> FaceSample:
    """One face analysis, not streamed: its latency is the whole answer. An answer with another
    number of faces, or not in the shape asked, fails: the point would no longer be what it says."""
    start = time.perf_counter()
    async with session.post(url, data=req.body, headers=JSON_HEADERS) as resp:
        raw = await resp.read()
        status = resp.status
    elapsed = time.perf_counter() - start
    if status != 200:
        raise RequestFailed(f"HTTP {status}: {raw[:200].decode(errors='replace')}")
    answer = json.loads(raw)
    faces = answer.get("faces") or []
    if len(faces) != req.faces:
        raise RequestFailed(f"{len(faces)} faces in the answer, not {req.faces}")
    attributes = faces[0]["attributes"]
    if any(isinstance(v, dict) != req.confidence for v in attributes.values()):
        raise RequestFailed(f"attributes not in the shape asked (confidence={req.confidence})")
    usage = answer["usage"]
    return FaceSample(
        ttft_s=elapsed,
        e2e_s=elapsed,
        tokens=usage["completion_tokens"],
        prompt_tokens=usage["prompt_tokens"],
        faces=len(faces),
        attributes=len(attributes),
        confidence=req.confidence,
    )


def detection_totals(exposition: str) -> tuple[float, float]:
    """(seconds, photos) the detector has spent and seen so far: the histogram's _sum, _count."""
    total, count = 0.0, 0.0
    for family in text_string_to_metric_families(exposition):
        if family.name != DETECTION_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{DETECTION_METRIC}_sum":
                total += sample.value
            elif sample.name == f"{DETECTION_METRIC}_count":
                count += sample.value
    return total, count


def detector_figures(before: tuple[float, float], after: tuple[float, float]) -> dict[str, Any]:
    """Detector milliseconds per photo over a point, from two readings of the histogram."""
    seconds, photos = after[0] - before[0], after[1] - before[1]
    return {
        "detected_photos": round(photos),
        "detector_ms_per_photo": 1000 * seconds / photos if photos > 0 else None,
    }


def face_figures(samples: Sequence[FaceSample], wall_s: float) -> dict[str, Any]:
    """What a faces point is about: tokens per face, faces/s, and each side's latencies (a side
    the point did not send is left out)."""
    faces = sum(s.faces for s in samples)
    figures: dict[str, Any] = {
        "faces": faces,
        "faces_per_s": faces / wall_s if wall_s > 0 else 0.0,
        "tokens_per_face": sum(s.tokens for s in samples) / faces if faces else None,
        "attributes_per_face": statistics.fmean(s.attributes for s in samples) if samples else None,
    }
    for side, confidence in (("plain", False), ("confidence", True)):
        e2e = [1000 * s.e2e_s for s in samples if s.confidence == confidence]
        if e2e:
            figures |= {
                f"{side}_requests": len(e2e),
                f"{side}_p50_ms": quantile(e2e, 0.50),
                f"{side}_p95_ms": quantile(e2e, 0.95),
            }
    if "plain_p50_ms" in figures and "confidence_p50_ms" in figures:
        figures["confidence_ratio"] = figures["confidence_p50_ms"] / figures["plain_p50_ms"]
    return figures


Scrape = Callable[[], Awaitable[tuple[float, float]]]


async def measure(
    kind: PhotoKind,
    point: Point,
    items_for: Callable[[int], Sequence[FaceRequest]],
    send: Callable[[FaceRequest], Awaitable[FaceSample]],
    scrape: Scrape,
    noise: NoisePolicy,
    server_group: int,
) -> dict[str, Any]:
    """One point, measured again on fresh photos when others took the CPUs (as `run_point`
    does), with the face figures and the detector time of the attempt that counted: the
    histogram is read around each attempt."""
    once = replace(noise, attempts=1)
    for attempt in range(noise.attempts):
        before = await scrape()
        photos = items_for(attempt)
        result = await run_point(
            point, _these(photos), send, once, server_group, details=face_figures
        )
        after = await scrape()
        if result["others_cpu_share"] <= noise.max_share or not noise.patient():
            break
    body_mb = statistics.fmean(len(r.body) for r in photos) / 1e6 if photos else 0.0
    return {"kind": kind, **result, "attempts": attempt + 1} | {
        **detector_figures(before, after),
        "body_mb": body_mb,
    }


def _these(photos: Sequence[FaceRequest]) -> Callable[[int], Sequence[FaceRequest]]:
    return lambda _: photos


async def run_faces(
    base_url: str,
    plan: FacesPlan,
    *,
    image_offset: int,
    noise: NoisePolicy,
    server_group: int,
) -> dict[str, list[dict[str, Any]]]:
    """Warm-up, then every point of `plan` on a running server: {"faces": points}."""
    faces_url = f"{base_url}{FACES_PATH}"
    connector = aiohttp.TCPConnector(limit=plan.concurrency + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:

        async def send(req: FaceRequest) -> FaceSample:
            return await post_faces(session, faces_url, req)

        async def scrape() -> tuple[float, float]:
            await asyncio.sleep(METRICS_CACHE_S + 0.1)  # past the rendering that may be cached
            async with session.get(f"{base_url}/metrics") as resp:
                return detection_totals(await resp.text())

        for kind in FACES_IN:  # not measured: the first photos of a kind pay one-time costs
            warm = face_requests(kind, 2 * plan.warmup, WARMUP_FIRST_IMAGE, True, plan.size)
            _, errors, _ = await closed_loop(plan.concurrency, warm, send)
            if errors:
                log.warning(
                    "  faces warm-up (%s): %d errors, first: %s", kind, len(errors), errors[0]
                )
        points = []
        for kind, point in plan.points():
            items = _items_for(kind, point, image_offset, plan.size)
            points.append(await measure(kind, point, items, send, scrape, noise, server_group))
    return {"faces": points}


def _items_for(
    kind: PhotoKind, point: Point, image_offset: int, size: tuple[int, int]
) -> Callable[[int], Sequence[FaceRequest]]:
    """Fresh photos for every attempt; plain and confidence interleaved at concurrency 1."""
    first = image_offset + point.first_image
    interleave = point.concurrency == 1
    return lambda attempt: face_requests(
        kind, point.requests, first + attempt * RETRY_STRIDE, interleave, size
    )
