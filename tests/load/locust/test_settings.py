from __future__ import annotations

import pytest

from loadtests.locust.settings import DEFAULT_MIX, LoadSettings, SettingsError, StepLoad, parse_mix


def test_defaults_without_environment() -> None:
    s = LoadSettings.from_env({})
    assert (s.api_key, s.model, s.max_tokens, s.image_size, s.step) == (None, None, 16, 256, None)
    assert s.mix == parse_mix(DEFAULT_MIX)
    assert s.mix["faces"] > 0


def test_environment_overrides() -> None:
    s = LoadSettings.from_env(
        {
            "FACELLM_LOAD_API_KEY": "k",
            "FACELLM_LOAD_MODEL": "demo",
            "FACELLM_LOAD_MAX_TOKENS": "32",
            "FACELLM_LOAD_IMAGE_SIZE": "128",
            "FACELLM_LOAD_MIX": "chat:1,faces:0",
            "FACELLM_LOAD_STEP_USERS": "2",
            "FACELLM_LOAD_STEP_SECONDS": "5",
        }
    )
    assert (s.api_key, s.model, s.max_tokens, s.image_size) == ("k", "demo", 32, 128)
    assert s.mix == {"chat": 1, "faces": 0}
    assert s.step == StepLoad(users=2, seconds=5.0)


@pytest.mark.parametrize("mix", ["chat", "chat:x", "video:1", "chat:0,stream:0", ""])
def test_bad_mix_is_refused(mix: str) -> None:
    with pytest.raises(SettingsError):
        parse_mix(mix)


@pytest.mark.parametrize("value", ["0", "-1", "ten"])
def test_bad_numbers_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="MAX_TOKENS"):
        LoadSettings.from_env({"FACELLM_LOAD_MAX_TOKENS": value})


@pytest.mark.parametrize(
    ("elapsed", "users"), [(0, 2), (9.9, 2), (10, 4), (25, 6), (60, 7), (1000, 7)]
)
def test_step_load_adds_users_each_step_up_to_the_ceiling(elapsed: float, users: int) -> None:
    assert StepLoad(users=2, seconds=10).users_at(elapsed, max_users=7) == users
