"""The shared store: jobs, lines and file contents in PostgreSQL, for several replicas.

Any replica accepts, lists and serves batches; replicas claim lines with `FOR UPDATE SKIP
LOCKED` (two never claim the same line at once) under a lease, so a dead replica's lines are
taken over when its lease runs out. File contents are stored in 1 MiB chunks in the database:
every replica reads the same bytes, and no volume is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from server.batch.blobs import Blobs, BlobWriter
from server.batch.db import SCHEMA, Cursor, Database
from server.batch.store import Store

CHUNK = 1024 * 1024
_SCHEMA_LOCK = 0x46414345  # an advisory lock: replicas starting together create tables once

CHUNKS = """
CREATE TABLE IF NOT EXISTS file_chunks (
    file_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (file_id, n)
);
"""


class PostgresDatabase(Database):
    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = self._connect()
        self.lock = threading.Lock()
        with self.transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cursor.execute(SCHEMA.format(serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"))
            cursor.execute(CHUNKS)

    def _connect(self) -> Any:
        import psycopg  # only a PostgreSQL store needs the driver

        return psycopg.connect(self.url, autocommit=True)

    def lock_rows(self, table: str) -> str:
        return f" FOR UPDATE OF {table} SKIP LOCKED"

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self.lock:
            if self.conn.closed or self.conn.broken:  # the database restarted: connect again
                self.conn = self._connect()
            with self.conn.transaction(), self.conn.cursor() as cursor:
                yield cursor

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class _ChunkWriter(BlobWriter):
    """Writes each full chunk as it fills: at most one chunk is held in memory."""

    def __init__(self, db: PostgresDatabase, file_id: str) -> None:
        self.db = db
        self.file_id = file_id
        self.buffer = bytearray()
        self.n = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self._flush(bytes(self.buffer[:CHUNK]))
            del self.buffer[:CHUNK]

    def _flush(self, chunk: bytes) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO file_chunks (file_id, n, data) VALUES (%s, %s, %s)",
                (self.file_id, self.n, chunk),
            )
        self.n += 1

    def commit(self) -> None:
        if self.buffer:
            self._flush(bytes(self.buffer))
            self.buffer.clear()

    def discard(self) -> None:
        self.buffer.clear()
        with self.db.transaction() as cursor:
            cursor.execute("DELETE FROM file_chunks WHERE file_id = %s", (self.file_id,))


class ChunkBlobs(Blobs):
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def writer(self, file_id: str) -> BlobWriter:
        return _ChunkWriter(self.db, file_id)

    def read(self, file_id: str, start: int, size: int) -> bytes:
        first, last = start // CHUNK, (start + size - 1) // CHUNK
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT data FROM file_chunks WHERE file_id = %s AND n BETWEEN %s AND %s "
                "ORDER BY n",
                (file_id, first, last),
            )
            joined = b"".join(bytes(row[0]) for row in cursor.fetchall())
        offset = start - first * CHUNK
        return joined[offset : offset + size]

    def chunks(self, file_id: str) -> Iterator[bytes]:
        n = 0
        while True:
            with self.db.transaction() as cursor:
                cursor.execute(
                    "SELECT data FROM file_chunks WHERE file_id = %s AND n = %s", (file_id, n)
                )
                row = cursor.fetchone()
            if row is None:
                return
            yield bytes(row[0])
            n += 1

    def delete(self, file_id: str) -> None:
        with self.db.transaction() as cursor:
            cursor.execute("DELETE FROM file_chunks WHERE file_id = %s", (file_id,))


def postgres_store(url: str) -> Store:
    db = PostgresDatabase(url)
    return Store(db, ChunkBlobs(db))
