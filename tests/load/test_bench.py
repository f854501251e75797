from __future__ import annotations

import os
import sys
from pathlib import Path

from loadtests.bench import Bench, Managed, server_command, system_env
from loadtests.bench_load import plan_points
from loadtests.cpu import NoisePolicy


def bench(tmp_path: Path) -> Bench:
    return Bench(
        model_dir=tmp_path / "demo",
        points=plan_points([1], 1, 1),
        repeats=1,
        max_tokens=16,
        image_size=64,
        warmup=1,
        logs=tmp_path,
        noise=NoisePolicy(own_groups=frozenset()),
    )


def test_both_servers_get_the_same_engine_settings(tmp_path: Path) -> None:
    ours_cmd, ours, ours_ready = server_command("facellm", bench(tmp_path), 8130)
    vllm_cmd, vllm, vllm_ready = server_command("vllm", bench(tmp_path), 8131)
    assert ours_cmd[1:] == ["-m", "server"] and ours_ready == "/ready"
    assert vllm_cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and vllm_ready == "/health"

    def flag(name: str) -> str:
        return vllm_cmd[vllm_cmd.index(name) + 1]

    assert ours["FACELLM_MODEL"] == flag("--model") == str(tmp_path / "demo")
    assert ours["FACELLM_MAX_MODEL_LEN"] == flag("--max-model-len")
    assert ours["FACELLM_MAX_NUM_SEQS"] == flag("--max-num-seqs")
    assert ours["FACELLM_ENFORCE_EAGER"] == "true" and "--enforce-eager" in vllm_cmd
    assert '"disable_any_whitespace": true' in flag("--structured-outputs-config")
    for env in (ours, vllm):
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
