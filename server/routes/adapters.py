"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: vLLM's admin endpoints, same bodies.

Included only with `allow_runtime_lora`, behind `admin_api_key` (never a client's key): what a
server answers with is the operator's call. A request already in the engine keeps the adapter it
started with.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from model.engine import Adapter, AdapterError, UnknownAdapter
from model.weights import WeightsNotFound, resolve_adapter
from server.errors import ERROR_RESPONSES, InvalidRequest, NotFound, quoted
from server.protocol import LoadAdapterRequest, UnloadAdapterRequest
from server.state import StateDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
async def load_lora_adapter(body: LoadAdapterRequest, state: StateDep) -> PlainTextResponse:
    engine, name, settings = state.engine, body.lora_name, state.settings
    try:
        path = await asyncio.to_thread(  # a hub id may download
            resolve_adapter,
            name,
            body.lora_path,
            cache_dir=settings.model_cache_dir,
            allow_download=settings.allow_download,
        )
        if body.load_inplace and name in {a.name for a in engine.adapters}:
            await engine.unload_adapter(name)
        await engine.load_adapter(Adapter(name, path))
    except (WeightsNotFound, AdapterError) as e:
        log.warning("adapter %s not loaded: %s", name, e)
        # Our own messages (what was tried, which limit): the operator's input, not internals.
        raise InvalidRequest(
            f"LoRA adapter {quoted(name)} was not loaded: {e}",
            param="lora_path",
            code="adapter_not_loaded",
        ) from None
    log.info("adapter loaded at runtime", extra={"adapter": name})
    return PlainTextResponse(f"Success: LoRA adapter {quoted(name)} added successfully.")


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
async def unload_lora_adapter(body: UnloadAdapterRequest, state: StateDep) -> PlainTextResponse:
    name = body.lora_name
    try:
        await state.engine.unload_adapter(name)
    except UnknownAdapter:
        raise NotFound(
            f"The LoRA adapter {quoted(name)} cannot be found.",
            param="lora_name",
            code="model_not_found",
        ) from None
    log.info("adapter unloaded at runtime", extra={"adapter": name})
    return PlainTextResponse(f"Success: LoRA adapter {quoted(name)} removed successfully.")
