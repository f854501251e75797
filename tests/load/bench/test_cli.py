"""The benchmark's command line: which workloads, systems and repeats a run gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.bench.cli import make_bench, parse_args


def test_every_workload_runs_by_default_and_photo_alone_needs_two_servers(tmp_path: Path) -> None:
    args = parse_args([])
    assert args.workload == ["small", "photo", "batch"]
    both = make_bench(args, tmp_path / "demo", tmp_path)
    assert both.systems() == ("engine", "floor", "facellm", "vllm")
    assert [(p.concurrency, p.requests) for p in both.photo.chat_points] == [(1, 12), (8, 16)]
    assert (both.photo.face_requests, both.photo.warmup, both.repeats) == (10, 2, 3)

    args = parse_args(["--workload", "photo", "--photo-concurrency", "2", "--face-requests", "3"])
    photo = make_bench(args, tmp_path / "demo", tmp_path)
    assert photo.workloads == ("photo",) and photo.systems() == ("facellm", "vllm")
    assert [(p.concurrency, p.requests) for p in photo.photo.chat_points] == [(2, 12)]
    assert photo.repeats == 2  # alone, server starts take most of its time
    assert photo.photo.face_requests == 3
    # Listed in any order, run in one.
    order = make_bench(parse_args(["--workload", "photo", "small"]), tmp_path, tmp_path)
    assert order.workloads == ("small", "photo")
    asked = make_bench(parse_args(["--workload", "photo", "--repeats", "1"]), tmp_path, tmp_path)
    assert asked.repeats == 1


def test_an_unknown_workload_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--workload", "huge"])
