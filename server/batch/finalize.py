"""A batch's end: its output and error files written from the lines' stored results.

Runs in a worker thread. Output lines keep the input's order; lines that never ran (the batch
expired or was cancelled) go to the error file with OpenAI's `batch_expired` / `batch_cancelled`
error. A finalizer killed midway leaves only an unreferenced file: the next one starts over.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from server.batch.blobs import BlobWriter
from server.batch.records import BatchRecord, FileRecord
from server.batch.store import Store

_UNFINISHED = {
    "expired": ("batch_expired", "This line was not executed before the batch expired."),
    "cancelled": ("batch_cancelled", "This line was not executed before the batch was cancelled."),
}


@dataclass
class _Out:
    """One result file being written."""

    purpose: str
    writer: BlobWriter
    file_id: str
    bytes: int = 0
    lines: int = 0

    def add(self, record: str) -> None:
        data = record.encode() + b"\n"
        self.writer.write(data)
        self.bytes += len(data)
        self.lines += 1


def write_results(
    store: Store, batch: BatchRecord, ending: str, retention_s: float
) -> list[FileRecord]:
    """The output and error files of `batch` (only those with lines), written and committed;
    the caller records them with the batch's end."""
    outs = {True: _open(store, "batch_output"), False: _open(store, "batch_error")}
    try:
        for _, custom_id, ok, record in store.results(batch.id):
            if record is not None:
                outs[bool(ok)].add(record)
            elif ending in _UNFINISHED:
                outs[False].add(_unfinished(custom_id, ending))
    except BaseException:
        for out in outs.values():
            out.writer.discard()
        raise
    now = int(time.time())
    expires = int(now + retention_s) if retention_s else None
    files = []
    for out in outs.values():
        if not out.lines:
            out.writer.discard()
            continue
        out.writer.commit()
        name = "output" if out.purpose == "batch_output" else "error"
        files.append(
            FileRecord(
                out.file_id, batch.owner, f"{batch.id}_{name}.jsonl", out.purpose,
                out.bytes, out.lines, now, expires,
            )
        )  # fmt: skip
    return files


def error_file(store: Store, batch: BatchRecord, errors: list[dict[str, object]]) -> FileRecord:
    """The error file of a batch that failed validation: one line per bad input line."""
    out = _open(store, "batch_error")
    for error in errors:
        record = {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": None,
            "response": None,
            "error": {"code": error["code"], "message": error["message"], "line": error["line"]},
        }
        out.add(json.dumps(record, separators=(",", ":")))
    out.writer.commit()
    now = int(time.time())
    return FileRecord(
        out.file_id, batch.owner, f"{batch.id}_error.jsonl", "batch_error", out.bytes,
        out.lines, now,
    )  # fmt: skip


def _open(store: Store, purpose: str) -> _Out:
    file_id = f"file-{uuid.uuid4().hex}"
    return _Out(purpose, store.blobs.writer(file_id), file_id)


def _unfinished(custom_id: str, ending: str) -> str:
    code, message = _UNFINISHED[ending]
    record = {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
    return json.dumps(record, separators=(",", ":"))
