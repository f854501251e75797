"""Accuracy and expected calibration error (ECE) of one attribute's answers. Pure: no I/O.

Definition (also in the report and evals/README.md). N answers, each with the confidence c_i of
the returned value (the probability the model gave it among the attribute's allowed values) and
correct_i = 1 when the returned value equals the label. B equal-width bins over [0, 1]: bin b
holds the answers with b/B ≤ c_i < (b+1)/B, the last bin also c_i = 1, i.e. b = min(⌊c_i·B⌋, B−1).
For a non-empty bin, acc_b = mean correct_i and conf_b = mean c_i over its n_b answers;

    ECE = Σ_b (n_b / N) · |acc_b − conf_b|      (empty bins add nothing)

0 is perfectly calibrated; ECE ≥ |accuracy − mean confidence| always. All values are fractions
in [0, 1], not percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ECE_DEFINITION = (
    "ECE = Σ_b (n_b/N)·|acc_b − conf_b| over B equal-width confidence bins "
    "(bin b = min(⌊c·B⌋, B−1), c = confidence of the returned value); acc_b and conf_b are the "
    "accuracy and mean confidence of the n_b answers in bin b; empty bins add nothing"
)


@dataclass(frozen=True)
class Record:
    """One face's answer for one attribute, beside its label."""

    file: str
    attribute: str
    label: str
    predicted: str
    confidence: float

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


@dataclass(frozen=True)
class Bin:
    lower: float
    upper: float
    count: int
    accuracy: float | None  # None for an empty bin
    mean_confidence: float | None


@dataclass(frozen=True)
class Calibration:
    """One attribute's scores; `abstain_answers` counts answers of the abstain value (wrong)."""

    attribute: str
    count: int
    accuracy: float
    mean_confidence: float
    ece: float
    bins: tuple[Bin, ...]
    abstain_answers: int = 0


def bin_index(confidence: float, bins: int) -> int:
    """Equal-width bins over [0, 1], each closed below; 1.0 falls in the last one."""
    if not 0.0 <= confidence <= 1.0:  # also NaN
        raise ValueError(f"confidence {confidence!r} is not in [0, 1]")
    return min(int(confidence * bins), bins - 1)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _bins(records: Sequence[Record], bins: int) -> tuple[Bin, ...]:
    members: list[list[Record]] = [[] for _ in range(bins)]
    for record in records:
        members[bin_index(record.confidence, bins)].append(record)
    return tuple(
        Bin(
            lower=b / bins,
            upper=(b + 1) / bins,
            count=len(group),
            accuracy=_mean([r.correct for r in group]) if group else None,
            mean_confidence=_mean([r.confidence for r in group]) if group else None,
        )
        for b, group in enumerate(members)
    )


def expected_calibration_error(bins: Sequence[Bin]) -> float:
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return sum(
        b.count / total * abs(b.accuracy - b.mean_confidence)
        for b in bins
        if b.accuracy is not None and b.mean_confidence is not None
    )


def calibration(
    attribute: str, records: Sequence[Record], bins: int = 10, abstain: str | None = None
) -> Calibration:
    """Scores of `records` (all of `attribute`); an empty list scores 0 with empty bins."""
    if bins < 1:
        raise ValueError("bins must be ≥ 1")
    table = _bins(records, bins)
    return Calibration(
        attribute=attribute,
        count=len(records),
        accuracy=_mean([r.correct for r in records]),
        mean_confidence=_mean([r.confidence for r in records]),
        ece=expected_calibration_error(table),
        bins=table,
        abstain_answers=sum(r.predicted == abstain for r in records) if abstain else 0,
    )
