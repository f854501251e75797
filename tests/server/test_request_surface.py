"""The whole chat request surface, on the fake engine (fast).

Every field the installed openai SDK's `chat.completions.create` can send is read from the SDK by
introspection and sent, one request per field (and per literal value): each is honoured, accepted
and ignored, or refused with a 400 `unsupported_capability` naming what is missing — never
rejected as an unknown field. A new SDK field fails here until it is given a policy.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.chat import completion_create_params as sdk

from model.engine import GenerationChunk, GenerationRequest, InvalidGenerationRequest
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from tests.images import astronaut, data_url

URL = "/v1/chat/completions"
UNKNOWN_FIELD = "Extra inputs are not permitted"  # pydantic's words for extra="forbid"
UNSUPPORTED = "unsupported_capability"
HI = [{"role": "user", "content": "hi"}]


def sdk_fields() -> dict[str, Any]:
    """Every top-level field `chat.completions.create` can send, with its type."""
    fields = typing.get_type_hints(sdk.CompletionCreateParamsBase)
    fields.update(typing.get_type_hints(sdk.CompletionCreateParamsStreaming))  # + `stream`
    return fields


def literal_values(tp: Any) -> list[Any]:
    """The literal values a field's type admits (through Optional, Union and List)."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType, list):
        return [v for arg in typing.get_args(tp) for v in literal_values(arg)]
    return []


