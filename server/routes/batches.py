"""/v1/batches: create, read, list and cancel batches (OpenAI's Batch API)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from server.batch.service import BatchDep, list_page
from server.errors import ERROR_RESPONSES

router = APIRouter(tags=["batch"])

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=128)
    endpoint: Literal["/v1/chat/completions", "/v1/faces/analyze"]
    completion_window: Literal["24h"]
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)


@router.post("/v1/batches", responses=ERROR_RESPONSES)
async def create_batch(body: BatchRequest, request: Request, batches: BatchDep) -> dict[str, Any]:
    owner = batches.owner(request)
    batch = await batches.create(owner, body.input_file_id, body.endpoint, body.metadata)
    return batch.wire()


@router.get("/v1/batches", responses=ERROR_RESPONSES)
async def list_batches(
    request: Request,
    batches: BatchDep,
    after: str | None = Query(None, max_length=128),
    limit: int = Query(20, ge=1, le=100),
) -> dict[str, Any]:
    found, more = await batches.store.batches(batches.owner(request), after, limit)
    return list_page([b.wire() for b in found], more)


@router.get("/v1/batches/{batch_id}", responses=ERROR_RESPONSES)
async def get_batch(batch_id: str, request: Request, batches: BatchDep) -> dict[str, Any]:
    return (await batches.batch(batches.owner(request), batch_id)).wire()


@router.post("/v1/batches/{batch_id}/cancel", responses=ERROR_RESPONSES)
async def cancel_batch(batch_id: str, request: Request, batches: BatchDep) -> dict[str, Any]:
    return (await batches.cancel(batches.owner(request), batch_id)).wire()
