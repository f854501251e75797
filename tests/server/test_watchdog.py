"""The engine watchdog (server/watchdog.py) on the fake engine: verdicts, 503s, no false alarms
(the process that exits on a verdict: test_main.py).

Budgets are small here (exit 0.5 s: the watchdog looks every 0.05 s), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx

from model.engine import EngineDeadError, GenerationChunk, GenerationRequest
from model.fake_engine import FakeEngine
from server.watchdog import ExitCode
from tests.conftest import MakeClient, until
from tests.images import astronaut, data_url, image_message

CHAT = "/v1/chat/completions"
BOUND_S = 30.0  # the longest any wait below may take (a loaded machine is slow)
QUIET_S = 0.5  # ten watchdog looks (exit budget 0.5 s → one look every 0.05 s)


def watch(**overrides: float) -> dict[str, float]:
    """The watchdog's settings for these tests, as `make_client` takes them."""
    return {"engine_dead_exit_s": 0.5, "engine_stall_timeout_s": 0.2, **overrides}


def text_body(**extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **extra}


async def assert_probes_fail(client: httpx.AsyncClient, status: str) -> None:
    for probe in ("/health", "/ready"):
        r = await client.get(probe)
        assert (r.status_code, r.json()) == (503, {"status": status}), probe


def assert_engine_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "engine_unavailable"


# --- a dead engine -----------------------------------------------------------------------------


async def test_dead_engine_gets_a_verdict_without_any_request(make_client: MakeClient) -> None:
    engine = FakeEngine()
    async with make_client(engine, **watch()) as client:
        assert (await client.get("/health")).status_code == 200
        engine.dead = True
        await until(lambda: client.state.monitor.verdict is not None)
        assert client.state.monitor.verdict == ExitCode.ENGINE_DEAD
        await assert_probes_fail(client, "engine_dead")
        assert_engine_unavailable(await client.post(CHAT, json=text_body()))


async def test_generation_that_finds_the_engine_dead_trips_at_once(make_client: MakeClient) -> None:
    class DyingEngine(FakeEngine):
        async def _chunks(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
            async for chunk in super()._chunks(request):
                yield chunk
                raise EngineDeadError("gone")

    # A 10 s budget: the watchdog looks once a second, far later than the asserts below.
    async with make_client(DyingEngine(), **watch(engine_dead_exit_s=10)) as client:
        assert_engine_unavailable(await client.post(CHAT, json=text_body()))
        assert client.state.monitor.verdict == ExitCode.ENGINE_DEAD
        await assert_probes_fail(client, "engine_dead")


async def test_dead_engine_fails_liveness_and_requests_get_503(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    fake_engine.dead = True
    assert (await client.get("/health")).status_code == 503
    r = await client.post(CHAT, json=text_body())
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"


# --- a stalled engine --------------------------------------------------------------------------


async def test_stall_answers_the_waiting_request_503_then_refuses_new_ones(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine()
    async with make_client(engine, **watch()) as client:
        engine.stall()
        start = time.monotonic()
        r = await asyncio.wait_for(client.post(CHAT, json=text_body()), BOUND_S)
        assert_engine_unavailable(r)
        assert 0.2 <= time.monotonic() - start < BOUND_S
        assert client.state.monitor.verdict == ExitCode.ENGINE_STALLED
        await assert_probes_fail(client, "engine_stalled")
        asked = len(engine.requests)
        assert_engine_unavailable(await client.post(CHAT, json=text_body()))
        assert len(engine.requests) == asked  # refused before it reached the engine


async def test_stall_mid_stream_ends_the_stream_in_band(make_client: MakeClient) -> None:
    class StallingEngine(FakeEngine):
        async def _chunks(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
            async for chunk in super()._chunks(request):
                yield chunk
                if chunk.completion_tokens == 2:
                    self.stall()

    engine = StallingEngine(responder=lambda _: "one two three four five six")
    async with make_client(engine, **watch()) as client:
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
        assert client.state.monitor.verdict == ExitCode.ENGINE_STALLED


async def test_slow_but_steady_progress_is_not_a_stall(make_client: MakeClient) -> None:
    # 30 chunks 0.05 s apart: 1.5 s in all, three stall timeouts, never 0.5 s without a chunk.
    engine = FakeEngine(step_delay_s=0.05, responder=lambda _: " ".join(["w"] * 30))
    async with make_client(engine, **watch(engine_stall_timeout_s=0.5)) as client:
        r = await client.post(CHAT, json=text_body(max_tokens=30))
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == 30
        assert client.state.monitor.verdict is None


async def test_an_idle_server_never_stalls_even_on_a_stalled_engine(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine()
    async with make_client(engine, **watch(engine_stall_timeout_s=0.05)) as client:
        assert (await client.post(CHAT, json=text_body())).status_code == 200
        await asyncio.sleep(QUIET_S)  # idle since that request: ten stall timeouts
        engine.stall()  # stalled, but nobody waits for it
        await asyncio.sleep(QUIET_S)
        assert client.state.monitor.verdict is None
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200


async def test_requests_still_decoding_images_are_not_waiting_for_the_engine(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine()
    async with make_client(engine, **watch(engine_stall_timeout_s=0.05)) as client:
        body = {"messages": image_message(data_url(astronaut())), "max_tokens": 4}
        assert (await client.post(CHAT, json=body)).status_code == 200  # first-use costs paid
        budget = client.state.chat.images.budget
        held = await budget.acquire(budget.capacity, timeout_s=1)  # decodes must wait for it
        request = asyncio.ensure_future(client.post(CHAT, json=body))
        try:
            await until(lambda: budget.waiting == 1 or request.done())
            assert not request.done(), request.result().text
            await asyncio.sleep(QUIET_S)
            assert client.state.monitor.verdict is None
            assert len(engine.requests) == 1  # the first one only
        finally:
            budget.release(held)
        r = await asyncio.wait_for(request, BOUND_S)
        assert r.status_code == 200
        assert client.state.monitor.verdict is None


async def test_stall_timeout_zero_turns_the_stall_watch_off(make_client: MakeClient) -> None:
    engine = FakeEngine()
    async with make_client(
        engine, **watch(engine_stall_timeout_s=0, request_timeout_s=0.5)
    ) as client:
        engine.stall()
        r = await asyncio.wait_for(client.post(CHAT, json=text_body()), BOUND_S)
        assert r.status_code == 504  # the request's own deadline, not the watchdog
        assert client.state.monitor.verdict is None
        engine.resume()
        assert (await client.post(CHAT, json=text_body())).status_code == 200
