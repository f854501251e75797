import json
from pathlib import Path

import pytest

from evals.benchmark import load_benchmark
from evals.results import (
    RESULTS_FILE,
    ResultsWriter,
    ResumeMismatchError,
    check_run,
    parse_outcomes,
    pending,
    read_outcomes,
)
from evals.scoring import Outcome
from tests.evals.fxbench_data import KEY


def test_last_record_wins_and_torn_lines_are_skipped() -> None:
    lines = [
        '{"id": "a/1", "answer": null, "error": "timeout"}',
        '{"id": "a/2", "answer": "B", "error": null}',
        '{"id": "a/1", "answer": "C", "error": null}',
        "not json",
        '{"answer": "A"}',
        '{"id": "a/3", "answ',
    ]
    assert parse_outcomes(lines) == {"a/1": Outcome("a/1", "C"), "a/2": Outcome("a/2", "B")}


def test_only_unanswered_and_errored_questions_are_pending(benchmark_dir: Path) -> None:
    questions = load_benchmark(benchmark_dir)
    answered = {"lfw_multiple_mcq/1": Outcome("lfw_multiple_mcq/1", "B")}
    errored = {"tools_retrieval/2": Outcome("tools_retrieval/2", error="HTTP 500: boom")}
    todo = pending(questions, answered | errored)
    assert {q.id for q in todo} == set(KEY) - set(answered)
    assert [q.id for q in todo] == [q.id for q in questions if q.id not in answered]


def test_resume_from_a_results_file_asks_only_the_rest(benchmark_dir: Path, tmp_path: Path) -> None:
    questions = load_benchmark(benchmark_dir)
    writer = ResultsWriter(tmp_path)
    for q in questions[:5]:
        writer.write(q, Outcome(q.id, answer="A"), latency_s=0.1)
    writer.write(questions[5], Outcome(questions[5].id, error="timeout"), latency_s=120.0)
    writer.close()
    todo = pending(questions, read_outcomes(tmp_path))
    assert [q.id for q in todo] == [q.id for q in questions[5:]]
    first = json.loads((tmp_path / RESULTS_FILE).read_text().splitlines()[0])
    assert first == {
        "id": questions[0].id,
        "answer": "A",
        "error": None,
        "correct": questions[0].correct,
        "category": questions[0].category,
        "task": questions[0].task,
        "latency_s": 0.1,
    }


def test_a_torn_last_line_does_not_swallow_the_next_record(
    benchmark_dir: Path, tmp_path: Path
) -> None:
    q = load_benchmark(benchmark_dir)[0]
    (tmp_path / RESULTS_FILE).write_text('{"id": "x/1", "answer": "A", "err')
    writer = ResultsWriter(tmp_path)
    writer.write(q, Outcome(q.id, answer="B"), latency_s=0.0)
    writer.close()
    assert read_outcomes(tmp_path) == {q.id: Outcome(q.id, "B")}


def test_a_differently_asked_run_refuses_to_resume(tmp_path: Path) -> None:
    run = {"model": "FaceLLM-8B", "with_task_description": False}
    check_run(tmp_path, run)
    (tmp_path / RESULTS_FILE).write_text("")
    check_run(tmp_path, run)  # same run: fine
    with pytest.raises(ResumeMismatchError, match="with_task_description: False → True"):
        check_run(tmp_path, run | {"with_task_description": True})


def test_no_results_means_nothing_to_resume(tmp_path: Path) -> None:
    assert read_outcomes(tmp_path / "absent") == {}
    check_run(tmp_path / "new", {"model": "a"})
    check_run(tmp_path / "new", {"model": "b"})  # no answers yet: nothing to mix up
