"""LoRA adapters: what makes a directory one, and the engine's table of those it serves.

Both engines keep an `AdapterTable`, so what a client sees (which names exist, what a taken name
or a too-large rank says) is the same on the fake engine as on vLLM.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from model.engine import Adapter, AdapterError, UnknownAdapter

ADAPTER_CONFIG = "adapter_config.json"  # PEFT's
# What a client gives as `model`, and a metric label: a model id's characters, bounded.
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def adapter_rank(path: Path) -> int:
    """The rank `r` an adapter directory declares in its PEFT config."""
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
        rank = config["r"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AdapterError(f"{path} holds no readable PEFT {ADAPTER_CONFIG} with a rank") from e
    if not isinstance(rank, int) or rank < 1:
        raise AdapterError(f"{path}: {ADAPTER_CONFIG} declares no valid rank (r={rank!r})")
    return rank


class AdapterTable:
    """The adapters served now, by name, with the integer ids vLLM knows them by.

    Ids are never reused: vLLM caches adapter weights by id, and an adapter loaded again under
    a name it once had must not meet the old weights there."""

    def __init__(self, base_name: str, max_rank: int | None) -> None:
        self.base_name = base_name
        self.max_rank = max_rank  # None: LoRA is off in this engine
        self._ids: dict[str, int] = {}
        self._adapters: dict[str, Adapter] = {}
        self._last_id = 0

    @property
    def adapters(self) -> list[Adapter]:
        return list(self._adapters.values())

    def admit(self, adapter: Adapter) -> int:
        """Check `adapter` can be served; returns the id it will have. Adds nothing yet."""
        if self.max_rank is None:
            raise AdapterError("LoRA is not enabled in this engine")
        if not ADAPTER_NAME.match(adapter.name):
            raise AdapterError(
                "an adapter name is 1-128 letters, digits and . _ : / - (a letter or digit first)"
            )
        if adapter.name == self.base_name or adapter.name in self._adapters:
            raise AdapterError(f"the name {adapter.name!r} is already served")
        rank = adapter_rank(adapter.path)
        if rank > self.max_rank:
            raise AdapterError(
                f"adapter {adapter.name!r} has rank {rank}, above max_lora_rank {self.max_rank}"
            )
        return self._last_id + 1

    def add(self, adapter: Adapter, adapter_id: int) -> None:
        self._adapters[adapter.name] = adapter
        self._ids[adapter.name] = adapter_id
        self._last_id = max(self._last_id, adapter_id)

    def get(self, name: str) -> tuple[Adapter, int]:
        """The adapter served as `name`, with its id."""
        if name not in self._adapters:
            raise UnknownAdapter(name)
        return self._adapters[name], self._ids[name]

    def remove(self, name: str) -> int:
        _, adapter_id = self.get(name)
        del self._ids[name], self._adapters[name]
        return adapter_id
