"""Startup: the settings, the one preflight, and how a startup failure ends the process.

Every setting that cannot work ends the process with exit 1 and one log line that says why
(`invalid settings: …`), never a traceback, whether it was found while reading the settings (a
validator on `Settings`, the settings file) or by `preflight`, which checks what needs more than
the settings' own values before any weights are resolved. Missing weights end it the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import CliApp, SettingsError

from model.vllm_args import EngineArgsError, UnsafeEngineArg, check_engine_args
from model.weights import WeightsNotFound
from server.answers import CONFIDENCE_LOGPROBS
from server.app import face_detector
from server.auth import admin_keys, load_keys
from server.config import ConfigError, Settings
from server.engine_setup import settings_instead
from server.logs import configure_logging
from server.settings_file import check_environment
from server.watchdog import ExitCode

log = logging.getLogger("server.exit")


def load_settings() -> Settings:
    """Settings from the CLI, the environment and the config file. A setting that cannot work
    ends the process (exit 1) with one log line that names it: a traceback would only show where
    it was read. Unknown flags stay argparse's business (usage, exit 2)."""
    try:
        check_environment(os.environ, Settings)
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


@contextlib.contextmanager
def startup_errors_reported() -> Iterator[None]:
    """Settings that cannot work, and missing weights: exit 1 with one line that says why."""
    try:
        yield
    except ConfigError as e:
        exit_startup_failure(f"invalid settings: {e}")
    except WeightsNotFound as e:  # its message says what was tried and which setting to change
        exit_startup_failure(str(e))


def preflight(settings: Settings) -> None:
    """The checks that need the disk or vLLM, all before any weights are resolved: the keys
    file and the admin key against it, the engine arguments against vLLM's, the face detector's
    model. A ConfigError names what is wrong."""
    admin_keys(settings, load_keys(settings))
    try:
        args = check_engine_args(
            settings.engine_args, settings_instead(), settings.allow_unsafe_engine_args
        )
    except UnsafeEngineArg as e:
        hint = "allow it with allow_unsafe_engine_args (FACELLM_ALLOW_UNSAFE_ENGINE_ARGS=true)"
        raise ConfigError(f"engine_args: {e}; {hint}") from e
    except EngineArgsError as e:
        raise ConfigError(f"engine_args: {e}") from e
    max_logprobs = args.get("max_logprobs")
    if isinstance(max_logprobs, int) and 0 <= max_logprobs < CONFIDENCE_LOGPROBS:
        raise ConfigError(
            f"engine_args: 'max_logprobs' is {max_logprobs}; confidences ask for "
            f"{CONFIDENCE_LOGPROBS} (one per option): give at least that, or leave it unset"
        )
    try:
        face_detector(settings)
    except (ValueError, OSError, RuntimeError) as e:
        raise ConfigError(f"face_detector: {e}") from e
