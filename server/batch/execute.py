"""One batch line, run through the same services as the live endpoint, answered as it would be.

The body is validated by the endpoint's request model, prepared by the endpoint's service (the
same image policy: caps, formats, the remote-URL guard) and run by it, only at a larger engine
priority number, so vLLM serves interactive requests first. An error is the status code and
OpenAI error envelope the endpoint would have sent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError

from server.batch.records import LineResult
from server.batch.validate import body_problem
from server.chat import ChatService
from server.errors import APIError, InvalidRequest, Unavailable, error_body
from server.faces import FacesService
from server.protocol import ChatCompletionRequest, FaceAnalysisRequest

log = logging.getLogger(__name__)

# vLLM serves lower numbers first; interactive requests are 0.
BATCH_PRIORITY = 10


class LineExecutor:
    def __init__(self, chat: ChatService, faces: FacesService) -> None:
        self.chat = chat
        self.faces = faces

    async def run(self, endpoint: str, custom_id: str, raw: bytes) -> LineResult:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            body = json.loads(raw)["body"]
            status, answer = 200, await self._answer(endpoint, body)
        except APIError as e:
            status, answer = e.status, e.body()
        except (ValueError, KeyError, TypeError, ValidationError):
            # Validated at creation; only a file changed underneath could get here.
            status, answer = 400, InvalidRequest("The line is not a valid request.").body()
        except Exception:
            log.exception("batch line %s failed", request_id)
            status = 500
            answer = error_body("Internal server error.", "server_error", "internal_error")
        record = {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": answer},
            "error": None,
        }
        line = json.dumps(record, separators=(",", ":"))
        return LineResult(ok=status < 400, record=line, retry=status == Unavailable.status)

    async def _answer(self, endpoint: str, body: Any) -> dict[str, Any]:
        problem = body_problem(endpoint, body)
        if problem is not None:
            raise InvalidRequest(problem[0], param=problem[1])
        if endpoint == "/v1/faces/analyze":
            faces_req = FaceAnalysisRequest.model_validate(body)
            job = await self.faces.prepare(faces_req)
            question = dataclasses.replace(job.question, priority=BATCH_PRIORITY)
            return _wire(await self.faces.analyze(dataclasses.replace(job, question=question)))
        chat_req = ChatCompletionRequest.model_validate(body)
        generation = await self.chat.prepare(chat_req)
        generation = dataclasses.replace(generation, priority=BATCH_PRIORITY)
        return _wire(await self.chat.complete(generation))


def _wire(response: BaseModel) -> dict[str, Any]:
    """As the live route serializes it (FastAPI: by alias, JSON types)."""
    return response.model_dump(mode="json", by_alias=True)
