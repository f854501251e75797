"""The process (server/startup.py, server/serving.py): a bad setting exits 1 with one line and
no traceback; the server stops on the engine watchdog's verdict with its exit code; a failure to
bind is a startup failure; the exit guard kills the engine's processes (fake engine)."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import time
from pathlib import Path

import pytest
import uvicorn

import server.serving as serving
import server.startup as startup
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from server.state import AppState
from server.watchdog import ExitCode
from tests.conftest import until

BOUND_S = 30.0  # the longest any wait below may take (a loaded machine is slow)


# --- a bad setting -------------------------------------------------------------------------------


@pytest.fixture
def startup_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Keep pytest's log capture: the real configure_logging would replace its handler.
    monkeypatch.setattr(startup, "configure_logging", lambda level: None)
    caplog.set_level(logging.ERROR, logger=startup.log.name)


def load_settings_exit(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["facellm-server", *argv])
    with pytest.raises(SystemExit) as excinfo:
        startup.load_settings()
    code = excinfo.value.code
    assert isinstance(code, int)
    return code


@pytest.mark.usefixtures("startup_log")
@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        ({"FACELLM_MAX_LORA_RANK": "4"}, (), "max_lora_rank must be one of"),
        ({"FACELLM_PORT": "0"}, (), "port: Input should be greater than or equal to 1"),
        ({"FACELLM_ENGINE_ARGS": "{not json"}, (), '"engine_args"'),
        ({}, ("--config", "/nonexistent/facellm.yaml"), "/nonexistent/facellm.yaml: no such file"),
        (  # a misspelt key variable would leave auth off
            {"FACELLM_API_KEY": "k"},
            (),
            "FACELLM_API_KEY is not a setting; did you mean FACELLM_API_KEYS?",
        ),
    ],
)
def test_bad_setting_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    argv: tuple[str, ...],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings_exit(monkeypatch, *argv) == ExitCode.STARTUP_FAILURE
    (record,) = caplog.records
    assert record.getMessage().startswith("invalid settings: ")
    assert expected in record.getMessage()
    assert "\n" not in record.getMessage()
    assert record.exc_info is None


@pytest.mark.usefixtures("startup_log")
def test_settings_error_never_echoes_a_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """pydantic's message would carry the whole input, API keys included."""
    monkeypatch.setenv("FACELLM_API_KEYS", '["s3cret-client-key", " "]')
    assert load_settings_exit(monkeypatch) == ExitCode.STARTUP_FAILURE
    (record,) = caplog.records
    assert "api_keys[1] is empty" in record.getMessage()
    assert "s3cret" not in record.getMessage()


# --- the engine watchdog's verdict, and what follows ---------------------------------------------


async def test_the_server_stops_on_a_verdict_and_exits_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guards: list[tuple[int, float]] = []
    monkeypatch.setattr(serving, "arm_exit_guard", lambda code, s: guards.append((code, s)))
    engine = FakeEngine()
    settings = Settings(model_cache_dir=tmp_path, engine_dead_exit_s=5, engine_stall_timeout_s=0.2)
    app = create_app(settings, engine)
    server = serving.DrainingServer(uvicorn.Config(app), app, 30, settings.engine_dead_exit_s)
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
    settings = Settings(
        model_cache_dir=tmp_path, engine_dead_exit_s=0.5, engine_stall_timeout_s=0.2
    )
    app = create_app(settings, FakeEngine())
    server = serving.DrainingServer(uvicorn.Config(app), app, 30)

    def cannot_bind(**_: object) -> None:  # run(sockets=...) or run()
        raise SystemExit(uvicorn.config.STARTUP_FAILURE)

    server.run = cannot_bind  # type: ignore[method-assign]
    assert serving.serve(server) == ExitCode.STARTUP_FAILURE == 1


def test_the_exit_guard_kills_the_engine_processes() -> None:
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    child.start()
    try:
        serving.kill_engine_processes()
        child.join(BOUND_S)
        assert child.exitcode == -signal.SIGKILL
    finally:
        if child.is_alive():
            child.kill()
            child.join(BOUND_S)
