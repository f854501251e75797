"""How sure the model was of each attribute value, from the engine's token logprobs.

Under a structured-output grammar, vLLM applies the grammar's bitmask to the logits before it
computes logprobs, so a token's logprobs are those of the *allowed* tokens only: they spread over
what the schema permits at that point. An attribute's value is settled by the tokens from the
first one that reaches into the value to the first one after which a single value remains; from
there the grammar forces the rest (later tokens only choose how the value is spelled).

The confidence of value v is P(v | image, the answer's text before the value's first token),
computed along the decoded path: at each settling step, every allowed alternative token that
leaves one value possible adds (probability of the path so far) × (its probability) to that
value, and the decoded token extends the path. For a value settled by several tokens, that is
the product of their probabilities plus what alternative spellings of the same value add.

Limits: only the alternatives the engine reports (its top-k) are seen; an alternative that still
leaves several values open is not followed, so its mass is given to none. Masses therefore sum to
at most 1, and a value's confidence is a lower bound on its true probability.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from model.engine import TokenLogprob


@dataclass(frozen=True)
class Scored:
    """A value, the probability the model gave it, and the other values with theirs."""

    value: str
    confidence: float
    alternatives: tuple[tuple[str, float], ...]  # most probable first; only values seen > 0


class UnscorableAnswer(ValueError):
    """The logprobs do not spell the answer (e.g. the engine sent none)."""


def score_answer(
    tokens: Sequence[TokenLogprob],
    answer: Mapping[str, str],
    values: Mapping[str, Sequence[str]],
) -> dict[str, Scored]:
    """Each attribute of `answer` (a validated JSON answer, spelled by `tokens`) with its
    confidence and alternatives among `values[name]`."""
    spelled = "".join(t.token for t in tokens)
    starts = _starts(tokens)
    scored = {}
    for name, value in answer.items():
        begin = _value_begin(spelled, name)
        masses = _masses(tokens, starts, spelled, begin, values[name])
        others = sorted(
            ((v, m) for v, m in masses.items() if v != value and m > 0),
            key=lambda vm: (-vm[1], vm[0]),
        )
        scored[name] = Scored(value, masses[value], tuple(others))
    return scored


def _starts(tokens: Sequence[TokenLogprob]) -> list[int]:
    starts, at = [], 0
    for token in tokens:
        starts.append(at)
        at += len(token.token)
    return starts


def _value_begin(spelled: str, name: str) -> int:
    """Where the value of `name` starts in the answer's text (after its opening quote)."""
    found = re.search(rf'"{re.escape(name)}"\s*:\s*"', spelled)
    if found is None:
        raise UnscorableAnswer(f"the logprobs do not spell a value for {name}")
    return found.end()


def _masses(
    tokens: Sequence[TokenLogprob],
    starts: Sequence[int],
    spelled: str,
    begin: int,
    values: Sequence[str],
) -> dict[str, float]:
    masses = dict.fromkeys(values, 0.0)
    path = 1.0  # probability of the decoded tokens since the value's first one
    first = next((i for i, at in enumerate(starts) if at + len(tokens[i].token) > begin), None)
    if first is None:
        raise UnscorableAnswer("the logprobs end before a value")
    for i in range(first, len(tokens)):  # bounded: settles at the latest at the closing quote
        token, before = tokens[i], spelled[: starts[i]]
        for piece, logprob in dict(token.top).items():
            if piece != token.token and (only := _only_value(before + piece, begin, values)):
                masses[only] += path * math.exp(logprob)
        path *= math.exp(token.logprob)
        if only := _only_value(before + token.token, begin, values):
            masses[only] += path
            break
    return masses


def _only_value(spelled: str, begin: int, values: Sequence[str]) -> str | None:
    """The one value `spelled` can still become, if only one; the closing quote ends a value,
    so a value that is a prefix of another is told apart once the quote comes."""
    typed = spelled[begin:]
    if not typed:
        return None
    fits = [v for v in values if f'{v}"'.startswith(typed) or typed.startswith(f'{v}"')]
    return fits[0] if len(fits) == 1 else None


def abstain(scored: Scored, abstain_value: str) -> Scored:
    """`scored` with the abstain value in its place: that value's own confidence, and the
    model's pick among the alternatives, so a caller still sees what it would have said."""
    others = dict(scored.alternatives)
    kept = others.pop(abstain_value, 0.0)
    alternatives = sorted(
        [(scored.value, scored.confidence), *others.items()], key=lambda vm: (-vm[1], vm[0])
    )
    return Scored(abstain_value, kept, tuple(alternatives))


def most_probable(scored: Scored) -> Scored:
    """`scored`, or the alternative the model gave more probability, in its place (ties keep
    the pick)."""
    best, mass = max(scored.alternatives, key=lambda vm: vm[1], default=(scored.value, 0.0))
    if mass <= scored.confidence:
        return scored
    others = [(v, m) for v, m in scored.alternatives if v != best]
    alternatives = sorted(
        [(scored.value, scored.confidence), *others], key=lambda vm: (-vm[1], vm[0])
    )
    return Scored(best, mass, tuple(alternatives))
