"""GET /v1/models: the base model, then each LoRA adapter served over it (with `parent`)."""

from __future__ import annotations

from fastapi import APIRouter

from server.protocol import ModelCard, ModelList
from server.state import StateDep

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: StateDep) -> ModelList:
    base = state.engine.model_name
    max_model_len = state.settings.max_model_len
    cards = [ModelCard(id=base, created=state.created, max_model_len=max_model_len)]
    cards += [
        ModelCard(id=adapter.name, created=state.created, max_model_len=max_model_len, parent=base)
        for adapter in state.engine.adapters
    ]
    return ModelList(data=cards)
