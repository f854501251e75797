"""Real server, real engine: an EngineCore that dies or stalls makes the server exit, in time.

Nothing is mocked. vLLM's EngineCore process gets SIGKILL, as from the kernel's OOM killer, or
SIGSTOP, an engine alive that makes no progress; the server must answer the request in flight
with a 503, stop, and exit with code 3 (dead) or 4 (stalled) within `engine_dead_exit_s` of the
verdict (plus the watchdog's look and a margin), leaving no process behind. The stopped EngineCore
ignores vLLM's SIGTERM, so that case also shows the engine's shutdown cannot hold the exit.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ServerProcess, start_server
from tests.images import cat, data_url, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

EXIT_WITHIN_S = 5.0
LOOK_S = 0.5  # the watchdog looks every engine_dead_exit_s / 10
MARGIN_S = 3.0  # a loaded 2-core machine schedules us late
STALL_TIMEOUT_S = 3.0
ENGINE_DEAD, ENGINE_STALLED = 3, 4


def engine_core(family: list[psutil.Process]) -> psutil.Process:
    for process in family:
        with contextlib.suppress(psutil.Error):
            if "EngineCore" in process.name() or "EngineCore" in " ".join(process.cmdline()):
                return process
    raise AssertionError(f"no EngineCore among {family}")


def gone(process: psutil.Process) -> bool:
    """Exited. A zombie has exited too: its parent is gone and, in a container, the init that
    inherits it may never reap it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")


def engine_running(base_url: str) -> bool:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return any(
        line.startswith("vllm:num_requests_running{") and float(line.rsplit(" ", 1)[1]) >= 1
        for line in text.splitlines()
    )


def start_long_request(base_url: str, answers: list[httpx.Response]) -> threading.Thread:
    body = {"messages": image_message(data_url(cat())), "max_tokens": 2000}
    url = f"{base_url}/v1/chat/completions"
    thread = threading.Thread(target=lambda: answers.append(httpx.post(url, json=body, timeout=60)))
    thread.start()
    wait_until(lambda: engine_running(base_url), timeout_s=60)
    return thread


# Idle, only the watchdog's look finds the death; with a request in flight, the request does.
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "request_in_flight"])
def test_killed_engine_core_makes_the_server_exit_3_in_time(tmp_path: Path, busy: bool) -> None:
    server = start_server(tmp_path / "server.log", engine_dead_exit_s=str(EXIT_WITHIN_S))
    family: list[psutil.Process] = []
    try:
        family = psutil.Process(server.proc.pid).children(recursive=True)
        core = engine_core(family)
        answers: list[httpx.Response] = []
        in_flight = start_long_request(server.base_url, answers) if busy else None

        core.send_signal(signal.SIGKILL)
        code, took = exit_of(server, EXIT_WITHIN_S + LOOK_S + MARGIN_S)
        print(f"\nEngineCore SIGKILL → server exit {code} in {took:.2f} s")

        assert code == ENGINE_DEAD, server.logs()[-4000:]
        assert '"verdict": "engine_dead"' in server.logs()
        if in_flight is not None:
            assert_answered_503(in_flight, answers)
        assert_all_gone(family)
    finally:
        kill_all(server, family)


def test_stopped_engine_core_is_a_stall_and_the_server_exits_4_in_time(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "server.log",
        engine_dead_exit_s=str(EXIT_WITHIN_S),
        engine_stall_timeout_s=str(STALL_TIMEOUT_S),
    )
    family: list[psutil.Process] = []
    try:
        family = psutil.Process(server.proc.pid).children(recursive=True)
        core = engine_core(family)
        answers: list[httpx.Response] = []
        in_flight = start_long_request(server.base_url, answers)

        core.send_signal(signal.SIGSTOP)
        bound = STALL_TIMEOUT_S + LOOK_S + EXIT_WITHIN_S + MARGIN_S
        code, took = exit_of(server, bound)
        print(f"\nEngineCore SIGSTOP → server exit {code} in {took:.2f} s")

        assert code == ENGINE_STALLED, server.logs()[-4000:]
        assert took >= STALL_TIMEOUT_S
        assert '"verdict": "engine_stalled"' in server.logs()
        assert_answered_503(in_flight, answers)
        assert_all_gone(family)
    finally:
        kill_all(server, family)


def exit_of(server: ServerProcess, bound_s: float) -> tuple[int, float]:
    """The server's exit code and the seconds it took, failing past `bound_s`."""
    start = time.monotonic()
    try:
        code = server.proc.wait(bound_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running {bound_s} s later:\n{server.logs()[-4000:]}")
    return code, time.monotonic() - start


def assert_answered_503(in_flight: threading.Thread, answers: list[httpx.Response]) -> None:
    in_flight.join(30)
    assert [r.status_code for r in answers] == [503]
    assert answers[0].json()["error"]["code"] == "engine_unavailable"


def assert_all_gone(family: list[psutil.Process], timeout_s: float = 15) -> None:
    """Every process that was under the server exits (vLLM's workers follow their EngineCore)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(gone(p) for p in family):
        time.sleep(0.05)
    left = [describe(p) for p in family if not gone(p)]
    assert not left, f"left behind: {left}"


def describe(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"{process.pid} {process.name()} {process.status()} {process.cmdline()[:3]}"
    return f"{process.pid} (gone)"


def kill_all(server: ServerProcess, family: list[psutil.Process]) -> None:
    for process in family:
        with contextlib.suppress(psutil.Error):
            if not gone(process):
                process.kill()  # SIGKILL also ends a stopped process
    server.kill_tree()
