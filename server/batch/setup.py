"""The Batch API's parts, built from the settings and started with the app."""

from __future__ import annotations

import asyncio
from pathlib import Path

from model.engine import Engine
from server.admission import Admission
from server.batch.execute import LineExecutor
from server.batch.runner import BatchRunner, RunnerOptions
from server.batch.service import BatchLimits, BatchService
from server.batch.sqlite import sqlite_store
from server.batch.store import Store
from server.batch.upload import UploadLimits
from server.chat import ChatService
from server.config import Settings
from server.faces import FacesService
from server.metrics import Metrics


def batch_dir(settings: Settings) -> Path:
    return settings.batch_dir or settings.model_cache_dir / "batch"


def open_store(settings: Settings) -> Store:
    if settings.batch_database_url is not None:
        from server.batch.postgres import postgres_store  # imports the driver

        return postgres_store(settings.batch_database_url.get_secret_value())
    return sqlite_store(batch_dir(settings))


async def start_batches(
    settings: Settings,
    services: tuple[ChatService, FacesService],
    engine: Engine,
    admission: Admission,
    metrics: Metrics,
    keys_required: bool,
) -> BatchService:
    """The store opened and the runner started; `BatchService.stop` undoes both."""
    store = await asyncio.to_thread(open_store, settings)
    options = RunnerOptions(
        concurrency=settings.batch_concurrency,
        max_lines_per_s=settings.batch_max_lines_per_s,
        lease_s=settings.batch_lease_s,
        max_line_bytes=settings.max_body_bytes,  # a line is one request: the live cap
        max_lines=settings.batch_max_file_lines,
        retention_s=settings.batch_retention_s,
        idle_s=settings.batch_idle_s,
        preempt=settings.batch_preempt,
    )
    runner = BatchRunner(
        store,
        LineExecutor(*services),
        options,
        # Interactive requests are the only ones admission counts; batch lines never pass it.
        interactive=lambda: admission.in_flight > 0,
        # Queued in the engine (batch lines' own requests too): a new line would only wait.
        engine_queued=lambda: engine.stats().waiting > 0,
        # Draining, or the engine found dead (the process is on its way out): claim nothing.
        draining=lambda: admission.draining or services[0].monitor.verdict is not None,
        metrics=metrics,
    )
    await runner.start()
    limits = BatchLimits(
        UploadLimits(settings.batch_max_file_bytes, settings.batch_max_file_lines),
        expiry_s=settings.batch_expiry_s,
        retention_s=settings.batch_retention_s,
    )
    return BatchService(store, runner, limits, keys_required)
