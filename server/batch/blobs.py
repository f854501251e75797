"""File contents (batch input, output and error files), apart from the job database.

Written in pieces as they arrive (an upload is never whole in memory), read back by byte range
(one batch line) or as a stream (a download). `DirBlobs` keeps them in a directory; a
PostgreSQL store keeps them in its database so every replica reads the same bytes.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

READ_CHUNK = 256 * 1024


class BlobWriter(abc.ABC):
    """One file being written; nothing is visible until `commit`."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def discard(self) -> None: ...


class Blobs(abc.ABC):
    """Synchronous on purpose: callers run them in a worker thread (`asyncio.to_thread`)."""

    @abc.abstractmethod
    def writer(self, file_id: str) -> BlobWriter: ...

    @abc.abstractmethod
    def read(self, file_id: str, start: int, size: int) -> bytes: ...

    @abc.abstractmethod
    def chunks(self, file_id: str) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def delete(self, file_id: str) -> None: ...

    def lines(self, file_id: str, max_line: int) -> Iterator[tuple[int, bytes]]:
        """(offset, line) for each line, its newline stripped. A line longer than `max_line`
        comes cut to `max_line + 1` bytes (the caller refuses it by its length): no line is
        held whole past that."""
        pending, base = b"", 0  # pending starts at file offset `base`
        skipping = False  # inside an over-long line whose start was already given
        for chunk in self.chunks(file_id):
            buf, i = pending + chunk, 0
            while (end := buf.find(b"\n", i)) >= 0:
                if not skipping:
                    yield base + i, buf[i : min(end, i + max_line + 1)]
                skipping, i = False, end + 1
            base, pending = base + i, buf[i:]
            if not skipping and len(pending) > max_line:
                yield base, pending[: max_line + 1]
                skipping = True
            if skipping:
                base, pending = base + len(pending), b""
        if pending and not skipping:
            yield base, pending


class _FileWriter(BlobWriter):
    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = final.with_suffix(".part")
        self.file: BinaryIO = self.partial.open("wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.partial.replace(self.final)

    def discard(self) -> None:
        self.file.close()
        self.partial.unlink(missing_ok=True)


class DirBlobs(Blobs):
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for partial in root.glob("*.part"):  # uploads a killed process left half-written
            partial.unlink(missing_ok=True)

    def _path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.jsonl"

    def writer(self, file_id: str) -> BlobWriter:
        return _FileWriter(self._path(file_id))

    def read(self, file_id: str, start: int, size: int) -> bytes:
        with self._path(file_id).open("rb") as f:
            f.seek(start)
            return f.read(size)

    def chunks(self, file_id: str) -> Iterator[bytes]:
        path = self._path(file_id)
        if not path.exists():  # deleted: no content (as in the database store)
            return
        with path.open("rb") as f:
            while chunk := f.read(READ_CHUNK):
                yield chunk

    def delete(self, file_id: str) -> None:
        self._path(file_id).unlink(missing_ok=True)
