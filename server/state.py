"""What the app holds between requests, and FastAPI dependency aliases to reach it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from model.engine import Engine
from server.admission import Admission
from server.chat import ChatService
from server.config import Settings
from server.faces import FacesService
from server.metrics import Metrics
from server.watchdog import EngineMonitor

if TYPE_CHECKING:
    from server.group import Member


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    chat: ChatService
    faces: FacesService
    admission: Admission
    metrics: Metrics
    ready: bool = False
    created: int = 0
    monitor: EngineMonitor = field(default_factory=EngineMonitor)
    member: Member | None = None  # one of several API processes (server/supervisor.py)


# `async def`, though they never await: FastAPI runs plain `def` dependencies in a thread pool,
# a hand-off that costs more than the lookup on every request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.facellm
    return state


async def get_chat(request: Request) -> ChatService:
    return (await get_state(request)).chat


async def get_faces(request: Request) -> FacesService:
    return (await get_state(request)).faces


StateDep = Annotated[AppState, Depends(get_state)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
FacesDep = Annotated[FacesService, Depends(get_faces)]
