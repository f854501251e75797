"""The app factory. The lifespan owns the engine: started before serving, shut down after."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from model.attributes import AttributePolicy
from model.detect import make_detector
from model.engine import Adapter, Engine
from model.registry import lookup
from server.admission import Admission
from server.answers import CONFIDENCE_LOGPROBS
from server.auth import admin_keys, load_keys, metrics_keys
from server.chat import ChatLimits, ChatService
from server.config import ConfigError, Settings
from server.errors import register_error_handlers
from server.faces import FaceOptions, FacesService
from server.media import ImageLoader, MediaPolicy, PixelBudget, default_pixel_budget
from server.metrics import Metrics
from server.middleware import Admit, ClientClocks, KeyGate, RequestContext, RouteTable
from server.routes import adapters, chat, faces, health, metrics, models
from server.state import AppState
from server.watchdog import EngineMonitor, Watchdog, shutdown_engine

if TYPE_CHECKING:
    from model.vllm_engine import ClientSlot, VLLMConfig
    from server.supervisor import Member

log = logging.getLogger(__name__)


def build_engine(settings: Settings, client: ClientSlot | None = None) -> Engine:
    """The real engine for these settings (vLLM, imported lazily): its own engine core, or,
    given a `client` slot, a client of the core the supervisor started."""
    from model.vllm_engine import VLLMEngine

    return VLLMEngine(vllm_config(settings, client))


def vllm_config(settings: Settings, client: ClientSlot | None = None) -> VLLMConfig:
    """What the settings decide about vLLM: weights resolved, adapters fetched, args checked."""
    from model.vllm_engine import VLLMConfig
    from model.weights import resolve_weights

    engine_args = checked_engine_args(settings)  # a typo fails now, not after weights load
    path = resolve_weights(
        settings.model,
        cache_dir=settings.model_cache_dir,
        allow_download=settings.allow_download,
        revision=settings.model_revision,
    )
    return VLLMConfig(
        model_path=path,
        served_model_name=settings.served_model_name or served_name(settings.model),
        tensor_parallel_size=settings.tensor_parallel_size,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        dtype=settings.dtype,
        enforce_eager=settings.enforce_eager,
        max_images_per_prompt=settings.max_images_per_prompt,
        structured_outputs_backend=settings.structured_outputs_backend,
        disable_any_whitespace=settings.disable_any_whitespace,
        stream_interval=settings.stream_interval,
        engine_args=engine_args,
        enable_lora=bool(settings.lora_adapters) or settings.allow_runtime_lora,
        max_loras=settings.max_loras,
        max_lora_rank=settings.max_lora_rank,
        adapters=startup_adapters(settings),
        client=client,
    )


def startup_adapters(settings: Settings) -> tuple[Adapter, ...]:
    """The configured adapters, fetched or built now, before the engine starts."""
    from model.weights import resolve_adapter

    return tuple(
        Adapter(
            name,
            resolve_adapter(
                name,
                source,
                cache_dir=settings.model_cache_dir,
                allow_download=settings.allow_download,
            ),
        )
        for name, source in settings.lora_adapters.items()
    )


def checked_engine_args(settings: Settings) -> Mapping[str, Any]:
    """settings.engine_args as vLLM names them; a ConfigError names one vLLM does not know, that
    a setting already decides, that is unsafe, or a max_logprobs confidences cannot work with."""
    from model.vllm_engine import EngineArgsError, check_engine_args

    try:
        args = check_engine_args(settings.engine_args, settings.allow_unsafe_engine_args)
    except EngineArgsError as e:
        raise ConfigError(f"engine_args: {e}") from e
    max_logprobs = args.get("max_logprobs")
    if isinstance(max_logprobs, int) and 0 <= max_logprobs < CONFIDENCE_LOGPROBS:
        raise ConfigError(
            f"engine_args: 'max_logprobs' is {max_logprobs}; confidences ask for "
            f"{CONFIDENCE_LOGPROBS} (CONFIDENCE_LOGPROBS): give at least that, or leave it unset"
        )
    return args


def served_name(model: str) -> str:
    """The id clients see: the registry name, else the hub id or the local directory's name."""
    if (variant := lookup(model)) is not None:
        return variant.name
    return Path(model).name if Path(model).is_dir() else model


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
    faces_service = FacesService(
        engine,
        monitor,
        AttributePolicy.from_names(settings.attributes),
        make_detector(settings.face_detector, settings.yunet_model_path),
        images,
        FaceOptions(
            max_faces=settings.max_faces,
            request_timeout_s=settings.request_timeout_s,
            face_tiles=settings.face_tiles,
            min_confidence=settings.min_confidence,
            confidence_passes=settings.confidence_passes,
        ),
        metrics,
    )
    return AppState(
        settings=settings,
        engine=engine,
        chat=ChatService(engine, monitor, chat_limits, images),
        faces=faces_service,
        admission=admission,
        metrics=metrics,
        created=int(time.time()),
        monitor=monitor,
    )


