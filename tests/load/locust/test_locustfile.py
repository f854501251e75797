"""The locust scenarios (loadtests/locust/locustfile.py), run short by `python -m loadtests.locust`
against the real server (real vLLM engine, demo model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess

pytestmark = [pytest.mark.load, pytest.mark.e2e]

REPORTS = ("stats.json", "stats_stats.csv", "report.html", "summary.json", "summary.md")


def test_short_load_run_passes_and_records_ttft(real_server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "load"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "loadtests.locust", "--host", real_server.base_url),
            *("--users", "4", "--duration", "10s", "--max-error-ratio", "0", "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + (out / "locust.log").read_text()[-3000:]
    for name in REPORTS:
        assert (out / name).is_file(), name

    summary = json.loads((out / "summary.json").read_text())
    entries = {(e["type"], e["name"]): e for e in summary["entries"]}
    assert summary["breaches"] == []
    assert all(e["failures"] == 0 for e in entries.values())
    assert entries["POST", "chat"]["requests"] > 0
    stream, ttft = entries["POST", "chat stream"], entries["TTFT", "chat stream"]
    assert ttft["requests"] == stream["requests"] > 0
    assert 0 < ttft["p50"] <= stream["p50"]  # the first token comes before the last
    assert entries["TOKENS/S", "chat stream"]["p50"] > 0
    faces_on = "faces:0" not in summary["run"]["mix"]
    assert (("POST", "faces") in entries) == faces_on
