"""Sampling fields on the real engine, through the official `openai` client: `n` choices whole and
streamed, `min_tokens` and `ignore_eos`, `logit_bias` steering greedy decoding, vLLM's extras, and
token ids outside the vocabulary refused by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from model.demo import ensure_demo_model
from server.config import Settings
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

MESSAGES: Any = [{"role": "user", "content": "Describe a face."}]


@pytest.fixture(scope="module")
def client(real_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{real_server.base_url}/v1", api_key="none", max_retries=0, timeout=60
    )


@pytest.fixture(scope="module")
def http(real_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_server.base_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    """The served demo model's tokenizer: the server builds it in the same cache (deterministic)."""
    return AutoTokenizer.from_pretrained(ensure_demo_model(Settings().model_cache_dir))


def greedy(client: openai.OpenAI, **extra: Any) -> str:
    r = client.chat.completions.create(
        model="demo", messages=MESSAGES, temperature=0, max_tokens=6, **extra
    )
    return r.choices[0].message.content or ""


def test_n_returns_that_many_choices(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        n=2,
        seed=3,
        max_tokens=6,
        extra_body={"ignore_eos": True},  # every choice runs to max_tokens: usage is exact
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 2 * 6


def test_n_streamed_keeps_choices_apart(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        n=2,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    reasons: dict[int, list[str]] = {0: [], 1: []}
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason:
                reasons[choice.index].append(choice.finish_reason)
    assert reasons == {0: ["length"], 1: ["length"]}
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == [] and usage.completion_tokens == 2 * 5


@pytest.mark.parametrize("ignore_eos", [True, False])
def test_min_tokens_holds_off_the_end(client: openai.OpenAI, ignore_eos: bool) -> None:
    r = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=16,
        extra_body={"min_tokens": 12, "ignore_eos": ignore_eos},
    )
    assert r.usage is not None and r.usage.completion_tokens >= 12
    if ignore_eos:
        assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"


def test_logit_bias_up_makes_greedy_pick_the_token(
    client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase
) -> None:
    (face,) = tokenizer.encode(" face", add_special_tokens=False)
    assert greedy(client).split() != ["face"] * 6
    assert greedy(client, logit_bias={str(face): 100}).split() == ["face"] * 6


def test_logit_bias_down_bans_the_greedy_first_token(
    client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase
) -> None:
    r = client.chat.completions.create(
        model="demo", messages=MESSAGES, temperature=0, max_tokens=6, logprobs=True
    )
    assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content
    first = r.choices[0].logprobs.content[0].token
    first_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(first))[0]
    banned = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        temperature=0,
        max_tokens=6,
        logprobs=True,
        logit_bias={str(first_id): -100},
    )
    assert banned.choices[0].logprobs is not None and banned.choices[0].logprobs.content
    assert banned.choices[0].logprobs.content[0].token != first


def test_vllm_sampling_extras_are_accepted_by_the_engine(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=6,
        seed=1,
        extra_body={
            "top_k": -1,
            "min_p": 0.05,
            "repetition_penalty": 1.2,
            "skip_special_tokens": False,
            "stop_token_ids": [2],
            "include_stop_str_in_output": True,
            "chat_template_kwargs": {"enable_thinking": False},
        },
    )
    assert r.choices[0].finish_reason in {"stop", "length"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
        ({"stop_token_ids": [999999]}, "stop_token_ids"),
    ],
)
def test_token_id_outside_the_vocabulary_is_400_naming_the_field(
    http: httpx.Client, client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    r = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_value")
    assert "999999" not in error["message"]  # our words, not the engine's
    greedy(client)  # still serves
