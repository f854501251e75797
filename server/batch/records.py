"""What the batch store holds, as plain records, and their OpenAI wire shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
BATCH_STATUSES: tuple[BatchStatus, ...] = get_args(BatchStatus)
ENDPOINTS = ("/v1/chat/completions", "/v1/faces/analyze")
# The moment each status was reached, as OpenAI names the batch's timestamps.
STATUS_STAMPS: dict[str, str] = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}
STAMPS = ("created_at", "expires_at", *STATUS_STAMPS.values())


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: int
    expires_at: int | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(frozen=True)
class BatchRecord:
    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    metadata: dict[str, str] | None
    errors: list[dict[str, Any]] | None
    output_file_id: str | None
    error_file_id: str | None
    stamps: dict[str, int | None]  # created_at, expires_at and one per status reached
    total: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def finished(self) -> bool:
        return self.status in ("failed", "completed", "expired", "cancelled")

    def wire(self) -> dict[str, Any]:
        errors = None if self.errors is None else {"object": "list", "data": self.errors}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            **{name: self.stamps.get(name) for name in STAMPS},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class LineSpec:
    """One valid input line, as validation found it: where its bytes are in the input file."""

    line_no: int
    custom_id: str
    start: int
    size: int


@dataclass(frozen=True)
class ClaimedLine:
    """A line this replica holds under a lease, to run."""

    batch_id: str
    endpoint: str
    input_file_id: str
    line_no: int
    custom_id: str
    start: int
    size: int


@dataclass(frozen=True)
class LineResult:
    """One line's answer: the output (or error) file's line, and which file it goes to."""

    ok: bool
    record: str  # one JSON line, without the newline
    # The server could not serve it now (503: engine dead, draining, saturated): not an answer
    # about the request, so it is not recorded; the line is given back to run again later.
    retry: bool = False
