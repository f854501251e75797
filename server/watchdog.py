"""Fail fast when the engine dies or stalls, so that a supervisor restarts the process.

A server whose engine is gone can answer nothing useful, yet while its process lives, `docker run
--restart`, systemd and a liveness probe with a long period leave it alone, and the load balancer
keeps sending it traffic. So an engine found dead, or alive but making no progress while requests
wait for it, gets a verdict here: `/health` and `/ready` turn 503 at once, requests waiting for the
engine get their 503 at once, new ones too, and `server/serving.py` stops serving and exits with
the verdict's code within `engine_dead_exit_s`.

Progress is what requests see: `run_generation` asks `EngineMonitor.next_chunk` for every chunk,
which costs a set insert, a set removal and a clock read. Only requests waiting for their next
chunk count as work; a request decoding images has not reached the engine yet, and one whose
client reads slowly is waiting for the client, not for the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from enum import IntEnum

from model.engine import Engine, EngineDeadError, GenerationChunk

log = logging.getLogger(__name__)

# A health check that takes this long is an engine that does not answer. vLLM's is a flag read, no
# round trip to EngineCore, so only a wedged engine ever gets near it.
HEALTH_CHECK_TIMEOUT_S = 5.0
# The watchdog looks at least this often, so death is noticed within a second.
MAX_POLL_S = 1.0
# Of the exit budget, what the interpreter's own exit keeps after the engine's shutdown, and the
# least the engine's shutdown gets even when the budget is spent (its processes must be told).
EXIT_MARGIN_S = 1.0
MIN_SHUTDOWN_S = 0.5


class ExitCode(IntEnum):
    """How the process ends (README, "Exit codes"). Distinct codes let a supervisor's log say why
    it restarted us; uvicorn's own 3, "could not bind", becomes STARTUP_FAILURE in `serve`."""

    CLEAN = 0  # stopped or drained on request
    STARTUP_FAILURE = 1  # bad settings, weights, engine start, port in use
    ENGINE_DEAD = 3
    ENGINE_STALLED = 4
    API_PROCESS_LOST = 5  # one of several API processes ended on its own (server/supervisor.py)

    @property
    def status(self) -> str:
        """The word the probes answer with."""
        return self.name.lower()


class EngineMonitor:
    """What requests and the watchdog know about the engine: when it last made progress, which
    requests wait for it, and the verdict once there is one."""

    def __init__(self) -> None:
        self.verdict: ExitCode | None = None
        self.failed_at: float | None = None  # time.monotonic() of the verdict
        self.last_progress = time.monotonic()
        # The deadline of every wait for a chunk: moving one to "now" ends that wait at once.
        self._waits: set[asyncio.Timeout] = set()

    @property
    def waiting(self) -> int:
        """Requests waiting for their next chunk from the engine."""
        return len(self._waits)

    async def next_chunk(
        self, stream: AsyncIterator[GenerationChunk], wait: asyncio.Timeout
    ) -> GenerationChunk | None:
        """The stream's next chunk (None at its end), waited for under `wait`, the caller's
        deadline, which `fail` moves to now. Raises EngineDeadError once there is a verdict."""
        if self.verdict is not None:
            raise EngineDeadError(f"the engine was declared {self.verdict.status}")
        if not self._waits:
            self.last_progress = time.monotonic()  # idle until now: the stall clock starts here
        self._waits.add(wait)
        try:
            chunk = await anext(stream, None)
        finally:
            self._waits.discard(wait)
        self.last_progress = time.monotonic()
        return chunk

    def excuse(self, seconds: float) -> None:
        """Leave `seconds` out of the stall clock: time in which nothing could progress."""
        self.last_progress = min(self.last_progress + seconds, time.monotonic())

    def stalled_for(self, now: float) -> float:
        """Seconds without progress while requests wait for the engine (0 when none wait)."""
        return now - self.last_progress if self._waits else 0.0

    def fail(self, verdict: ExitCode, why: str) -> None:
        """Record the verdict (the first one stands) and end every wait for the engine now, so
        those requests answer 503 instead of hanging until the process goes away."""
        if self.verdict is not None:
            return
        self.verdict, self.failed_at = verdict, time.monotonic()
        log.error(
            "engine failed: %s; the process exits with code %d",
            why,
            int(verdict),
            extra={"verdict": verdict.status, "exit_code": int(verdict)},
        )
        now = asyncio.get_running_loop().time()
        for wait in tuple(self._waits):
            wait.reschedule(now)


