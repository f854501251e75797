"""The load every benchmarked system gets, and the numbers taken from it.

A closed loop: `concurrency` workers each send the next request as soon as theirs finishes, over a
fixed list of requests (one distinct image each). Every system sees the same list; only `send`
differs (in-process engine, or HTTP to a server).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from loadtests.bench.cpu import NoisePolicy, cpu_by_role, cpu_snapshot, others_share, wait_for_quiet

T = TypeVar("T")
S = TypeVar("S", bound="Sample")

PROMPT = "Describe this face."
WARMUP_CONCURRENCY = 8
# Image indices: repeat r measures from REPEAT_STRIDE * (r + 1), a retry adds RETRY_STRIDE,
# the warm-up comes from far away: no request in a run sees an image another request saw.
REPEAT_STRIDE = 1_000_000
RETRY_STRIDE = 100_000
WARMUP_FIRST_IMAGE = 1_000_000_000


@dataclass(frozen=True)
class Sample:
    """One finished request, timed from just before it was sent."""

    ttft_s: float
    e2e_s: float
    tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class Point:
    """One load point: how many requests, at what concurrency, from which image on."""

    concurrency: int
    requests: int
    first_image: int


def plan_points(concurrencies: Sequence[int], per_user: int, minimum: int) -> list[Point]:
    """Points with disjoint image ranges, so no request in a run reuses an image."""
    points, start = [], 0
    for c in concurrencies:
        n = max(minimum, per_user * c)
        points.append(Point(c, n, start))
        start += n
    return points


async def closed_loop(
    concurrency: int, items: Sequence[T], send: Callable[[T], Awaitable[S]]
) -> tuple[list[S], list[str], float]:
    """Send every item with `concurrency` in flight; (samples, errors, wall seconds)."""
    queue = iter(items)
    samples: list[S] = []
    errors: list[str] = []

    async def worker() -> None:
        for item in queue:  # the iterator is shared: each item goes to exactly one worker
            try:
                samples.append(await send(item))
            except Exception as e:  # counted and reported, never hidden
                errors.append(f"{type(e).__name__}: {e}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, errors, time.perf_counter() - start


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summarize(samples: Sequence[Sample], errors: Sequence[str], wall_s: float) -> dict[str, Any]:
    """Throughput and latency of one point; latencies in milliseconds."""
    ttft = [s.ttft_s * 1000 for s in samples]
    e2e = [s.e2e_s * 1000 for s in samples]
    return {
        "requests": len(samples),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall_s, 3),
        "req_per_s": len(samples) / wall_s if wall_s > 0 else 0.0,
        "tok_per_s": sum(s.tokens for s in samples) / wall_s if wall_s > 0 else 0.0,
        "ttft_p50_ms": quantile(ttft, 0.50),
        "ttft_p95_ms": quantile(ttft, 0.95),
        "e2e_p50_ms": quantile(e2e, 0.50),
        "e2e_p95_ms": quantile(e2e, 0.95),
        "prompt_tokens": sorted({s.prompt_tokens for s in samples}),
        "output_tokens_mean": statistics.fmean(s.tokens for s in samples) if samples else 0.0,
    }


async def run_point(
    point: Point,
    items_for: Callable[[int], Sequence[T]],
    send: Callable[[T], Awaitable[S]],
    noise: NoisePolicy,
    system_group: int,
    details: Callable[[list[S], float], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measure one point; again, on fresh items, if other processes took the CPUs meanwhile.

    `items_for(attempt)` builds that attempt's requests before the clock starts. Besides the
    latencies, the result says what each of the system's processes spent in CPU per request,
    and what `details(samples, wall seconds)` makes of the attempt that counted.
    """
    for attempt in range(1, noise.attempts + 1):
        await wait_for_quiet(noise)
        items = items_for(attempt - 1)
        before = cpu_snapshot()
        samples, errors, wall = await closed_loop(point.concurrency, items, send)
        after = cpu_snapshot()
        share = others_share(before, after, noise.own_groups, wall)
        if share <= noise.max_share or not noise.patient():
            break
    per_request = 1000 / max(1, len(samples))
    cpu = cpu_by_role(before, after, system_group)
    return {
        "concurrency": point.concurrency,
        "attempts": attempt,
        "others_cpu_share": share,
        "cpu_ms_per_request": {role: s * per_request for role, s in cpu.items()},
        **summarize(samples, errors, wall),
        **(details(samples, wall) if details else {}),
    }


def point_items(
    point: Point, image_offset: int, make: Callable[[int, int], Sequence[T]]
) -> Callable[[int], Sequence[T]]:
    """`items_for` of a point: `make(count, first_image)` on fresh images for every attempt."""
    first = image_offset + point.first_image
    return lambda attempt: make(point.requests, first + attempt * RETRY_STRIDE)


async def warm_up_and_run(
    points: Sequence[Point],
    make: Callable[[int, int], Sequence[T]],
    send: Callable[[T], Awaitable[Sample]],
    *,
    warmup: int,
    image_offset: int,
    noise: NoisePolicy,
    system_group: int,
) -> list[dict[str, Any]]:
    """The small workload on any system: `warmup` requests at WARMUP_CONCURRENCY on images no
    point uses, then every point; one summary per point. Only `make` (images → requests, built
    before the clock) and `send` differ between the in-process ceiling and the HTTP systems."""
    await closed_loop(WARMUP_CONCURRENCY, make(warmup, WARMUP_FIRST_IMAGE), send)
    return [
        await run_point(point, point_items(point, image_offset, make), send, noise, system_group)
        for point in points
    ]
