from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from loadtests.bench.cpu import CPUS, Proc, cpu_by_role, cpu_snapshot, others_share

TICKS = os.sysconf("SC_CLK_TCK")


def test_snapshot_sees_this_process_in_its_group() -> None:
    """With its name and the CPU time it spent: a 0.3-s burn between two snapshots shows as
    that many ticks, within what the process spent in all between them (two ticks of rounding)."""
    pid = os.getpid()
    start = time.process_time()
    before = cpu_snapshot()[pid]
    burn_until = time.process_time() + 0.3
    while time.process_time() < burn_until:
        pass
    after = cpu_snapshot()[pid]
    spent_s = time.process_time() - start
    assert before.group == after.group == os.getpgrp()
    assert after.name == Path("/proc/self/comm").read_text().strip()
    assert 0.3 * TICKS - 2 <= after.ticks - before.ticks <= spent_s * TICKS + 2


def test_others_share_counts_only_foreign_groups_and_new_processes() -> None:
    before = {10: Proc(10, 0, "a"), 20: Proc(20, 0, "b")}
    after = {10: Proc(10, TICKS, "a"), 20: Proc(20, TICKS, "b"), 30: Proc(30, TICKS, "new")}
    assert others_share(before, after, own_groups={10}, seconds=1.0) == 2 / CPUS
    assert others_share(before, after, own_groups={10, 20, 30}, seconds=1.0) == 0


def test_cpu_by_role_names_vllm_processes_and_the_client() -> None:
    me = os.getpid()
    before = {me: Proc(1, 0, "python"), 5: Proc(5, 0, "python")}
    after = {
        me: Proc(1, TICKS, "python"),  # the load generator, outside the server's group
        5: Proc(5, 2 * TICKS, "python"),
        6: Proc(5, 3 * TICKS, "VLLM::EngineCor"),  # the kernel keeps 15 characters
        7: Proc(5, 4 * TICKS, "VLLM::Worker"),
        8: Proc(9, 9 * TICKS, "someone else"),
    }
    assert cpu_by_role(before, after, group=5) == pytest.approx(
        {"front": 2.0, "engine_core": 3.0, "worker": 4.0, "client": 1.0}
    )
