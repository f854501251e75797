"""The app factory. The lifespan owns the engine: started before serving, shut down after."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from model.attributes import AttributePolicy
from model.detect import FaceDetector
from model.detectors import make_detector
from model.engine import Engine
from server.admission import Admission
from server.auth import admin_keys, load_keys, metrics_keys
from server.batch.setup import start_batches
from server.chat import ChatLimits, ChatService
from server.config import Settings
from server.errors import register_error_handlers
from server.faces import FaceOptions, FacesService
from server.group import Member
from server.media import ImageLoader, MediaPolicy, PixelBudget, default_pixel_budget
from server.metrics import Metrics
from server.middleware import Admit, ClientClocks, KeyGate, RequestContext, RouteTable
from server.routes import (
    adapters,
    batches,
    chat,
    faces,
    files,
    health,
    metrics,
    models,
    playground,
)
from server.state import AppState
from server.watchdog import EngineMonitor, Watchdog, shutdown_engine

log = logging.getLogger(__name__)

UPLOAD_OVERHEAD = 64 * 1024  # multipart headers and the purpose field, around the file


def build_state(
    settings: Settings,
    engine: Engine,
    http_client: httpx.AsyncClient,
    metrics: Metrics,
    admission: Admission,
) -> AppState:
    policy = MediaPolicy.from_settings(settings)
    budget = PixelBudget(
        settings.image_pixel_budget or default_pixel_budget(floor=policy.max_image_pixels)
    )
    images = ImageLoader(policy, metrics, budget, settings.request_timeout_s, http_client)
    chat_limits = ChatLimits(
        max_messages=settings.max_messages,
        max_text_chars=settings.max_text_chars,
        max_images=settings.max_images_per_prompt,
        max_tokens_limit=settings.max_tokens_limit,
        default_max_tokens=settings.default_max_tokens,
        max_n=settings.max_n,
        request_timeout_s=settings.request_timeout_s,
        max_tiles=settings.max_tiles,
    )
    monitor = EngineMonitor()  # the watchdog's verdicts; requests report progress to it
    return AppState(
        settings=settings,
        engine=engine,
        chat=ChatService(engine, monitor, chat_limits, images),
        faces=faces_service(settings, engine, monitor, images, metrics),
        admission=admission,
        metrics=metrics,
        created=int(time.time()),
        monitor=monitor,
    )


def faces_service(
    settings: Settings,
    engine: Engine,
    monitor: EngineMonitor,
    images: ImageLoader,
    metrics: Metrics,
) -> FacesService:
    options = FaceOptions(
        max_faces=settings.max_faces,
        request_timeout_s=settings.request_timeout_s,
        face_tiles=settings.face_tiles,
        min_confidence=settings.min_confidence,
    )
    policy = AttributePolicy.from_names(settings.attributes)
    detector = face_detector(settings)
    return FacesService(engine, monitor, policy, detector, images, options, metrics)


def face_detector(settings: Settings) -> FaceDetector:
    """The face detector the settings describe (the preflight builds one too, to check them)."""
    return make_detector(
        settings.face_detector,
        settings.face_detector_model,
        settings.face_score_threshold,
        settings.face_detect_side,
    )


def create_app(settings: Settings, engine: Engine, member: Member | None = None) -> FastAPI:
    """Build the app over `engine`, started and stopped by the app's lifespan; `member`: one of
    several API processes over a shared engine core."""
    app_metrics = Metrics(engine.model_name)
    admission = Admission(
        settings.max_concurrent_requests, work_budget=settings.admission_work_tokens
    )
    app = FastAPI(
        title="FaceLLM Serve",
        version="0.1.0",
        description="OpenAI-compatible serving of FaceLLM face-understanding models, with "
        "structured, schema-valid face attributes.",
        lifespan=lifespan(settings, engine, app_metrics, admission, member),
    )
    register_error_handlers(app)
    open_paths = include_routers(app, settings, admission, app_metrics)
    add_middleware(app, settings, app_metrics, member, open_paths)
    return app


def lifespan(
    settings: Settings,
    engine: Engine,
    app_metrics: Metrics,
    admission: Admission,
    member: Member | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app holds, built, and the engine and its watchdog started, before serving;
    all stopped after."""

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        # trust_env=False: image fetches never go through proxies named in the environment.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http_client:
            state = build_state(settings, engine, http_client, app_metrics, admission)
            app_metrics.bind(
                in_flight=lambda: admission.in_flight,
                pre_engine=lambda: admission.pre_engine,
                engine_waiting=engine_waiting(engine, member),
                decodes_waiting=lambda: state.chat.images.budget.waiting,
                pixels_reserved=lambda: state.chat.images.budget.reserved,
            )
            state.member = member
            app.state.facellm = state
            await engine.start()
            watchdog = Watchdog(
                engine, state.monitor, settings.engine_dead_exit_s, settings.engine_stall_timeout_s
            )
            watchdog.start()
            pushing = asyncio.create_task(app_metrics.keep_live()) if member else None
            app.state.batch = None
            if settings.batch_enabled:  # bulk work, run at low priority beside the routes
                services = (state.chat, state.faces)
                keyed = bool(load_keys(settings))
                app.state.batch = await start_batches(
                    settings, services, engine, admission, app_metrics, keyed
                )
            try:
                state.ready = True
                if member is not None:
                    member.mark(ready=True)
                log.info("ready", extra={"model": engine.model_name})
                yield
            finally:
                state.ready = False
                if member is not None:
                    member.mark(ready=False)
                if pushing is not None:
                    pushing.cancel()
                if app.state.batch is not None:  # its unfinished lines go back to the store
                    await app.state.batch.stop()
                await watchdog.stop()
                await shutdown_engine(engine, state.monitor, settings.engine_dead_exit_s)

    return serving


