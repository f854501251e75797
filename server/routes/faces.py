"""POST /v1/faces/analyze and GET /v1/faces/schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.cancellation import unless_disconnected
from server.context import request_deadline
from server.errors import ERROR_RESPONSES
from server.middleware import reserve_work
from server.protocol import FaceAnalysis, FaceAnalysisRequest
from server.state import FacesDep, StateDep

router = APIRouter(tags=["faces"])

# Engine work of one attribute of one face: a multiple-choice question answered in one token.
TOKENS_PER_ANSWER = 1


@router.post(
    "/v1/faces/analyze",
    response_model=FaceAnalysis,
    response_model_by_alias=True,
    responses=ERROR_RESPONSES,
    summary="Structured attributes for each face in an image.",
)
async def analyze_faces(
    body: FaceAnalysisRequest, faces: FacesDep, state: StateDep, request: Request
) -> FaceAnalysis:
    # At least one face's worth before the image is decoded; the rest once faces are counted.
    per_face = len(body.attributes or faces.policy.enabled) * TOKENS_PER_ANSWER
    reserve_work(per_face)
    async with state.admission.preparing(), request_deadline():
        job = await unless_disconnected(request, faces.prepare(body))
    reserve_work(max(0, len(job.views) * len(job.question.names) * TOKENS_PER_ANSWER - per_face))
    state.metrics.count_model("/v1/faces/analyze", job.question.adapter)
    return await unless_disconnected(request, faces.analyze(job))


@router.get(
    "/v1/faces/schema",
    summary="The attribute JSON schema in force (after the attribute policy).",
    responses={200: {"content": {"application/json": {}}}},
)
async def faces_schema(faces: FacesDep) -> dict[str, Any]:
    return faces.schema()
