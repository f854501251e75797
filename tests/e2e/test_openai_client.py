"""The contract: the official `openai` client against a real server (real vLLM, demo model)."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.conftest import ServerProcess
from tests.images import astronaut, cat, data_url, image_message

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

SCHEMA = {
    "type": "object",
    "properties": {
        "age_group": {"enum": ["child", "adult", "senior", "uncertain"]},
        "smiling": {"type": "boolean"},
    },
    "required": ["age_group", "smiling"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(real_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{real_server.base_url}/v1", api_key="none", max_retries=0, timeout=60
    )


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["demo"]


def test_image_completion_with_usage(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=image_message(data_url(astronaut())),
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage is not None
    assert r.usage.prompt_tokens > 16  # the image alone is at least 16 tokens
    assert 1 <= r.usage.completion_tokens <= 8


def test_streamed_completion_joins_with_one_finish_reason(
    client: openai.OpenAI, model: str
) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=image_message(data_url(astronaut(), "PNG")),  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    reasons = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len(reasons) == 1
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert usage.completion_tokens >= 1 and isinstance(text, str)


def test_json_schema_answer_validates(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=image_message(data_url(astronaut()), "Describe the face as JSON."),  # type: ignore[arg-type]
        max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "face", "schema": SCHEMA}},
    )
    answer = json.loads(r.choices[0].message.content or "")
    assert set(answer) == {"age_group", "smiling"}
    assert answer["age_group"] in SCHEMA["properties"]["age_group"]["enum"]  # type: ignore[index]
    assert isinstance(answer["smiling"], bool)


def test_logprobs_are_the_engines(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=image_message(data_url(cat())),
        max_tokens=4,  # type: ignore[arg-type]
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in content)


async def test_eight_concurrent_image_requests(real_server: ServerProcess) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{real_server.base_url}/v1", api_key="none", max_retries=0
    )
    crops = [astronaut().crop((i * 20, i * 10, 300 + i * 20, 300 + i * 10)) for i in range(8)]
    results = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="demo",
                messages=image_message(data_url(c)),
                max_tokens=64,  # type: ignore[arg-type]
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "f", "schema": SCHEMA},
                },
            )
            for c in crops
        )
    )
    assert len(results) == 8
    for r in results:
        assert set(json.loads(r.choices[0].message.content or "")) == {"age_group", "smiling"}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"messages": []}, 400),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400),
        ({"messages": image_message("data:image/jpeg;base64,@@not-base64@@")}, 400),
        ({"messages": image_message("data:image/gif;base64,R0lGODlhAQABAAAAACw=")}, 415),
        ({"messages": image_message(data_url(astronaut())), "n": 9}, 400),  # past max_n
    ],
)
def test_malformed_requests_get_4xx_and_server_keeps_serving(
    client: openai.OpenAI, model: str, kwargs: dict[str, object], code: int
) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=model, max_tokens=4, **kwargs)  # type: ignore[call-overload]
    assert err.value.status_code == code
    body = err.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    ok = client.chat.completions.create(
        model=model,
        messages=image_message(data_url(astronaut())),
        max_tokens=4,  # type: ignore[arg-type]
    )
    assert ok.choices[0].finish_reason in {"stop", "length"}
