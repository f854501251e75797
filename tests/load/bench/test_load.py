from __future__ import annotations

import asyncio
import itertools
import math
import os

import pytest

from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.load import (
    WARMUP_FIRST_IMAGE,
    Sample,
    closed_loop,
    plan_points,
    quantile,
    run_point,
    summarize,
    warm_up_and_run,
)


def test_points_get_disjoint_image_ranges() -> None:
    points = plan_points([1, 8, 32], per_user=16, minimum=64)
    assert [(p.concurrency, p.requests) for p in points] == [(1, 64), (8, 128), (32, 512)]
    ranges = [range(p.first_image, p.first_image + p.requests) for p in points]
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))


async def test_closed_loop_sends_each_item_once_with_the_given_concurrency() -> None:
    in_flight = peak = 0
    seen: list[int] = []

    async def send(item: int) -> Sample:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        seen.append(item)
        if item == 7:
            raise RuntimeError("boom")
        return Sample(ttft_s=0.001, e2e_s=0.002, tokens=16, prompt_tokens=105)

    samples, errors, wall = await closed_loop(4, list(range(20)), send)
    assert sorted(seen) == list(range(20))
    assert peak == 4
    assert (len(samples), errors) == (19, ["RuntimeError: boom"])
    assert wall > 0


def test_quantile_and_summary() -> None:
    assert quantile([5.0], 0.95) == 5.0
    assert math.isnan(quantile([], 0.5))
    assert quantile([float(v) for v in range(1, 101)], 0.50) == pytest.approx(50.5)
    samples = [
        Sample(ttft_s=0.01 * i, e2e_s=0.02 * i, tokens=16, prompt_tokens=105) for i in (1, 2, 3)
    ]
    s = summarize(samples, [], wall_s=2.0)
    assert (s["requests"], s["req_per_s"], s["tok_per_s"]) == (3, 1.5, 24.0)
    assert (s["ttft_p50_ms"], s["e2e_p50_ms"], s["prompt_tokens"]) == (20.0, 40.0, [105])


async def test_run_point_measures_once_when_the_machine_is_quiet_enough() -> None:
    attempts: list[int] = []

    def items_for(attempt: int) -> list[int]:
        attempts.append(attempt)
        return [1, 2, 3]

    async def send(item: int) -> Sample:
        return Sample(ttft_s=0.001, e2e_s=0.001, tokens=1, prompt_tokens=1)

    noise = NoisePolicy(own_groups=frozenset(), max_share=math.inf, quiet_wait_s=0)
    result = await run_point(plan_points([2], 1, 3)[0], items_for, send, noise, os.getpgrp())
    assert attempts == [0]
    assert (result["concurrency"], result["attempts"], result["requests"]) == (2, 1, 3)
    assert result["others_cpu_share"] >= 0
    assert set(result["cpu_ms_per_request"]) == {"front", "engine_core", "worker"}


async def test_every_system_warms_up_apart_then_runs_each_point_on_its_own_images() -> None:
    made: list[tuple[int, int]] = []
    sent: list[int] = []

    def make(count: int, first: int) -> list[int]:
        made.append((count, first))
        return list(range(first, first + count))

    async def send(image: int) -> Sample:
        sent.append(image)
        return Sample(ttft_s=0.001, e2e_s=0.001, tokens=1, prompt_tokens=1)

    points = plan_points([1, 2], per_user=2, minimum=3)
    noise = NoisePolicy(own_groups=frozenset(), max_share=math.inf, quiet_wait_s=0)
    results = await warm_up_and_run(
        points, make, send, warmup=2, image_offset=10, noise=noise, system_group=os.getpgrp()
    )
    assert made == [(2, WARMUP_FIRST_IMAGE), (3, 10), (4, 13)]
    assert sorted(sent) == [10, 11, 12, 13, 14, 15, 16, WARMUP_FIRST_IMAGE, WARMUP_FIRST_IMAGE + 1]
    assert [(r["concurrency"], r["requests"]) for r in results] == [(1, 3), (2, 4)]