async def engine_health(engine: Engine) -> ExitCode | None:
    """What the engine's health check says now: None when healthy, else dead or stalled (no
    answer within `HEALTH_CHECK_TIMEOUT_S`)."""
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
            await engine.check_health()
    except EngineDeadError:
        return ExitCode.ENGINE_DEAD
    except TimeoutError:
        return ExitCode.ENGINE_STALLED
    return None


async def probe(engine: Engine, monitor: EngineMonitor) -> ExitCode | None:
    """For /health: the verdict, else what a health check says now. It only reads: verdicts are
    the watchdog's to record (it looks every second), so a probe never decides the exit."""
    return monitor.verdict or await engine_health(engine)


class Watchdog:
    """A task that checks the engine every `poll_s`: dead, or stalled past `stall_timeout_s`
    (0 = never), becomes the monitor's verdict."""

    def __init__(
        self,
        engine: Engine,
        monitor: EngineMonitor,
        exit_within_s: float,
        stall_timeout_s: float,
    ) -> None:
        self.engine = engine
        self.monitor = monitor
        self.stall_timeout_s = stall_timeout_s
        # A tenth of the exit budget: short budgets (tests) get a watchdog to match.
        self.poll_s = min(MAX_POLL_S, exit_within_s / 10)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> ExitCode | None:
        """One look at the engine: its health, then whether work waits without progress."""
        if self.monitor.verdict is None and (found := await engine_health(self.engine)):
            why = {ExitCode.ENGINE_DEAD: "the engine failed its health check"}.get(
                found, f"the engine's health check took over {HEALTH_CHECK_TIMEOUT_S:g} s"
            )
            self.monitor.fail(found, why)
        if self.monitor.verdict is None and self.stall_timeout_s > 0:
            idle = self.monitor.stalled_for(time.monotonic())
            if idle >= self.stall_timeout_s:
                why = f"no progress for {idle:.1f} s while {self.monitor.waiting} request(s) wait"
                self.monitor.fail(ExitCode.ENGINE_STALLED, why)
        return self.monitor.verdict

    async def _run(self) -> None:
        while self.monitor.verdict is None:
            asleep = time.monotonic()
            await asyncio.sleep(self.poll_s)
            late = time.monotonic() - asleep - self.poll_s
            if late > self.poll_s:
                # Our own event loop was stuck (a blocking call, a long collection, a starved
                # CPU), and vLLM's output handling runs on it: that time is not the engine's.
                self.monitor.excuse(late)
            try:
                await self.check()
            except Exception:
                # A watchdog that dies of one odd error watches nothing any more: keep going.
                log.exception("engine watchdog check failed")


async def shutdown_engine(engine: Engine, monitor: EngineMonitor, exit_within_s: float) -> None:
    """Shut the engine down. After a verdict, only within what is left of the exit budget, less
    `EXIT_MARGIN_S` for the interpreter's own exit: past it, the process exit in
    `server/serving.py` (bounded too) takes the engine's processes down with it."""
    if monitor.failed_at is None:
        await engine.shutdown()
        return
    left = monitor.failed_at + exit_within_s - EXIT_MARGIN_S - time.monotonic()
    try:
        async with asyncio.timeout(max(left, MIN_SHUTDOWN_S)):
            await engine.shutdown()
    except TimeoutError:
        log.error("the engine did not shut down within the exit budget; exiting without it")
