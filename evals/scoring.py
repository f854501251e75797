"""Answers → accuracies, and the report tables. Pure functions: no files, no network.

Aggregation follows FaceXBench's own `aggregate_results.py`: every accuracy (overall, category,
task, image count) is correct / questions over the questions in that group — a micro average, so
a category's weight is its question count. The published FaceLLM numbers agree: with category
sizes 1500 / 800 / 698 / 800 / 1100 / 100 (4998 questions) the per-category figures reproduce
each variant's overall to the second decimal, which an unweighted mean of categories does not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from evals.benchmark import Question

#: FaceLLM paper (arXiv 2507.10300), FaceXBench accuracy in %, by FaceXBench category key.
PUBLISHED: dict[str, dict[str, float]] = {
    "1B": {
        "overall": 38.86,
        "bias_fairness": 40.67,
        "face_recognition": 32.50,
        "fas_deepfakes": 32.66,
        "attributes_expression": 53.00,
        "face_localization": 35.64,
        "tools_use": 28.00,
    },
    "8B": {
        "overall": 56.14,
        "bias_fairness": 65.20,
        "face_recognition": 62.50,
        "fas_deepfakes": 34.38,
        "attributes_expression": 63.25,
        "face_localization": 48.18,
        "tools_use": 52.00,
    },
    "38B": {
        "overall": 60.52,
        "bias_fairness": 71.40,
        "face_recognition": 66.12,
        "fas_deepfakes": 37.97,
        "attributes_expression": 65.12,
        "face_localization": 53.73,
        "tools_use": 48.00,
    },
}


@dataclass(frozen=True)
class Outcome:
    """What the server said to one question: a letter, unconstrained text, or an error."""

    id: str
    answer: str | None = None
    error: str | None = None


@dataclass
class Tally:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        """Percent; 0 for an empty group."""
        return 100.0 * self.correct / self.total if self.total else 0.0

    def add(self, ok: bool) -> None:
        self.correct += ok
        self.total += 1


@dataclass
class Scores:
    overall: Tally = field(default_factory=Tally)
    categories: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    tasks: dict[tuple[str, str], Tally] = field(default_factory=lambda: defaultdict(Tally))
    num_images: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    errors: list[tuple[str, str]] = field(default_factory=list)  # (question id, message)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # answers that are no option
    missing: list[str] = field(default_factory=list)  # never answered (run cut short)


def score(questions: Sequence[Question], outcomes: Mapping[str, Outcome]) -> Scores:
    """Errors, non-letter answers and unanswered questions all count as wrong, and are listed."""
    scores = Scores()
    for q in questions:
        outcome = outcomes.get(q.id)
        if outcome is None:
            scores.missing.append(q.id)
        elif outcome.error is not None:
            scores.errors.append((q.id, outcome.error))
        elif outcome.answer not in q.letters:
            scores.invalid.append((q.id, str(outcome.answer)))
        ok = outcome is not None and outcome.error is None and outcome.answer == q.correct
        for tally in (
            scores.overall,
            scores.categories[q.category],
            scores.tasks[(q.category, q.task)],
            scores.num_images[q.num_images],
        ):
            tally.add(ok)
    return scores
