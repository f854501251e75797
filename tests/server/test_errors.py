"""Errors (server/errors.py) quote what the caller sent only up to a bound, and say the same thing
on every route."""

from __future__ import annotations

import httpx
import pytest
from fastapi.exceptions import RequestValidationError

from server.errors import QUOTE_LIMIT, _validation_message, clipped, quoted
from tests.images import astronaut, data_url

CHAT, FACES = "/v1/chat/completions", "/v1/faces/analyze"
HUGE = "m" * 200_000
# The longest error this file's cases may produce: our words plus a few bounded quotes.
MAX_ERROR_CHARS = 600


def test_quoted_bounds_and_marks_the_cut() -> None:
    assert quoted("demo") == "'demo'"
    assert quoted("x" * QUOTE_LIMIT) == f"'{'x' * QUOTE_LIMIT}'"
    assert quoted("x" * (QUOTE_LIMIT + 1)) == f"'{'x' * QUOTE_LIMIT}…'"
    assert clipped("y" * 1000, 10) == "y" * 10 + "…"


def chat(**extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


def faces(**extra: object) -> dict[str, object]:
    return {"image": data_url(astronaut()), **extra}


def assert_bounded(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert r.status_code == status, r.text[:300]
    assert len(r.content) < MAX_ERROR_CHARS + 200, len(r.content)
    error: dict[str, str] = r.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) < MAX_ERROR_CHARS
    assert HUGE[: QUOTE_LIMIT + 1] not in r.text
    return error


@pytest.mark.parametrize(("path", "body"), [(CHAT, chat(model=HUGE)), (FACES, faces(model=HUGE))])
async def test_unknown_model_is_not_echoed_whole(
    client: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    """Before: the 404 carried all 200 KB of the model name back."""
    error = assert_bounded(await client.post(path, json=body), 404, "model_not_found")
    assert error["param"] == "model"
    assert f"'{'m' * QUOTE_LIMIT}…'" in error["message"]


async def test_unknown_model_reads_the_same_on_both_routes(client: httpx.AsyncClient) -> None:
    """One check, one message (before: chat named the served model, faces did not)."""
    a = (await client.post(CHAT, json=chat(model="gpt-4o"))).json()["error"]
    b = (await client.post(FACES, json=faces(model="gpt-4o"))).json()["error"]
    assert a == b
    assert a["message"] == "The model 'gpt-4o' does not exist; this server serves 'demo'."


async def test_unserved_attribute_is_not_echoed_whole(client: httpx.AsyncClient) -> None:
    r = await client.post(FACES, json=faces(attributes=[HUGE]))
    error = assert_bounded(r, 400, "attribute_not_served")
    assert error["param"] == f"attributes.{'m' * QUOTE_LIMIT}…"
    assert "unknown attribute" in error["message"]


async def test_an_unknown_field_name_is_not_echoed_whole(client: httpx.AsyncClient) -> None:
    """The field name is the caller's key: both the param and the message clip it."""
    error = assert_bounded(await client.post(CHAT, json=chat(**{HUGE: 1})), 400, "invalid_request")
    assert error["param"] == "m" * QUOTE_LIMIT + "…"


async def test_a_metadata_key_is_not_echoed_whole(client: httpx.AsyncClient) -> None:
    error = assert_bounded(
        await client.post(CHAT, json=chat(metadata={HUGE: 7})), 400, "invalid_request"
    )
    assert error["param"] is not None and error["param"].startswith("metadata.mmm")


def test_pydantic_words_that_quote_input_are_clipped() -> None:
    """A few pydantic messages quote the input (a union's tag); no request here reaches one as
    its first error, so the clipping is checked on the message builder itself."""
    tag = "t" * 10_000
    exc = RequestValidationError(
        [{"loc": ("body", "part"), "msg": f"Input tag '{tag}' found", "type": "union_tag_invalid"}]
    )
    message, param = _validation_message(exc)
    assert param == "part" and len(message) < MAX_ERROR_CHARS and tag not in message
