"""The Batch API's service: what the routes of /v1/files and /v1/batches ask for, checked and
scoped to the caller's key. No FastAPI here beyond the dependency that finds it."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from server.batch import upload
from server.batch.records import ENDPOINTS, BatchRecord, FileRecord
from server.batch.runner import BatchRunner
from server.batch.store import FileInUse, Store
from server.errors import InvalidRequest, NotFound, Unavailable, quoted


@dataclass(frozen=True)
class BatchLimits:
    upload: upload.UploadLimits
    expiry_s: float
    retention_s: float


class BatchService:
    def __init__(
        self, store: Store, runner: BatchRunner, limits: BatchLimits, keys_required: bool
    ) -> None:
        self.store = store
        self.runner = runner
        self.limits = limits
        self.keys_required = keys_required

    def owner(self, request: Request) -> str:
        """Who owns what a request creates: a digest of its API key (never the key itself),
        or everyone ("") when the server takes no keys. The route's auth has checked the key."""
        if not self.keys_required:
            return ""
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        return hashlib.sha256(token.encode()).hexdigest()

    async def stop(self) -> None:
        await self.runner.stop()
        self.store.close()

    # --- files -------------------------------------------------------------------------------
    async def upload(self, owner: str, content_type: str, body: AsyncIterator[bytes]) -> FileRecord:
        file_id = f"file-{uuid.uuid4().hex}"
        writer = await asyncio.to_thread(self.store.blobs.writer, file_id)
        try:
            got = await upload.receive(content_type, body, writer, self.limits.upload)
            purpose = got.fields.get("purpose")
            if purpose != "batch":
                raise InvalidRequest(
                    "purpose must be 'batch': this server stores batch input files only.",
                    param="purpose",
                    code="invalid_purpose",
                )
            if not got.size:
                raise InvalidRequest("The file is empty.", param="file", code="empty_file")
            await asyncio.to_thread(writer.commit)
        except BaseException:
            await asyncio.to_thread(writer.discard)
            raise
        now = int(time.time())
        retention = self.limits.retention_s
        record = FileRecord(
            file_id, owner, got.filename or "upload.jsonl", purpose, got.size, got.line_count,
            now, int(now + retention) if retention else None,
        )  # fmt: skip
        await self.store.add_file(record)
        return record

    async def file(self, owner: str, file_id: str) -> FileRecord:
        found = await self.store.file(file_id, owner)
        if found is None:
            raise NotFound(f"No file {quoted(file_id)}.", param="file_id", code="file_not_found")
        return found

    def content(self, file_id: str) -> AsyncIterator[bytes]:
        return _in_thread(self.store.blobs.chunks(file_id))

    async def delete_file(self, owner: str, file_id: str) -> None:
        try:
            deleted = await self.store.delete_file(file_id, owner)
        except FileInUse:
            raise InvalidRequest(
                "The file is the input of a batch still running; cancel it first.",
                param="file_id",
                code="file_in_use",
            ) from None
        if not deleted:
            raise NotFound(f"No file {quoted(file_id)}.", param="file_id", code="file_not_found")

    # --- batches -----------------------------------------------------------------------------
    async def create(
        self,
        owner: str,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None,
    ) -> BatchRecord:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"endpoint must be one of {', '.join(ENDPOINTS)}.",
                param="endpoint",
                code="invalid_endpoint",
            )
        source = await self.file(owner, input_file_id)
        if source.purpose != "batch":
            raise InvalidRequest(
                "The input file must have been uploaded with purpose 'batch'.",
                param="input_file_id",
                code="invalid_input_file",
            )
        now = int(time.time())
        batch = BatchRecord(
            id=f"batch_{uuid.uuid4().hex}",
            owner=owner,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window="24h",
            status="validating",
            metadata=metadata,
            errors=None,
            output_file_id=None,
            error_file_id=None,
            stamps={"created_at": now, "expires_at": int(now + self.limits.expiry_s)},
        )
        await self.store.add_batch(batch)
        self.runner.wake()
        return batch

    async def batch(self, owner: str, batch_id: str) -> BatchRecord:
        found = await self.store.batch(batch_id, owner)
        if found is None:
            raise NotFound(
                f"No batch {quoted(batch_id)}.", param="batch_id", code="batch_not_found"
            )
        return found

    async def cancel(self, owner: str, batch_id: str) -> BatchRecord:
        found = await self.store.cancel(batch_id, owner, int(time.time()))
        if found is None:
            raise NotFound(
                f"No batch {quoted(batch_id)}.", param="batch_id", code="batch_not_found"
            )
        self.runner.wake()
        return found


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list envelope."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator of chunks, each read in a worker thread."""
    while chunk := await asyncio.to_thread(next, chunks, b""):
        yield chunk


async def get_batches(request: Request) -> BatchService:
    service: BatchService | None = getattr(request.app.state, "batch", None)
    if service is None:
        raise Unavailable("The Batch API is starting.", code="batch_unavailable")
    return service


BatchDep = Annotated[BatchService, Depends(get_batches)]
