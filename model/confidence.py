"""How sure the model was of an attribute's value: the distribution of the answer's one token.

Each attribute is a multiple-choice question answered with one letter under a `choice`
constraint (model/questions.py). vLLM applies the grammar's bitmask to the logits before it
computes logprobs (its default "raw" logprobs are taken before temperature and penalties), so the
logprobs of that single step spread over the allowed letters only. Asked for as many
alternatives as there are options, they are the whole distribution: each value's confidence is
its letter's probability, exactly, and the confidences of one attribute sum to 1. Greedy
decoding picks the most probable letter, so the answer is always the most probable value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from model.engine import TokenLogprob


@dataclass(frozen=True)
class Scored:
    """A value, the probability the model gave it, and the other values with theirs."""

    value: str
    confidence: float
    alternatives: tuple[tuple[str, float], ...]  # most probable first; only values seen > 0


class UnscorableAnswer(ValueError):
    """The engine's logprobs do not cover the options (e.g. it sent none)."""


def score_choice(
    token: TokenLogprob | None, letters: Sequence[str], values: Sequence[str], pick: str
) -> Scored:
    """The distribution of the one answer `token` over `letters` (option i is `values[i]`), as
    the confidence of `pick` and the alternatives."""
    if token is None or not token.top:
        raise UnscorableAnswer("the engine sent no logprobs for the answer")
    mass = dict.fromkeys(values, 0.0)
    for piece, logprob in token.top:
        if piece in letters:
            mass[values[letters.index(piece)]] += math.exp(logprob)
    if sum(mass.values()) == 0:
        raise UnscorableAnswer("the logprobs name none of the options")
    others = sorted(
        ((v, m) for v, m in mass.items() if v != pick and m > 0), key=lambda vm: (-vm[1], vm[0])
    )
    return Scored(pick, mass[pick], tuple(others))


def abstain(scored: Scored, abstain_value: str) -> Scored:
    """`scored` with the abstain value in its place: that value's own confidence, and the
    model's pick among the alternatives, so a caller still sees what it would have said."""
    others = dict(scored.alternatives)
    kept = others.pop(abstain_value, 0.0)
    alternatives = sorted(
        [(scored.value, scored.confidence), *others.items()], key=lambda vm: (-vm[1], vm[0])
    )
    return Scored(abstain_value, kept, tuple(alternatives))
