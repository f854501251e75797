"""Settings: every field is an env var and a CLI flag, documented; the README table is current."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import CliApp

from scripts.settings_table import table
from server.config import Settings

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
