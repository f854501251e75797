"""Optional API keys: `Authorization: Bearer <key>`, compared in constant time.

Keys come from the `api_keys` setting and/or a mounted file (one per line), read once at start.
They are checked on the request's head (`middleware.KeyGate`), before its body is read.
Probes never need a key: the orchestrator must reach them. /metrics needs its own key only when
`metrics_api_key` is set (Prometheus is given that one key, not a client's).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from server.config import ConfigError, Settings
from server.errors import AuthenticationFailed


def load_keys(settings: Settings) -> tuple[bytes, ...]:
    """Every accepted key (Settings made sure none is blank). A ConfigError refuses, before
    anything serves, a keys file that cannot be read or that would quietly turn auth off."""
    keys = [secret.get_secret_value().strip() for secret in settings.api_keys]
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except OSError as e:
            raise ConfigError(f"api_keys_file {path}: {e.strerror or e}") from e
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            # A mounted Secret that came out blank must not mean "no auth".
            raise ConfigError(f"api_keys_file {path} holds no API key (only blank or # lines)")
        keys += from_file
    return tuple(k.encode() for k in keys)


def metrics_keys(settings: Settings) -> tuple[bytes, ...]:
    """The key /metrics asks for: none when /metrics is open."""
    if settings.metrics_api_key is None:
        return ()
    return (settings.metrics_api_key.get_secret_value().strip().encode(),)


def admin_keys(settings: Settings, user_keys: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The key the admin endpoints ask for. The one place of the admin-key rule: it must not
    also open the user endpoints, so it differs from every key, the keys file's included."""
    if settings.admin_api_key is None:
        return ()
    key = settings.admin_api_key.get_secret_value().strip().encode()
    if not key or key in user_keys:
        raise ConfigError("admin_api_key must be non-empty and differ from every API key")
    return (key,)


def bearer_matches(header: bytes, keys: tuple[bytes, ...]) -> bool:
    """Whether an Authorization header's value is `Bearer <one of keys>` (non-empty)."""
    scheme, _, token = header.partition(b" ")
    given = token.strip()
    # Compare against every key so the time taken says nothing about which one nearly matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    # `given` non-empty: a second line of defence should an empty key ever be configured.
    return scheme.lower() == b"bearer" and bool(given) and matched


def refused() -> AuthenticationFailed:
    return AuthenticationFailed(
        "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
        headers={"WWW-Authenticate": "Bearer"},
    )
