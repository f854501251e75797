"""The Batch API on the fake engine, through the official `openai` SDK in process: files in and
out, a batch run to completion, validation failures, cancel, and per-key ownership (fast; the
real engine and server processes: tests/e2e/test_batch*.py)."""

from __future__ import annotations

import asyncio
import io
from collections import Counter

import openai
import pytest
from openai.types import Batch
from pydantic import SecretStr

from model.fake_engine import FakeEngine
from tests.conftest import AppClient, MakeClient, until
from tests.server.batch.helpers import (
    CHAT,
    FACES,
    batch_when,
    chat_line,
    face_line,
    jsonl,
    records,
    sdk,
    wait_for,
)

DONE = ("completed", "failed", "cancelled", "expired")


def scrape(client: AppClient) -> str:
    return client.state.metrics.exposition().decode()


def completed(batch: Batch) -> int:
    return batch.request_counts.completed if batch.request_counts else 0


async def test_a_chat_batch_completes_with_every_custom_id_once(make_client: MakeClient) -> None:
    async with make_client() as client:
        api = sdk(client.app)
        lines = [chat_line(f"req-{i}", f"hello {i}") for i in range(25)]
        uploaded = await api.files.create(
            file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch"
        )
        assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
        assert uploaded.filename == "in.jsonl"
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h",
            metadata={"job": "t"},
        )  # fmt: skip
        assert batch.status == "validating" and batch.metadata == {"job": "t"}
        done = await wait_for(api, batch.id, DONE)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (25, 25)
        assert done.completed_at and done.in_progress_at and done.finalizing_at
        assert done.output_file_id and done.error_file_id is None
        out = records((await api.files.content(done.output_file_id)).content)
        assert Counter(r["custom_id"] for r in out) == Counter(f"req-{i}" for i in range(25))
        first = out[0]["response"]
        assert first["status_code"] == 200 and first["body"]["object"] == "chat.completion"
        assert first["request_id"] and out[0]["error"] is None
        listed = await api.batches.list()
        assert [b.id for b in listed.data] == [batch.id]
        assert (await api.files.retrieve(uploaded.id)).id == uploaded.id
        await until(lambda: 'facellm_batches{status="completed"} 1.0' in scrape(client), 10)
        assert 'facellm_batch_lines_total{status="completed"} 25.0' in scrape(client)


async def test_run_time_errors_go_to_the_error_file_as_the_endpoint_answers(
    make_client: MakeClient,
) -> None:
    # Valid for the request model, refused by the service: the live endpoint's 400 and envelope.
    async with make_client(max_tokens_limit=8) as client:
        api = sdk(client.app)
        live = await client.post(CHAT, json=chat_line("x", max_tokens=100)["body"])
        lines = [chat_line("ok"), chat_line("too-long", max_tokens=100)]
        uploaded = await api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
        done = await wait_for(api, batch.id, DONE)
        assert done.status == "completed"
        assert done.request_counts and done.request_counts.failed == 1
        assert done.error_file_id and done.output_file_id
        [error] = records((await api.files.content(done.error_file_id)).content)
        assert error["custom_id"] == "too-long"
        assert error["response"]["status_code"] == live.status_code == 400
        assert error["response"]["body"] == live.json()


async def test_faces_lines_run_through_the_faces_service(make_client: MakeClient) -> None:
    async with make_client() as client:
        api = sdk(client.app)
        uploaded = await api.files.create(
            file=("f.jsonl", jsonl([face_line("a"), face_line("b")])), purpose="batch"
        )
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=FACES, completion_window="24h"
        )
        done = await wait_for(api, batch.id, DONE)
        assert done.status == "completed" and done.output_file_id
        out = records((await api.files.content(done.output_file_id)).content)
        assert {r["custom_id"] for r in out} == {"a", "b"}
        assert all(r["response"]["body"]["faces"] for r in out)


async def test_bad_lines_fail_the_batch_naming_each_line(make_client: MakeClient) -> None:
    lines = [
        chat_line("a"),
        chat_line("a"),  # duplicate custom_id
        {**chat_line("b"), "url": FACES},  # not the batch's endpoint
        chat_line("c", temperature="hot"),  # invalid body
        chat_line("d"),
    ]
    async with make_client() as client:
        api = sdk(client.app)
        uploaded = await api.files.create(file=("bad.jsonl", jsonl(lines)), purpose="batch")
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
        failed = await wait_for(api, batch.id, DONE)
        assert failed.status == "failed" and failed.failed_at and failed.output_file_id is None
        assert failed.errors and failed.errors.data
        found = {(e.line, e.code) for e in failed.errors.data}
        assert found == {(2, "duplicate_custom_id"), (3, "invalid_url"), (4, "invalid_request")}
        assert failed.errors.data[2].param == "body.temperature"
        assert failed.error_file_id
        errors = records((await api.files.content(failed.error_file_id)).content)
        assert sorted(e["error"]["line"] for e in errors) == [2, 3, 4]
        assert all(e["error"]["message"].startswith("Line ") for e in errors)


