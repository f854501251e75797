"""Fixtures for the FaceXBench evaluation tests (data builders live in fxbench_data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evals.fxbench_data import build_benchmark


@pytest.fixture
def benchmark_dir(tmp_path: Path) -> Path:
    return build_benchmark(tmp_path / "benchmark")