# field -> (extra body fields, None if accepted else the capability the refusal must name).
# Values are what a caller plausibly sends; literal values are added from the SDK's types below.
CASES: dict[str, list[tuple[dict[str, Any], str | None]]] = {
    "messages": [({}, None)],
    "model": [({"model": "demo"}, None)],
    "audio": [({"audio": {"format": "wav", "voice": "alloy"}}, "audio output")],
    "frequency_penalty": [({"frequency_penalty": 0.5}, None)],
    "function_call": [({"function_call": {"name": "f"}}, "function calling")],
    "functions": [
        ({"functions": []}, None),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "function calling"),
    ],
    "logit_bias": [({"logit_bias": {"5": 10, "7": -100}}, None)],
    "logprobs": [({"logprobs": True}, None)],
    "max_completion_tokens": [({"max_completion_tokens": 8}, None)],
    "max_tokens": [({"max_tokens": 8}, None)],
    "metadata": [({"metadata": {"team": "faces"}}, None)],
    "modalities": [({"modalities": ["text", "audio"]}, "audio output")],
    "moderation": [({"moderation": {"model": "omni-moderation-latest"}}, "moderation")],
    "n": [({"n": 2}, None)],
    "parallel_tool_calls": [({"parallel_tool_calls": False}, None)],
    "prediction": [({"prediction": {"type": "content", "content": "x"}}, "predicted outputs")],
    "presence_penalty": [({"presence_penalty": -0.5}, None)],
    "prompt_cache_key": [({"prompt_cache_key": "faces-v1"}, None)],
    "prompt_cache_options": [({"prompt_cache_options": {"mode": "implicit", "ttl": "30m"}}, None)],
    "prompt_cache_retention": [],
    "reasoning_effort": [],
    "response_format": [({"response_format": {"type": "json_object"}}, None)],
    "safety_identifier": [({"safety_identifier": "user-42"}, None)],
    "seed": [({"seed": 7}, None)],
    "service_tier": [],
    "stop": [({"stop": "\n"}, None), ({"stop": ["\n", "."]}, None)],
    "store": [({"store": True}, None)],
    "stream": [({"stream": True}, None)],
    "stream_options": [
        ({"stream": True, "stream_options": {"include_usage": True}}, None),
        ({"stream": True, "stream_options": {"include_obfuscation": True}}, None),
    ],
    "temperature": [({"temperature": 0.3}, None)],
    "tool_choice": [({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool")],
    "tools": [
        ({"tools": []}, None),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tool calling"),
    ],
    "top_logprobs": [({"logprobs": True, "top_logprobs": 2}, None)],
    "top_p": [({"top_p": 0.9}, None)],
    "user": [({"user": "user-42"}, None)],
    "verbosity": [],
    "web_search_options": [({"web_search_options": {}}, "web search")],
}
# Literal values that ask for what the server lacks.
REFUSED_LITERALS = {("modalities", "audio"): "audio output", ("tool_choice", "required"): "tool"}
NOT_EXPANDED = {"model"}  # its literals are OpenAI's model names: a 404 here, by design


def all_cases() -> list[Any]:
    cases = []
    for name, tp in sdk_fields().items():
        for extra, refused in CASES.get(name, []):
            cases.append(pytest.param(name, extra, refused, id=f"{name}-{len(cases)}"))
        for value in [] if name in NOT_EXPANDED else literal_values(tp):
            sent = [value] if _is_list(tp) else value
            refused = REFUSED_LITERALS.get((name, value))
            cases.append(pytest.param(name, {name: sent}, refused, id=f"{name}={value}"))
    return cases


def _is_list(tp: Any) -> bool:
    """A list of literals (`modalities`), not a union with one."""
    return any(typing.get_origin(arg) is list for arg in typing.get_args(tp))


def test_every_sdk_field_has_a_policy() -> None:
    """A field the SDK gains (or loses) must be classified here, and in the README's table."""
    assert set(sdk_fields()) == set(CASES)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Request fields", 1)[1].split("\n## ", 1)[0]
    assert [f for f in sdk_fields() if f"`{f}`" not in section] == []


@pytest.mark.parametrize(("field", "extra", "refused"), all_cases())
async def test_sdk_field_is_honoured_ignored_or_refused_by_capability(
    client: httpx.AsyncClient, field: str, extra: dict[str, Any], refused: str | None
) -> None:
    r = await client.post(URL, json={"messages": HI, **extra})
    assert UNKNOWN_FIELD not in r.text
    if refused is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        UNSUPPORTED,
        field,
    )
    assert refused in error["message"]


async def test_the_sdk_itself_sends_every_accepted_field_at_once(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    """What the SDK serialises (not just what we think it does) is accepted."""
    sdk_client = openai.AsyncOpenAI(
        base_url="http://test/v1", api_key="none", http_client=client, max_retries=0
    )
    r = await sdk_client.chat.completions.create(
        model="demo",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None, "refusal": "No.", "tool_calls": []},
            {"role": "user", "content": "hi again"},
        ],
        store=False,
        metadata={"k": "v"},
        user="u",
        service_tier="auto",
        safety_identifier="s",
        prompt_cache_key="p",
        prompt_cache_retention="24h",
        verbosity="low",
        reasoning_effort="none",
        modalities=["text"],
        parallel_tool_calls=True,
        tool_choice="none",
        function_call="none",
        logit_bias={"3": 5},
        n=2,
        seed=1,
        temperature=0.7,
        top_p=0.9,
        stop=["\n"],
        logprobs=True,
        top_logprobs=1,
        max_completion_tokens=16,
        presence_penalty=0.1,
        frequency_penalty=0.1,
        extra_body={
            "top_k": 20,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "min_tokens": 2,
            "ignore_eos": False,
            "skip_special_tokens": True,
            "stop_token_ids": [2],
            "include_stop_str_in_output": False,
            "chat_template_kwargs": {"enable_thinking": False},
        },
    )
    assert [c.index for c in r.choices] == [0, 1]
    s = fake_engine.requests[0].sampling
    assert (s.n, s.top_k, s.min_p, s.repetition_penalty, s.min_tokens) == (2, 20, 0.05, 1.1, 2)
    assert (s.logit_bias, s.stop_token_ids, s.ignore_eos, s.skip_special_tokens) == (
        ((3, 5.0),),
        (2,),
        False,
        True,
    )


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


async def test_a_field_in_no_vocabulary_is_still_unknown(client: httpx.AsyncClient) -> None:
    for extra in ({"bogus": 1}, {"stream_options": {"include_usage": True, "bogus": 1}}):
        r = await client.post(URL, json={"messages": HI, **extra})
        assert r.status_code == 400 and UNKNOWN_FIELD in r.json()["error"]["message"], r.text


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


@pytest.fixture
def app_max_n_2(tmp_path: Path, fake_engine: FakeEngine) -> FastAPI:
    return create_app(Settings(model_cache_dir=tmp_path / "cache", max_n=2), fake_engine)


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


async def test_n_is_capped_by_the_max_n_setting(app_max_n_2: FastAPI) -> None:
    async with client_of(app_max_n_2) as c:
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


