"""`--config FILE.yaml`: every setting from a file, below the environment and the CLI; a key the
settings do not have, or a file that cannot be read, is a one-line error (exit 1)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from pydantic_settings import CliApp

import server.__main__ as entry
from server.config import ConfigError, Settings
from server.watchdog import ExitCode

FILE = """\
model: FaceLLM-8B
max-model-len: 8192          # kebab-case reads the same
max_num_seqs: 16
attributes: [age_group, eyewear]
engine_args:
  enable_prefix_caching: true
  max_num_batched_tokens: 4096
lora_adapters:
  support: /models/adapters/support
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "facellm.yaml"
    path.write_text(FILE)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_config_flag_loads_every_kind_of_setting(config_file: Path) -> None:
    s = CliApp.run(Settings, cli_args=["--config", str(config_file)])
    assert (s.model, s.max_model_len, s.max_num_seqs) == ("FaceLLM-8B", 8192, 16)
    assert s.attributes == ["age_group", "eyewear"]
    assert s.engine_args == {"enable_prefix_caching": True, "max_num_batched_tokens": 4096}
    assert s.lora_adapters == {"support": "/models/adapters/support"}
    assert s.port == 8000  # what the file leaves out keeps its default


def test_env_var_names_the_file_too(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> None:
    monkeypatch.setenv("FACELLM_CONFIG", str(config_file))
    assert Settings().max_model_len == 8192


def test_env_overrides_the_file_and_the_cli_overrides_env(
    monkeypatch: pytest.MonkeyPatch, config_file: Path
) -> None:
    monkeypatch.setenv("FACELLM_MAX_MODEL_LEN", "2048")
    monkeypatch.setenv("FACELLM_MAX_NUM_SEQS", "32")
    monkeypatch.setenv("FACELLM_ENGINE_ARGS", '{"seed": 1}')
    s = CliApp.run(Settings, cli_args=["--config", str(config_file), "--max-num-seqs", "8"])
    assert (s.model, s.max_model_len, s.max_num_seqs) == ("FaceLLM-8B", 2048, 8)
    assert s.engine_args == {"seed": 1}  # replaced whole, not merged with the file's


def test_unknown_key_is_named_with_the_nearest_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "max_model_len: 8192\nmax_num_seq: 16\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_num_seq'") as excinfo:
        Settings(config=path)
    assert "did you mean 'max_num_seqs'" in str(excinfo.value)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "no such file"),
        ("model: [demo\n", "not valid YAML"),
        ("- model\n- demo\n", "not a mapping"),
        ("config: other.yaml\n", "unknown setting 'config'"),  # one file, no chains
    ],
)
def test_unusable_file_is_a_clear_error(tmp_path: Path, text: str | None, problem: str) -> None:
    path = write(tmp_path, text) if text is not None else tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=problem):
        Settings(config=path)


def test_bad_value_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        Settings(config=write(tmp_path, "tensor_parallel_size: 0\n"))


# --- the process side: a bad setting exits 1 with one line, no traceback ------------------------


@pytest.fixture
def startup_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Keep pytest's log capture: the real configure_logging would replace its handler.
    monkeypatch.setattr(entry, "configure_logging", lambda level: None)
    caplog.set_level(logging.ERROR, logger=entry.log.name)


def load_settings_exit(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["facellm-server", *argv])
    with pytest.raises(SystemExit) as excinfo:
        entry.load_settings()
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
    monkeypatch.setenv("FACELLM_API_KEYS", '["s3cret-client-key"]')
    monkeypatch.setenv("FACELLM_ADMIN_API_KEY", "s3cret-client-key")
    assert load_settings_exit(monkeypatch) == ExitCode.STARTUP_FAILURE
    (record,) = caplog.records
    assert "admin_api_key must be non-empty and differ" in record.getMessage()
    assert "s3cret" not in record.getMessage()
