"""Several API processes over one engine core (FACELLM_API_PROCESSES=2), on the real engine:
both serve, one engine core runs, /metrics counts every process's requests, SIGTERM drains them
all, and losing one takes the whole server down."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ServerProcess, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

CHAT = "/v1/chat/completions"
API_PROCESS_LOST = 5
DOWN_WITHIN_S = 30  # engine_dead_exit_s (10) to stop the others, then the core's shutdown


def start_group(tmp_path: Path) -> ServerProcess:
    return start_server(tmp_path / "server.log", api_processes="2")


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server. The drain test ends it, so it runs after the tests that share it."""
    server = start_group(tmp_path_factory.mktemp("group"))
    yield server
    server.kill_tree()


def chat(base_url: str, max_tokens: int = 4, **extra: object) -> httpx.Response:
    """On a connection of its own, so the kernel may hand it to either process."""
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, **extra}
    return httpx.post(f"{base_url}{CHAT}", json=body, timeout=120)


def chats_served(metrics: str) -> float:
    pattern = (
        r'^facellm_http_requests_total\{method="POST",route="/v1/chat/completions",'
        r'status="200"\} (\S+)$'
    )
    return sum(float(m) for m in re.findall(pattern, metrics, re.M))


def scrape(base_url: str) -> str:
    time.sleep(1.2)  # past the scrape cache, and the live gauges' push interval
    return httpx.get(f"{base_url}/metrics", timeout=30).text


def descendants(server: ServerProcess) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children(recursive=True)


def engine_cores(server: ServerProcess) -> list[psutil.Process]:
    return [p for p in descendants(server) if "EngineCore" in " ".join(p.cmdline() or [p.name()])]


def test_both_serve_over_one_engine_core_and_metrics_count_them_all(
    group: ServerProcess,
) -> None:
    before = chats_served(scrape(group.base_url))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: chat(group.base_url), range(24)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers][:3]
    assert {r.headers["x-facellm-process"] for r in answers} == {"0", "1"}
    assert len(engine_cores(group)) == 1
    metrics = scrape(group.base_url)
    assert chats_served(metrics) - before == 24
    assert len(re.findall(r"^vllm:num_requests_running\{", metrics, re.M)) == 1  # once


def test_sigterm_drains_every_process(group: ServerProcess) -> None:
    server = group
    try:
        slow = {"max_tokens": 1800, "ignore_eos": True}  # ≈ 4 s each, on the demo model
        with ThreadPoolExecutor(6) as pool:
            in_flight = [pool.submit(chat, server.base_url, **slow) for _ in range(6)]
            time.sleep(0.5)  # all admitted, none finished
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            late = chat(server.base_url)
            answers = [f.result() for f in in_flight]
        assert late.status_code == 503, late.text
        assert [r.status_code for r in answers] == [200] * 6
        assert all(r.json()["usage"]["completion_tokens"] == 1800 for r in answers)
        assert {r.headers["x-facellm-process"] for r in answers} == {"0", "1"}
        assert server.proc.wait(60) == 0
    finally:
        server.kill_tree()


def test_losing_an_api_process_takes_the_server_down(tmp_path: Path) -> None:
    server = start_group(tmp_path)
    try:
        family = descendants(server)
        api = [p for p in family if "spawn_main" in " ".join(p.cmdline())]
        assert len(api) == 2
        started = time.monotonic()
        api[1].kill()
        code = server.proc.wait(DOWN_WITHIN_S)
        assert code == API_PROCESS_LOST, server.logs()[-2000:]
        assert time.monotonic() - started < DOWN_WITHIN_S
        gone = psutil.wait_procs(family, timeout=10)[1]
        assert not gone, f"left running: {gone}"
    finally:
        server.kill_tree()
