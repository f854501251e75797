"""/v1/files: batch input files in (multipart, streamed to storage), result files out."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from server.batch.service import BatchDep, list_page
from server.errors import ERROR_RESPONSES

router = APIRouter(tags=["batch"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["batch"]},
                    },
                }
            }
        },
    }
}


@router.post(
    "/v1/files",
    responses=ERROR_RESPONSES,
    openapi_extra=_UPLOAD_BODY,
    summary="Upload a JSONL batch input file (purpose=batch).",
)
async def upload_file(request: Request, batches: BatchDep) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    record = await batches.upload(batches.owner(request), content_type, request.stream())
    return record.wire()


@router.get("/v1/files", responses=ERROR_RESPONSES)
async def list_files(
    request: Request,
    batches: BatchDep,
    purpose: str | None = None,
    after: str | None = Query(None, max_length=128),
    limit: int = Query(10_000, ge=1, le=10_000),
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    owner = batches.owner(request)
    found, more = await batches.store.files(owner, purpose, after, limit, order == "asc")
    return list_page([f.wire() for f in found], more)


@router.get("/v1/files/{file_id}", responses=ERROR_RESPONSES)
async def get_file(file_id: str, request: Request, batches: BatchDep) -> dict[str, Any]:
    return (await batches.file(batches.owner(request), file_id)).wire()


@router.get(
    "/v1/files/{file_id}/content",
    responses={**ERROR_RESPONSES, 200: {"content": {"application/octet-stream": {}}}},
)
async def file_content(file_id: str, request: Request, batches: BatchDep) -> StreamingResponse:
    record = await batches.file(batches.owner(request), file_id)
    return StreamingResponse(
        batches.content(record.id),
        media_type="application/octet-stream",
        headers={"Content-Length": str(record.bytes)},
    )


@router.delete("/v1/files/{file_id}", responses=ERROR_RESPONSES)
async def delete_file(file_id: str, request: Request, batches: BatchDep) -> dict[str, Any]:
    await batches.delete_file(batches.owner(request), file_id)
    return {"id": file_id, "object": "file", "deleted": True}
