"""The wire format (server/protocol/), on the fake engine: Schemathesis over every operation of
the OpenAPI document, wire types taken as they are, bounds on every field, and messages as the
roles allow them.

Schemathesis runs all its built-in checks (`--checks all`): no 5xx, only documented statuses and
content types, responses matching their schemas, schema-violating input refused. Examples are
derandomised and bounded, so the run is repeatable and takes seconds.
"""

from __future__ import annotations

import tempfile
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from tests.images import astronaut, data_url

URL = "/v1/chat/completions"
UNKNOWN_FIELD = "Extra inputs are not permitted"  # pydantic's words for extra="forbid"
HI = [{"role": "user", "content": "hi"}]


# --- the OpenAPI document, fuzzed -----------------------------------------------------------


MAX_EXAMPLES = 200


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "deterministic": True},
        "checks": {
            "enabled": True,
            # Schema-valid is not always servable: the image bytes, a role's need for content, the
            # model name and whether a face is found are checked past the schema, with these
            # documented statuses. Anything else (a 5xx, an undocumented status) still fails.
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "404", "413", "415", "422"]
            },
        },
    }
)


# Loaded at collection, as `parametrize` needs the operations then (schemathesis's fixture-based
# loader does not work with pytest 9); schemathesis runs this app's lifespan around its calls.
# Its cache and batch store in a directory of its own, not the user's ~/.cache/facellm.
CACHE = tempfile.TemporaryDirectory(prefix="facellm-protocol-")
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(Settings(model_cache_dir=CACHE.name), FakeEngine()), config=CONFIG
)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate()


# What a random (non-derandomised) run found once: lax validation coerced wire types the schema
# forbids (`"strict": 0.0` taken as false). Pinned here so the derandomised run need not find it.
COERCIONS = [
    pytest.param("/v1/chat/completions", {"seed": "42"}, id="chat-seed-string"),
    pytest.param("/v1/chat/completions", {"max_tokens": "4"}, id="chat-max-tokens-string"),
    pytest.param("/v1/chat/completions", {"max_tokens": 4.0}, id="chat-max-tokens-float"),
    pytest.param("/v1/chat/completions", {"temperature": "0.5"}, id="chat-temperature-string"),
    pytest.param("/v1/chat/completions", {"top_p": True}, id="chat-top-p-bool"),
    pytest.param("/v1/chat/completions", {"stream": 0}, id="chat-stream-number"),
    pytest.param("/v1/chat/completions", {"logprobs": 1}, id="chat-logprobs-number"),
    pytest.param(
        "/v1/chat/completions",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": 0.0}}},
        id="chat-strict-number",
    ),
    pytest.param("/v1/faces/analyze", {"detect": "false"}, id="faces-detect-string"),
    pytest.param("/v1/faces/analyze", {"max_faces": "2"}, id="faces-max-faces-string"),
]


@pytest.mark.parametrize(("path", "extra"), COERCIONS)
async def test_wire_types_are_not_coerced(
    client: httpx.AsyncClient, path: str, extra: dict[str, object]
) -> None:
    good: dict[str, object] = (
        {"messages": [{"role": "user", "content": "hi"}]}
        if path.startswith("/v1/chat")
        else {"image": data_url(astronaut()), "detect": False}
    )
    r = await client.post(path, json={**good, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"].split(".")[0] == next(iter(extra))


# --- bounds -------------------------------------------------------------------------------------


async def test_a_field_in_no_vocabulary_is_still_unknown(client: httpx.AsyncClient) -> None:
    for extra in ({"bogus": 1}, {"stream_options": {"include_usage": True, "bogus": 1}}):
        r = await client.post(URL, json={"messages": HI, **extra})
        assert r.status_code == 400 and UNKNOWN_FIELD in r.json()["error"]["message"], r.text


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


# --- messages -----------------------------------------------------------------------------------


def turns(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [*messages, {"role": "user", "content": "and now?"}]}


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
