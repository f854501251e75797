"""The embedded store: SQLite plus a directory of files (`batch_dir`).

For one replica, or a dedicated batch replica with a volume; several API processes of one
replica share it safely (SQLite locks the file; each transaction starts IMMEDIATE). WAL with
synchronous=NORMAL survives a killed process: a committed result stays committed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.batch.blobs import DirBlobs
from server.batch.store import Cursor, Database, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT,
    errors TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    in_progress_at INTEGER,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    expired_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    start_byte INTEGER NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    ok INTEGER,
    record TEXT,
    lease_owner TEXT,
    lease_until REAL,
    PRIMARY KEY (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS lines_pending ON lines (state, batch_id, line_no);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status);
"""


class SQLiteDatabase(Database):
    def __init__(self, path: Path) -> None:
        # One connection, used by one worker thread at a time (the lock); autocommit mode so
        # `transaction` decides where each transaction starts.
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")  # other API processes on the same file
        self.conn.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self.lock:
            cursor = self.conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def sql(self, statement: str) -> str:
        return statement

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def sqlite_store(batch_dir: Path) -> Store:
    batch_dir.mkdir(parents=True, exist_ok=True)
    return Store(SQLiteDatabase(batch_dir / "batch.db"), DirBlobs(batch_dir / "files"))
