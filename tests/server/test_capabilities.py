"""Refusing by name what the server cannot do (server/capabilities.py), on the fake engine.

Every field the installed openai SDK's `chat.completions.create` can send is read from the SDK by
introspection and sent, one request per field (and per literal value): each is honoured, accepted
and ignored, or refused with a 400 `unsupported_capability` naming what is missing — never
rejected as an unknown field. A new SDK field fails here until it is given a policy.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import completion_create_params as sdk

from model.fake_engine import FakeEngine

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


# --- messages -----------------------------------------------------------------------------------


def turns(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*messages, {"role": "user", "content": "and now?"}]}


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
