"""FaceXBench's file format, end to end: the eval tool against the real server and demo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.facexbench import run_facexbench
from tests.conftest import ServerProcess
from tests.evals.fxbench_data import build_benchmark

pytestmark = [pytest.mark.e2e, pytest.mark.engine]


def test_mini_benchmark_runs_and_reports(real_server: ServerProcess, tmp_path: Path) -> None:
    data = build_benchmark(tmp_path / "benchmark")
    out = tmp_path / "results"
    run = run_facexbench(
        data, f"{real_server.base_url}/v1", out=out, concurrency=4, progress=False, max_retries=0
    )
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().count("|") > 10
    assert report["model"] == "demo"
    answered = [o for o in run.outcomes.values() if o.error is None]
    # Structured output constrains every answer to an option letter: nothing lost to parsing.
    assert answered and all(o.answer in {"A", "B", "C", "D"} for o in answered)
    assert report["invalid_answers"] == [] and report["missing"] == []
    # The only refusals are questions with more images than the server admits per request.
    assert all("400" in e["error"] for e in report["errors"]), report["errors"]
    assert report["overall"]["total"] == len(run.outcomes)
