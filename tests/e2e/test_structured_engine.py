"""Structured outputs the engine cannot compile are the caller's 400, on the real engine.

Two ways a constraint fails: vLLM's own check refuses it while processing the request (an
uncompilable regex), or the check passes and the engine core's compile fails later (xgrammar
0.2.8 with its grammar cache on cannot compile a schema pattern repeating more than 128 times); vLLM
then finishes the request with the reason "error", which used to reach the client as an empty
answer with `finish_reason: "stop"`. And a schema that would take the compiler seconds is refused
by our caps before the engine sees it. After each, the server still serves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def http(real_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_server.base_url, timeout=120) as client:
        yield client


def body(**extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "Digits?"}], "max_tokens": 8, **extra}


def schema(pattern: str) -> dict[str, object]:
    string = {"type": "string", "pattern": pattern}
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": string}}
    }


def refused(r: httpx.Response, code: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text[:500]
    error: dict[str, Any] = r.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code), error
    return error


def assert_still_serves(http: httpx.Client) -> None:
    r = http.post(CHAT, json=body(structured_outputs={"choice": ["yes", "no"]}))
    assert r.status_code == 200, r.text[:500]
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] in {"yes", "no"} and choice["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("regex", ["(?<=a)b", "(unclosed", "(a)\\1"])
def test_uncompilable_regex_is_400(http: httpx.Client, regex: str, stream: bool) -> None:
    r = http.post(CHAT, json=body(stream=stream, structured_outputs={"regex": regex}))
    refused(r, "invalid_request")
    assert_still_serves(http)


@pytest.mark.parametrize("stream", [False, True])
def test_schema_the_engine_core_cannot_compile_is_400_not_an_empty_stop(
    http: httpx.Client, stream: bool
) -> None:
    r = http.post(CHAT, json=body(stream=stream, **schema("^[0-9]{200}$")))
    refused(r, "invalid_request")
    assert "finish_reason" not in r.text
    assert_still_serves(http)


def test_schema_that_compiles_is_answered(http: httpx.Client) -> None:
    r = http.post(CHAT, json=body(max_tokens=16, **schema("^[0-9]{4}$")))
    assert r.status_code == 200, r.text[:500]
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] in {"stop", "length"}
    if choice["finish_reason"] == "stop":
        assert len(json.loads(choice["message"]["content"])) == 4


def test_schema_that_would_compile_for_seconds_is_refused_at_once(http: httpx.Client) -> None:
    """`a{8000}`: nine bytes, about 2.5 s of xgrammar per compile, twice per request, holding
    vLLM's input thread and the event loop (measured: /health took 2.8 s to answer)."""
    error = refused(http.post(CHAT, json=body(**schema("a{8000}"))), "pattern_too_complex")
    assert error["param"] == "response_format.json_schema.schema"
    assert_still_serves(http)
