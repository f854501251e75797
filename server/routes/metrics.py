"""GET /metrics: Prometheus text format (vLLM's engine series and ours)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.state import StateDep

router = APIRouter(tags=["probes"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics.")
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
