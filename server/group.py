"""An API process's place in a group of several over one engine core (`api_processes` > 1):
what `server/supervisor.py` hands each process, and what the processes share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.vllm_args import ClientSlot


@dataclass(frozen=True)
class Member:
    """An API process's place in the group: its index, its slot on the engine core, and what
    the group shares (shared memory, one entry a process): readiness and requests in flight."""

    index: int
    client: ClientSlot
    ready: Any  # multiprocessing.Array("b", n)
    busy: Any  # multiprocessing.Array("i", n)

    def mark(self, ready: bool) -> None:
        self.ready[self.index] = int(ready)

    def all_ready(self) -> bool:
        return all(self.ready)

    def report(self, in_flight: int) -> None:
        self.busy[self.index] = in_flight

    def group_idle(self) -> bool:
        return not any(self.busy)
