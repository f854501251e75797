"""/metrics from the real server: lint-clean for promtool, engine and our series both present."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.images import astronaut, data_url, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

ENGINE_SERIES = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
]
OUR_SERIES = [
    'facellm_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}',
    'facellm_http_request_duration_seconds_bucket{le="0.1",route="/v1/faces/analyze"}',
    "facellm_image_decode_seconds_count",
    "facellm_faces_per_image_bucket",
    "facellm_requests_pre_engine",
    "facellm_image_decodes_waiting",
    "facellm_image_pixels_reserved",
    "facellm_requests_in_flight",
    "facellm_admission_rejections_total",
    "facellm_answer_validation_failures_total",
    'facellm_backlog_requests{model_name="demo"}',
]


@pytest.fixture(scope="module")
def scraped(real_server: ServerProcess) -> str:
    with httpx.Client(base_url=real_server.base_url, timeout=60) as http:
        for _ in range(3):
            body = {"messages": image_message(data_url(astronaut())), "max_tokens": 8}
            assert http.post("/v1/chat/completions", json=body).status_code == 200
            face = http.post("/v1/faces/analyze", json={"image": data_url(astronaut())})
            assert face.status_code == 200
        return http.get("/metrics").text


def promtool_problems(exposition: str) -> tuple[int, list[str]]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make tools` installs it"
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).splitlines()


def test_promtool_parses_and_our_series_are_lint_clean(scraped: str) -> None:
    """promtool's only complaints are about vLLM's own established names (`vllm:` colons, one
    histogram called `_total`), which dashboards depend on; everything we add is clean."""
    code, problems = promtool_problems(scraped)
    assert code in (0, 3), problems  # 1 would be a parse error
    assert all(line.startswith("vllm:") for line in problems), problems
    ours = "\n".join(line for line in scraped.splitlines() if "facellm_" in line) + "\n"
    assert promtool_problems(ours) == (0, [])


@pytest.mark.parametrize("series", ENGINE_SERIES + OUR_SERIES)
def test_series_present(scraped: str, series: str) -> None:
    assert series in scraped
