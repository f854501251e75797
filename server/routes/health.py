"""Probes: /health (alive and engine not dead) for liveness, /ready (warm, not draining)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from model.engine import EngineDeadError
from server.state import StateDep

router = APIRouter(tags=["probes"])


@router.get("/health", summary="Liveness: the process is up and the engine is not dead.")
async def health(state: StateDep) -> JSONResponse:
    try:
        await state.engine.check_health()
    except EngineDeadError:
        state.engine_dead = True
        return JSONResponse({"status": "engine_dead"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: the engine is warm and the server is not draining.")
async def ready(state: StateDep) -> JSONResponse:
    if state.admission.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not state.ready or state.engine_dead:
        return JSONResponse({"status": "not_ready"}, status_code=503)
    return JSONResponse({"status": "ready"})