def create_app(
    settings: Settings, engine: Engine | None = None, member: Member | None = None
) -> FastAPI:
    """Build the app; without an engine, the real one from settings (as a client of the shared
    engine core when this is one `member` of several API processes)."""
    eng = engine or build_engine(settings, member.client if member else None)
    app_metrics = Metrics(eng.model_name)
    admission = Admission(
        settings.max_concurrent_requests, work_budget=settings.admission_work_tokens
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # trust_env=False: image fetches never go through proxies named in the environment.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http_client:
            state = build_state(settings, eng, http_client, app_metrics, admission)
            app_metrics.bind(
                in_flight=lambda: admission.in_flight,
                pre_engine=lambda: admission.pre_engine,
                engine_waiting=engine_waiting(eng, member),
                decodes_waiting=lambda: state.chat.images.budget.waiting,
                pixels_reserved=lambda: state.chat.images.budget.reserved,
            )
            state.member = member
            app.state.facellm = state
            await eng.start()
            watchdog = Watchdog(
                eng, state.monitor, settings.engine_dead_exit_s, settings.engine_stall_timeout_s
            )
            watchdog.start()
            pushing = asyncio.create_task(app_metrics.keep_live()) if member else None
            try:
                state.ready = True
                if member is not None:
                    member.mark(ready=True)
                log.info("ready", extra={"model": eng.model_name})
                yield
            finally:
                state.ready = False
                if member is not None:
                    member.mark(ready=False)
                if pushing is not None:
                    pushing.cancel()
                await watchdog.stop()
                await shutdown_engine(eng, state.monitor, settings.engine_dead_exit_s)

    app = FastAPI(
        title="FaceLLM Serve",
        version="0.1.0",
        description="OpenAI-compatible serving of FaceLLM face-understanding models, with "
        "structured, schema-valid face attributes.",
        lifespan=lifespan,
    )
    register_error_handlers(app)
    user_keys = load_keys(settings)
    if not user_keys:
        log.warning(
            "auth is off: no API key is set (FACELLM_API_KEYS or FACELLM_API_KEYS_FILE), so "
            "anyone who reaches this port can use the model"
        )
    generation = generation_paths()
    admitted = [Depends(Admit(admission, app_metrics, generation))]
    for router in (chat.router, faces.router):
        app.include_router(router, dependencies=admitted)
    app.include_router(models.router)
    keys = {"/metrics": metrics_keys(settings)}
    if settings.allow_runtime_lora:  # Settings made sure an admin key is set
        app.include_router(adapters.router)
        admin = admin_keys(settings, user_keys)
        keys |= dict.fromkeys(paths_of(adapters.router), admin)
    app.include_router(health.router)
    app.include_router(metrics.router)
    known = frozenset(route.path for route in app.routes if isinstance(route, Route))
    routes = RouteTable(known=known, generation=generation)
    docs = {app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    open_paths = frozenset(paths_of(health.router)) | {path for path in docs if path}
    app.add_middleware(KeyGate, default=user_keys, keys=keys, open_paths=open_paths)
    clocks = ClientClocks(
        body_idle_s=settings.body_idle_timeout_s,
        body_total_s=settings.body_timeout_s,
        write_s=settings.write_timeout_s,
        response_s=settings.request_timeout_s,
    )
    app.add_middleware(
        RequestContext,
        metrics=app_metrics,
        max_body_bytes=settings.max_body_bytes,
        clocks=clocks,
        routes=routes,
        process=None if member is None else member.index,
    )
    return app


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
