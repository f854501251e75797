"""The job store on both backends, SQLite and a real PostgreSQL: claims never overlap, a result
is written once, a lapsed lease is claimed again, file contents read back by range and line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from server.batch.postgres import CHUNK, postgres_store
from server.batch.records import BatchRecord, FileRecord, LineResult, LineSpec
from server.batch.sqlite import sqlite_store
from server.batch.store import Store
from tests.postgres import running_postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = sqlite_store(tmp_path / "batch")
    else:
        opened = await asyncio.to_thread(postgres_store, request.getfixturevalue("postgres_url"))
    yield opened
    opened.close()


async def new_batch(store: Store, lines: int, expires_in: float = 3600) -> BatchRecord:
    """A batch of `lines` lines, in progress."""
    now = int(time.time())
    suffix = f"{time.monotonic_ns()}"
    await store.add_file(FileRecord(f"file-{suffix}", "o", "in.jsonl", "batch", 1, lines, now))
    batch = BatchRecord(
        f"batch_{suffix}", "o", "/v1/chat/completions", f"file-{suffix}", "24h", "validating",
        None, None, None, None, {"created_at": now, "expires_at": int(now + expires_in)},
    )  # fmt: skip
    await store.add_batch(batch)
    specs = [LineSpec(i + 1, f"c{i}", i * 10, 10) for i in range(lines)]
    assert await store.start(batch.id, specs, now)
    return batch


async def test_claims_never_overlap_and_results_are_written_once(store: Store) -> None:
    batch = await new_batch(store, 10)
    now = time.time()
    a = await store.claim_lines("a", now, now + 60, 6)
    b = await store.claim_lines("b", now, now + 60, 6)
    assert len(a) == 6 and len(b) == 4
    assert not {x.line_no for x in a} & {x.line_no for x in b}
    result = LineResult(ok=True, record='{"x":1}')
    assert await store.record(a[0], result, int(now))
    assert not await store.record(a[0], result, int(now))  # a second run of the same line
    found = await store.batch(batch.id)
    assert found is not None and (found.completed, found.failed) == (1, 0)


async def test_a_lapsed_lease_is_claimed_again_and_release_frees_at_once(store: Store) -> None:
    await new_batch(store, 3)
    now = time.time()
    assert len(await store.claim_lines("dead", now, now - 1, 3)) == 3  # already lapsed
    taken = await store.claim_lines("alive", now, now + 60, 3)
    assert len(taken) == 3
    assert await store.claim_lines("other", now, now + 60, 3) == []
    await store.release(["alive"])
    assert len(await store.claim_lines("other", now, now + 60, 3)) == 3


async def test_a_cancelled_batch_takes_no_late_result(store: Store) -> None:
    batch = await new_batch(store, 2)
    now = time.time()
    first, second = await store.claim_lines("a", now, now + 60, 2)
    assert await store.record(first, LineResult(True, "{}"), int(now))
    cancelled = await store.cancel(batch.id, "o", int(now))
    assert cancelled is not None and cancelled.status == "cancelling"
    assert not await store.record(second, LineResult(True, "{}"), int(now))
    rows = await asyncio.to_thread(lambda: list(store.results(batch.id)))
    assert [(row[0], row[3] is not None) for row in rows] == [(1, True), (2, False)]


async def test_contents_read_back_by_range_and_line(store: Store) -> None:
    lines = [b"x" * (CHUNK // 3 + i) for i in range(7)] + [b"", b"last"]
    data = b"\n".join(lines)
    writer = store.blobs.writer("file-blob")
    for i in range(0, len(data), 100_003):
        writer.write(data[i : i + 100_003])
    writer.commit()
    assert b"".join(store.blobs.chunks("file-blob")) == data
    read = list(store.blobs.lines("file-blob", CHUNK))
    assert [line for _, line in read] == lines
    for offset, line in read:
        assert store.blobs.read("file-blob", offset, len(line)) == line
    # An over-long line comes cut to one byte past the cap, and the next line is found.
    cut = list(store.blobs.lines("file-blob", 1000))
    assert [len(line) for _, line in cut][:2] == [1001, 1001]
    assert cut[-1][1] == b"last"
    store.blobs.delete("file-blob")
    assert list(store.blobs.chunks("file-blob")) == []
