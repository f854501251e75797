"""A 60-second soak and chaos run against a real server (real vLLM engine, demo model).

Four good clients (image chat, streamed and not, face analysis) share the server with 20 stalled
uploads, 4 clients that never read, mid-stream disconnects and oversized requests. Every good
request must get a 200, nobody a 5xx; the server tree's RSS may grow by at most 60 MB/min after
the warm-up (a leak of a megabyte a second); the server must hold no more than a few extra file
descriptors once the hostile connections are closed; every oversized or many-image request must
get a 4xx.

The admission limit is set to 16, below the 24 connections the stalled uploads and the
never-reading clients hold: the attack is scaled to the limit (as 130 stalled sockets would be to
the default 128) without opening hundreds of sockets on a 2-core machine. A server that admits a
request before its body arrives, or never times out a write, lends its slots to those clients,
and the good ones get 429.

The RSS slope leaves out the first 40 % of the run, not the CLI's 20 %: a fresh server's tree
grows by ≈ 100 MB over its first 20 s of this traffic (allocator arenas, caches, the first 20 MB
bodies and 3 MB answers), then by ≈ 2 MB/min (measured over 300 s). In a 60 s run, 20 % would
fit the end of that warm-up and report it as a leak. Even so, one minute cannot tell 5 MB/min from
noise (fresh servers measured +31, +13, +6.5 and −30 MB/min): the 5 MB/min goal belongs to the
ten-minute `make soak`, which measured +3.4 MB/min over 300 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.hostile import KINDS, HostilePlan
from loadtests.soak import Goals, SoakConfig, SoakResult, run_soak
from tests.conftest import start_server

pytestmark = [pytest.mark.load, pytest.mark.e2e]

DURATION_S = 60.0
ADMISSION_LIMIT = 16
PLAN = HostilePlan(stalled_uploads=20, never_read=4, midstream=2, stalled_cap_s=60.0)
GOALS = Goals(max_good_errors=0, max_rss_slope_mb_min=60.0, fd_margin=10)


@pytest.fixture
def soak(tmp_path: Path) -> SoakResult:
    """The soak against a server of its own, stopped afterwards whatever happens."""
    server = start_server(tmp_path / "server.log", max_concurrent_requests=str(ADMISSION_LIMIT))
    try:
        config = SoakConfig(
            duration_s=DURATION_S, warmup_fraction=0.4, plan=PLAN, goals=GOALS, settle_s=15.0
        )
        return run_soak(server.base_url, config, pid=server.proc.pid)
    finally:
        server.stop()


@pytest.mark.timeout(600)  # server start (≤ 240 s) + 60 s soak + stragglers and settling
def test_soak_with_hostile_clients_meets_its_goals(soak: SoakResult) -> None:
    report = soak.summary()
    print(report)  # the figures, in the log of a passing run too
    # The run did what it claims: good traffic flowed, every hostile kind was tried, and the
    # figures behind the goals were measured.
    assert soak.good_requests > 0, report
    assert set(soak.hostile) == set(KINDS), report
    assert soak.rss_samples >= DURATION_S * 0.8 / 2, report
    assert soak.rss_slope_mb_per_min is not None, report
    assert soak.fds_start is not None and soak.fds_end is not None, report
    # The goals, all at once, so one report says everything that failed.
    assert soak.failures == [], report
