"""Shared fixtures: the fast in-process app on a fake engine (`client`, or `make_client` for an
app of one's own), the demo model built once per session, and one real server per session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI

from model.attributes import ALL_NAMES
from model.demo import build_demo_adapter, ensure_demo_model
from model.engine import Engine
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from server.state import AppState

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_S = 240
PREFIX_BLOCK_TOKENS = 32  # the session server's KV block size


# Marks of the tests that start or drive a real engine. Under `-n 2 --dist loadgroup` (make test)
# they all run in one xdist worker, in order and one at a time, as their shared servers and
# clocks expect; the fast tests share the other core.
ENGINE_MARKS = frozenset({"engine", "e2e", "load"})
ENGINE_GROUP = "engine"


def pytest_itemcollected(item: pytest.Item) -> None:
    """As each test is collected: xdist reads the groups in its own modifyitems hook."""
    if ENGINE_MARKS.intersection(mark.name for mark in item.iter_markers()):
        item.add_marker(pytest.mark.xdist_group(ENGINE_GROUP))


def pytest_collection_finish(session: pytest.Session) -> None:
    """xdist groups by a suffix on the node id, which pytest 9.2 no longer lets it set
    (pytest-xdist issue 1386): engine tests would then run two at a time, servers colliding."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        grouped = item.get_closest_marker("xdist_group") is not None
        if grouped and not item.nodeid.endswith(f"@{ENGINE_GROUP}"):
            raise pytest.UsageError("xdist's loadgroup does not group on this pytest: pytest<9.2")


def pytest_sessionfinish() -> None:
    """schemathesis starts tests/server/test_protocol.py's app (lifespan, batch runner included)
    as it loads the schema at collection, and ends it after each of that module's tests. When they
    are deselected it would run on to interpreter exit, past the thread pool its runner needs."""
    asgi = sys.modules.get("schemathesis.python.asgi")
    if asgi is not None:
        asgi.shutdown_lifespans()


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_cache_dir=tmp_path / "cache")


@pytest.fixture
def app(settings: Settings, fake_engine: FakeEngine) -> FastAPI:
    return create_app(settings, fake_engine)


class AppClient(httpx.AsyncClient):
    """An httpx client calling one app in process, with the app at hand."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url="http://test")
        self.app = app

    @property
    def state(self) -> AppState:
        """What the app holds between requests (engine monitor, admission, services…)."""
        state: AppState = self.app.state.facellm
        return state


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[AppClient]:
    """A client of `app`, with the app's lifespan (engine start and stop) around it."""
    async with app.router.lifespan_context(app), AppClient(app) as client:
        yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AppClient]:
    async with serving(app) as c:
        yield c


MakeClient = Callable[..., AbstractAsyncContextManager[AppClient]]


@pytest.fixture
def make_client(tmp_path: Path) -> MakeClient:
    """An app of the test's own: `async with make_client(engine, **settings) as client:`.

    `settings` are `Settings` fields (`model_cache_dir` defaults to one under `tmp_path`); the
    engine defaults to a fresh `FakeEngine`. The app's lifespan runs for the block's duration."""

    @asynccontextmanager
    async def make(engine: Engine | None = None, **settings: Any) -> AsyncIterator[AppClient]:
        settings.setdefault("model_cache_dir", tmp_path / "cache")
        app = create_app(Settings(**settings), engine if engine is not None else FakeEngine())
        async with serving(app) as c:
            yield c

    return make


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model, built once per session for every test that reads it (in a cache of the
    session's own; real server processes use theirs)."""
    return ensure_demo_model(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def demo_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo LoRA adapter (seed 1, rank 8), built once per session."""
    return build_demo_adapter(tmp_path_factory.mktemp("adapters") / "a", seed=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A real `facellm-server` process on 127.0.0.1 with the real vLLM engine and demo model."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def stop_soon(self) -> None:
        """SIGTERM now, waited for at the session's end: a clean stop takes ≈ 5 s, mostly vLLM's
        worker and engine core exiting on their timers, which the next test need not wait for."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _STOPPING.append(self)

    def kill_tree(self) -> None:
        """SIGKILL the server and every process under it: vLLM's EngineCore and its workers
        outlive a parent killed outright."""
        family: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            family = psutil.Process(self.proc.pid).children(recursive=True)
        self.stop(signal.SIGKILL)
        for process in family:
            with contextlib.suppress(psutil.Error):
                process.kill()


_STOPPING: list[ServerProcess] = []


@pytest.fixture(scope="session", autouse=True)
def _servers_stopped_at_the_end() -> Iterator[None]:
    """Waits for every server stopped with `stop_soon` (the first session fixture, so the last
    torn down)."""
    yield
    for server in _STOPPING:
        server.stop()


def start_server(log_path: Path, **env_settings: str) -> ServerProcess:
    port = free_port()
    env = {
        **os.environ,
        "FACELLM_PORT": str(port),
        "FACELLM_ENFORCE_EAGER": "true",
        "FACELLM_MAX_MODEL_LEN": "2048",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_HOST_IP": "127.0.0.1",
        **{f"FACELLM_{k.upper()}": v for k, v in env_settings.items()},
    }
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.logs()[-4000:]}")
        try:
            if httpx.get(f"{server.base_url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.kill_tree()
    raise RuntimeError(f"server not ready in {SERVER_START_TIMEOUT_S} s:\n{server.logs()[-4000:]}")


def gauge(server: ServerProcess, name: str) -> float:
    """One value of the server's /metrics; `name` is a regex (labels included, when any)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert match, name
    return float(match.group(1))


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the whole session (the engine start costs ≈ 25 s). It serves every
    face attribute, perceived_race opted in, and caches prefixes in 32-token blocks (the CPU
    backend's least; its default, 128, is longer than a demo face's shared prompt)."""
    server = start_server(
        tmp_path_factory.mktemp("server") / "server.log",
        attributes=json.dumps(ALL_NAMES),
        engine_args=json.dumps({"block_size": PREFIX_BLOCK_TOKENS}),
    )
    yield server
    server.stop_soon()


# The keyed server's API keys, its admin key, and the LoRA adapters it serves.
KEYS = ("alice-key", "bob-key")
ADMIN_KEY = "keyed-admin-key"
KEYED_ADAPTER = "face-a"
KEYED_ADAPTERS = {KEYED_ADAPTER: "demo-lora-1", "face-b": "demo-lora-2"}


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server with API keys for the session, shared by the tests that need keys (the
    Batch API's per-key ownership, the playground's key prompt, LoRA's admin-only loads). It
    serves two demo LoRA adapters, loads more at run time with the admin key, and starts at most
    20 batch lines a second, so a cancel lands mid-batch."""
    tmp = tmp_path_factory.mktemp("keyed")
    server = start_server(
        tmp / "server.log",
        api_keys=json.dumps(list(KEYS)),
        admin_api_key=ADMIN_KEY,
        lora_adapters=json.dumps(KEYED_ADAPTERS),
        max_lora_rank="8",
        allow_runtime_lora="true",
        batch_dir=str(tmp / "batches"),
        batch_max_lines_per_s="20",
    )
    yield server
    server.stop_soon()


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> float:
    """Seconds until `condition()` holds, polled every 10 ms; fails past `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_s} s")
