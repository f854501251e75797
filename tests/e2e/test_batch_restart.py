"""A server SIGKILLed in the middle of a batch, started again on the same storage, completes the
batch: no line lost, none answered twice (real vLLM, demo model, SQLite + a directory)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import openai
import pytest

from tests.conftest import ServerProcess, start_server
from tests.e2e.batch_client import DONE, FACES, batch_when, completed, face_line, lines_of, upload
from tests.images import astronaut, data_url

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

LINES = 60
RATE = "10"  # lines a second: the kill lands well inside the batch


def start(tmp: Path, name: str) -> ServerProcess:
    return start_server(
        tmp / f"{name}.log", batch_dir=str(tmp / "store"), batch_max_lines_per_s=RATE
    )


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_sigkill_mid_batch_then_restart_completes_each_line_once(tmp_path: Path) -> None:
    first = start(tmp_path, "first")
    try:
        api = client(first)
        ids = [f"photo-{i:03d}" for i in range(LINES)]
        image = data_url(astronaut())
        batch = api.batches.create(
            input_file_id=upload(api, [face_line(i, image) for i in ids]),
            endpoint=FACES,
            completion_window="24h",
        )
        midway = batch_when(api, batch.id, lambda b: completed(b) >= 10)
        assert midway.status == "in_progress" and completed(midway) < LINES
    finally:
        first.kill_tree()  # SIGKILL: no drain, no lease given back
    second = start(tmp_path, "second")
    try:
        api = client(second)
        done = batch_when(api, batch.id, lambda b: b.status in DONE, timeout_s=180)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
        assert done.output_file_id is not None
        out = lines_of(api, done.output_file_id)
        assert Counter(r["custom_id"] for r in out) == Counter(ids)  # each exactly once
        assert all(json.dumps(r["response"]).count('"status_code": 200') == 1 for r in out)
    finally:
        second.stop()
