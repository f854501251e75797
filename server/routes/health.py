"""Probes: /health (alive and engine not dead) for liveness, /ready (warm, not draining).

Both only read: the engine watchdog's verdict (`server/watchdog.py`) when there is one, and
/health asks the engine itself meanwhile; recording a verdict, which starts the exit, is the
watchdog's alone (it looks every second).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.state import StateDep
from server.watchdog import probe

router = APIRouter(tags=["probes"])


@router.get("/health", summary="Liveness: the process is up and the engine is not dead.")
async def health(state: StateDep) -> JSONResponse:
    if (verdict := await probe(state.engine, state.monitor)) is not None:
        return JSONResponse({"status": verdict.status}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/ready",
    summary="Readiness: the engine is warm and the server is not draining (with several API "
    "processes: every one of them).",
)
async def ready(state: StateDep) -> JSONResponse:
    if (verdict := state.monitor.verdict) is not None:
        return JSONResponse({"status": verdict.status}, status_code=503)
    if state.admission.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not state.ready or (state.member is not None and not state.member.all_ready()):
        return JSONResponse({"status": "not_ready"}, status_code=503)
    return JSONResponse({"status": "ready"})
