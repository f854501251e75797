"""Attribute confidences from token logprobs, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from model.confidence import UnscorableAnswer, score_answer
from model.engine import TokenLogprob

AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "70+", "uncertain")
GENDERS = ("male", "female", "uncertain")
VALUES = {"age_group": AGES, "perceived_gender": GENDERS}
ln = math.log


def tok(text: str, p: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    """A decoded token of probability p, with the engine's top list (itself included)."""
    top = sorted([(text, p), *alternatives], key=lambda a: -a[1])
    return TokenLogprob(text, ln(p), tuple((t, ln(q)) for t, q in top))


def test_a_one_token_value_is_its_token_probability_and_alternatives_map_to_values() -> None:
    tokens = [
        tok('{"age_group":"', 1.0),
        # "3" could still be 3-9 or 30-39: its mass goes to neither.
        tok("20", 0.5, ("un", 0.2), ("3", 0.15), ("0", 0.1), ("7", 0.05)),
        tok('-29","perceived_gender":"', 1.0),
        tok("female", 0.9, ("male", 0.08)),
        tok('"}', 1.0),
    ]
    answer = {"age_group": "20-29", "perceived_gender": "female"}
    scored = score_answer(tokens, answer, VALUES)
    age = scored["age_group"]
    assert age.value == "20-29"
    assert age.confidence == pytest.approx(0.5)
    assert [v for v, _ in age.alternatives] == ["uncertain", "0-2", "70+"]
    assert dict(age.alternatives) == pytest.approx({"uncertain": 0.2, "0-2": 0.1, "70+": 0.05})
    gender = scored["perceived_gender"]
    assert (gender.value, gender.confidence) == ("female", pytest.approx(0.9))
    assert gender.alternatives == (("male", pytest.approx(0.08)),)


def test_a_value_settled_over_several_tokens_multiplies_them() -> None:
    """ "3" leaves 3-9 and 30-39 open; "0" settles 30-39: 0.6 × 0.7. The alternative "-" at the
    second step settles 3-9: 0.6 × 0.25. "un" at the first settles uncertain: 0.3."""
    tokens = [
        tok('{"age_group":"', 1.0),
        tok("3", 0.6, ("un", 0.3), ("1", 0.1)),
        tok("0", 0.7, ("-", 0.25)),
        tok('-39"}', 1.0),
    ]
    (age,) = score_answer(tokens, {"age_group": "30-39"}, VALUES).values()
    assert age.confidence == pytest.approx(0.6 * 0.7)
    assert dict(age.alternatives) == pytest.approx(
        {"uncertain": 0.3, "3-9": 0.6 * 0.25, "10-19": 0.1}
    )
    assert age.confidence + sum(m for _, m in age.alternatives) <= 1 + 1e-9


def test_another_spelling_of_the_same_value_adds_to_it() -> None:
    tokens = [
        tok('{"perceived_gender":"', 1.0),
        tok("fe", 0.5, ("female", 0.3), ("male", 0.2)),
        tok('male"}', 1.0),
    ]
    (gender,) = score_answer(tokens, {"perceived_gender": "female"}, VALUES).values()
    assert gender.confidence == pytest.approx(0.8)
    assert gender.alternatives == (("male", pytest.approx(0.2)),)


def test_a_value_prefix_of_another_is_settled_by_the_closing_quote() -> None:
    values = {"x": ("no", "none")}
    tokens = [tok('{"x":"', 1.0), tok("no", 0.9, ("none", 0.1)), tok('"', 0.6), tok("}", 1.0)]
    (x,) = score_answer(tokens, {"x": "no"}, values).values()
    # "no" then the quote: 0.9 × 0.6; "none" in one token: 0.1; "no"+"ne" was not seen.
    assert x.confidence == pytest.approx(0.54)
    assert x.alternatives == (("none", pytest.approx(0.1)),)


def test_logprobs_that_do_not_spell_the_answer_are_refused() -> None:
    with pytest.raises(UnscorableAnswer):
        score_answer([tok("{}", 1.0)], {"age_group": "20-29"}, VALUES)
