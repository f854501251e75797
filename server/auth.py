"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time.

Keys come from the `api_keys` setting and/or a mounted file (one per line), read once at start.
Probes and metrics never need a key: the orchestrator and Prometheus must reach them.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import Request

from server.config import Settings
from server.errors import AuthenticationFailed


def load_keys(settings: Settings) -> tuple[bytes, ...]:
    keys = [k.get_secret_value() for k in settings.api_keys]
    if settings.api_keys_file is not None:
        lines = Path(settings.api_keys_file).read_text().splitlines()
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return tuple(k.encode() for k in keys)


class APIKeyAuth:
    """A FastAPI dependency; with no keys configured every request passes."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = keys

    async def __call__(self, request: Request) -> None:  # async: no thread-pool hand-off
        if not self.keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        # Compare against every key so the time taken says nothing about which one nearly matched.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(given, key)
        if scheme.lower() != "bearer" or not matched:
            raise AuthenticationFailed(
                "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
