"""The chat-completions HTTP layer against the deterministic fake engine (fast)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI

from model.fake_engine import FakeEngine
from tests.images import astronaut, data_url, image_message

URL = "/v1/chat/completions"


def body(**extra: object) -> dict[str, object]:
    return {"model": "demo", "messages": image_message(data_url(astronaut())), **extra}


async def test_completion_has_text_and_usage(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, json=body(max_tokens=16))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "fake answer with 1 image(s)",
    }
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] == 5
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + 5


async def test_max_tokens_cuts_with_length(client: httpx.AsyncClient) -> None:
    out = (await client.post(URL, json=body(max_completion_tokens=2))).json()
    assert out["choices"][0]["message"]["content"] == "fake answer"
    assert out["choices"][0]["finish_reason"] == "length"


async def test_image_reaches_engine_decoded(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    await client.post(URL, json=body())
    (request,) = fake_engine.requests
    image = request.messages[0].parts[0]
    assert not isinstance(image, str)
    # 512² on the demo (64-px tiles, at most 4): held at the 2×2-tile canvas the processor uses.
    assert image.size == (128, 128) and image.mode == "RGB"


async def test_stream_chunks_join_with_one_finish_reason_and_usage(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(URL, json=body(stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "fake answer with 1 image(s)"
    reasons = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
    assert [r for r in reasons if r] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_json_schema_reaches_engine_as_constraint(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    schema = {
        "type": "object",
        "properties": {"age": {"enum": ["young", "old"]}},
        "required": ["age"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "face", "schema": schema}}
    out = (await client.post(URL, json=body(response_format=fmt))).json()
    assert json.loads(out["choices"][0]["message"]["content"]) == {"age": "young"}
    assert fake_engine.requests[0].sampling.structured is not None
    assert fake_engine.requests[0].sampling.structured.json_schema == schema


async def test_structured_outputs_choice_extension(client: httpx.AsyncClient) -> None:
    out = (await client.post(URL, json=body(structured_outputs={"choice": ["B", "C"]}))).json()
    assert out["choices"][0]["message"]["content"] == "B"


async def test_logprobs_in_openai_shape(client: httpx.AsyncClient) -> None:
    out = (await client.post(URL, json=body(logprobs=True, top_logprobs=2))).json()
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == 5
    assert {"token", "logprob", "bytes", "top_logprobs"} <= set(content[0])
    assert len(content[0]["top_logprobs"]) == 2


async def test_sampling_options_reach_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    await client.post(URL, json=body(temperature=0.2, top_p=0.5, seed=7, stop=["x"], max_tokens=9))
    s = fake_engine.requests[0].sampling
    assert (s.temperature, s.top_p, s.seed, s.stop, s.max_tokens) == (0.2, 0.5, 7, ("x",), 9)


async def test_models_lists_the_served_model(client: httpx.AsyncClient) -> None:
    out = (await client.get("/v1/models")).json()
    assert [m["id"] for m in out["data"]] == ["demo"]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "demo"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 9}, "n"),  # past max_n (8)
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "bogus": 1}, "bogus"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ],
)
async def test_bad_requests_get_400_envelope(
    client: httpx.AsyncClient, payload: dict[str, object], param: str
) -> None:
    r = await client.post(URL, json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)
    assert (await client.post(URL, json=body())).status_code == 200


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, json=body(model="gpt-4o"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


async def test_malformed_json_body_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


async def test_stream_writes_once_per_token_with_opening_and_closing_frames_folded_in(
    app: FastAPI,
) -> None:
    """Every write costs a syscall and a client wake-up: the role chunk rides with the first
    token, usage and [DONE] with the last one, so five tokens take five writes."""
    request = json.dumps(body(stream=True, stream_options={"include_usage": True})).encode()
    writes: list[bytes] = []
    bodies = [{"type": "http.request", "body": request, "more_body": False}]

    async def receive() -> dict[str, object]:
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            writes.append(message["body"])  # type: ignore[arg-type]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": URL, "raw_path": URL.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("test", 80),
    }  # fmt: skip
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    assert len(writes) == 5  # the fake engine's five tokens
    assert b'"role": "assistant"' in writes[0] and writes[0].count(b"data: ") == 2
    assert writes[-1].count(b"data: ") == 3 and writes[-1].endswith(b"data: [DONE]\n\n")
    assert all(w.count(b"data: ") == 1 for w in writes[1:-1])
