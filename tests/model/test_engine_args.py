"""FACELLM_ENGINE_ARGS: checked against vLLM's own AsyncEngineArgs fields before anything loads,
and merged into the engine's arguments. Imports vLLM (≈ 10 s, once) but starts no engine."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import pytest

import model.weights
from model.vllm_args import (
    ENGINE_OWN,
    FROM_CONFIG,
    EngineArgsError,
    UnsafeEngineArg,
    VLLMConfig,
    build_engine_args,
    check_engine_args,
)
from server.config import ConfigError, Settings
from server.engine_setup import engine_config, settings_instead
from server.startup import preflight

vllm = pytest.importorskip("vllm")


def config(**engine_args: Any) -> VLLMConfig:
    settings = Settings(served_model_name="m", engine_args=engine_args)
    return engine_config(settings, Path("/models/m"))


def check(engine_args: dict[str, Any]) -> Any:
    return check_engine_args(engine_args, settings_instead())


def test_unknown_argument_is_named_with_the_nearest_one() -> None:
    with pytest.raises(EngineArgsError, match="'max_num_batched_tokenz'") as excinfo:
        check({"max_num_batched_tokenz": 4096})
    assert "did you mean 'max_num_batched_tokens'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("key", "setting"),
    [
        ("max_model_len", "FACELLM_MAX_MODEL_LEN"),
        ("max-num-seqs", "FACELLM_MAX_NUM_SEQS"),  # kebab-case is the same argument
        ("limit_mm_per_prompt", "FACELLM_MAX_IMAGES_PER_PROMPT"),
        ("max_lora_rank", "FACELLM_MAX_LORA_RANK"),
        ("enable_lora", "FACELLM_LORA_ADAPTERS"),
        ("enable_log_requests", "logs every request"),
        ("scheduling_policy", "low priority"),
    ],
)
def test_argument_the_server_sets_is_refused_naming_the_setting(key: str, setting: str) -> None:
    with pytest.raises(EngineArgsError, match="set by the server") as excinfo:
        check({"enable_prefix_caching": True, key: 1})
    assert repr(key) in str(excinfo.value)
    assert setting in str(excinfo.value)


def test_known_arguments_reach_the_engine_args() -> None:
    args = build_engine_args(
        config(**{"max_num_batched_tokens": 1536, "kv-cache-dtype": "auto", "seed": 7})
    )
    assert isinstance(args, vllm.AsyncEngineArgs)
    assert (args.max_num_batched_tokens, args.kv_cache_dtype, args.seed) == (1536, "auto", 7)
    assert (args.model, args.max_model_len) == ("/models/m", 4096)  # the server's, untouched
    assert args.scheduling_policy == "priority"  # batch lines ask at a larger number


def test_managed_arguments_are_exactly_those_the_server_sets() -> None:
    """Every argument build_engine_args sets away from vLLM's default is refused in engine_args,
    and every refused one is a real vLLM argument: the list cannot drift from the code."""
    fields = {f.name for f in dataclasses.fields(vllm.AsyncEngineArgs)}
    managed = set(settings_instead()) | set(ENGINE_OWN)
    assert fields >= managed >= FROM_CONFIG
    odd = Settings(
        served_model_name="n",
        tensor_parallel_size=2,
        max_model_len=1234,
        max_num_seqs=3,
        gpu_memory_utilization=0.5,
        dtype="float16",
        enforce_eager=True,
        max_images_per_prompt=2,
        stream_interval=5,
        allow_runtime_lora=True,
        admin_api_key="admin",
        max_loras=2,
        max_lora_rank=64,
    )
    ours, default = build_engine_args(engine_config(odd, Path("/m"))), vllm.AsyncEngineArgs()
    changed = {n for n in fields if getattr(ours, n) != getattr(default, n)}
    assert changed <= managed, changed - managed


def test_a_config_from_elsewhere_is_checked_again() -> None:
    c = dataclasses.replace(config(), engine_args={"max_model_len": 8})
    with pytest.raises(EngineArgsError, match="'max_model_len' is set by the server"):
        build_engine_args(c)


def test_the_config_survives_pickling_for_the_api_processes() -> None:
    c = config(seed=1)
    again = pickle.loads(pickle.dumps(c))
    assert again == c and again.engine_args == {"seed": 1}
    with pytest.raises(TypeError):
        again.passed_on["max_model_len"] = 2  # type: ignore[index]


def test_config_keeps_engine_args_read_only_and_stays_hashable() -> None:
    c = config(seed=1)
    hash(c)
    with pytest.raises(TypeError):
        c.engine_args["seed"] = 2  # type: ignore[index]


def test_the_preflight_refuses_a_typo_before_resolving_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def resolve_weights(*args: object, **kwargs: object) -> Path:
        raise AssertionError("weights resolved before engine_args were checked")

    monkeypatch.setattr(model.weights, "resolve_weights", resolve_weights)
    settings = Settings(model_cache_dir=tmp_path, engine_args={"kv_cache_dtyp": "fp8"})
    with pytest.raises(ConfigError, match=r"engine_args: 'kv_cache_dtyp'.*'kv_cache_dtype'"):
        preflight(settings)


@pytest.mark.parametrize(
    "key",
    ["trust_remote_code", "trust-remote-code", "worker_cls", "logits_processors", "hf_token"],
)
def test_unsafe_arguments_are_refused_naming_them_unless_allowed(tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafeEngineArg, match="refused") as excinfo:
        check_engine_args({key: "x"}, {})
    assert repr(key) in str(excinfo.value)
    assert check_engine_args({key: "x"}, {}, allow_unsafe=True) == {key.replace("-", "_"): "x"}
    settings = Settings(model_cache_dir=tmp_path, engine_args={key: "x"})
    with pytest.raises(ConfigError, match="FACELLM_ALLOW_UNSAFE_ENGINE_ARGS"):
        preflight(settings)


@pytest.mark.parametrize(("value", "refused"), [(5, True), (9, True), (10, False), (-1, False)])
def test_max_logprobs_below_what_confidences_need_is_refused(
    tmp_path: Path, value: int, refused: bool
) -> None:
    settings = Settings(model_cache_dir=tmp_path, engine_args={"max_logprobs": value})
    if not refused:
        preflight(settings)
        return
    with pytest.raises(ConfigError, match="'max_logprobs' is") as excinfo:
        preflight(settings)
    assert "one per option" in str(excinfo.value)
