"""Face answers (server/answers.py): per-attribute confidence, abstention and decoding passes in
/v1/faces/analyze, on a fake engine whose token distributions are known, so every figure is worked
out by hand."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from model.attributes import SCHEMA_VERSION
from model.engine import GenerationRequest, TokenLogprob
from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import astronaut, data_url

URL = "/v1/faces/analyze"
ASKED = ["age_group", "perceived_gender"]


def tok(text: str, p: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    top = sorted([(text, p), *alternatives], key=lambda a: -a[1])
    return TokenLogprob(text, math.log(p), tuple((t, math.log(q)) for t, q in top))


def answer_tokens(_: GenerationRequest) -> list[TokenLogprob]:
    """`{"age_group":"30-39","perceived_gender":"female"}`, age settled over two tokens."""
    return [
        tok('{"age_group":"', 1.0),
        tok("3", 0.6, ("un", 0.3), ("1", 0.1)),  # "3": 3-9 or 30-39
        tok("0", 0.7, ("-", 0.25)),  # "30": 30-39; "3-": 3-9
        tok('-39","perceived_gender":"', 1.0),
        tok("female", 0.9, ("male", 0.08)),
        tok('"}', 1.0),
    ]


# By hand: 30-39 = 0.6 × 0.7; 3-9 = 0.6 × 0.25; uncertain 0.3; 10-19 0.1.
AGE = {
    "value": "30-39",
    "confidence": 0.42,
    "abstained": False,
    "alternatives": [
        {"value": "uncertain", "confidence": 0.3},
        {"value": "3-9", "confidence": 0.15},
        {"value": "10-19", "confidence": 0.1},
    ],
}
GENDER = {
    "value": "female",
    "confidence": 0.9,
    "abstained": False,
    "alternatives": [{"value": "male", "confidence": 0.08}],
}


async def analyze(client: httpx.AsyncClient, **options: Any) -> dict[str, Any]:
    body = {"image": data_url(astronaut()), "attributes": ASKED, **options}
    r = await client.post(URL, json=body)
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    attributes: dict[str, Any] = face["attributes"]
    return attributes


def rounded(answer: dict[str, Any]) -> dict[str, Any]:
    def r(x: float) -> float:
        return round(x, 9)

    alternatives = [{**a, "confidence": r(a["confidence"])} for a in answer["alternatives"]]
    return {**answer, "confidence": r(answer["confidence"]), "alternatives": alternatives}


async def test_confidences_and_alternatives_are_the_hand_computed_ones(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=answer_tokens)
    async with make_client(engine) as client:
        attributes = await analyze(client, confidence=True)
    assert {k: rounded(v) for k, v in attributes.items()} == {
        "age_group": AGE,
        "perceived_gender": GENDER,
    }
    assert engine.requests[-1].sampling.logprobs == 20


async def test_without_the_option_the_shape_is_plain_and_no_logprobs_are_asked(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=answer_tokens)
    async with make_client(engine) as client:
        body = {"image": data_url(astronaut()), "attributes": ASKED}
        out = (await client.post(URL, json=body)).json()
    assert out["faces"][0]["attributes"] == {"age_group": "30-39", "perceived_gender": "female"}
    assert out["versions"]["schema"] == SCHEMA_VERSION
    assert engine.requests[-1].sampling.logprobs is None


async def test_a_threshold_above_every_confidence_makes_every_attribute_abstain(
    make_client: MakeClient,
) -> None:
    async with make_client(FakeEngine(tokens=answer_tokens)) as client:
        attributes = await analyze(client, confidence=True, min_confidence=0.95)
        plain = await analyze(client, min_confidence=0.95)
        metrics = (await client.get("/metrics")).text
    age = rounded(attributes["age_group"])
    assert (age["value"], age["confidence"], age["abstained"]) == ("uncertain", 0.3, True)
    assert age["alternatives"] == [
        {"value": "30-39", "confidence": 0.42},  # the model's pick, kept
        {"value": "3-9", "confidence": 0.15},
        {"value": "10-19", "confidence": 0.1},
    ]
    gender = rounded(attributes["perceived_gender"])
    assert (gender["value"], gender["confidence"], gender["abstained"]) == ("uncertain", 0, True)
    assert plain == {"age_group": "uncertain", "perceived_gender": "uncertain"}
    for name in ASKED:
        assert f'facellm_abstentions_total{{attribute="{name}"}} 2.0' in metrics


async def test_server_defaults_apply_per_attribute_and_a_request_overrides_them(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=answer_tokens)
    defaults = {"perceived_gender": 0.95}
    async with make_client(engine, min_confidence=defaults) as client:
        assert await analyze(client) == {"age_group": "30-39", "perceived_gender": "uncertain"}
        assert engine.requests[-1].sampling.logprobs == 20  # needed to abstain
        never = await analyze(client, min_confidence=0)
        assert never == {"age_group": "30-39", "perceived_gender": "female"}
        only_age = await analyze(client, min_confidence={"age_group": 0.5})
        assert only_age == {"age_group": "uncertain", "perceived_gender": "uncertain"}


@pytest.mark.parametrize(
    ("threshold", "param"),
    [
        ({"eyewear": 0.5}, "min_confidence.eyewear"),  # not asked for
        (1.5, "min_confidence"),
        ({"age_group": -0.1}, "min_confidence"),
    ],
)
async def test_a_bad_threshold_is_a_400_naming_it(
    make_client: MakeClient, threshold: object, param: str
) -> None:
    async with make_client(FakeEngine(tokens=answer_tokens)) as client:
        body = {"image": data_url(astronaut()), "attributes": ASKED, "min_confidence": threshold}
        r = await client.post(URL, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)


def split_prefix_tokens(request: GenerationRequest) -> list[TokenLogprob]:
    """The first pass: greedy takes "3" (0.4, shared by 3-9 and 30-39), then "-" (0.5): 3-9 at
    0.2, below "uncertain" (0.35, one token). The second pass continues after `uncertain`."""
    if not request.answer_prefix:
        return [
            tok('{"age_group":"', 1.0),
            tok("3", 0.4, ("uncertain", 0.35), ("2", 0.25)),
            tok("-", 0.5, ("0", 0.3)),
            tok('9","perceived_gender":"', 1.0),
            tok("female", 0.6, ("male", 0.4)),
            tok('"}', 1.0),
        ]
    assert request.answer_prefix == '{"age_group":"uncertain"'
    return [tok(',"perceived_gender":"', 1.0), tok("male", 0.7, ("female", 0.3)), tok('"}', 1.0)]


async def test_a_greedy_pick_less_probable_than_another_value_is_decoded_again(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=split_prefix_tokens)
    async with make_client(engine) as client:
        attributes = await analyze(client, confidence=True)
    age, gender = rounded(attributes["age_group"]), rounded(attributes["perceived_gender"])
    assert (age["value"], age["confidence"]) == ("uncertain", 0.35)
    assert age["alternatives"] == [
        {"value": "20-29", "confidence": 0.25},
        {"value": "3-9", "confidence": 0.2},  # 0.4 × 0.5, the token-greedy pick
        {"value": "30-39", "confidence": 0.12},  # 0.4 × 0.3
    ]
    # Conditioned on the value returned, not on the one greedy decoding took.
    assert (gender["value"], gender["confidence"]) == ("male", 0.7)
    assert len(engine.requests) == 2  # one more pass, from the fixed value on
    second = engine.requests[1]
    assert second.answer_prefix == '{"age_group":"uncertain"'
    assert second.sampling.structured is not None and second.sampling.structured.regex


async def test_with_one_pass_the_greedy_picks_stand(make_client: MakeClient) -> None:
    engine = FakeEngine(tokens=split_prefix_tokens)
    async with make_client(engine, confidence_passes=1) as client:
        attributes = await analyze(client, confidence=True)
    age = rounded(attributes["age_group"])
    assert (age["value"], age["confidence"]) == ("3-9", 0.2)
    assert age["alternatives"][0] == {"value": "uncertain", "confidence": 0.35}
    assert len(engine.requests) == 1


def age_only_tokens(_: GenerationRequest) -> list[TokenLogprob]:
    """Greedy takes "3" (0.4), then "-": 3-9 at 0.2, below "uncertain" (0.35)."""
    return [
        tok('{"age_group":"', 1.0),
        tok("3", 0.4, ("uncertain", 0.35), ("2", 0.25)),
        tok("-", 0.5, ("0", 0.3)),
        tok('9"}', 1.0),
    ]


@pytest.mark.parametrize("passes", [1, 9])
async def test_the_last_attribute_is_replaced_without_another_pass(
    make_client: MakeClient, passes: int
) -> None:
    """Nothing is conditioned on the last attribute: its most probable value needs no pass,
    even when only one is allowed (before: a single attribute was never replaced)."""
    engine = FakeEngine(tokens=age_only_tokens)
    async with make_client(engine, confidence_passes=passes) as client:
        body = {"image": data_url(astronaut()), "attributes": ["age_group"], "confidence": True}
        r = await client.post(URL, json=body)
    age = rounded(r.json()["faces"][0]["attributes"]["age_group"])
    assert (age["value"], age["confidence"]) == ("uncertain", 0.35)
    assert {"value": "3-9", "confidence": 0.2} in age["alternatives"]
    assert len(engine.requests) == 1
