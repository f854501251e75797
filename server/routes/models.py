"""GET /v1/models: the one model this replica serves."""

from __future__ import annotations

from fastapi import APIRouter

from server.protocol import ModelCard, ModelList
from server.state import StateDep

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: StateDep) -> ModelList:
    card = ModelCard(
        id=state.engine.model_name,
        created=state.created,
        max_model_len=state.settings.max_model_len,
    )
    return ModelList(data=[card])
