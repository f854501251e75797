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
    `engine_args` (checked by `check_engine_args`) sets it. No field has a default: the server's
    settings hold the defaults, and pass every value on."""

    model_path: Path
    served_model_name: str
    max_images_per_prompt: int
    structured_outputs_backend: str
    disable_any_whitespace: bool
    # LoRA: on when adapters are configured or may be loaded at runtime (it sizes buffers).
    enable_lora: bool
    max_lora_rank: int
    adapters: tuple[Adapter, ...]  # loaded at start
    # Engine arguments the server's settings decide, as vLLM names them, passed on untouched
    # (`max_model_len`…): a new one needs no field here.
    passed_on: Mapping[str, Any] = field(hash=False)
    # The operator's extra AsyncEngineArgs fields. Both read-only; left out of the hash, since
    # values may be dicts.
    engine_args: Mapping[str, Any] = field(hash=False)
    # One of several API processes on a shared engine core (`launch_shared_core`); None: this
    # process starts an engine core of its own.
    client: ClientSlot | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen all the way down: read-only copies, whatever mappings it was given.
        for name in _MAPPINGS:
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    # Pickled for the API processes the supervisor spawns; a read-only mapping is not picklable.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **{name: dict(getattr(self, name)) for name in _MAPPINGS}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()


_MAPPINGS = ("passed_on", "engine_args")


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


class UnsafeEngineArg(EngineArgsError):
    """An engine argument that runs code or carries a secret, refused unless allowed."""


# The engine arguments `build_engine_args` sets from the config's own fields.
FROM_CONFIG = frozenset(
    {
        "model",
        "served_model_name",
        "limit_mm_per_prompt",
        "structured_outputs_config",
        "enable_lora",
        "max_lora_rank",
    }
)
# Ones the engine keeps to itself, and why.
ENGINE_OWN: dict[str, str] = {
    "enable_log_requests": "the server logs every request itself",
    "disable_log_stats": "/metrics and the backlog gauge read vLLM's stats",
    "scheduling_policy": "batch lines run at low priority: the policy is always `priority`",
}
# Ones that run code the weights or the config name, or carry a secret (which the chart would put
# in a ConfigMap): refused unless the operator opts in.
UNSAFE_ENGINE_ARGS: dict[str, str] = {
    "trust_remote_code": "runs Python code shipped with the weights",
    "code_revision": "picks the remote code trust_remote_code would run",
    "hf_token": "is a secret: give it as the HF_TOKEN environment variable from a Secret",
    "worker_cls": "is a class path: imports and runs code named in the config",
    "worker_extension_cls": "is a class path: imports and runs code named in the config",
    "scheduler_cls": "is a class path: imports and runs code named in the config",
    "logits_processors": "are class paths: import and run code named in the config",
    "distributed_executor_backend": "may name a class path to import",
    "model_class_overrides": "are class paths: import and run code named in the config",
    "io_processor_plugin": "names a plugin module to import",
    "reasoning_parser_plugin": "names a plugin module to import",
    "allowed_local_media_path": "lets prompts read local files",
}


def check_engine_args(
    engine_args: Mapping[str, Any], managed: Mapping[str, str], allow_unsafe: bool = False
) -> Mapping[str, Any]:
    """`engine_args` keyed as AsyncEngineArgs names its fields (kebab-case read as snake_case),
    read-only. An EngineArgsError names the first that vLLM does not know (with the nearest it
    does), that the server sets itself (`managed` maps those to what to use instead: the caller
    knows its settings' names; `ENGINE_OWN` says why the rest are the engine's), or that is
    unsafe (UNSAFE_ENGINE_ARGS), unless `allow_unsafe`."""
    if not engine_args:
        return MappingProxyType({})  # nothing to check: spare the import
    refused = {**managed, **ENGINE_OWN}
    known = _engine_arg_names()
    checked: dict[str, Any] = {}
    for name, value in engine_args.items():
        key = name.replace("-", "_")
        if key in refused or key in FROM_CONFIG:
            why = refused.get(key, "a setting decides it")
            raise EngineArgsError(f"{name!r} is set by the server: {why}")
        if key in UNSAFE_ENGINE_ARGS and not allow_unsafe:
            raise UnsafeEngineArg(f"{name!r} is refused: it {UNSAFE_ENGINE_ARGS[key]}")
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


def build_engine_args(c: VLLMConfig) -> Any:
    """The AsyncEngineArgs for `c`: the server's settings, then the checked `engine_args`."""
    from vllm import AsyncEngineArgs
    from vllm.config import StructuredOutputsConfig

    # Checked again: a VLLMConfig may come from elsewhere than the server's settings.
    # The server's preflight already applied its safety policy (allow_unsafe there).
    managed = dict.fromkeys(c.passed_on, "a setting decides it")
    extra = check_engine_args(c.engine_args, managed, allow_unsafe=True)
    return AsyncEngineArgs(
        model=str(c.model_path),
        served_model_name=[c.served_model_name],
        limit_mm_per_prompt={"image": c.max_images_per_prompt},
        structured_outputs_config=StructuredOutputsConfig(
            backend=c.structured_outputs_backend,  # type: ignore[arg-type]
            disable_any_whitespace=c.disable_any_whitespace,
        ),
        enable_log_requests=False,
        scheduling_policy="priority",  # batch lines yield to interactive requests
        enable_lora=c.enable_lora,
        max_lora_rank=c.max_lora_rank,  # type: ignore[arg-type]  # checked by Settings
        **c.passed_on,
        **extra,
    )


def engine_config(c: VLLMConfig, clients: int, rank: int) -> Any:
    """vLLM's engine config as `clients` API processes see it (`rank` -1: the launcher's)."""
    from vllm.usage.usage_lib import UsageContext

    args = build_engine_args(c)
    args._api_process_count, args._api_process_rank = clients, rank
    return args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
