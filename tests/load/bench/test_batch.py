"""The batch workload's report: its figures and whether each goal of issue 24 is met (the
measuring itself runs in `make bench`, against a real server)."""

from __future__ import annotations

from typing import Any

import pytest

from loadtests.bench.batch import markdown
from loadtests.bench.cli import parse_args


def result(p50_ratio: float, throughput_ratio: float) -> dict[str, Any]:
    return {
        "lines": 200,
        "idle_p50_ms": 40.0,
        "busy_p50_ms": 40.0 * p50_ratio,
        "p50_ratio": p50_ratio,
        "probes_while_running": 30,
        "lines_during_probes": 3,
        "client_req_per_s": {1: 5.0, 8: 14.0},
        "client_best_concurrency": 8,
        "batch_lines_per_s": 14.0 * throughput_ratio,
        "throughput_ratio": throughput_ratio,
    }


@pytest.mark.parametrize(
    ("p50", "rate", "verdicts"),
    [(1.1, 0.9, ("met", "met")), (1.5, 0.5, ("NOT met", "NOT met")), (1.2, 0.8, ("met", "met"))],
)
def test_report_says_whether_each_goal_is_met(
    p50: float, rate: float, verdicts: tuple[str, str]
) -> None:
    text = markdown(result(p50, rate))
    p50_line, _, rate_line = (line for line in text.splitlines() if line.startswith("- "))
    assert f"ratio {p50:.2f} (goal ≤ 1.2: {verdicts[0]};" in p50_line
    assert "30 probes sent while the batch still ran, 3 lines finished meanwhile" in p50_line
    assert f"ratio {rate:.2f} to the client's best (goal ≥ 0.8: {verdicts[1]})" in rate_line


def test_batch_is_a_workload_of_make_bench() -> None:
    assert "batch" in parse_args([]).workload
    args = parse_args(["--workload", "batch", "--batch-lines", "50"])
    assert (args.workload, args.batch_lines) == (["batch"], 50)
