"""The supervisor's process group (server/supervisor.py), without an engine: plain processes
stand in for the API processes and the engine core. Whatever ends first decides the exit code,
and nothing is left running."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from server import supervisor
from server.config import Settings
from server.supervisor import _Group
from server.watchdog import ExitCode

BOUND_S = 30.0  # the longest any process below may live
CONTEXT = get_context("spawn")


def api_process(ready: Event, on_sigterm: str) -> None:
    """An API process: on SIGTERM it drains and exits 0 ("drain"), or is stuck in its drain and
    only SIGKILL ends it ("stuck")."""
    if on_sigterm == "drain":
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(BOUND_S)


def start(target: object, *args: object) -> BaseProcess:
    process = CONTEXT.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def start_api_process(on_sigterm: str) -> BaseProcess:
    ready = CONTEXT.Event()
    process = start(api_process, ready, on_sigterm)
    assert ready.wait(BOUND_S), "the process did not start"
    return process


@dataclass
class Core:
    """Stands in for vLLM's engine core: a process whose end the group watches."""

    process: BaseProcess = field(default_factory=lambda: start(time.sleep, BOUND_S))

    @property
    def sentinels(self) -> list[int]:
        return [self.process.sentinel]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(supervisor, "_STOP_GRACE_S", 0.5)  # SIGTERM → SIGKILL
    # A drain long enough for a loaded machine: the group ends as soon as every process has.
    return Settings(model_cache_dir=tmp_path, engine_dead_exit_s=1, drain_timeout_s=BOUND_S / 2)


@pytest.fixture
def processes() -> list[BaseProcess]:
    started: list[BaseProcess] = []
    yield started  # type: ignore[misc]
    for process in started:
        if process.is_alive():
            process.kill()
        process.join(BOUND_S)


def watch(group: _Group, core: Core) -> tuple[int, float]:
    """The group's exit code, and how long it took."""
    began = time.monotonic()
    try:
        code = group.watch(core)  # type: ignore[arg-type]  # duck-typed: only its sentinels
    finally:
        if core.process.is_alive():
            core.process.kill()
        core.process.join(BOUND_S)
    return code, time.monotonic() - began


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ExitCode.ENGINE_DEAD, ExitCode.ENGINE_DEAD),  # it said why: the group says it too
        (ExitCode.ENGINE_STALLED, ExitCode.ENGINE_STALLED),
        (1, ExitCode.API_PROCESS_LOST),
        (0, ExitCode.API_PROCESS_LOST),  # gone without a drain is lost, whatever its code
    ],
)
def test_an_api_process_ending_on_its_own_stops_the_rest(
    settings: Settings, processes: list[BaseProcess], code: int, expected: int
) -> None:
    processes += [start(time.sleep, BOUND_S), start(sys.exit, code)]
    exit_code, took = watch(_Group(processes, settings), Core())
    assert exit_code == expected
    assert not any(p.is_alive() for p in processes)
    assert took < BOUND_S


def test_the_engine_core_ending_stops_every_api_process(
    settings: Settings, processes: list[BaseProcess]
) -> None:
    processes += [start(time.sleep, BOUND_S), start(time.sleep, BOUND_S)]
    core = Core(start(sys.exit, 0))
    exit_code, _ = watch(_Group(processes, settings), core)
    assert exit_code == ExitCode.ENGINE_DEAD
    assert [p.exitcode for p in processes] == [-signal.SIGTERM, -signal.SIGTERM]


def test_a_drain_passes_sigterm_on_and_ends_clean(
    settings: Settings, processes: list[BaseProcess]
) -> None:
    processes += [start_api_process("drain"), start_api_process("drain")]
    group = _Group(processes, settings)
    group._on_signal(signal.SIGTERM, None)  # what trap_signals installs, without installing it
    exit_code, _ = watch(group, Core())
    assert exit_code == ExitCode.CLEAN
    assert [p.exitcode for p in processes] == [0, 0]


def test_a_process_killed_during_the_drain_did_not_drain(
    settings: Settings, processes: list[BaseProcess]
) -> None:
    processes += [start_api_process("drain"), start(time.sleep, BOUND_S)]  # dies of SIGTERM
    group = _Group(processes, settings)
    group._on_signal(signal.SIGTERM, None)
    exit_code, _ = watch(group, Core())
    assert exit_code == ExitCode.API_PROCESS_LOST  # not -15, which is no exit status


def test_a_process_that_outlasts_the_drain_is_killed(
    settings: Settings, processes: list[BaseProcess]
) -> None:
    processes += [start_api_process("stuck")]
    group = _Group(processes, settings.model_copy(update={"drain_timeout_s": 2.0}))
    group._on_signal(signal.SIGTERM, None)
    exit_code, took = watch(group, Core())
    assert exit_code == ExitCode.CLEAN
    assert processes[0].exitcode == -signal.SIGKILL
    assert took < BOUND_S