def include_routers(
    app: FastAPI, settings: Settings, admission: Admission, app_metrics: Metrics
) -> frozenset[str]:
    """The routes, generation ones admitted; returns the paths open without a key (probes, API
    docs, the playground: its API calls carry the key)."""
    admitted = [Depends(Admit(admission, app_metrics, generation_paths()))]
    for router in (chat.router, faces.router):
        app.include_router(router, dependencies=admitted)
    app.include_router(models.router)
    if settings.batch_enabled:
        app.include_router(files.router)
        app.include_router(batches.router)
    if settings.allow_runtime_lora:  # Settings made sure an admin key is set
        app.include_router(adapters.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    docs = {app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    open_paths = set(paths_of(health.router)) | {path for path in docs if path}
    if settings.playground:
        page = playground.build_router()
        app.include_router(page)
        open_paths |= set(paths_of(page))
    return frozenset(open_paths)


def add_middleware(
    app: FastAPI,
    settings: Settings,
    app_metrics: Metrics,
    member: Member | None,
    open_paths: frozenset[str],
) -> None:
    """Keys checked on the head, inside the request context (id, deadline, clocks, body cap,
    metrics). Every path takes the API keys but the open ones and those with keys of their own
    (metrics, admin): a new route is protected without having to remember it."""
    user_keys = load_keys(settings)
    if not user_keys:
        log.warning(
            "auth is off: no API key is set (FACELLM_API_KEYS or FACELLM_API_KEYS_FILE), so "
            "anyone who reaches this port can use the model"
        )
    keys = {"/metrics": metrics_keys(settings)}
    if settings.allow_runtime_lora:
        keys |= dict.fromkeys(paths_of(adapters.router), admin_keys(settings, user_keys))
    app.add_middleware(KeyGate, default=user_keys, keys=keys, open_paths=open_paths)
    clocks = ClientClocks(
        body_idle_s=settings.body_idle_timeout_s,
        body_total_s=settings.body_timeout_s,
        write_s=settings.write_timeout_s,
        response_s=settings.request_timeout_s,
    )
    known = frozenset(route.path for route in app.routes if isinstance(route, Route))
    app.add_middleware(
        RequestContext,
        metrics=app_metrics,
        max_body_bytes=settings.max_body_bytes,
        # Batch input files stream to storage under their own cap.
        body_caps={"/v1/files": settings.batch_max_file_bytes + UPLOAD_OVERHEAD},
        clocks=clocks,
        routes=RouteTable(known=known, generation=generation_paths()),
        process=None if member is None else member.index,
    )


def generation_paths() -> frozenset[str]:
    """The routes that put work on the engine, and are admitted: the POST routes of chat and
    faces."""
    return frozenset(
        route.path
        for router in (chat.router, faces.router)
        for route in router.routes
        if isinstance(route, APIRoute) and "POST" in route.methods
    )


def paths_of(router: APIRouter) -> list[str]:
    return [route.path for route in router.routes if isinstance(route, Route)]


def engine_waiting(engine: Engine, member: Member | None) -> Callable[[], float]:
    """The engine's waiting requests, for the backlog gauge. With several API processes the
    engine core sends its scheduler's counts to the first only, so only it adds them (the gauge
    is summed over processes)."""
    if member is not None and member.index != 0:
        return lambda: 0.0
    return lambda: engine.stats().waiting
