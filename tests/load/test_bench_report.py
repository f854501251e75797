from __future__ import annotations

from typing import Any

import pytest

from loadtests.bench_report import aggregate, goal_met, markdown


def point(c: int, rps: float, e2e: float) -> dict[str, Any]:
    return {
        "concurrency": c,
        "req_per_s": rps,
        "tok_per_s": 16 * rps,
        "ttft_p50_ms": e2e / 2,
        "ttft_p95_ms": e2e,
        "e2e_p50_ms": e2e,
        "e2e_p95_ms": 2 * e2e,
        "others_cpu_share": 0.01,
        "cpu_ms_per_request": {"front": 1.0, "engine_core": 2.0, "worker": 3.0},
        "errors": 0,
    }


def runs() -> list[dict[str, Any]]:
    rps = {
        "engine": (100.0, 110.0),
        "floor": (98.0, 99.0),
        "facellm": (95.0, 88.0),
        "vllm": (90.0, 80.0),
    }
    return [
        {"system": system, "repeat": r, "points": [point(8, rps[system][r], 1000 / rps[system][r])]}
        for system in rps
        for r in (0, 1)
    ]


def test_ratios_are_taken_within_each_repeat_then_spread() -> None:
    summary = aggregate(runs())
    ratio = summary["8"]["ratios"]["req_per_s ours/engine"]
    assert (ratio["min"], ratio["max"]) == pytest.approx((0.8, 0.95))
    assert ratio["median"] == pytest.approx(0.875)
    assert summary["8"]["systems"]["vllm"]["req_per_s"]["median"] == 85.0
    assert summary["8"]["ratios"]["req_per_s ours/vllm"]["min"] == pytest.approx(1.05555, 1e-4)
    assert summary["8"]["ratios"]["req_per_s floor/engine"]["min"] == pytest.approx(0.9)
    assert summary["8"]["ratios"]["req_per_s ours/floor"]["max"] == pytest.approx(95 / 98)


def test_goal_needs_throughput_and_latency_near_the_ceiling() -> None:
    def ratios(thr: float, lat: float) -> dict[str, dict[str, float]]:
        return {
            "req_per_s ours/engine": {"median": thr},
            "e2e_p50_ms ours/engine": {"median": lat},
        }

    assert goal_met(ratios(0.95, 1.05)) == "yes"
    assert goal_met(ratios(0.85, 1.05)) == "**no**"
    assert goal_met(ratios(0.95, 1.2)) == "**no**"
    assert goal_met({}) == "n/a"


def test_markdown_has_a_row_per_system_and_a_ratio_row_per_point() -> None:
    meta = {"repeats": 2, "max_tokens": 16, "image_size": 256, "cpus": 2, "wall_s": 1.0}
    text = markdown(aggregate(runs()), meta)
    assert text.count("| 8 |") == 4 + 1 + 4  # systems, ratios, CPU per system
    assert "engine only (ceiling)" in text and "vLLM OpenAI server" in text
    assert "HTTP floor" in text and "n/a" not in text
    assert "0.88 (0.80–0.95)" in text  # req/s ours/ceiling
    assert "| 8 | FaceLLM Serve | 1.00 | 2.00 | 3.00 | 0.00 | 6.00 |" in text
