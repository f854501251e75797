"""Running an engine request for a caller (server/generation.py), on the fake engine: the
deadline, and engine failures turned into errors — an abort is a 503, never a completion; a token
id past the vocabulary is a 400 naming the field."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from model.engine import GenerationChunk, GenerationRequest, InvalidGenerationRequest
from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import astronaut, data_url, image_message

CHAT, FACES = "/v1/chat/completions", "/v1/faces/analyze"
HI = [{"role": "user", "content": "hi"}]


def chat_body(**extra: object) -> dict[str, object]:
    return {"messages": image_message(data_url(astronaut())), "max_tokens": 8, **extra}


async def test_deadline_gives_504_and_aborts(make_client: MakeClient) -> None:
    engine = FakeEngine(step_delay_s=0.5)
    async with make_client(engine, request_timeout_s=0.2) as client:
        r = await client.post(CHAT, json=chat_body())
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "request_timeout"
        assert engine.aborted and not engine.running


@pytest.mark.parametrize("after", [0, 2])
async def test_aborted_completion_is_503_engine_aborted(
    make_client: MakeClient, after: int
) -> None:
    async with make_client(FakeEngine(abort_after=after)) as client:
        r = await client.post(CHAT, json={"messages": HI, "max_tokens": 16})
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert (error["code"], error["type"]) == ("engine_aborted", "server_error")
        assert "fake answer" not in r.text


async def test_aborted_face_is_503(make_client: MakeClient) -> None:
    # A face's answer is one chunk (compact JSON): aborted before it.
    async with make_client(FakeEngine(abort_after=0)) as client:
        r = await client.post(FACES, json={"image": data_url(astronaut())})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_aborted"


class VocabularyBoundEngine(FakeEngine):
    """Refuses token ids past a 1024-token vocabulary the way the vLLM engine reports it."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        if any(token >= 1024 for token, _ in request.sampling.logit_bias):
            raise InvalidGenerationRequest("token_id(s) [5000] ... out-of-vocab", "logit_bias")
        async for chunk in super().generate(request):
            yield chunk


async def test_token_id_outside_the_vocabulary_is_a_specific_400(make_client: MakeClient) -> None:
    async with make_client(VocabularyBoundEngine()) as c:
        r = await c.post(CHAT, json={"messages": HI, "logit_bias": {"5000": 5}})
        assert r.status_code == 400
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("logit_bias", "invalid_value")
        assert "vocabulary" in error["message"] and "5000" not in error["message"]
