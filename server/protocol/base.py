"""What every request model shares: unknown fields are refused, as OpenAI does, so a typo is a
400 naming the field rather than a silently ignored setting."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# Fields of OpenAI's vocabulary that ask for what this server cannot do (tools, audio, files…) are
# typed loosely (`Refused`): pydantic accepts them, and server/capabilities.py refuses them with a
# 400 naming the missing capability, rather than a confusing validation error about their shape.
Refused = dict[str, Any]
