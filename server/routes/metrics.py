"""GET /metrics: Prometheus text format (vLLM's engine series and ours).

Open unless `metrics_api_key` is set; the app then includes this router behind that key.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.state import StateDep

router = APIRouter(tags=["probes"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics.")
async def metrics(state: StateDep) -> Response:
    return Response(await state.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)
