"""vLLM's engine arguments: what the server decides about the engine (`VLLMConfig`), the
operator's extra arguments checked against vLLM's own, and the `AsyncEngineArgs` built from both.
vLLM is imported lazily, as everywhere in `model/`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from model.engine import Adapter


@dataclass(frozen=True)
class VLLMConfig:
    """What the server decides about the engine; everything else stays vLLM's default unless
    `engine_args` (checked by `check_engine_args`) sets it."""

    model_path: Path
    served_model_name: str
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    max_num_seqs: int = 64
    gpu_memory_utilization: float = 0.9
    dtype: str = "bfloat16"
    enforce_eager: bool = False
    max_images_per_prompt: int = 4
    structured_outputs_backend: str = "xgrammar"
    disable_any_whitespace: bool = True
    stream_interval: int = 1
    # LoRA: on when adapters are configured or may be loaded at runtime (it sizes buffers).
    enable_lora: bool = False
    max_loras: int = 4
    max_lora_rank: int = 16
    adapters: tuple[Adapter, ...] = ()  # loaded at start
    # More AsyncEngineArgs fields, read-only; left out of the hash, since values may be dicts.
    engine_args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # One of several API processes on a shared engine core (`launch_shared_core`); None: this
    # process starts an engine core of its own.
    client: ClientSlot | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen all the way down: a read-only copy, whatever mapping it was given.
        object.__setattr__(self, "engine_args", MappingProxyType(dict(self.engine_args)))

    # Pickled for the API processes the supervisor spawns; a read-only mapping is not picklable.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "engine_args": dict(self.engine_args)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()


@dataclass(frozen=True)
class ClientSlot:
    """An API process's place on a shared engine core: vLLM's client addresses (ZMQ sockets and
    queues that a spawned process inherits), how many clients share the core, and which this is.
    """

    addresses: dict[str, Any]
    count: int
    index: int


class EngineArgsError(ValueError):
    """An engine argument vLLM does not have, or one the server sets itself."""


# The engine arguments `build_engine_args` sets from the server's settings, and those settings:
# `engine_args` may not set them a second time.
_FROM_SETTINGS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "served_model_name": ("served_model_name",),
    "tensor_parallel_size": ("tensor_parallel_size",),
    "max_model_len": ("max_model_len",),
    "max_num_seqs": ("max_num_seqs",),
    "gpu_memory_utilization": ("gpu_memory_utilization",),
    "dtype": ("dtype",),
    "enforce_eager": ("enforce_eager",),
    "limit_mm_per_prompt": ("max_images_per_prompt",),
    "structured_outputs_config": ("structured_outputs_backend", "disable_any_whitespace"),
    "stream_interval": ("stream_interval",),
    "enable_lora": ("lora_adapters", "allow_runtime_lora"),
    "max_loras": ("max_loras",),
    "max_lora_rank": ("max_lora_rank",),
}
# Ones the server keeps to itself, and why.
_SERVER_OWN: dict[str, str] = {
    "enable_log_requests": "the server logs every request itself",
    "disable_log_stats": "/metrics and the backlog gauge read vLLM's stats",
}
MANAGED_ENGINE_ARGS = frozenset(_FROM_SETTINGS) | frozenset(_SERVER_OWN)


def check_engine_args(engine_args: Mapping[str, Any]) -> Mapping[str, Any]:
    """`engine_args` keyed as AsyncEngineArgs names its fields (kebab-case read as snake_case),
    read-only. An EngineArgsError names the first that vLLM does not know (with the nearest it
    does) or that the server sets itself (with the setting to use)."""
    if not engine_args:
        return MappingProxyType({})  # nothing to check: spare the import
    known = _engine_arg_names()
    checked: dict[str, Any] = {}
    for name, value in engine_args.items():
        key = name.replace("-", "_")
        if key in MANAGED_ENGINE_ARGS:
            raise EngineArgsError(f"{name!r} is set by the server: {_instead(key)}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EngineArgsError(f"{name!r} is not a vLLM engine argument{hint}")
        checked[key] = value
    return MappingProxyType(checked)


def _engine_arg_names() -> frozenset[str]:
    # ≈ 7 s on a first import (torch, vLLM's configs), which start() would pay anyway.
    from vllm import AsyncEngineArgs

    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs) if f.name[0] != "_")


def _instead(key: str) -> str:
    if key in _SERVER_OWN:
        return _SERVER_OWN[key]
    flags = [f"FACELLM_{s.upper()} (--{s.replace('_', '-')})" for s in _FROM_SETTINGS[key]]
    return f"use {' or '.join(flags)} instead"


def build_engine_args(c: VLLMConfig) -> Any:
    """The AsyncEngineArgs for `c`: the server's settings, then the checked `engine_args`."""
    from vllm import AsyncEngineArgs
    from vllm.config import StructuredOutputsConfig

    return AsyncEngineArgs(
        model=str(c.model_path),
        served_model_name=[c.served_model_name],
        tensor_parallel_size=c.tensor_parallel_size,
        max_model_len=c.max_model_len,
        max_num_seqs=c.max_num_seqs,
        gpu_memory_utilization=c.gpu_memory_utilization,
        dtype=c.dtype,  # type: ignore[arg-type]  # validated by vLLM
        enforce_eager=c.enforce_eager,
        limit_mm_per_prompt={"image": c.max_images_per_prompt},
        structured_outputs_config=StructuredOutputsConfig(
            backend=c.structured_outputs_backend,  # type: ignore[arg-type]
            disable_any_whitespace=c.disable_any_whitespace,
        ),
        enable_log_requests=False,
        stream_interval=c.stream_interval,
        enable_lora=c.enable_lora,
        max_loras=c.max_loras,
        max_lora_rank=c.max_lora_rank,  # type: ignore[arg-type]  # checked by Settings
        **check_engine_args(c.engine_args),  # again: a VLLMConfig may come from elsewhere
    )


def engine_config(c: VLLMConfig, clients: int, rank: int) -> Any:
    """vLLM's engine config as `clients` API processes see it (`rank` -1: the launcher's)."""
    from vllm.usage.usage_lib import UsageContext

    args = build_engine_args(c)
    args._api_process_count, args._api_process_rank = clients, rank
    return args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
