"""Print the README's settings table from `server.config.Settings` (the one source of truth)."""

from __future__ import annotations

import json
import sys

from pydantic_core import PydanticUndefined

from server.config import Settings


def _default(field_name: str) -> str:
    field = Settings.model_fields[field_name]
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined or value is None:
        return ""
    if field_name == "model_cache_dir":
        return "`~/.cache/facellm`"
    return f"`{json.dumps(value) if isinstance(value, list | bool) else value}`"


def table() -> str:
    rows = ["| env var / CLI flag | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = f"FACELLM_{name.upper()}"
        flag = "--" + name.replace("_", "-")
        rows.append(f"| `{env}` / `{flag}` | {_default(name)} | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
