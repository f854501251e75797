"""Prometheus metrics: vLLM's own `vllm:*` series (in-process engine) plus ours, `facellm_*`.

Ours live in a per-app registry so tests can build many apps; /metrics concatenates it with the
default registry, where the in-process vLLM engine registers its series.

Rendering walks every series (≈ 500 lines, 56 KB with the demo model; more with real traffic's
label sets), in pure Python: a scrape renders in a worker thread, not on the event loop that
streams tokens, and one rendering serves every scrape for `SCRAPE_CACHE_S`, so however many
scrapers (or a flood at an open /metrics) cost at most one rendering that often.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from server.batch.records import BATCH_STATUSES

LIVE_PUSH_S = 0.5  # with several API processes: how stale another process's live gauges may be
SCRAPE_CACHE_S = 1.0  # well under any scrape interval; values are at most this stale
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DECODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._scraped: tuple[float, bytes] | None = None  # (loop time, exposition)
        self._rendering: asyncio.Future[bytes] | None = None
        r = self.registry
        self.model_name = model_name
        self._live: dict[Gauge, Callable[[], float]] = {}
        self.http_requests = Counter(
            "facellm_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "facellm_http_request_duration_seconds",
            "Time to the full response (to headers for streams) by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.image_decode = Histogram(
            "facellm_image_decode_seconds",
            "Time to validate and decode one image.",
            buckets=DECODE_BUCKETS,
            registry=r,
        )
        self.face_detection = Histogram(
            "facellm_face_detection_seconds",
            "Face detection per /v1/faces/analyze image (the detector alone, on its working copy).",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.faces_per_image = Histogram(
            "facellm_faces_per_image",
            "Faces analysed per /v1/faces/analyze image.",
            buckets=(0, 1, 2, 3, 4, 6, 8, 16, 32, 64),
            registry=r,
        )
        self.model_requests = Counter(
            "facellm_model_requests",
            "Requests handed to the engine, by route and model (the base model or a LoRA "
            "adapter's name).",
            ["route", "model"],
            registry=r,
        )
        self.abstentions = Counter(
            "facellm_abstentions",
            "Face attributes answered with their abstain value because the model's confidence "
            "fell below min_confidence.",
            ["attribute"],
            registry=r,
        )
        self.admission_rejections = Counter(
            "facellm_admission_rejections",
            "Requests refused with 429 at the admission limit.",
            registry=r,
        )
        self.validation_failures = Counter(
            "facellm_answer_validation_failures",
            "Structured answers from the engine that failed server-side validation.",
            registry=r,
        )
        self._in_flight = Gauge(
            "facellm_requests_in_flight",
            "Admitted requests not yet finished.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._pre_engine = Gauge(
            "facellm_requests_pre_engine",
            "Admitted requests still decoding images or detecting "
            "faces: a queue the engine's own waiting count cannot see.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._decode_waiting = Gauge(
            "facellm_image_decodes_waiting",
            "Image decodes waiting for room in the decoded-pixel budget.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._pixels_reserved = Gauge(
            "facellm_image_pixels_reserved",
            "Decoded pixels reserved by image decodes in progress (see image_pixel_budget).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._backlog = Gauge(
            "facellm_backlog_requests",
            "The scaling signal: engine waiting requests plus our pre-engine queue.",
            ["model_name"],
            registry=r,
            multiprocess_mode="livesum",
        )

        self.batch_lines = Counter(
            "facellm_batch_lines",
            "Batch lines answered by this server, by outcome: completed (2xx) or failed.",
            ["status"],
            registry=r,
        )
        self.batch_statuses = BATCH_STATUSES
        self.batches = Gauge(
            "facellm_batches",
            "Batches in the batch store by status (every replica sharing it sees them all).",
            ["status"],
            registry=r,
            multiprocess_mode="max",
        )

    def bind(
        self,
        in_flight: Callable[[], float],
        pre_engine: Callable[[], float],
        engine_waiting: Callable[[], float],
        decodes_waiting: Callable[[], float],
        pixels_reserved: Callable[[], float],
    ) -> None:
        """Gauges read live state at scrape time, so they can never drift from it. With several
        API processes, a scrape reads the others' values from shared files: each process writes
        its own there every `LIVE_PUSH_S` (`keep_live`), and they are summed."""
        self._live = {
            self._in_flight: in_flight,
            self._pre_engine: pre_engine,
            self._decode_waiting: decodes_waiting,
            self._pixels_reserved: pixels_reserved,
            self._backlog.labels(self.model_name): lambda: engine_waiting() + pre_engine(),
        }
        if not multiprocess():
            for gauge, read in self._live.items():
                gauge.set_function(read)

    async def keep_live(self) -> None:
        """With several API processes: push this one's live values until cancelled."""
        while True:
            for gauge, read in self._live.items():
                gauge.set(read())
            await asyncio.sleep(LIVE_PUSH_S)

    def count_model(self, route: str, adapter: str | None) -> None:
        self.model_requests.labels(route, adapter or self.model_name).inc()

    def exposition(self) -> bytes:
        if multiprocess():  # every process's series, ours and vLLM's, from the shared files
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(REGISTRY) + generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """The exposition, rendered off the event loop and reused for `SCRAPE_CACHE_S`; scrapes
        that arrive while it renders share that one rendering."""
        loop = asyncio.get_running_loop()
        if self._scraped is not None and loop.time() - self._scraped[0] < SCRAPE_CACHE_S:
            return self._scraped[1]
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(self._render(loop))
        # Shielded: a scraper that goes away must not cancel the rendering others wait for.
        return await asyncio.shield(self._rendering)

    async def _render(self, loop: asyncio.AbstractEventLoop) -> bytes:
        try:
            started = loop.time()
            body = await asyncio.to_thread(self.exposition)
            self._scraped = (started, body)  # its age counts from before the values were read
            return body
        finally:
            self._rendering = None


def multiprocess() -> bool:
    """Whether this is one of several API processes (the supervisor set the shared directory)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ
