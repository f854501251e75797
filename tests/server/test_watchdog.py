"""The engine watchdog (server/watchdog.py) on the fake engine: verdicts, 503s, no false alarms.

Budgets are small here (exit 0.5 s: the watchdog looks every 0.05 s), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

import server.__main__ as entry
from model.engine import EngineDeadError, GenerationChunk, GenerationRequest
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from server.state import AppState
from server.watchdog import ExitCode
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"
BOUND_S = 30.0  # the longest any wait below may take (a loaded machine is slow)
QUIET_S = 0.5  # ten watchdog looks (exit budget 0.5 s → one look every 0.05 s)


def make_settings(tmp_path: Path, **overrides: float) -> Settings:
    values: dict[str, float] = {"engine_dead_exit_s": 0.5, "engine_stall_timeout_s": 0.2}
    return Settings(model_cache_dir=tmp_path, **{**values, **overrides})  # type: ignore[arg-type]


def text_body(**extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **extra}


@asynccontextmanager
async def serve(
    settings: Settings, engine: FakeEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, app.state.facellm


async def until(condition: Callable[[], bool], timeout_s: float = BOUND_S) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_s} s")


async def assert_probes_fail(client: httpx.AsyncClient, status: str) -> None:
    for probe in ("/health", "/ready"):
        r = await client.get(probe)
        assert (r.status_code, r.json()) == (503, {"status": status}), probe


def assert_engine_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "engine_unavailable"


# --- a dead engine -----------------------------------------------------------------------------


async def test_dead_engine_gets_a_verdict_without_any_request(tmp_path: Path) -> None:
    engine = FakeEngine()
    async with serve(make_settings(tmp_path), engine) as (client, state):
        assert (await client.get("/health")).status_code == 200
        engine.dead = True
        await until(lambda: state.monitor.verdict is not None)
        assert state.monitor.verdict == ExitCode.ENGINE_DEAD
        await assert_probes_fail(client, "engine_dead")
        assert_engine_unavailable(await client.post(CHAT, json=text_body()))


async def test_generation_that_finds_the_engine_dead_trips_at_once(tmp_path: Path) -> None:
    class DyingEngine(FakeEngine):
        async def _chunks(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
            async for chunk in super()._chunks(request):
                yield chunk
                raise EngineDeadError("gone")

    # A 10 s budget: the watchdog looks once a second, far later than the asserts below.
    async with serve(make_settings(tmp_path, engine_dead_exit_s=10), DyingEngine()) as (
        client,
        state,
    ):
        assert_engine_unavailable(await client.post(CHAT, json=text_body()))
        assert state.monitor.verdict == ExitCode.ENGINE_DEAD
        await assert_probes_fail(client, "engine_dead")


# --- a stalled engine --------------------------------------------------------------------------


async def test_stall_answers_the_waiting_request_503_then_refuses_new_ones(tmp_path: Path) -> None:
    engine = FakeEngine()
    async with serve(make_settings(tmp_path), engine) as (client, state):
        engine.stall()
        start = time.monotonic()
        r = await asyncio.wait_for(client.post(CHAT, json=text_body()), BOUND_S)
        assert_engine_unavailable(r)
        assert 0.2 <= time.monotonic() - start < BOUND_S
        assert state.monitor.verdict == ExitCode.ENGINE_STALLED
        await assert_probes_fail(client, "engine_stalled")
        asked = len(engine.requests)
        assert_engine_unavailable(await client.post(CHAT, json=text_body()))
        assert len(engine.requests) == asked  # refused before it reached the engine


async def test_stall_mid_stream_ends_the_stream_in_band(tmp_path: Path) -> None:
    class StallingEngine(FakeEngine):
        async def _chunks(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
            async for chunk in super()._chunks(request):
                yield chunk
                if chunk.completion_tokens == 2:
                    self.stall()

    engine = StallingEngine(responder=lambda _: "one two three four five six")
    async with serve(make_settings(tmp_path), engine) as (client, state):
        r = await asyncio.wait_for(client.post(CHAT, json=text_body(stream=True)), BOUND_S)
        assert r.status_code == 200
        frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        assert json.loads(frames[-2])["error"]["code"] == "engine_unavailable"
        text = "".join(
            choice["delta"].get("content") or ""
            for frame in frames[:-2]
            for choice in json.loads(frame)["choices"]
        )
        assert text == "one two"
        assert state.monitor.verdict == ExitCode.ENGINE_STALLED


async def test_slow_but_steady_progress_is_not_a_stall(tmp_path: Path) -> None:
    # 30 chunks 0.05 s apart: 1.5 s in all, three stall timeouts, never 0.5 s without a chunk.
    engine = FakeEngine(step_delay_s=0.05, responder=lambda _: " ".join(["w"] * 30))
    settings = make_settings(tmp_path, engine_stall_timeout_s=0.5)
    async with serve(settings, engine) as (client, state):
        r = await client.post(CHAT, json=text_body(max_tokens=30))
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == 30
        assert state.monitor.verdict is None


async def test_an_idle_server_never_stalls_even_on_a_stalled_engine(tmp_path: Path) -> None:
    engine = FakeEngine()
    async with serve(make_settings(tmp_path, engine_stall_timeout_s=0.05), engine) as (
        client,
        state,
    ):
        assert (await client.post(CHAT, json=text_body())).status_code == 200
        await asyncio.sleep(QUIET_S)  # idle since that request: ten stall timeouts
        engine.stall()  # stalled, but nobody waits for it
        await asyncio.sleep(QUIET_S)
        assert state.monitor.verdict is None
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_requests_still_decoding_images_are_not_waiting_for_the_engine(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    async with serve(make_settings(tmp_path, engine_stall_timeout_s=0.05), engine) as (
        client,
        state,
    ):
        body = {"messages": image_message(data_url(astronaut())), "max_tokens": 4}
        assert (await client.post(CHAT, json=body)).status_code == 200  # first-use costs paid
        budget = state.chat.images.budget
        held = await budget.acquire(budget.capacity, timeout_s=1)  # decodes must wait for it
        request = asyncio.ensure_future(client.post(CHAT, json=body))
        try:
            await until(lambda: budget.waiting == 1 or request.done())
            assert not request.done(), request.result().text
            await asyncio.sleep(QUIET_S)
            assert state.monitor.verdict is None
            assert len(engine.requests) == 1  # the first one only
        finally:
            budget.release(held)
        r = await asyncio.wait_for(request, BOUND_S)
        assert r.status_code == 200
        assert state.monitor.verdict is None


async def test_stall_timeout_zero_turns_the_stall_watch_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine_stall_timeout_s=0, request_timeout_s=0.5)
    engine = FakeEngine()
    async with serve(settings, engine) as (client, state):
        engine.stall()
        r = await asyncio.wait_for(client.post(CHAT, json=text_body()), BOUND_S)
        assert r.status_code == 504  # the request's own deadline, not the watchdog
        assert state.monitor.verdict is None
        engine.resume()
        assert (await client.post(CHAT, json=text_body())).status_code == 200


# --- the process side: server/__main__.py ------------------------------------------------------


async def test_the_server_stops_on_a_verdict_and_exits_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guards: list[tuple[int, float]] = []
    monkeypatch.setattr(entry, "arm_exit_guard", lambda code, s: guards.append((code, s)))
    engine = FakeEngine()
    settings = make_settings(tmp_path, engine_dead_exit_s=5)
    app = create_app(settings, engine)
    server = entry.DrainingServer(uvicorn.Config(app), app, 30, settings.engine_dead_exit_s)
    assert server.exit_code == ExitCode.STARTUP_FAILURE  # not started
    async with app.router.lifespan_context(app):
        server.started = True
        assert await server.on_tick(1) is False
        engine.dead = True
        state: AppState = app.state.facellm
        await until(lambda: state.monitor.verdict is not None)
        assert await server.on_tick(2) is True
        assert server.exit_code == ExitCode.ENGINE_DEAD == 3
        [(code, after_s)] = guards
        assert code == 3 and 4 < after_s <= 5
        assert server.config.timeout_graceful_shutdown == 2  # half of what is left, in seconds


def test_uvicorn_failing_to_bind_is_a_startup_failure(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path), FakeEngine())
    server = entry.DrainingServer(uvicorn.Config(app), app, 30)

    def cannot_bind() -> None:
        raise SystemExit(uvicorn.config.STARTUP_FAILURE)

    server.run = cannot_bind  # type: ignore[method-assign]
    assert entry.serve(server) == ExitCode.STARTUP_FAILURE == 1


def test_the_exit_guard_kills_the_engine_processes() -> None:
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    child.start()
    try:
        entry.kill_engine_processes()
        child.join(BOUND_S)
        assert child.exitcode == -signal.SIGKILL
    finally:
        if child.is_alive():
            child.kill()
            child.join(BOUND_S)
