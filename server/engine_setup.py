"""The engine the settings describe: weights resolved, adapters fetched, engine arguments
checked, then vLLM's configuration, in this process or as a client of a shared engine core."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from model.engine import Adapter, Engine
from model.registry import lookup
from model.tiles import TilePlan
from server.config import ConfigError, Settings

if TYPE_CHECKING:
    from model.vllm_args import ClientSlot, VLLMConfig


def build_engine(settings: Settings, client: ClientSlot | None = None) -> Engine:
    """The real engine for these settings (vLLM, imported lazily): its own engine core, or,
    given a `client` slot, a client of the core the supervisor started."""
    from model.vllm_engine import VLLMEngine

    return VLLMEngine(vllm_config(settings, client))


def vllm_config(settings: Settings, client: ClientSlot | None = None) -> VLLMConfig:
    """What the settings decide about vLLM: weights resolved, the model directory checked,
    adapters fetched. The preflight (server/startup.py) has checked the rest."""
    from model.weights import resolve_weights

    path = resolve_weights(
        settings.model,
        cache_dir=settings.model_cache_dir,
        allow_download=settings.allow_download,
        revision=settings.model_revision,
    )
    try:
        TilePlan.from_model_dir(path)  # the engine reads it too: fail here, in one line
    except ValueError as e:
        raise ConfigError(f"model: {e}") from e
    return engine_config(settings, path, startup_adapters(settings), client)


# Settings that are vLLM engine arguments of the same name, passed on as they are: a new engine
# setting is a `Settings` field and its name here.
PASSED_ON = (
    "tensor_parallel_size",
    "max_model_len",
    "max_num_seqs",
    "gpu_memory_utilization",
    "dtype",
    "enforce_eager",
    "stream_interval",
    "max_loras",
)
# The engine arguments VLLMConfig's own fields carry, and the settings that decide them.
_DECIDED_BY: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "served_model_name": ("served_model_name",),
    "limit_mm_per_prompt": ("max_images_per_prompt",),
    "structured_outputs_config": ("structured_outputs_backend", "disable_any_whitespace"),
    "enable_lora": ("lora_adapters", "allow_runtime_lora"),
    "max_lora_rank": ("max_lora_rank",),
}


def engine_config(
    settings: Settings,
    model_path: Path,
    adapters: tuple[Adapter, ...] = (),
    client: ClientSlot | None = None,
) -> VLLMConfig:
    """The one place settings become vLLM's configuration (weights already resolved)."""
    from model.vllm_args import VLLMConfig

    return VLLMConfig(
        model_path=model_path,
        served_model_name=settings.served_model_name or served_name(settings.model),
        max_images_per_prompt=settings.max_images_per_prompt,
        structured_outputs_backend=settings.structured_outputs_backend,
        disable_any_whitespace=settings.disable_any_whitespace,
        enable_lora=bool(settings.lora_adapters) or settings.allow_runtime_lora,
        max_lora_rank=settings.max_lora_rank,
        adapters=adapters,
        passed_on={name: getattr(settings, name) for name in PASSED_ON},
        engine_args=settings.engine_args,
        client=client,
    )


def settings_instead() -> dict[str, str]:
    """Each engine argument a setting decides → the setting to use instead, as operators spell
    it (`FACELLM_MAX_MODEL_LEN (--max-model-len)`)."""
    prefix = Settings.model_config.get("env_prefix", "")
    decided = {**{name: (name,) for name in PASSED_ON}, **_DECIDED_BY}
    return {
        arg: "use "
        + " or ".join(f"{prefix}{s.upper()} (--{s.replace('_', '-')})" for s in settings)
        + " instead"
        for arg, settings in decided.items()
    }


def startup_adapters(settings: Settings) -> tuple[Adapter, ...]:
    """The configured adapters, fetched or built now, before the engine starts."""
    from model.weights import resolve_adapter

    return tuple(
        Adapter(
            name,
            resolve_adapter(
                name,
                source,
                cache_dir=settings.model_cache_dir,
                allow_download=settings.allow_download,
            ),
        )
        for name, source in settings.lora_adapters.items()
    )


def served_name(model: str) -> str:
    """The id clients see: the registry name, else the hub id or the local directory's name."""
    if (variant := lookup(model)) is not None:
        return variant.name
    return Path(model).name if Path(model).is_dir() else model
