"""CPU accounting from /proc, before and after each point: what our processes spent per request
(front end, EngineCore, worker, load generator), and what others took meanwhile (noise).

This is a shared 2-core machine, so points disturbed beyond a limit are measured again (bounded).
Processes that both start and end between two snapshots are missed: the figures are lower bounds.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class NoisePolicy:
    """When a point counts as undisturbed, and how hard to try for one."""

    own_groups: frozenset[int]  # process groups of the system under test and the load generator
    max_share: float = 0.15  # of all CPUs, taken by others during the point
    attempts: int = 2
    quiet_wait_s: float = 10.0
    deadline: float = math.inf  # time.time() past which nothing waits or retries (run budget)

    def patient(self) -> bool:
        return time.time() < self.deadline


@dataclass(frozen=True)
class Proc:
    group: int
    ticks: int  # user + system CPU so far
    name: str  # vLLM names its processes (VLLM::EngineCore, VLLM::Worker); else the program


Snapshot = dict[int, Proc]


def cpu_snapshot() -> Snapshot:
    """Every readable process, by pid."""
    snapshot = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
        snapshot[int(stat.parent.name)] = Proc(
            int(fields[2]), int(fields[11]) + int(fields[12]), name
        )
    return snapshot


def _spent(before: Snapshot, after: Snapshot, pid: int) -> int:
    old = before.get(pid)
    return after[pid].ticks - (old.ticks if old else 0)


def others_share(
    before: Snapshot, after: Snapshot, own_groups: Collection[int], seconds: float
) -> float:
    """Share of all CPUs used between the snapshots by processes outside `own_groups`."""
    ticks = sum(
        _spent(before, after, pid)
        for pid, proc in after.items()
        if proc.group not in own_groups and pid != os.getpid()
    )
    return ticks / _TICKS_PER_S / (seconds * CPUS) if seconds > 0 else 0.0


def cpu_by_role(before: Snapshot, after: Snapshot, group: int) -> dict[str, float]:
    """CPU seconds of one process group between the snapshots: "front" (the process that serves
    or drives requests), "engine_core", "worker" (vLLM's processes), "client" (this process,
    when it is not the front)."""
    roles: dict[str, float] = {"front": 0.0, "engine_core": 0.0, "worker": 0.0}
    for pid, proc in after.items():
        if proc.group == group or pid == os.getpid():
            role = _role(proc.name)
            if pid == os.getpid() and proc.group != group:
                role = "client"
            roles[role] = roles.get(role, 0.0) + _spent(before, after, pid) / _TICKS_PER_S
    return roles


def _role(name: str) -> str:
    """The kernel keeps 15 characters of a name: "VLLM::EngineCore" arrives as "VLLM::EngineCor"."""
    if name.startswith("VLLM::Engine"):
        return "engine_core"
    return "worker" if name.startswith("VLLM::Worker") else "front"


async def wait_for_quiet(policy: NoisePolicy, window_s: float = 1.0) -> float:
    """Wait (at most `policy.quiet_wait_s`) until others leave the CPUs; their last share."""
    share = 1.0
    for _ in range(max(1, int(policy.quiet_wait_s / window_s))):
        before = cpu_snapshot()
        await asyncio.sleep(window_s)
        share = others_share(before, cpu_snapshot(), policy.own_groups, window_s)
        if share < policy.max_share or not policy.patient():
            break
    return share
