from __future__ import annotations

from typing import Any

import pytest

from loadtests.bench.report import aggregate, goal_met, markdown, report


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


def photo_runs() -> list[dict[str, Any]]:
    """Both servers over photos in two repeats."""
    rps = {"facellm": (2.0, 3.0), "vllm": (1.0, 2.0)}
    runs = [
        {
            "system": system,
            "repeat": r,
            "workload": "photo_chat",
            "points": [
                point(c, c * rps[system][r], 1000 / rps[system][r]) | {"body_mb": 2.8}
                for c in (1, 8)
            ],
        }
        for system in rps
        for r in (0, 1)
    ]
    return runs


def meta(*workloads: str) -> dict[str, Any]:
    return {"repeats": 2, "max_tokens": 16, "image_size": 256, "cpus": 2, "wall_s": 1.0} | {
        "workloads": list(workloads)
    }


def test_report_has_a_photo_section_with_ours_over_vllm() -> None:
    small = [r | {"workload": "small"} for r in runs()]
    payload, text = report(small + photo_runs(), meta("small", "photo"))
    assert text.startswith("# Benchmark: engine only") and "## Photo workload" in text
    chat = payload["photo"]["chat"]
    assert set(chat) == {"1", "8"} and set(chat["8"]["systems"]) == {"facellm", "vllm"}
    assert chat["1"]["ratios"]["req_per_s ours/vllm"]["min"] == pytest.approx(1.5)
    assert payload["summary"]["8"]["systems"]["engine"]["req_per_s"]["median"] == 105.0
    assert payload["meta"]["photo_body_mb"] == {"photo_chat": 2.8, "faces": None}
    assert "### Chat over photos (2.8 MB request bodies)" in text
    # req/s ours/vLLM per repeat: 2/1 and 3/2 → median 1.75 (1.50–2.00); e2e the inverse.
    assert "| 1 | 1.75 (1.50–2.00) | 0.58 (0.50–0.67) | 0.58 (0.50–0.67) |" in text
    assert "Faces workload" not in text and payload["faces"] == {}


def test_a_photo_only_report_has_no_small_tables() -> None:
    payload, text = report(photo_runs(), meta("photo"))
    assert payload["summary"] == {} and "engine only" not in text
    assert text.startswith("# Benchmark: FaceLLM Serve (and vLLM") and "## Photo workload" in text
