"""The benchmark's command line: which workloads, systems and repeats a run gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.cli import make_bench, parse_args


def test_every_workload_runs_by_default_and_each_alone_needs_only_its_servers(
    tmp_path: Path,
) -> None:
    args = parse_args([])
    assert args.workload == ["small", "photo", "faces", "batch"]
    every = make_bench(args, tmp_path / "demo", tmp_path)
    assert every.systems() == ("engine", "floor", "facellm", "vllm")
    assert [(p.concurrency, p.requests) for p in every.photo.chat_points] == [(1, 12), (8, 16)]
    assert (every.photo.warmup, every.repeats) == (2, 3)
    faces = every.faces
    assert (faces.latency_requests, faces.concurrency, faces.throughput_requests) == (16, 8, 16)

    args = parse_args(["--workload", "photo", "--photo-concurrency", "2"])
    photo = make_bench(args, tmp_path / "demo", tmp_path)
    assert photo.workloads == ("photo",) and photo.systems() == ("facellm", "vllm")
    assert [(p.concurrency, p.requests) for p in photo.photo.chat_points] == [(2, 12)]
    assert photo.repeats == 2  # alone, server starts take most of its time

    args = parse_args(["--workload", "faces", "--face-requests", "6", "--face-concurrency", "4"])
    alone = make_bench(args, tmp_path / "demo", tmp_path)
    assert alone.workloads == ("faces",) and alone.systems() == ("facellm",)
    assert alone.repeats == 1  # a quick re-measure on one fresh server
    assert (alone.faces.latency_requests, alone.faces.concurrency) == (6, 4)
    # Listed in any order, run in one.
    order = make_bench(parse_args(["--workload", "faces", "photo", "small"]), tmp_path, tmp_path)
    assert order.workloads == ("small", "photo", "faces")
    asked = make_bench(parse_args(["--workload", "photo", "--repeats", "1"]), tmp_path, tmp_path)
    assert asked.repeats == 1


def test_an_unknown_workload_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workload", "huge"])
