"""The Batch API against a real server (real vLLM, demo model, SQLite + a directory), through the
official `openai` client: a faces batch to `completed`, bad lines failing validation, cancel,
and files and batches that another key cannot see."""

from __future__ import annotations

from collections import Counter

import openai
import pytest

from tests.conftest import KEYS, ServerProcess
from tests.e2e.batch_client import (
    CHAT,
    DONE,
    FACES,
    batch_when,
    chat_line,
    face_line,
    lines_of,
    upload,
)
from tests.images import astronaut, data_url

pytestmark = [pytest.mark.e2e, pytest.mark.engine]


@pytest.fixture(scope="module")
def server(keyed_server: ServerProcess) -> ServerProcess:
    return keyed_server


def client(server: ServerProcess, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0, timeout=60)


def test_sdk_runs_a_faces_batch_to_completed(server: ServerProcess) -> None:
    api = client(server)
    image = data_url(astronaut())
    ids = [f"face-{i}" for i in range(20)]
    batch = api.batches.create(
        input_file_id=upload(api, [face_line(i, image) for i in ids]),
        endpoint=FACES,
        completion_window="24h",
        metadata={"archive": "nasa"},
    )
    done = batch_when(api, batch.id, lambda b: b.status in DONE)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (20, 20)
    assert done.output_file_id is not None and done.error_file_id is None
    out = lines_of(api, done.output_file_id)
    assert Counter(r["custom_id"] for r in out) == Counter(ids)  # each exactly once
    for record in out:
        response = record["response"]
        assert isinstance(response, dict) and response["status_code"] == 200
        assert response["body"]["faces"][0]["attributes"]["age_group"]
    assert api.batches.list().data[0].id == batch.id


def test_bad_lines_fail_the_batch_at_validation(server: ServerProcess) -> None:
    api = client(server)
    lines = [
        chat_line("a"),
        chat_line("a"),
        {**chat_line("b"), "url": "/v1/completions"},
        chat_line("c", max_tokens=0),
    ]
    batch = api.batches.create(
        input_file_id=upload(api, lines), endpoint=CHAT, completion_window="24h"
    )
    failed = batch_when(api, batch.id, lambda b: b.status in DONE)
    assert failed.status == "failed" and failed.errors is not None
    assert [(e.line, e.code) for e in failed.errors.data or []] == [
        (2, "duplicate_custom_id"),
        (3, "invalid_url"),
        (4, "invalid_request"),
    ]
    assert failed.error_file_id is not None and failed.output_file_id is None
    named = [r["error"]["line"] for r in lines_of(api, failed.error_file_id)]  # type: ignore[index]
    assert named == [2, 3, 4]


def test_cancel_keeps_what_finished(server: ServerProcess) -> None:
    api = client(server)
    ids = [f"c-{i}" for i in range(60)]  # ≈ 3 s at 20 lines a second
    batch = api.batches.create(
        input_file_id=upload(api, [chat_line(i) for i in ids]),
        endpoint=CHAT,
        completion_window="24h",
    )
    batch_when(
        api, batch.id, lambda b: b.request_counts is not None and b.request_counts.completed >= 5
    )
    assert api.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    cancelled = batch_when(api, batch.id, lambda b: b.status in DONE)
    assert cancelled.status == "cancelled" and cancelled.request_counts is not None
    assert 5 <= cancelled.request_counts.completed < 60
    assert cancelled.output_file_id is not None and cancelled.error_file_id is not None
    finished = lines_of(api, cancelled.output_file_id)
    rest = lines_of(api, cancelled.error_file_id)
    assert len(finished) == cancelled.request_counts.completed
    assert Counter(r["custom_id"] for r in finished + rest) == Counter(ids)


def test_another_key_cannot_see_or_cancel(server: ServerProcess) -> None:
    alice, bob = client(server, KEYS[0]), client(server, KEYS[1])
    file_id = upload(alice, [chat_line("x")])
    batch = alice.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    for call in (
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.files.retrieve(file_id),
        lambda: bob.files.content(file_id),
        lambda: bob.files.delete(file_id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch.id not in [b.id for b in bob.batches.list().data]
    assert batch_when(alice, batch.id, lambda b: b.status in DONE).status == "completed"
