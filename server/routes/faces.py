"""POST /v1/faces/analyze and GET /v1/faces/schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.cancellation import unless_disconnected
from server.errors import ERROR_RESPONSES
from server.middleware import admit, image_log
from server.protocol import FaceAnalysis, FaceAnalysisRequest
from server.state import FacesDep, StateDep

router = APIRouter(tags=["faces"])


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
    admit(request)
    async with state.admission.preparing():
        job = await faces.prepare(body, image_log(request))
    state.metrics.count_model("/v1/faces/analyze", job.question.adapter)
    return await unless_disconnected(request, faces.analyze(job))


@router.get(
    "/v1/faces/schema",
    summary="The attribute JSON schema in force (after the attribute policy).",
    responses={200: {"content": {"application/json": {}}}},
)
async def faces_schema(faces: FacesDep) -> dict[str, Any]:
    return faces.schema()
