"""Two server processes on one PostgreSQL (a real one, from the distribution's package): either
serves a batch created on the other, and they share its lines without answering one twice."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import ServerProcess, start_server
from tests.e2e.batch_client import CHAT, DONE, batch_when, chat_line, lines_of, upload
from tests.postgres import running_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

LINES = 60


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ...]]:
    tmp = tmp_path_factory.mktemp("pg-pair")
    with running_postgres() as url:
        servers: list[ServerProcess] = []
        try:
            for name in ("a", "b"):  # one after the other: two engines starting at once crawl
                servers.append(
                    start_server(
                        tmp / f"{name}.log",
                        batch_database_url=url,
                        batch_max_lines_per_s="10",  # each: neither finishes the batch alone
                    )
                )
            yield tuple(servers)
        finally:
            for server in servers:
                server.stop()


def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def lines_answered(server: ServerProcess) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.findall(r'^facellm_batch_lines_total\{status="\w+"\} (\S+)$', text, re.M)
    return sum(float(n) for n in found)


def test_two_replicas_share_one_batch_without_duplicates(pair: tuple[ServerProcess, ...]) -> None:
    a, b = client(pair[0]), client(pair[1])
    ids = [f"q-{i}" for i in range(LINES)]
    file_id = upload(a, [chat_line(i) for i in ids])
    assert b.files.retrieve(file_id).bytes > 0  # files are shared too
    batch = a.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert b.batches.retrieve(batch.id).id == batch.id
    done = batch_when(b, batch.id, lambda x: x.status in DONE)
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.completed == LINES
    assert a.batches.retrieve(batch.id).status == "completed"
    assert done.output_file_id is not None
    out = lines_of(a, done.output_file_id)
    assert Counter(r["custom_id"] for r in out) == Counter(ids)
    answered = [lines_answered(server) for server in pair]
    assert sum(answered) == LINES and min(answered) > 0, answered  # both took lines