# --- bounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_k": -2}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"min_p": 1.01}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": -1}, "repetition_penalty"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 9, "max_tokens": 8}, "min_tokens"),
        ({"min_tokens": 300}, "min_tokens"),  # past the default max_tokens (256)
        ({"logit_bias": {"5": 100.5}}, "logit_bias.5"),
        ({"logit_bias": {"5": -101}}, "logit_bias.5"),
        ({"logit_bias": {"hello": 1}}, "logit_bias.hello"),
        ({"logit_bias": {"-5": 1}}, "logit_bias.-5"),
        ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
        ({"stop_token_ids": [-1]}, "stop_token_ids.0"),
        ({"stop_token_ids": list(range(65))}, "stop_token_ids"),
        ({"n": 0}, "n"),
        ({"modalities": ["video"]}, "modalities.0"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"service_tier": "gold"}, "service_tier"),
        ({"chat_template_kwargs": {"add_generation_prompt": False}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs"),
    ],
)
async def test_out_of_bounds_values_are_400_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    r = await client.post(URL, json={"messages": HI, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith(param), error


async def test_unlisted_chat_template_kwarg_is_named(client: httpx.AsyncClient) -> None:
    body = {"messages": HI, "chat_template_kwargs": {"enable_thinking": False, "tools_mode": 1}}
    error = (await client.post(URL, json=body)).json()["error"]
    assert error["param"] == "chat_template_kwargs.tools_mode"


@pytest.mark.parametrize("bias", [-100, 100, 0.25, 0])
@pytest.mark.parametrize("top_k", [-1, 0, 1, 50])
async def test_in_bounds_values_are_accepted(
    client: httpx.AsyncClient, bias: float, top_k: int
) -> None:
    body = {"messages": HI, "top_k": top_k, "logit_bias": {"1": bias}, "min_tokens": 8}
    assert (await client.post(URL, json={**body, "max_tokens": 8})).status_code == 200


class VocabularyBoundEngine(FakeEngine):
    """Refuses token ids past a 1024-token vocabulary the way the vLLM engine reports it."""

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        if any(token >= 1024 for token, _ in request.sampling.logit_bias):
            raise InvalidGenerationRequest("token_id(s) [5000] ... out-of-vocab", "logit_bias")
        async for chunk in super().generate(request):
            yield chunk


async def test_token_id_outside_the_vocabulary_is_a_specific_400(tmp_path: Path) -> None:
    app = create_app(Settings(model_cache_dir=tmp_path / "cache"), VocabularyBoundEngine())
    async with client_of(app) as c:
        r = await c.post(URL, json={"messages": HI, "logit_bias": {"5000": 5}})
        assert r.status_code == 400
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("logit_bias", "invalid_value")
        assert "vocabulary" in error["message"] and "5000" not in error["message"]


# --- messages -----------------------------------------------------------------------------------


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


async def test_cache_breakpoints_and_original_detail_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    mark = {"mode": "explicit", "ttl": "30m"}
    content = [
        {"type": "text", "text": "Describe.", "prompt_cache_breakpoint": mark},
        {
            "type": "image_url",
            "image_url": {"url": data_url(astronaut()), "detail": "original"},
            "prompt_cache_breakpoint": mark,
        },
    ]
    r = await client.post(URL, json={"messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("message", "param", "capability"),
    [
        ({"role": "tool", "content": "42", "tool_call_id": "c1"}, "messages[1].role", "tool"),
        ({"role": "function", "name": "f", "content": "42"}, "messages[1].role", "function"),
        ({"role": "function", "name": "f", "content": None}, "messages[1].role", "function"),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "messages[1].tool_calls",
            "tool calling",
        ),
        (
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            "messages[1].function_call",
            "function calling",
        ),
        ({"role": "assistant", "audio": {"id": "audio_1"}}, "messages[1].audio", "audio"),
        (
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            },
            "messages[1].content[0]",
            "audio input",
        ),
        (
            {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]},
            "messages[1].content[0]",
            "file input",
        ),
    ],
)
async def test_messages_asking_for_missing_capabilities_are_refused_by_name(
    client: httpx.AsyncClient, message: dict[str, Any], param: str, capability: str
) -> None:
    r = await client.post(URL, json=turns({"role": "user", "content": "hi"}, message))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (UNSUPPORTED, param)
    assert capability in error["message"]


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "hi", "refusal": "no"},
        {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": "hi", "tool_call_id": "c1"},
        {"role": "system", "content": "hi", "tool_calls": []},
    ],
)
async def test_role_specific_fields_on_other_roles_are_invalid(
    client: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    r = await client.post(URL, json=turns(message))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
