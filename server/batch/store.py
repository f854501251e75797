"""The durable job store: files, batches and their lines, in SQL shared by SQLite and PostgreSQL.

Exactly-once output rests on one rule: a line's result is written by an UPDATE that only matches
while the line is still pending and its batch still in progress, so a line run twice (a replica
presumed dead that was only slow, a restart after SIGKILL) is recorded once, and its batch's
counts move once. Replicas claim lines under a lease they renew while the line runs; a dead
replica's lines are claimed again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from server.batch.blobs import Blobs
from server.batch.db import Cursor, Database
from server.batch.records import (
    STATUS_STAMPS,
    BatchRecord,
    BatchStatus,
    ClaimedLine,
    FileRecord,
    LineResult,
    LineSpec,
)

T = TypeVar("T")
INSERT_CHUNK = 1000

_FILE_COLUMNS = "id, owner, filename, purpose, bytes, lines, created_at, expires_at"
_BATCH_COLUMNS = (
    "id, owner, endpoint, input_file_id, completion_window, status, metadata, errors, "
    "output_file_id, error_file_id, created_at, expires_at, in_progress_at, finalizing_at, "
    "completed_at, failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed"
)
_STAMP_NAMES = _BATCH_COLUMNS.split(", ")[10:19]


class FileInUse(Exception):
    """The file is the input of a batch that has not finished."""


class Store:
    def __init__(self, db: Database, blobs: Blobs) -> None:
        self.db = db
        self.blobs = blobs

    async def _run(self, work: Callable[[Callable[..., Cursor]], T]) -> T:
        def in_thread() -> T:
            with self.db.transaction() as cursor:

                def execute(statement: str, *params: Any) -> Cursor:
                    cursor.execute(self.db.sql(statement), params)
                    return cursor

                return work(execute)

        return await asyncio.to_thread(in_thread)

    def close(self) -> None:
        self.db.close()

    # --- files -------------------------------------------------------------------------------
    async def add_file(self, f: FileRecord) -> None:
        await self._run(
            lambda x: x(
                f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                f.id, f.owner, f.filename, f.purpose, f.bytes, f.lines, f.created_at, f.expires_at,
            )
        )  # fmt: skip

    async def file(self, file_id: str, owner: str) -> FileRecord | None:
        def read(x: Callable[..., Cursor]) -> FileRecord | None:
            row = x(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND owner = ?", file_id, owner)
            found = row.fetchone()
            return None if found is None else FileRecord(*found)

        return await self._run(read)

    async def files(
        self, owner: str, purpose: str | None, after: str | None, limit: int, ascending: bool
    ) -> tuple[list[FileRecord], bool]:
        where, params = _page("files", owner, after, ascending)
        if purpose is not None:
            where, params = where + " AND purpose = ?", [*params, purpose]
        order = "ASC" if ascending else "DESC"
        statement = f"SELECT {_FILE_COLUMNS} FROM files WHERE {where} ORDER BY seq {order} LIMIT ?"
        rows = await self._run(lambda x: x(statement, *params, limit + 1).fetchall())
        return [FileRecord(*row) for row in rows[:limit]], len(rows) > limit

    async def delete_file(self, file_id: str, owner: str) -> bool:
        def delete(x: Callable[..., Cursor]) -> bool:
            mine = x("SELECT 1 FROM files WHERE id = ? AND owner = ?", file_id, owner)
            if mine.fetchone() is None:
                return False
            busy = x(
                "SELECT 1 FROM batches WHERE input_file_id = ? AND status IN "
                "('validating', 'in_progress', 'finalizing', 'cancelling')",
                file_id,
            ).fetchone()
            if busy is not None:
                raise FileInUse(file_id)
            return bool(x("DELETE FROM files WHERE id = ? AND owner = ?", file_id, owner).rowcount)

        deleted = await self._run(delete)
        if deleted:
            await asyncio.to_thread(self.blobs.delete, file_id)
        return deleted

    # --- batches -----------------------------------------------------------------------------
    async def add_batch(self, b: BatchRecord) -> None:
        meta = None if b.metadata is None else json.dumps(b.metadata)
        await self._run(
            lambda x: x(
                "INSERT INTO batches (id, owner, endpoint, input_file_id, completion_window, "
                "status, metadata, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                b.id, b.owner, b.endpoint, b.input_file_id, b.completion_window, b.status, meta,
                b.stamps["created_at"], b.stamps["expires_at"],
            )
        )  # fmt: skip

    async def batch(self, batch_id: str, owner: str | None = None) -> BatchRecord | None:
        """The batch, if `owner` owns it (None: whoever does)."""
        where = "id = ?" if owner is None else "id = ? AND owner = ?"
        params = (batch_id,) if owner is None else (batch_id, owner)
        statement = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE {where}"
        row = await self._run(lambda x: x(statement, *params).fetchone())
        return None if row is None else _batch(row)

    async def batches(
        self, owner: str, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        where, params = _page("batches", owner, after, ascending=False)
        statement = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE {where} ORDER BY seq DESC LIMIT ?"
        rows = await self._run(lambda x: x(statement, *params, limit + 1).fetchall())
        return [_batch(row) for row in rows[:limit]], len(rows) > limit

    async def cancel(self, batch_id: str, owner: str, now: int) -> BatchRecord | None:
        """Ask a running batch to stop (cancelling); a finished one is returned as it is."""

        def cancel(x: Callable[..., Cursor]) -> None:
            x(
                "UPDATE batches SET status = 'cancelling', cancelling_at = ? WHERE id = ? AND "
                "owner = ? AND status IN ('validating', 'in_progress')",
                now, batch_id, owner,
            )  # fmt: skip

        await self._run(cancel)
        return await self.batch(batch_id, owner)

    async def counts(self) -> dict[str, int]:
        rows = await self._run(
            lambda x: x("SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall()
        )
        return {status: int(n) for status, n in rows}

    # --- the runner's side -------------------------------------------------------------------
    async def claim_batch(self, owner: str, now: float, lease_until: float) -> BatchRecord | None:
        """A batch that needs work beside its lines (validating, cancelling, finalizing, done or
        past its window), held under a lease while this replica does it."""

        def claim(x: Callable[..., Cursor]) -> BatchRecord | None:
            row = x(
                "SELECT id FROM batches WHERE (lease_until IS NULL OR lease_until < ?) AND ("
                "status IN ('validating', 'cancelling', 'finalizing') OR (status = "
                "'in_progress' AND (completed + failed >= total OR expires_at <= ?))) "
                f"ORDER BY seq LIMIT 1{self.db.lock_rows('batches')}",
                now, int(now),
            ).fetchone()  # fmt: skip
            if row is None:
                return None
            x("UPDATE batches SET lease_owner = ?, lease_until = ? WHERE id = ?",
              owner, lease_until, row[0])  # fmt: skip
            found = x(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", row[0]).fetchone()
            return _batch(found)

        return await self._run(claim)

    async def start(self, batch_id: str, lines: Sequence[LineSpec], now: int) -> bool:
        """Validated: its lines become pending work. False if it was cancelled meanwhile."""

        def start(x: Callable[..., Cursor]) -> bool:
            moved = x(
                "UPDATE batches SET status = 'in_progress', in_progress_at = ?, total = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE id = ? AND status = 'validating'",
                now, len(lines), batch_id,
            ).rowcount  # fmt: skip
            if not moved:
                return False
            for i in range(0, len(lines), INSERT_CHUNK):
                for line in lines[i : i + INSERT_CHUNK]:
                    x(
                        "INSERT INTO lines (batch_id, line_no, custom_id, start_byte, size) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        batch_id, line.line_no, line.custom_id, line.start, line.size,
                    )  # fmt: skip
            return True

        return await self._run(start)

    async def move(self, batch_id: str, was: BatchStatus, to: BatchStatus, now: int) -> bool:
        stamp = STATUS_STAMPS[to]
        statement = f"UPDATE batches SET status = ?, {stamp} = ? WHERE id = ? AND status = ?"
        return bool(await self._run(lambda x: x(statement, to, now, batch_id, was).rowcount))

    async def finish(
        self,
        batch: BatchRecord,
        status: BatchStatus,
        now: int,
        files: Sequence[FileRecord] = (),
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        """The batch's end: its output and error files recorded with it, in one transaction."""
        out = next((f.id for f in files if f.purpose == "batch_output"), None)
        err = next((f.id for f in files if f.purpose == "batch_error"), None)
        stamp = STATUS_STAMPS[status]

        def finish(x: Callable[..., Cursor]) -> None:
            for f in files:
                x(
                    f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    f.id, f.owner, f.filename, f.purpose, f.bytes, f.lines, f.created_at,
                    f.expires_at,
                )  # fmt: skip
            x(
                f"UPDATE batches SET status = ?, {stamp} = ?, output_file_id = ?, "
                "error_file_id = ?, errors = ?, lease_owner = NULL, lease_until = NULL "
                "WHERE id = ?",
                status, now, out, err, None if errors is None else json.dumps(errors), batch.id,
            )  # fmt: skip

        await self._run(finish)

    async def claim_lines(
        self, owner: str, now: float, lease_until: float, n: int
    ) -> list[ClaimedLine]:
        """Up to `n` pending lines nobody holds, oldest batch first, now held by `owner`."""

        def claim(x: Callable[..., Cursor]) -> list[ClaimedLine]:
            rows = x(
                "SELECT l.batch_id, b.endpoint, b.input_file_id, l.line_no, l.custom_id, "
                "l.start_byte, l.size FROM lines l JOIN batches b ON b.id = l.batch_id "
                "WHERE b.status = 'in_progress' AND b.expires_at > ? AND l.state = 'pending' "
                "AND (l.lease_until IS NULL OR l.lease_until < ?) "
                f"ORDER BY b.seq, l.line_no LIMIT ?{self.db.lock_rows('l')}",
                int(now), now, n,
            ).fetchall()  # fmt: skip
            for row in rows:
                x("UPDATE lines SET lease_owner = ?, lease_until = ? WHERE batch_id = ? AND "
                  "line_no = ?", owner, lease_until, row[0], row[3])  # fmt: skip
            return [ClaimedLine(*row) for row in rows]

        return await self._run(claim)

    async def record(self, line: ClaimedLine, result: LineResult, now: int) -> bool:
        """The line's result, written once: False when it was already written, or its batch is
        no longer in progress (cancelled, expired: what arrives late is dropped)."""
        counter = "completed" if result.ok else "failed"

        def record(x: Callable[..., Cursor]) -> bool:
            written = x(
                "UPDATE lines SET state = 'done', ok = ?, record = ?, lease_owner = NULL, "
                "lease_until = NULL WHERE batch_id = ? AND line_no = ? AND state = 'pending' "
                "AND EXISTS (SELECT 1 FROM batches WHERE id = ? AND status = 'in_progress' "
                "AND expires_at > ?)",
                int(result.ok), result.record, line.batch_id, line.line_no, line.batch_id, now,
            ).rowcount  # fmt: skip
            if written:
                x(f"UPDATE batches SET {counter} = {counter} + 1 WHERE id = ?", line.batch_id)
            return bool(written)

        return await self._run(record)

    def results(self, batch_id: str, page: int = INSERT_CHUNK) -> Iterator[tuple[Any, ...]]:
        """(line_no, custom_id, ok, record) of every line in order, `record` None for lines
        that never finished. Synchronous, page by page: for the finalizer's worker thread."""
        after = -1
        while True:
            with self.db.transaction() as cursor:
                cursor.execute(
                    self.db.sql(
                        "SELECT line_no, custom_id, ok, record FROM lines WHERE batch_id = ? "
                        "AND line_no > ? ORDER BY line_no LIMIT ?"
                    ),
                    (batch_id, after, page),
                )
                rows = cursor.fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    async def renew(self, owner: str, lease_until: float) -> None:
        def renew(x: Callable[..., Cursor]) -> None:
            x("UPDATE lines SET lease_until = ? WHERE lease_owner = ? AND state = 'pending'",
              lease_until, owner)  # fmt: skip
            x("UPDATE batches SET lease_until = ? WHERE lease_owner = ?", lease_until, owner)

        await self._run(renew)

    async def release(self, owners: Sequence[str]) -> None:
        """Give up every lease these owners hold: their lines are claimable at once."""

        def release(x: Callable[..., Cursor]) -> None:
            for owner in owners:
                x("UPDATE lines SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                  owner)  # fmt: skip
                x("UPDATE batches SET lease_owner = NULL, lease_until = NULL "
                  "WHERE lease_owner = ?", owner)  # fmt: skip

        await self._run(release)

    async def release_line(self, line: ClaimedLine, owner: str) -> None:
        await self._run(
            lambda x: x(
                "UPDATE lines SET lease_owner = NULL, lease_until = NULL WHERE batch_id = ? AND "
                "line_no = ? AND lease_owner = ?",
                line.batch_id, line.line_no, owner,
            )
        )  # fmt: skip

    async def lease_owners(self) -> list[str]:
        rows = await self._run(
            lambda x: x(
                "SELECT DISTINCT lease_owner FROM lines WHERE lease_owner IS NOT NULL UNION "
                "SELECT DISTINCT lease_owner FROM batches WHERE lease_owner IS NOT NULL"
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    async def purge(self, before: int) -> list[str]:
        """Forget finished batches and files created before `before`; the files' ids, whose
        contents the caller deletes."""

        def purge(x: Callable[..., Cursor]) -> list[str]:
            x("DELETE FROM lines WHERE batch_id IN (SELECT id FROM batches WHERE created_at < ? "
              "AND status IN ('failed', 'completed', 'expired', 'cancelled'))", before)  # fmt: skip
            x("DELETE FROM batches WHERE created_at < ? AND status IN "
              "('failed', 'completed', 'expired', 'cancelled')", before)  # fmt: skip
            old = x(
                "SELECT id FROM files WHERE created_at < ? AND id NOT IN (SELECT input_file_id "
                "FROM batches)",
                before,
            ).fetchall()
            for (file_id,) in old:
                x("DELETE FROM files WHERE id = ?", file_id)
            return [str(file_id) for (file_id,) in old]

        return await self._run(purge)


def _page(table: str, owner: str, after: str | None, ascending: bool) -> tuple[str, list[Any]]:
    if after is None:
        return "owner = ?", [owner]
    cmp = ">" if ascending else "<"
    return f"owner = ? AND seq {cmp} (SELECT seq FROM {table} WHERE id = ?)", [owner, after]


def _batch(row: Sequence[Any]) -> BatchRecord:
    (bid, owner, endpoint, input_file_id, window, status, meta, errors, out, err) = row[:10]
    stamps = dict(zip(_STAMP_NAMES, row[10:19], strict=True))
    total, completed, failed = row[19:22]
    return BatchRecord(
        id=bid,
        owner=owner,
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=window,
        status=status,
        metadata=None if meta is None else json.loads(meta),
        errors=None if errors is None else json.loads(errors),
        output_file_id=out,
        error_file_id=err,
        stamps=stamps,
        total=total,
        completed=completed,
        failed=failed,
    )
