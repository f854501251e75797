"""Load-test settings from `FACELLM_LOAD_*` environment variables (locust owns host, users, time).

The locustfile runs inside locust's process, where a CLI of our own cannot reach it; the
environment is how `python -m loadtests.locust` (or a person running `locust` directly)
configures it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

SCENARIOS = ("chat", "stream", "faces")
DEFAULT_MIX = "chat:3,stream:3,faces:2"


class SettingsError(ValueError):
    """A FACELLM_LOAD_* variable holds something unusable."""


@dataclass(frozen=True)
class StepLoad:
    """Add `users` every `seconds`, up to locust's --users, until its --run-time."""

    users: int
    seconds: float

    def users_at(self, elapsed_s: float, max_users: int) -> int:
        """Users wanted `elapsed_s` into the run: `users` more at the start of each step."""
        steps = int(elapsed_s // self.seconds) + 1
        return min(max_users, steps * self.users)


@dataclass(frozen=True)
class LoadSettings:
    api_key: str | None = None
    model: str | None = None
    max_tokens: int = 16
    image_size: int = 256
    images: int = 32
    prompt: str = "Describe this face."
    mix: dict[str, int] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    step: StepLoad | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LoadSettings:
        def get(name: str) -> str | None:
            return env.get(f"FACELLM_LOAD_{name}") or None

        step_users = get("STEP_USERS")
        return cls(
            api_key=get("API_KEY"),
            model=get("MODEL"),
            max_tokens=_positive_int("MAX_TOKENS", get("MAX_TOKENS"), 16),
            image_size=_positive_int("IMAGE_SIZE", get("IMAGE_SIZE"), 256),
            images=_positive_int("IMAGES", get("IMAGES"), 32),
            prompt=get("PROMPT") or "Describe this face.",
            mix=parse_mix(get("MIX") or DEFAULT_MIX),
            step=StepLoad(
                users=_positive_int("STEP_USERS", step_users, 1),
                seconds=float(_positive_int("STEP_SECONDS", get("STEP_SECONDS"), 10)),
            )
            if step_users
            else None,
        )


def parse_mix(text: str) -> dict[str, int]:
    """`"chat:3,stream:3,faces:0"` → weights per scenario; weight 0 turns a scenario off."""
    mix: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        if name not in SCENARIOS or not weight.strip().isdigit():
            raise SettingsError(
                f"FACELLM_LOAD_MIX item {item!r}: expected NAME:WEIGHT with NAME in {SCENARIOS}"
            )
        mix[name] = int(weight)
    if not any(mix.values()):
        raise SettingsError(f"FACELLM_LOAD_MIX={text!r} turns every scenario off")
    return mix


def _positive_int(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise SettingsError(f"FACELLM_LOAD_{name}={value!r}: expected a positive integer")
    return int(value)
