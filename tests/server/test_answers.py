"""Face answers (server/answers.py) on a fake engine whose letter distributions are known: one
multiple-choice question per attribute, one constrained letter each, confidences read from that
one step, abstention below a threshold."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from model.attributes import SCHEMA_VERSION, multiple_choice
from model.engine import GenerationRequest, TokenLogprob
from model.fake_engine import FakeEngine
from tests.conftest import MakeClient
from tests.images import astronaut, data_url

URL = "/v1/faces/analyze"
ASKED = ["age_group", "perceived_gender"]

# Each question's letter distribution: age_group's options are 0-2 (A) … 30-39 (E) …
# uncertain (J); perceived_gender's male (A), female (B), uncertain (C).
DISTRIBUTIONS = {
    "age_group": {"E": 0.42, "J": 0.3, "B": 0.15, "C": 0.1, "A": 0.03},
    "perceived_gender": {"B": 0.9, "A": 0.08, "C": 0.02},
}


def asked_about(request: GenerationRequest) -> str:
    (message,) = request.messages
    prompt = message.parts[-1]
    (name,) = [n for n in DISTRIBUTIONS if multiple_choice(n).prompt() == prompt]
    return name


def letter_tokens(request: GenerationRequest) -> list[TokenLogprob]:
    """The most probable letter, with every letter's logprob as the alternatives."""
    dist = DISTRIBUTIONS[asked_about(request)]
    top = tuple(sorted(((k, math.log(p)) for k, p in dist.items()), key=lambda kv: -kv[1]))
    return [TokenLogprob(top[0][0], top[0][1], top)]


AGE = {
    "value": "30-39",
    "confidence": 0.42,
    "abstained": False,
    "alternatives": [
        {"value": "uncertain", "confidence": 0.3},
        {"value": "3-9", "confidence": 0.15},
        {"value": "10-19", "confidence": 0.1},
        {"value": "0-2", "confidence": 0.03},
    ],
}
GENDER = {
    "value": "female",
    "confidence": 0.9,
    "abstained": False,
    "alternatives": [
        {"value": "male", "confidence": 0.08},
        {"value": "uncertain", "confidence": 0.02},
    ],
}


async def analyze_face(client: httpx.AsyncClient, **options: Any) -> dict[str, Any]:
    body = {"image": data_url(astronaut()), "attributes": ASKED, **options}
    r = await client.post(URL, json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def analyze(client: httpx.AsyncClient, **options: Any) -> dict[str, Any]:
    (face,) = (await analyze_face(client, **options))["faces"]
    attributes: dict[str, Any] = face["attributes"]
    return attributes


def rounded(answer: dict[str, Any]) -> dict[str, Any]:
    def r(x: float) -> float:
        return round(x, 9)

    alternatives = [{**a, "confidence": r(a["confidence"])} for a in answer["alternatives"]]
    return {**answer, "confidence": r(answer["confidence"]), "alternatives": alternatives}


async def test_confidences_are_the_letter_probabilities_and_sum_to_one(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=letter_tokens)
    async with make_client(engine) as client:
        attributes = await analyze(client, confidence=True)
    assert {k: rounded(v) for k, v in attributes.items()} == {
        "age_group": AGE,
        "perceived_gender": GENDER,
    }
    for answer in attributes.values():
        total = answer["confidence"] + sum(a["confidence"] for a in answer["alternatives"])
        assert total == pytest.approx(1.0)
    assert [r.sampling.logprobs for r in engine.requests] == [10, 10]  # every option's


async def test_each_attribute_is_one_question_answered_with_one_letter(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=letter_tokens)
    async with make_client(engine) as client:
        out = await analyze_face(client)
    assert out["usage"]["completion_tokens"] == len(ASKED)  # one token per attribute
    assert sorted(asked_about(r) for r in engine.requests) == sorted(ASKED)
    crops = set()
    for request in engine.requests:
        (message,) = request.messages
        crop, question = message.parts  # the crop first, the question last
        crops.add(id(crop))
        choice = multiple_choice(asked_about(request))
        assert question == choice.prompt()
        assert request.sampling.max_tokens == 1 and request.sampling.temperature == 0
        assert request.sampling.structured
        assert request.sampling.structured.choice == choice.letters
    assert len(crops) == 1  # one face: every question shows the same crop


async def test_without_the_option_the_shape_is_plain_and_no_logprobs_are_asked(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=letter_tokens)
    async with make_client(engine) as client:
        out = await analyze_face(client)
    assert out["faces"][0]["attributes"] == {"age_group": "30-39", "perceived_gender": "female"}
    assert out["versions"]["schema"] == SCHEMA_VERSION
    assert all(r.sampling.logprobs is None for r in engine.requests)


async def test_a_threshold_above_every_confidence_makes_every_attribute_abstain(
    make_client: MakeClient,
) -> None:
    async with make_client(FakeEngine(tokens=letter_tokens)) as client:
        attributes = await analyze(client, confidence=True, min_confidence=0.95)
        plain = await analyze(client, min_confidence=0.95)
        metrics = (await client.get("/metrics")).text
    age = rounded(attributes["age_group"])
    assert (age["value"], age["confidence"], age["abstained"]) == ("uncertain", 0.3, True)
    assert age["alternatives"] == [
        {"value": "30-39", "confidence": 0.42},  # the model's pick, kept
        {"value": "3-9", "confidence": 0.15},
        {"value": "10-19", "confidence": 0.1},
        {"value": "0-2", "confidence": 0.03},
    ]
    gender = rounded(attributes["perceived_gender"])
    assert (gender["value"], gender["confidence"], gender["abstained"]) == (
        "uncertain",
        0.02,
        True,
    )
    assert plain == {"age_group": "uncertain", "perceived_gender": "uncertain"}
    for name in ASKED:
        assert f'facellm_abstentions_total{{attribute="{name}"}} 2.0' in metrics


async def test_server_defaults_apply_per_attribute_and_a_request_overrides_them(
    make_client: MakeClient,
) -> None:
    engine = FakeEngine(tokens=letter_tokens)
    defaults = {"perceived_gender": 0.95}
    async with make_client(engine, min_confidence=defaults) as client:
        assert await analyze(client) == {"age_group": "30-39", "perceived_gender": "uncertain"}
        assert engine.requests[-1].sampling.logprobs == 10  # needed to abstain
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
    async with make_client(FakeEngine(tokens=letter_tokens)) as client:
        body = {"image": data_url(astronaut()), "attributes": ASKED, "min_confidence": threshold}
        r = await client.post(URL, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param)


async def test_logprobs_that_name_no_option_are_our_500_not_a_guess(
    make_client: MakeClient,
) -> None:
    def no_options(_: GenerationRequest) -> list[TokenLogprob]:
        return [TokenLogprob("A", -0.1, (("Z", -0.1),))]

    async with make_client(FakeEngine(tokens=no_options)) as client:
        body = {"image": data_url(astronaut()), "attributes": ASKED, "confidence": True}
        r = await client.post(URL, json=body)
    assert r.status_code == 500
    assert r.json()["error"]["message"] == "The model's confidences could not be computed."
