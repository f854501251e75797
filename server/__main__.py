"""`facellm-server`: settings from env and CLI → uvicorn serving `create_app(settings)`.

SIGTERM starts a drain instead of an exit: /ready and new requests answer 503 while requests in
flight finish (at most `drain_timeout_s`); then uvicorn stops and the lifespan stops the engine.

An engine found dead or stalled (`server/watchdog.py`) stops the server at once instead, and the
process exits with a code that says which (`ExitCode`) within `engine_dead_exit_s` of the verdict,
however the graceful path fares: a supervisor restarts it rather than keep a half-alive server.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from pydantic_settings import CliApp, SettingsError

from model.weights import WeightsNotFound
from server.admission import Admission
from server.app import create_app
from server.config import ConfigError, Settings, check_environment
from server.connections import guarded_protocol
from server.logs import configure_logging
from server.memory import tune_malloc
from server.state import AppState
from server.watchdog import EngineMonitor, ExitCode

if TYPE_CHECKING:
    from model.engine import Engine
    from server.supervisor import Member

log = logging.getLogger("server.exit")


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        app: FastAPI,
        drain_timeout_s: float,
        engine_dead_exit_s: float = 10.0,
    ) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout_s = drain_timeout_s
        self.drain_deadline: float | None = None
        self.engine_dead_exit_s = engine_dead_exit_s
        self.failing = False

    def _state(self) -> AppState | None:
        state: AppState | None = getattr(self.app.state, "facellm", None)
        return state

    def _admission(self) -> Admission | None:
        state = self._state()
        return state.admission if state is not None else None

    @property
    def exit_code(self) -> int:
        """What the process should exit with, once `run()` has returned."""
        if not self.started:
            return ExitCode.STARTUP_FAILURE  # the lifespan failed: no engine, nothing served
        state = self._state()
        verdict = state.monitor.verdict if state is not None else None
        return int(verdict) if verdict is not None else ExitCode.CLEAN

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        admission = self._admission()
        if sig != signal.SIGTERM or self.drain_deadline is not None or admission is None:
            super().handle_exit(sig, frame)
            return
        self.drain_deadline = time.monotonic() + self.drain_timeout_s
        admission.draining = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything alive now (engine client, tokenizer, processors, modules) lives as long as
        # the process: move it out of the collector's sight, so that full collections while
        # serving scan only what requests allocate (vLLM does the same in EngineCore).
        gc.collect()
        gc.freeze()

    async def on_tick(self, counter: int) -> bool:
        state = self._state()
        if state is not None and state.monitor.verdict is not None:
            self._fail_fast(state.monitor)
            return True  # uvicorn stops listening now, then shuts down
        admission = self._admission()
        in_flight = 0 if admission is None else admission.in_flight
        member = None if state is None else state.member
        if member is not None:
            member.report(in_flight)  # every tick: peers see it before any drain starts
        if self.drain_deadline is not None:
            # One of several API processes stops listening only once all are idle: an idle one
            # gone early would drop connections the kernel had queued on its socket.
            idle = in_flight == 0 and (member is None or member.group_idle())
            if idle or time.monotonic() >= self.drain_deadline:
                return True
        return await super().on_tick(counter)

    def _fail_fast(self, monitor: EngineMonitor) -> None:
        """Fit the shutdown into the exit budget, counted from the verdict: connections get half
        of what is left to take their 503s, the engine's shutdown the rest (`shutdown_engine`),
        and the exit guard ends the process at the budget whatever is still running."""
        if self.failing or monitor.failed_at is None:
            return
        self.failing = True
        left = monitor.failed_at + self.engine_dead_exit_s - time.monotonic()
        half = max(1, int(left / 2))  # whole seconds: uvicorn's setting is an int
        graceful = self.config.timeout_graceful_shutdown
        self.config.timeout_graceful_shutdown = half if graceful is None else min(graceful, half)
        arm_exit_guard(self.exit_code, left)


def arm_exit_guard(code: int, after_s: float) -> None:
    """Be gone `after_s` from now with `code`, whatever the graceful path is stuck on (a
    connection, vLLM's shutdown, an atexit hook joining a child): kill the engine's processes,
    then `os._exit`. A daemon thread, so it never holds a process that exits in time."""

    def fire() -> None:
        log.error("the graceful exit took too long; exiting now with code %d", code)
        kill_engine_processes()
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(code)

    timer = threading.Timer(max(after_s, 0.0), fire)
    timer.daemon = True
    timer.start()


def kill_engine_processes() -> None:
    """SIGKILL our multiprocessing children (vLLM's EngineCore) and everything under them (its
    workers), which `os._exit` would leave running. Not multiprocessing's resource tracker: it
    exits by itself once they are gone, and frees the shared memory they leave behind."""
    for child in multiprocessing.active_children():
        under = _descendants(child.pid)  # first: once the child is gone, they are init's
        for process in [child, *under]:
            with contextlib.suppress(Exception):
                process.kill()


def _descendants(pid: int | None) -> list[Any]:
    """The processes under `pid`, found with psutil, which comes with vLLM. Without it, none:
    vLLM's workers still exit on their own once they see their parent gone."""
    try:
        import psutil

        return list(psutil.Process(pid).children(recursive=True))
    except Exception:
        return []


def serve(server: DrainingServer, sockets: list[socket.socket] | None = None) -> int:
    """Run the server; the process's exit code (see `ExitCode`, and the README's "Exit codes")."""
    try:
        server.run(sockets=sockets)
    except SystemExit as exit_:
        # uvicorn exits 3 when it cannot bind: a startup failure here, 3 is a dead engine.
        if exit_.code == uvicorn.config.STARTUP_FAILURE:
            return ExitCode.STARTUP_FAILURE
        raise
    return server.exit_code


def load_settings() -> Settings:
    """Settings from the CLI, the environment and the config file. A setting that cannot work
    ends the process (exit 1) with one log line that names it: a traceback would only show where
    it was read. Unknown flags stay argparse's business (usage, exit 2)."""
    try:
        check_environment(os.environ)
        return CliApp.run(Settings)
    except ValidationError as e:
        message = describe_errors(e)
    except (ConfigError, SettingsError) as e:
        # A SettingsError names the setting; its cause says what is wrong (e.g. bad JSON).
        message, cause = str(e), str(e.__cause__ or "")
        message += f" ({cause})" if cause and cause not in message else ""
    configure_logging("info")  # the settings' own level never loaded
    exit_startup_failure(f"invalid settings: {message}")


def describe_errors(error: ValidationError) -> str:
    """pydantic's errors, one clause each, without their input values: those may be keys."""
    clauses = []
    for err in error.errors(include_url=False, include_input=False):
        where = ".".join(map(str, err["loc"]))
        what = err["msg"].removeprefix("Value error, ")
        clauses.append(f"{where}: {what}" if where else what)
    return "; ".join(clauses)


def exit_startup_failure(message: str) -> NoReturn:
    log.error(message)
    sys.exit(ExitCode.STARTUP_FAILURE)


def main() -> None:
    tune_malloc()  # first, before anything large is allocated (see server/memory.py)
    settings = load_settings()
    configure_logging(settings.log_level)
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")  # vLLM's ZMQ stays on loopback
    if settings.api_processes > 1:
        from server.supervisor import supervise

        with startup_errors_reported():
            sys.exit(supervise(settings))
    sys.exit(serve_app(settings))


def serve_app(
    settings: Settings,
    member: Member | None = None,
    sockets: list[socket.socket] | None = None,
    engine: Engine | None = None,
) -> int:
    """The HTTP server over the engine, until it stops: the process's exit code. `member`: one
    of several API processes on a shared engine core, accepting on `sockets`; `engine`: another
    engine than the one the settings describe (benchmarks of the front alone)."""
    if sockets is not None:  # a spawned process: nothing of main() ran here
        tune_malloc()
        configure_logging(settings.log_level)
    with startup_errors_reported():
        app = create_app(settings, engine, member)  # checks engine_args before weights load
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout_s),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )
    server = DrainingServer(config, app, settings.drain_timeout_s, settings.engine_dead_exit_s)
    return serve(server, sockets)


@contextlib.contextmanager
def startup_errors_reported() -> Iterator[None]:
    """Settings that cannot work, and missing weights: exit 1 with one line that says why."""
    try:
        yield
    except ConfigError as e:
        exit_startup_failure(f"invalid settings: {e}")
    except WeightsNotFound as e:  # its message says what was tried and which setting to change
        exit_startup_failure(str(e))


if __name__ == "__main__":
    main()
