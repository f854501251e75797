"""The front-only benchmark, briefly: real server processes over the fake engine at N=1 and N=2.
It prints figures; how they compare is for the README, not an assertion (timing on shared CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.bench import front
from tests.conftest import free_port


def test_it_runs_both_group_sizes_and_prints_figures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port, cache = str(free_port()), str(tmp_path)
    sizes = ["--api-processes", "1", "2", "--duration", "1", "--concurrency", "4"]
    front.main([*sizes, "--port", port, "--cache-dir", cache])
    printed = json.loads(capsys.readouterr().out)
    runs = printed["runs"]
    assert [r["api_processes"] for r in runs] == [1, 2]
    assert all(r["requests"] > 0 and r["req_per_s"] > 0 for r in runs)
    assert printed["summary"]["1"]["vs_first"] == 1.0
