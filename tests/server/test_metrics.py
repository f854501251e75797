"""Metrics (server/metrics.py): /metrics renders off the event loop, once per `SCRAPE_CACHE_S`
however many scrape it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server import metrics as metrics_module


class Probe(Collector):
    """A series that records which thread collected it, and how often; optionally slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.threads: list[int] = []
        self.delay_s = delay_s

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay_s)  # a slow registry; on the loop, this would stall it
        yield GaugeMetricFamily("facellm_test_probe", "test probe", value=len(self.threads))

    def describe(self) -> Iterator[Metric]:  # else registering it would collect it once
        yield GaugeMetricFamily("facellm_test_probe", "test probe")


def probe(app: FastAPI, delay_s: float = 0.0) -> Probe:
    collector = Probe(delay_s)
    app.state.facellm.metrics.registry.register(collector)
    return collector


async def test_scrape_renders_in_a_worker_thread(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Before: generate_latest ran on the event loop, between two tokens of every stream."""
    seen = probe(app)
    r = await client.get("/metrics")
    assert r.status_code == 200 and "facellm_test_probe 1.0" in r.text
    assert seen.threads and threading.get_ident() not in seen.threads


async def test_scrapes_within_the_cache_window_share_one_rendering(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "SCRAPE_CACHE_S", 0.2)
    seen = probe(app)
    first = (await client.get("/metrics")).text
    assert (await client.get("/metrics")).text == first
    assert len(seen.threads) == 1
    await asyncio.sleep(0.3)  # past the window: values are read again
    assert "facellm_test_probe 2.0" in (await client.get("/metrics")).text


async def test_concurrent_scrapes_wait_for_the_same_rendering(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seen = probe(app, delay_s=0.2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    try:
        responses = await asyncio.gather(*(client.get("/metrics") for _ in range(5)))
    finally:
        tick.cancel()
    assert {r.status_code for r in responses} == {200}
    assert len(seen.threads) == 1
    assert ticks >= 5  # the loop kept running while the registry took 0.2 s
