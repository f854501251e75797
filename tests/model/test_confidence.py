"""Confidence from the one answer token's logprobs over the option letters (model/confidence.py)."""

import math

import pytest

from model.confidence import Scored, UnscorableAnswer, abstain, score_choice
from model.engine import TokenLogprob

LETTERS = ("A", "B", "C")
VALUES = ("male", "female", "uncertain")


def token(pick: str, probabilities: dict[str, float]) -> TokenLogprob:
    top = tuple((k, math.log(p)) for k, p in probabilities.items())
    return TokenLogprob(pick, math.log(probabilities[pick]), top)


def test_each_value_gets_its_letters_probability() -> None:
    scored = score_choice(token("B", {"B": 0.7, "A": 0.2, "C": 0.1}), LETTERS, VALUES, "female")
    assert scored.value == "female"
    assert scored.confidence == pytest.approx(0.7)
    assert [v for v, _ in scored.alternatives] == ["male", "uncertain"]
    total = scored.confidence + sum(p for _, p in scored.alternatives)
    assert total == pytest.approx(1.0)


def test_tokens_that_are_not_letters_are_ignored_and_unseen_values_get_nothing() -> None:
    scored = score_choice(token("A", {"A": 0.9, "Z": 0.1}), LETTERS, VALUES, "male")
    assert scored.alternatives == ()
    assert scored.confidence == pytest.approx(0.9)


@pytest.mark.parametrize(
    "given", [None, TokenLogprob("A", -0.1), TokenLogprob("A", -0.1, (("Z", -0.1),))]
)
def test_no_logprobs_for_the_options_is_unscorable(given: TokenLogprob | None) -> None:
    with pytest.raises(UnscorableAnswer):
        score_choice(given, LETTERS, VALUES, "male")


def test_abstaining_keeps_the_pick_among_the_alternatives() -> None:
    scored = Scored("female", 0.5, (("uncertain", 0.3), ("male", 0.2)))
    assert abstain(scored, "uncertain") == Scored(
        "uncertain", 0.3, (("female", 0.5), ("male", 0.2))
    )
