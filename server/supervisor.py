"""Several API processes over one engine core (`api_processes` > 1), as `vllm serve
--api-server-count` runs them.

This process becomes a supervisor: it binds N listening sockets to the one port (SO_REUSEPORT:
the kernel spreads new connections over them; one shared socket would hand a burst to whichever
process woke first), starts vLLM's engine core for N clients, and spawns N API processes — each
the whole HTTP server (`server.serving.serve_app`) with a vLLM client of that one core, on its
own socket, handed the engine configuration resolved here once (weights, adapters, arguments):
every process serves the same snapshot as the core, even from a moving hub branch. It serves
nothing itself; it watches:

- SIGTERM (or SIGINT): passed to every API process, which drains as a lone server does (/ready
  and new requests 503, requests in flight finish); then the core stops and we exit 0.
- An API process or the engine core ending on its own: the server is not whole any more. The
  others are stopped (`engine_dead_exit_s` at most) and we exit non-zero — the ended process's
  own code when it said why (3 engine dead, 4 stalled), else 5 — for the orchestrator to restart
  the pod. A half-alive server is never left running.

Metrics: prometheus-client's multiprocess mode (a directory of shared files for the run), so any
process's /metrics describes them all: our counters and histograms summed, live gauges summed
over live processes, vLLM's engine series once (vLLM marks them "mostrecent").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from model.vllm_args import ClientSlot, VLLMConfig
from model.vllm_core import SharedCore, launch_shared_core
from model.vllm_engine import VLLMEngine
from server.config import Settings
from server.engine_setup import vllm_config
from server.group import Member
from server.serving import serve_app
from server.watchdog import ExitCode

log = logging.getLogger("server.supervisor")

_STOP_GRACE_S = 5.0  # after a drain's deadline, or on failure: SIGTERM → SIGKILL


def supervise(settings: Settings) -> int:
    """Run the group until it is stopped or breaks; the process's exit code."""
    config = vllm_config(settings)  # resolves weights and adapters, checks engine args
    count = settings.api_processes
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="facellm-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any child starts
        listeners = [_listen(settings.host, settings.port) for _ in range(count)]
        ready = context.Array("b", count, lock=False)
        busy = context.Array("i", count, lock=False)
        processes: list[BaseProcess] = []

        def spawn(slots: list[ClientSlot]) -> list[BaseProcess]:
            for slot in slots:
                member = Member(slot.index, slot, ready, busy)
                process = context.Process(
                    target=run_api_process,
                    args=(settings, config, listeners[slot.index], member),
                    name=f"facellm-api-{slot.index}",
                )
                process.start()
                processes.append(process)
            return processes

        group = _Group(processes, settings)
        group.trap_signals()
        try:
            core = launch_shared_core(config, count, spawn)
        except Exception:
            log.exception("the engine core did not start")
            group.stop(_STOP_GRACE_S)
            return ExitCode.STARTUP_FAILURE
        finally:
            for listener in listeners:
                listener.close()  # each API process holds its own copy
        log.info("%d API processes on one engine core", count)
        code = group.watch(core)
        core.shutdown(_STOP_GRACE_S)
        return code


def run_api_process(
    settings: Settings, config: VLLMConfig, listener: socket.socket, member: Member
) -> None:
    """An API process's entry point: the whole server, as a client of the shared core, with the
    supervisor's engine configuration (nothing resolved again here)."""
    client_config = dataclasses.replace(config, client=member.client)
    raise SystemExit(serve_app(settings, lambda: VLLMEngine(client_config), member, [listener]))


class _Group:
    def __init__(self, processes: list[BaseProcess], settings: Settings) -> None:
        self.processes = processes
        self.settings = settings
        self.drain_deadline: float | None = None

    def trap_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None:
            log.info("draining %d API processes", len(self.processes))
            self.drain_deadline = time.monotonic() + self.settings.drain_timeout_s + _STOP_GRACE_S
            self._signal_all(signal.SIGTERM)

    def watch(self, core: SharedCore) -> int:
        """Until every API process has ended after a drain (0), or anything ended without one
        (non-zero; the rest are stopped)."""
        while True:
            ended = wait([p.sentinel for p in self.processes] + core.sentinels, timeout=1.0)
            if set(ended) & set(core.sentinels):
                log.error("the engine core ended; stopping the API processes")
                self.stop(self.settings.engine_dead_exit_s)
                return ExitCode.ENGINE_DEAD
            if self.drain_deadline is not None:
                if all(not p.is_alive() for p in self.processes):
                    return max((_drained(p.exitcode) for p in self.processes), default=0)
                if time.monotonic() > self.drain_deadline:
                    self.stop(_STOP_GRACE_S)
                    return ExitCode.CLEAN
                continue
            if lost := [p for p in self.processes if not p.is_alive()]:
                code = lost[0].exitcode
                log.error("API process %s ended (exit %s); stopping the server", lost[0].name, code)
                self.stop(self.settings.engine_dead_exit_s)
                said_why = code in (ExitCode.ENGINE_DEAD, ExitCode.ENGINE_STALLED)
                return int(code) if said_why and code is not None else ExitCode.API_PROCESS_LOST

    def stop(self, within_s: float) -> None:
        """SIGTERM to those still running, SIGKILL to any left after `within_s`."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + within_s
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 0.0))
        self._signal_all(signal.SIGKILL)
        for process in self.processes:
            process.join(1.0)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)


def _drained(code: int | None) -> int:
    """An API process's exit code after a drain; one killed by a signal (a negative code, which
    would make no exit status) did not drain."""
    return ExitCode.API_PROCESS_LOST if code is not None and code < 0 else code or 0


def _listen(host: str, port: int) -> socket.socket:
    """One API process's listening socket, in the port's SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener
