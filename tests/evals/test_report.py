from typing import Any

from evals.benchmark import Question
from evals.report import MAX_LISTED, render_markdown, report_json
from evals.scoring import Outcome, score

META = {"model": "FaceLLM-8B", "base_url": "http://h/v1", "with_task_description": False}


def _q(qid: str, category: str, task: str, num_images: str = "single") -> Question:
    return Question(
        id=qid,
        category=category,
        task=task,
        dataset="d",
        num_images=num_images,
        image_paths=("a.png",),
        text="?",
        options=("w", "x", "y", "z"),
        correct="A",
    )


QUESTIONS = [
    _q("a/1", "bias_fairness", "age", "multiple"),
    _q("a/2", "bias_fairness", "age", "multiple"),
    _q("g/1", "bias_fairness", "gender"),
    _q("g/2", "bias_fairness", "gender"),
    _q("t/1", "tools_use", "tools_retrieval", "zero"),
]


def _report(variant: str | None, answers: dict[str, str]) -> dict[str, Any]:
    outcomes = {q.id: Outcome(q.id, answer=answers.get(q.id, "A")) for q in QUESTIONS}
    return report_json(score(QUESTIONS, outcomes), META, variant)


def test_report_json_compares_with_the_served_variant() -> None:
    report = _report("8B", {"a/2": "B"})
    assert report["overall"] == {
        "correct": 4,
        "total": 5,
        "accuracy": 80.0,
        "published": 56.14,
        "delta": 23.86,
    }
    assert report["categories"]["bias_fairness"] == {
        "name": "Bias & Fairness",
        "correct": 3,
        "total": 4,
        "accuracy": 75.0,
        "published": 65.2,
        "delta": 9.8,
    }
    assert list(report["tasks"]) == ["age", "gender", "tools_retrieval"]
    assert report["tasks"]["age"] == {
        "name": "Age Estimation",
        "category": "bias_fairness",
        "correct": 1,
        "total": 2,
        "accuracy": 50.0,
    }
    assert report["num_images"]["multiple"]["accuracy"] == 50.0
    assert report["model"] == "FaceLLM-8B"
    assert report["published"]["overall"] == 56.14


def test_markdown_table_sets_ours_beside_the_variants_numbers() -> None:
    text = render_markdown(_report("8B", {"a/2": "B"}))
    assert "| Category | Questions | Correct | Ours % | FaceLLM-8B % | Δ |" in text
    assert "| **Overall** | 5 | 4 | 80.00 | 56.14 | +23.86 |" in text
    assert "| Bias & Fairness | 4 | 3 | 75.00 | 65.20 | +9.80 |" in text
    assert "| Face Tools Use | 1 | 1 | 100.00 | 52.00 | +48.00 |" in text
    assert "| Age Estimation | 2 | 1 | 50.00 |" in text
    assert "| zero | 1 | 1 | 100.00 |" in text
    assert "FaceLLM-1B" not in text
    assert "Problem questions" not in text


def test_markdown_without_a_known_variant_shows_all_published_columns() -> None:
    text = render_markdown(_report(None, {}))
    assert "| Ours % | FaceLLM-1B % | FaceLLM-8B % | FaceLLM-38B % |" in text
    assert "| **Overall** | 5 | 5 | 100.00 | 38.86 | 56.14 | 60.52 |" in text
    assert "Δ" not in text


def test_problem_questions_are_listed_and_capped() -> None:
    questions = [_q(f"x/{i}", "face_localization", "headpose") for i in range(MAX_LISTED + 5)]
    outcomes = {q.id: Outcome(q.id, error="HTTP 400: too many images") for q in questions}
    outcomes["x/0"] = Outcome("x/0", answer="maybe")
    report = report_json(score(questions, outcomes), META | {"subset": "sample"}, "1B")
    assert len(report["errors"]) == MAX_LISTED + 4
    assert report["invalid_answers"] == [{"id": "x/0", "answer": "maybe"}]
    text = render_markdown(report)
    assert "`x/0`: answer 'maybe' is not an option" in text
    assert text.index("`x/0`: answer") < text.index("`x/1`: error: HTTP 400: too many images")
    assert "… and 5 more (all in report.json)" in text
    assert "Subset: sample" in text
    assert "| Face Localization | 55 | 0 | 0.00 | 35.64 | -35.64 |" in text
