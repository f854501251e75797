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
from server.batch.db import SCHEMA, Cursor, Database
from server.batch.store import Store


class SQLiteDatabase(Database):
    def __init__(self, path: Path) -> None:
        # One connection, used by one worker thread at a time (the lock); autocommit mode so
        # `transaction` decides where each transaction starts.
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")  # other API processes on the same file
        self.conn.executescript(SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))

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
