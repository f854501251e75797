from pathlib import Path

import pytest

from evals.benchmark import load_benchmark
from evals.scoring import PUBLISHED, Outcome, Tally, score
from tests.evals.fxbench_data import IMAGE_COUNTS, KEY

WRONG = "ABCD"


def _wrong(letter: str) -> str:
    return WRONG[(WRONG.index(letter) + 1) % 4]


def test_tally_accuracy_is_a_percentage() -> None:
    assert Tally(2, 3).accuracy == pytest.approx(66.6667, abs=1e-4)
    assert Tally().accuracy == 0.0


def test_score_groups_by_category_task_and_image_count(benchmark_dir: Path) -> None:
    questions = load_benchmark(benchmark_dir)
    wrong = {"fairface_multiple_mcq_age_test/2", "lfw_multiple_mcq/2", "tools_retrieval/1"}
    outcomes = {
        qid: Outcome(qid, answer=_wrong(key) if qid in wrong else key) for qid, key in KEY.items()
    }
    scores = score(questions, outcomes)
    assert (scores.overall.correct, scores.overall.total) == (12, 15)
    by_category = {k: (t.correct, t.total) for k, t in scores.categories.items()}
    assert by_category == {
        "bias_fairness": (4, 5),
        "face_recognition": (2, 3),
        "attributes_expression": (3, 3),
        "face_localization": (2, 2),
        "tools_use": (1, 2),
    }
    assert (
        scores.tasks[("bias_fairness", "age")].correct,
        scores.tasks[("bias_fairness", "age")].total,
    ) == (2, 3)
    assert scores.tasks[("bias_fairness", "gender")].accuracy == 100.0
    by_images = {k: (t.correct, t.total) for k, t in scores.num_images.items()}
    assert by_images == {"multiple": (4, 6), "single": (7, 7), "zero": (1, 2)}
    assert max(IMAGE_COUNTS[q] for q in wrong) == 4  # a 3- and a 4-image question scored wrong
    assert (scores.errors, scores.invalid, scores.missing) == ([], [], [])


def test_errors_invalid_and_missing_answers_count_as_wrong_and_are_listed(
    benchmark_dir: Path,
) -> None:
    questions = load_benchmark(benchmark_dir)
    outcomes = {qid: Outcome(qid, answer=key) for qid, key in KEY.items()}
    outcomes["lfw_multiple_mcq/3"] = Outcome(
        "lfw_multiple_mcq/3", error="HTTP 400: too many images"
    )
    outcomes["affectnet_single_mcq/1"] = Outcome("affectnet_single_mcq/1", answer="C is right")
    del outcomes["tools_retrieval/2"]
    scores = score(questions, outcomes)
    assert (scores.overall.correct, scores.overall.total) == (12, 15)
    assert scores.errors == [("lfw_multiple_mcq/3", "HTTP 400: too many images")]
    assert scores.invalid == [("affectnet_single_mcq/1", "C is right")]
    assert scores.missing == ["tools_retrieval/2"]


def test_published_overall_is_the_question_weighted_mean_of_categories() -> None:
    """Why we aggregate over questions: FaceXBench's category sizes give the paper's overall."""
    sizes = {
        "bias_fairness": 1500,
        "face_recognition": 800,
        "fas_deepfakes": 698,
        "attributes_expression": 800,
        "face_localization": 1100,
        "tools_use": 100,
    }
    for numbers in PUBLISHED.values():
        correct = sum(round(numbers[c] * n / 100) for c, n in sizes.items())
        assert 100 * correct / sum(sizes.values()) == pytest.approx(numbers["overall"], abs=0.005)
        unweighted = sum(numbers[c] for c in sizes) / len(sizes)
        assert abs(unweighted - numbers["overall"]) > 1
