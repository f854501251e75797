"""The four systems' commands: the same engine settings, each in its own words."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.faces import FacesPlan
from loadtests.bench.load import plan_points
from loadtests.bench.photo import plan_photo
from loadtests.bench.plan import Bench
from loadtests.bench.systems import server_command, system_env


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
        photo=plan_photo([1], 1, 0),
        faces=FacesPlan(latency_requests=2, concurrency=2, throughput_requests=2, warmup=0),
    )


def test_every_server_gets_the_same_engine_settings(tmp_path: Path) -> None:
    ours_cmd, ours, ours_ready = server_command("facellm", bench(tmp_path), 8130)
    vllm_cmd, vllm, vllm_ready = server_command("vllm", bench(tmp_path), 8131)
    floor_cmd, floor, floor_ready = server_command("floor", bench(tmp_path), 8132)
    assert floor_cmd[1:3] == ["-m", "loadtests.bench.floor"] and floor_ready == "/health"
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
