"""Settings (server/config.py): every field is an env var and a CLI flag, documented, and the
README table is current; `--config FILE.yaml` sets any of them, below the environment and the CLI;
a key the settings do not have, a file that cannot be read, or settings that cannot work together
are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import CliApp

from scripts.settings_table import table
from server.config import ConfigError, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELLM_TENSOR_PARALLEL_SIZE", "2")
    monkeypatch.setenv("FACELLM_ATTRIBUTES", '["age_group", "eyewear"]')
    monkeypatch.setenv("FACELLM_ENFORCE_EAGER", "true")
    s = Settings()
    assert (s.tensor_parallel_size, s.attributes, s.enforce_eager) == (
        2,
        ["age_group", "eyewear"],
        True,
    )


def test_cli_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELLM_PORT", "9000")
    s = CliApp.run(
        Settings,
        cli_args=[
            "--port",
            "9100",
            "--model",
            "FaceLLM-8B",
            "--enforce-eager",
            "--max-concurrent-requests",
            "7",
        ],
    )
    assert (s.port, s.model, s.enforce_eager, s.max_concurrent_requests) == (
        9100,
        "FaceLLM-8B",
        True,
        7,
    )


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACELLM_TENSOR_PARALLEL_SIZE", "0")
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        Settings()


def test_every_setting_is_documented_and_the_readme_table_is_current() -> None:
    assert all(field.description for field in Settings.model_fields.values())
    assert table() in README.read_text(), "README settings table is stale: make settings-doc"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"allow_runtime_lora": True}, "needs admin_api_key"),
        ({"max_lora_rank": 4}, "max_lora_rank must be one of"),
        ({"lora_adapters": {" ": "demo-lora-1"}}, "non-empty name"),
    ],
)
def test_lora_settings_that_cannot_work_stop_the_start(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**settings)  # type: ignore[arg-type]


# --- the settings file ----------------------------------------------------------------------------


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
