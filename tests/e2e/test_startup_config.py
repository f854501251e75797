"""Real processes: a bad setting stops `python -m server` at once (exit 1, one log line, no engine);
a config file and its engine arguments reach the real vLLM engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, start_server

pytestmark = pytest.mark.e2e


def run_server(tmp_path: Path, **env: str) -> tuple[int, str, float]:
    """`python -m server` that must exit by itself: its exit code, output and run time."""
    return run_servers({"": (tmp_path, env)})[""]


def run_servers(cases: dict[str, tuple[Path, dict[str, str]]]) -> dict[str, tuple[int, str, float]]:
    """Several such runs at once, each with its own directory and settings, by name: those that
    check engine arguments each pay vLLM's import (≈ 10 s), which overlaps."""
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = {name: pool.submit(_run, *case) for name, case in cases.items()}
        return {name: run.result() for name, run in runs.items()}


def _run(tmp_path: Path, env: dict[str, str]) -> tuple[int, str, float]:
    settings = {
        "FACELLM_PORT": str(free_port()),
        "FACELLM_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "VLLM_HOST_IP": "127.0.0.1",
        **env,
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


# Engine arguments refused before any weights or engine, and the words that name why.
REFUSED_ENGINE_ARGS = {
    '{"max_num_batched_tokenz": 4096}': (
        "'max_num_batched_tokenz' is not a vLLM engine argument "
        "(did you mean 'max_num_batched_tokens'?)"
    ),
    '{"trust_remote_code": true}': "'trust_remote_code' is refused",
    '{"worker_cls": "evil.Worker"}': "'worker_cls' is refused",
    '{"max_logprobs": 5}': "'max_logprobs' is 5",
}


@pytest.fixture(scope="module")
def refused_engine_args(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[int, str, float, Path]]:
    """Each of REFUSED_ENGINE_ARGS run at once: exit code, output, run time, and its directory."""
    dirs = {args: tmp_path_factory.mktemp("refused") for args in REFUSED_ENGINE_ARGS}
    runs = run_servers({args: (d, {"FACELLM_ENGINE_ARGS": args}) for args, d in dirs.items()})
    return {args: (*run, dirs[args]) for args, run in runs.items()}


def last_log_message(output: str) -> str:
    message: str = json.loads(output.strip().splitlines()[-1])["msg"]
    return message


@pytest.mark.parametrize("engine_args", list(REFUSED_ENGINE_ARGS))
def test_refused_engine_args_exit_1_naming_them_before_any_weights_or_engine(
    refused_engine_args: dict[str, tuple[int, str, float, Path]], engine_args: str
) -> None:
    code, output, elapsed, tmp_path = refused_engine_args[engine_args]
    assert code == 1, output
    assert REFUSED_ENGINE_ARGS[engine_args] in last_log_message(output)
    assert "Traceback" not in output
    # Checked before the weights: the demo model was never built, no engine started. The time
    # is vLLM's import (≈ 10 s on 2 cores, four at once here), which a start pays anyway.
    assert not (tmp_path / "cache").exists()
    assert "Initializing a V1 LLM engine" not in output
    assert elapsed < 90  # loose (2 shared cores): the proof that nothing loaded is above


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FACELLM_MAX_LORA_RANK": "4"}, "max_lora_rank must be one of"),
        ({"FACELLM_CONFIG": "{dir}/facellm.yaml"}, "unknown setting 'max_num_seq'"),
        ({"FACELLM_API_KEYS_FILE": "{dir}/keys"}, "holds no API key"),
        (  # misspelt, it would leave auth off without a word
            {"FACELLM_API_KEY": "k"},
            "FACELLM_API_KEY is not a setting; did you mean FACELLM_API_KEYS?",
        ),
    ],
    ids=["environment", "file", "preflight", "unknown-variable"],
)
def test_bad_setting_exits_1_with_one_line(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    (tmp_path / "facellm.yaml").write_text("max_num_seq: 4\n")
    (tmp_path / "keys").write_text("# no key yet\n")  # a Secret mounted blank
    env = {name: value.format(dir=tmp_path) for name, value in env.items()}
    code, output, elapsed = run_server(tmp_path, **env)
    assert code == 1, output
    assert output.strip().count("\n") == 0, output  # one line: no traceback
    assert last_log_message(output).startswith("invalid settings: ")
    assert expected in last_log_message(output)
    assert not (tmp_path / "cache").exists()  # before any weights: the demo model lives there
    assert elapsed < 20


@pytest.mark.engine
def test_config_file_and_engine_args_reach_the_engine(tmp_path: Path) -> None:
    """One real start: the file names the model and carries an engine argument; vLLM's own
    startup log shows the argument's value (its default here would be 2048)."""
    config = tmp_path / "facellm.yaml"
    config.write_text(
        "served-model-name: from-config-file\nengine_args:\n  max_num_batched_tokens: 1536\n"
    )
    server = start_server(tmp_path / "server.log", config=str(config))
    try:
        models = httpx.get(f"{server.base_url}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]][:1] == ["from-config-file"]
        assert "max_num_batched_tokens=1536" in server.logs()
    finally:
        assert server.stop() == 0


def test_an_adapter_that_is_not_there_exits_1_naming_it(tmp_path: Path) -> None:
    code, output, _ = run_server(tmp_path, FACELLM_LORA_ADAPTERS='{"retail": "/no/such/adapter"}')
    assert code == 1, output
    message = last_log_message(output)
    assert "LoRA adapter 'retail'" in message and "/no/such/adapter" in message
    assert "Traceback" not in output
    assert "Initializing a V1 LLM engine" not in output
