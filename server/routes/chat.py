"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server.cancellation import ClosingStreamingResponse, unless_disconnected
from server.context import request_deadline
from server.errors import ERROR_RESPONSES
from server.middleware import reserve_work
from server.protocol import ChatCompletion, ChatCompletionRequest
from server.state import ChatDep, StateDep

router = APIRouter(tags=["chat"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
)
async def create_chat_completion(
    body: ChatCompletionRequest, chat: ChatDep, state: StateDep, request: Request
) -> ChatCompletion | StreamingResponse:
    reserve_work(chat.work(body))  # before any image is decoded
    # Prepared before any header goes out, so bad input still gets its 4xx status.
    async with state.admission.preparing(), request_deadline():
        generation = await unless_disconnected(request, chat.prepare(body))
    state.metrics.count_model("/v1/chat/completions", generation.adapter)
    if not body.stream:
        return await unless_disconnected(request, chat.complete(generation))
    frames = await unless_disconnected(request, chat.open_stream(body, generation))
    return ClosingStreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
