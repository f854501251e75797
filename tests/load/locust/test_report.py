from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtests.locust.report import (
    EntrySummary,
    Slo,
    load_stats,
    percentile,
    slo_breaches,
    summarize_entry,
    write_summary,
)


def entry(method: str, name: str, times: dict[int, int], failures: int = 0) -> dict[str, Any]:
    """A stats entry as locust writes it to --json-file (histogram keys become strings)."""
    return {
        "name": name,
        "method": method,
        "num_requests": sum(times.values()),
        "num_failures": failures,
        "start_time": 1000.0,
        "last_request_timestamp": 1010.0,
        "max_response_time": max(times),
        "response_times": {str(k): v for k, v in times.items()},
    }


def test_percentile_is_nearest_rank_over_the_histogram() -> None:
    histogram = {10: 50, 20: 45, 900: 5}
    assert percentile(histogram, 100, 0.50) == 10
    assert percentile(histogram, 100, 0.95) == 20
    assert percentile(histogram, 100, 0.99) == 900
    assert percentile({}, 0, 0.5) == 0


def test_entry_summary_rate_and_percentiles_capped_at_the_exact_max() -> None:
    raw = entry("POST", "chat", {70: 80, 110: 20})
    raw["max_response_time"] = 104.2  # locust's histogram rounded it up to 110
    s = summarize_entry(raw)
    assert (s.requests, s.per_s, s.p50, s.p99, s.max) == (100, 10.0, 70, 104.2, 104.2)
    assert not s.is_metric
    assert summarize_entry(entry("TTFT", "chat stream", {20: 1})).is_metric


def test_load_stats_puts_requests_before_metrics(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text(json.dumps([entry("TTFT", "s", {5: 1}), entry("POST", "s", {9: 1})]))
    assert [e.type for e in load_stats(path)] == ["POST", "TTFT"]


def summary(type_: str, failures: int = 0, p95: float = 50) -> EntrySummary:
    return EntrySummary(type_, "x", 100, failures, 10.0, 10, p95, p95, p95)


def test_slo_passes_a_clean_run_and_ignores_metric_entries() -> None:
    entries = [summary("POST"), summary("TTFT", p95=10_000), summary("TOKENS/S", p95=10**6)]
    assert slo_breaches(entries, Slo(max_error_ratio=0.0, max_p95_ms=100)) == []


@pytest.mark.parametrize(
    ("entries", "slo", "expected"),
    [
        ([summary("POST", failures=1)], Slo(), "error ratio 0.0100"),
        ([summary("POST", failures=2)], Slo(max_error_ratio=0.01), "error ratio 0.0200"),
        ([summary("POST", p95=250)], Slo(max_p95_ms=200), "p95 250 ms > 200 ms"),
        ([summary("TTFT")], Slo(), "no requests"),
    ],
)
def test_slo_breaches_are_named(entries: list[EntrySummary], slo: Slo, expected: str) -> None:
    [breach] = slo_breaches(entries, slo)
    assert expected in breach


def test_error_ratio_within_the_limit_passes() -> None:
    assert slo_breaches([summary("POST", failures=1)], Slo(max_error_ratio=0.01)) == []


def test_summary_files(tmp_path: Path) -> None:
    write_summary(tmp_path, [summary("POST")], ["p95 too high"], {"users": 4})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["breaches"] == ["p95 too high"] and data["run"] == {"users": 4}
    assert "FAIL: p95 too high" in (tmp_path / "summary.md").read_text()
