"""A burst of huge transparent PNGs must neither balloon the server's memory nor leave it high.

Each 5000×5000 fully transparent PNG is ≈ 95 KB on the wire and 100 MB of RGBA once decoded, so
a few concurrent requests carrying four each are a cheap way to exhaust a server. The process
tree (API process, vLLM EngineCore and worker) may grow by at most 2 GiB while the burst lasts
and must be back within 500 MiB of its baseline 2 s afterwards; every request must get a 200 or
a clean refusal (4xx, 429, 503) in the OpenAI error envelope, never a 5xx or a dropped
connection; and the server must still answer /health.

It runs on the session's server, whose pixel limit is the default, 25 MP, so that every image is
decoded (or deliberately shrunk) rather than refused, and at least one request must be answered:
refusing everything would pass the memory checks without serving anything.

Measured (growth at the peak / after): before images were decoded to need, 8 × 4: +4.9 GiB /
+24 MiB; with decode to need, the pixel budget and `server.memory.tune_malloc`, 32 × 4:
+1.2 GiB / +25 MiB.
"""

from __future__ import annotations

import httpx
import pytest

from loadtests.image_burst import BurstResult, run_burst
from server.config import Settings
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

REQUESTS, IMAGES, SIDE = 32, 4, 5000  # the burst; ≈ 20 s on 2 cores
MiB = 1024 * 1024
PEAK_GROWTH_LIMIT = 2048 * MiB
AFTER_GROWTH_LIMIT = 500 * MiB


def _clean(status: str) -> bool:
    """200, or a refusal the client can act on: 4xx (429 included) or 503, never 5xx else."""
    return status.isdigit() and (int(status) in (200, 503) or 400 <= int(status) < 500)


@pytest.fixture
def burst(real_server: ServerProcess) -> tuple[BurstResult, int, bool]:
    """The burst against the session's server (its pixel limit is the default, 25 MP); then its
    /health status and whether it lives."""
    result = run_burst(
        real_server.base_url,
        requests=REQUESTS,
        images=IMAGES,
        side=SIDE,
        pid=real_server.proc.pid,
        timeout_s=180,
    )
    health = httpx.get(f"{real_server.base_url}/health", timeout=10).status_code
    return result, health, real_server.proc.poll() is None


def test_image_burst_memory(burst: tuple[BurstResult, int, bool]) -> None:
    assert Settings.model_fields["max_image_pixels"].default == SIDE * SIDE  # every image decoded
    result, health, alive = burst
    report = result.summary()
    assert all(_clean(status) for status in result.statuses), report
    assert result.bad_envelopes == 0, report
    assert result.statuses.get("200", 0) >= 1, report
    assert alive, report
    assert health == 200, report
    assert result.samples > 0, report
    assert result.peak_growth <= PEAK_GROWTH_LIMIT, report
    assert result.after_growth <= AFTER_GROWTH_LIMIT, report
