"""vLLM's LoRA admin bodies, as pydantic models."""

from __future__ import annotations

from pydantic import Field

from server.protocol.base import StrictModel


class LoadAdapterRequest(StrictModel):
    """vLLM's body for /v1/load_lora_adapter."""

    lora_name: str = Field(min_length=1, max_length=128)
    lora_path: str = Field(
        min_length=1,
        max_length=4096,
        description="A directory on the server, a hub id, or `demo-lora-<seed>`.",
    )
    load_inplace: bool = Field(False, description="Replace an adapter already of that name.")


class UnloadAdapterRequest(StrictModel):
    """vLLM's body for /v1/unload_lora_adapter."""

    lora_name: str = Field(min_length=1, max_length=128)
    lora_int_id: int | None = Field(None, description="Accepted from vLLM clients; ignored.")
