"""Caps on structured-output constraints: refused with a named code before the engine sees them,
and what sits just inside every cap still reaches the engine (fake engine)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from model.fake_engine import FakeEngine
from server.protocol import MAX_REGEX_CHARS
from server.structured import (
    MAX_CHOICE_CHARS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_REPEAT,
)

URL = "/v1/chat/completions"
FORMAT_PARAM, EXT_PARAM = "response_format.json_schema.schema", "structured_outputs.json"


def as_format(schema: dict[str, Any]) -> dict[str, object]:
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    }


def as_extension(schema: dict[str, Any]) -> dict[str, object]:
    return {"structured_outputs": {"json": schema}}


def body(**extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}


def object_nested(depth: int) -> dict[str, Any]:
    """A schema document whose objects and arrays nest exactly `depth` deep."""
    schema: dict[str, Any] = {"type": "string"}
    levels = 1
    while levels + 2 <= depth:  # an anyOf adds its object and its list
        schema, levels = {"anyOf": [schema]}, levels + 2
    if levels < depth:  # items adds one
        schema, levels = {"type": "array", "items": schema}, levels + 1
    return schema


def sized(n_bytes: int) -> dict[str, Any]:
    """A valid schema whose compact JSON is exactly `n_bytes` long."""
    schema = {"type": "string", "description": ""}
    base = len('{"type":"string","description":""}')
    schema["description"] = "d" * (n_bytes - base)
    return schema


def string(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}


REFUSED = [
    pytest.param(sized(MAX_SCHEMA_BYTES + 1), "schema_too_large", id="one-byte-over-size"),
    pytest.param(object_nested(MAX_SCHEMA_DEPTH + 1), "schema_too_deep", id="one-level-too-deep"),
    pytest.param(string("a" * (MAX_REGEX_CHARS + 1)), "pattern_too_long", id="pattern-too-long"),
    pytest.param(string("a{8000}"), "pattern_too_complex", id="nine-byte-pattern-a{8000}"),
    pytest.param(
        {"properties": {f"p{i}": {"type": "string", "pattern": "a{600}"} for i in range(2)}},
        "pattern_too_complex",
        id="repeats-add-up-across-patterns",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {"^x{2000}$": {"type": "string"}}},
        "pattern_too_complex",
        id="pattern-properties-key",
    ),
    pytest.param(
        {"properties": {"enum": {"type": "string", "pattern": "b{5000}"}}},
        "pattern_too_complex",
        id="property-named-enum-still-checked",
    ),
]


@pytest.mark.parametrize(("wrap", "param"), [(as_format, FORMAT_PARAM), (as_extension, EXT_PARAM)])
@pytest.mark.parametrize(("schema", "code"), REFUSED)
async def test_schema_past_a_cap_is_refused_before_the_engine(
    client: httpx.AsyncClient,
    fake_engine: FakeEngine,
    wrap: Any,
    param: str,
    schema: dict[str, Any],
    code: str,
) -> None:
    r = await client.post(URL, json=body(**wrap(schema)))
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert not fake_engine.requests


ACCEPTED = [
    pytest.param(sized(MAX_SCHEMA_BYTES), id="exactly-the-size-cap"),
    pytest.param(object_nested(MAX_SCHEMA_DEPTH), id="exactly-the-depth-cap"),
    pytest.param(string("a" * MAX_REGEX_CHARS), id="pattern-of-exactly-the-regex-cap"),
    pytest.param(string(f"[0-9]{{{MAX_SCHEMA_REPEAT}}}"), id="repeats-exactly-the-cap"),
    pytest.param(string(r"\{8000\}"), id="escaped-braces-are-no-repetition"),
    pytest.param({"enum": [{"pattern": "x"}]}, id="short-pattern-key-in-data"),
]


@pytest.mark.parametrize("schema", ACCEPTED)
async def test_schema_within_every_cap_reaches_the_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine, schema: dict[str, Any]
) -> None:
    r = await client.post(URL, json=body(**as_format(schema)))
    assert r.status_code == 200, r.text[:300]
    (request,) = fake_engine.requests
    assert request.sampling.structured is not None
    assert request.sampling.structured.json_schema == schema


def test_the_fixtures_measure_what_they_claim() -> None:
    import json

    from server.structured import _patterns_within_depth

    assert len(json.dumps(sized(1000), separators=(",", ":"))) == 1000
    _patterns_within_depth(object_nested(MAX_SCHEMA_DEPTH), "p")
    with pytest.raises(Exception, match="deep"):
        _patterns_within_depth(object_nested(MAX_SCHEMA_DEPTH + 1), "p")


@pytest.mark.parametrize(
    ("choice", "status"),
    [
        ([f"{i:03}" + "a" * 125 for i in range(MAX_CHOICE_CHARS // 128)], 200),
        ([f"{i:03}" + "a" * 125 for i in range(MAX_CHOICE_CHARS // 128)] + ["b"], 400),
        (["c" * (MAX_CHOICE_CHARS + 1)], 400),
    ],
    ids=["exactly-the-cap", "one-char-over", "one-long-choice"],
)
async def test_choices_have_a_total_length_cap(
    client: httpx.AsyncClient, choice: list[str], status: int
) -> None:
    r = await client.post(URL, json=body(structured_outputs={"choice": choice}))
    assert r.status_code == status, r.text[:300]
    if status == 400:
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("choice_too_long", "structured_outputs.choice")


async def test_caps_are_checked_before_images_are_decoded(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    """A refused constraint costs no decode: the image here is not even valid."""
    bad_image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
    payload = body(**as_format(string("a{8000}")))
    payload["messages"] = [{"role": "user", "content": [bad_image]}]
    r = await client.post(URL, json=payload)
    assert r.json()["error"]["code"] == "pattern_too_complex"
