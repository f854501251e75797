"""Chat completions (server/chat.py) against the deterministic fake engine (fast): whole and
streamed answers, `n` choices, what reaches the engine, and errors after the stream began."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from model.engine import EngineDeadError, GenerationRequest
from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import astronaut, data_url, image_message

URL = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


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


# --- what reaches the engine ------------------------------------------------------------------


async def test_vllm_extras_reach_the_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    extras = {
        "top_k": -1,
        "min_p": 0.5,
        "repetition_penalty": 0.8,
        "min_tokens": 3,
        "ignore_eos": True,
        "skip_special_tokens": False,
        "stop_token_ids": [0, 7],
        "include_stop_str_in_output": True,
        "logit_bias": {"0": 100, "12": -1.5},
    }
    r = await client.post(URL, json={"messages": HI, "max_tokens": 4, **extras})
    assert r.status_code == 200, r.text
    s = fake_engine.requests[0].sampling
    assert (s.top_k, s.min_p, s.repetition_penalty, s.min_tokens) == (-1, 0.5, 0.8, 3)
    assert (s.ignore_eos, s.skip_special_tokens, s.include_stop_str_in_output) == (
        True,
        False,
        True,
    )
    assert (s.stop_token_ids, s.logit_bias) == ((0, 7), ((0, 100.0), (12, -1.5)))


async def test_defaults_when_the_extras_are_absent(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    assert (await client.post(URL, json={"messages": HI})).status_code == 200
    s = fake_engine.requests[0].sampling
    assert (s.n, s.top_k, s.min_p, s.repetition_penalty, s.min_tokens) == (1, 0, 0.0, 1.0, 0)
    assert (s.ignore_eos, s.skip_special_tokens, s.logit_bias, s.stop_token_ids) == (
        False,
        True,
        (),
        (),
    )


REFUSAL = "I can't help with that."


def turns(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*messages, {"role": "user", "content": "and now?"}]}


@pytest.mark.parametrize(
    "assistant",
    [
        {"role": "assistant", "content": None, "refusal": REFUSAL},
        {"role": "assistant", "refusal": REFUSAL, "tool_calls": None},
        {
            "role": "assistant",
            "content": "",
            "refusal": REFUSAL,
            "tool_calls": [],
        },
        {
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": REFUSAL}],
        },
    ],
)
async def test_an_earlier_refusal_is_what_the_assistant_said(
    client: httpx.AsyncClient, fake_engine: FakeEngine, assistant: dict[str, Any]
) -> None:
    r = await client.post(URL, json=turns({"role": "user", "content": "hi"}, assistant))
    assert r.status_code == 200, r.text
    said = fake_engine.requests[0].messages[1]
    assert said.role == "assistant" and REFUSAL in said.parts


# --- n ------------------------------------------------------------------------------------------


async def test_n_whole_returns_every_choice_with_summed_usage(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, json={"messages": HI, "n": 3, "logprobs": True})
    assert r.status_code == 200, r.text
    out = r.json()
    choices = out["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    texts = [c["message"]["content"] for c in choices]
    assert texts == [
        "fake answer with 0 image(s)",
        "fake answer with 0 image(s) (choice 1)",
        "fake answer with 0 image(s) (choice 2)",
    ]
    assert all(c["finish_reason"] == "stop" for c in choices)
    assert [len(c["logprobs"]["content"]) for c in choices] == [5, 7, 7]
    assert out["usage"]["completion_tokens"] == 5 + 7 + 7
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + 19


async def test_n_streamed_carries_indexes_finish_reasons_and_usage_once(
    client: httpx.AsyncClient,
) -> None:
    body = {"messages": HI, "n": 3, "max_tokens": 6, "stream": True}
    r = await client.post(URL, json={**body, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    texts, reasons, roles = ["", "", ""], [[], [], []], [0, 0, 0]
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content", "")
            roles[choice["index"]] += choice["delta"].get("role") == "assistant"
            if choice["finish_reason"]:
                reasons[choice["index"]].append(choice["finish_reason"])
    assert roles == [1, 1, 1]
    assert texts[0] == "fake answer with 0 image(s)"
    assert texts[1:] == [
        "fake answer with 0 image(s) (choice",
        "fake answer with 0 image(s) (choice",
    ]
    assert reasons == [["stop"], ["length"], ["length"]]
    usage_frames = [c for c in chunks if c.get("usage")]
    assert len(usage_frames) == 1 and usage_frames[0] is chunks[-1] and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5 + 6 + 6


async def test_n_is_capped_by_the_max_n_setting(make_client: MakeClient) -> None:
    async with make_client(max_n=2) as c:
        assert (await c.post(URL, json={"messages": HI, "n": 2})).status_code == 200
        r = await c.post(URL, json={"messages": HI, "n": 3})
        assert r.status_code == 400
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("n", "n_too_large")
        assert "at most 2" in error["message"]


async def test_n_above_one_needs_sampling(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, json={"messages": HI, "n": 2, "temperature": 0})
    assert r.status_code == 400
    assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("n", "invalid_value")


# --- errors after the stream began: in band, then [DONE] ---------------------------------------


async def test_engine_failure_mid_stream_is_reported_in_band(make_client: MakeClient) -> None:
    class DyingEngine(FakeEngine):
        async def _chunks(self, request: GenerationRequest):  # type: ignore[no-untyped-def,override]
            async for chunk in super()._chunks(request):
                yield chunk
                raise EngineDeadError("gone")

    async with make_client(DyingEngine()) as client:
        r = await client.post(URL, json=body(max_tokens=8, stream=True))
        assert r.status_code == 200
        frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        error = json.loads(frames[-2])["error"]
        assert error["code"] == "engine_unavailable" and "gone" not in error["message"]


async def test_aborted_stream_ends_with_an_in_band_error_not_a_stop(
    make_client: MakeClient,
) -> None:
    async with make_client(FakeEngine(abort_after=2)) as client:
        r = await client.post(URL, json={"messages": HI, "max_tokens": 16, "stream": True})
        assert r.status_code == 200  # the headers went out with the first chunk
        frames = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        assert json.loads(frames[-2])["error"]["code"] == "engine_aborted"
        chunks = [json.loads(f) for f in frames[:-2]]
        reasons = {c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")}
        assert reasons == {None}  # nothing claims the answer finished


async def test_aborted_stream_before_any_chunk_is_a_503(make_client: MakeClient) -> None:
    async with make_client(FakeEngine(abort_after=0)) as client:
        r = await client.post(URL, json={"messages": HI, "max_tokens": 16, "stream": True})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_aborted"