async def test_cancel_keeps_what_finished(make_client: MakeClient) -> None:
    async with make_client(batch_max_lines_per_s=20) as client:  # 40 lines: ≈ 2 s
        api = sdk(client.app)
        uploaded = await api.files.create(
            file=("in.jsonl", jsonl([chat_line(f"r{i}") for i in range(40)])), purpose="batch"
        )
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
        started = await batch_when(api, batch.id, lambda b: completed(b) >= 3)
        assert started.status == "in_progress"
        cancelling = await api.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        cancelled = await wait_for(api, batch.id, DONE)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at
        counts = cancelled.request_counts
        assert counts and counts.total == 40 and counts.completed < 40
        finished = []
        if cancelled.output_file_id:
            finished = records((await api.files.content(cancelled.output_file_id)).content)
        assert len(finished) == counts.completed
        assert cancelled.error_file_id
        rest = records((await api.files.content(cancelled.error_file_id)).content)
        assert {r["error"]["code"] for r in rest} == {"batch_cancelled"}
        assert len(finished) + len(rest) == 40


async def test_another_key_sees_no_file_or_batch(make_client: MakeClient) -> None:
    keys = [SecretStr("alice"), SecretStr("bob")]
    async with make_client(api_keys=keys) as client:
        alice, bob = sdk(client.app, "alice"), sdk(client.app, "bob")
        uploaded = await alice.files.create(
            file=("in.jsonl", jsonl([chat_line("a")])), purpose="batch"
        )
        batch = await alice.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
        for call in (
            bob.files.retrieve(uploaded.id),
            bob.files.content(uploaded.id),
            bob.files.delete(uploaded.id),
            bob.batches.retrieve(batch.id),
            bob.batches.cancel(batch.id),
            bob.batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert (await bob.files.list()).data == [] and (await bob.batches.list()).data == []
        assert (await alice.batches.retrieve(batch.id)).id == batch.id
        with pytest.raises(openai.AuthenticationError):
            await sdk(client.app, "mallory").batches.list()


async def test_a_line_the_engine_could_not_serve_runs_again(make_client: MakeClient) -> None:
    engine = FakeEngine()
    engine.dead = True  # every line's generation fails: 503, engine unavailable
    async with make_client(engine) as client:
        api = sdk(client.app)
        uploaded = await api.files.create(
            file=("in.jsonl", jsonl([chat_line(f"r{i}") for i in range(5)])), purpose="batch"
        )
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
        await until(lambda: client.state.monitor.verdict is not None, 10)
        stuck = await api.batches.retrieve(batch.id)
        assert stuck.status == "in_progress" and completed(stuck) == 0
        assert stuck.request_counts and stuck.request_counts.failed == 0  # no 503 recorded
        engine.dead, client.state.monitor.verdict = False, None  # as after a restart
        done = await wait_for(api, batch.id, DONE)
        assert done.status == "completed" and completed(done) == 5
        assert done.output_file_id
        out = records((await api.files.content(done.output_file_id)).content)
        assert sorted(r["custom_id"] for r in out) == [f"r{i}" for i in range(5)]


async def test_interactive_traffic_preempts_batch_lines(make_client: MakeClient) -> None:
    engine = FakeEngine(step_delay_s=0.02)  # a 4-token line takes ≈ 0.1 s
    async with make_client(engine, batch_concurrency=4, batch_idle_s=0.3) as client:
        api, runner = sdk(client.app), client.app.state.batch.runner
        lines = [chat_line(f"r{i}") for i in range(30)]
        uploaded = await api.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
        await until(lambda: len(runner.running) > 0, 10)
        # An interactive request of ≈ 1 s: no batch line runs beside it.
        interactive = asyncio.create_task(
            client.post(CHAT, json={**chat_line("x")["body"], "max_tokens": 50})
        )
        await until(lambda: client.state.admission.in_flight > 0, 5)
        await until(lambda: not runner.running, 1)
        seen_running = 0
        while not interactive.done():
            seen_running = max(seen_running, len(runner.running))
            await asyncio.sleep(0.01)
        assert (await interactive).status_code == 200
        assert seen_running == 0
        done = await wait_for(api, batch.id, DONE)
        assert done.status == "completed" and done.output_file_id
        out = records((await api.files.content(done.output_file_id)).content)
        assert sorted(r["custom_id"] for r in out) == sorted(f"r{i}" for i in range(30))
