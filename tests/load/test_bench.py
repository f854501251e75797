from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from loadtests.bench import Bench, Managed, make_bench, parse_args, server_command, system_env
from loadtests.bench_load import plan_points
from loadtests.bench_photo import plan_photo
from loadtests.cpu import NoisePolicy


def bench(tmp_path: Path) -> Bench:
    return Bench(
        model_dir=tmp_path / "demo",
        points=plan_points([1], 1, 1),
        repeats=1,
        max_tokens=16,
        image_size=64,
        stream_interval=4,
        warmup=1,
        logs=tmp_path,
        noise=NoisePolicy(own_groups=frozenset()),
        workloads=("small", "photo"),
        photo=plan_photo([1], 1, 1, 0),
    )


def test_every_server_gets_the_same_engine_settings(tmp_path: Path) -> None:
    ours_cmd, ours, ours_ready = server_command("facellm", bench(tmp_path), 8130)
    vllm_cmd, vllm, vllm_ready = server_command("vllm", bench(tmp_path), 8131)
    floor_cmd, floor, floor_ready = server_command("floor", bench(tmp_path), 8132)
    assert floor_cmd[1:3] == ["-m", "loadtests.bench_floor"] and floor_ready == "/health"
    assert ours_cmd[1:] == ["-m", "server"] and ours_ready == "/ready"
    assert vllm_cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and vllm_ready == "/health"

    def flag(name: str, cmd: list[str] = vllm_cmd) -> str:
        return cmd[cmd.index(name) + 1]

    for name in ("--max-model-len", "--max-num-seqs", "--stream-interval"):
        assert flag(name, floor_cmd) == flag(name)
    assert flag("--model-dir", floor_cmd) == flag("--model")
    images = json.loads(flag("--limit-mm-per-prompt"))["image"]
    assert int(flag("--max-images", floor_cmd)) == images

    assert ours["FACELLM_MODEL"] == flag("--model") == str(tmp_path / "demo")
    assert ours["FACELLM_MAX_MODEL_LEN"] == flag("--max-model-len")
    assert ours["FACELLM_MAX_NUM_SEQS"] == flag("--max-num-seqs")
    assert ours["FACELLM_ENFORCE_EAGER"] == "true" and "--enforce-eager" in vllm_cmd
    assert ours["FACELLM_STREAM_INTERVAL"] == flag("--stream-interval") == "4"
    assert '"disable_any_whitespace": true' in flag("--structured-outputs-config")
    for env in (ours, vllm, floor):
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_HOST_IP"] == "127.0.0.1"
    assert system_env()["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_stopping_a_managed_process_ends_its_whole_group(tmp_path: Path) -> None:
    sleeper = "import time; time.sleep(60)"
    spawn = f"subprocess.Popen([sys.executable, '-c', {sleeper!r}])"
    child = f"import subprocess, sys, time; {spawn}; {sleeper}"
    proc = Managed([sys.executable, "-c", child], tmp_path / "p.log", dict(os.environ))
    proc.stop()
    assert proc.proc.returncode is not None
    try:
        os.killpg(proc.proc.pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError("a member of the process group survived")


def test_both_workloads_run_by_default_and_photo_alone_needs_two_servers(tmp_path: Path) -> None:
    args = parse_args([])
    assert args.workload == ["small", "photo"]
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
