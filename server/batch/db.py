"""What the job store needs of a database: its tables, in SQL that SQLite and PostgreSQL both
take, and one transaction at a time in a worker thread."""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from typing import Any

Cursor = Any  # a DB-API cursor (sqlite3 or psycopg)

# The tables, in SQL both databases take: `{serial}` is each one's auto-increasing key.
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq {serial},
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE TABLE IF NOT EXISTS batches (
    seq {serial},
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
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    in_progress_at BIGINT,
    finalizing_at BIGINT,
    completed_at BIGINT,
    failed_at BIGINT,
    expired_at BIGINT,
    cancelling_at BIGINT,
    cancelled_at BIGINT,
    total BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    custom_id TEXT NOT NULL,
    start_byte BIGINT NOT NULL,
    size BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    ok BIGINT,
    record TEXT,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION,
    PRIMARY KEY (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS lines_pending ON lines (state, batch_id, line_no);
CREATE INDEX IF NOT EXISTS batches_status ON batches (status);
"""


class Database(abc.ABC):
    """One connection's worth of SQL, run in a worker thread, one transaction at a time."""

    def lock_rows(self, table: str) -> str:
        """The clause that makes a claim's SELECT skip rows another replica is claiming (none
        is needed where one writer at a time holds the whole database)."""
        return ""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]: ...

    @abc.abstractmethod
    def sql(self, statement: str) -> str:
        """The statement with `?` placeholders as this driver wants them."""

    @abc.abstractmethod
    def close(self) -> None: ...
