from pathlib import Path
from typing import Any

import pytest

from evals.benchmark import (
    DEFAULT_INSTRUCTION,
    BenchmarkError,
    Question,
    build_messages,
    build_prompt,
    load_benchmark,
    parse_file,
    resolve_categories,
    select,
)
from tests.evals.fxbench_data import INSTRUCTION, KEY, TOOLS_CONTEXT

CROWD_DOC: dict[str, Any] = {
    "category": "face_localization",
    "sub-category": "crowd_counting",
    "dataset": "jhucrowd",
    "num_images": "single",
    "prepend_text": "Crowd counting involves estimating the number of people.",
    "postpend_text": INSTRUCTION,
    "questions": {
        "7": {
            "image_paths": ["images/jhucrowd/question_7.png"],
            "question_text": "How many people are present in this image?",
            "options": [9, 5, 6, 4],
            "correct_answer_option": "C",
            "answer": 6,
        }
    },
}


def _question(**overrides: Any) -> Question:
    fields: dict[str, Any] = {
        "id": "f/1",
        "category": "bias_fairness",
        "task": "age",
        "dataset": "fairface",
        "num_images": "multiple",
        "image_paths": ("images/f/1_1.png", "images/f/1_2.png"),
        "text": "Who among these two appears to be older?",
        "options": ("Image 1", "Image 2", "Both", "None of the above"),
        "correct": "B",
        "task_description": "Age estimation predicts a person's age.",
        "instruction": INSTRUCTION,
    }
    return Question(**(fields | overrides))


def test_parse_file_keeps_fields_and_stringifies_numeric_options() -> None:
    (q,) = parse_file(CROWD_DOC, "jhucrowd_single_mcq_test")
    assert q.id == "jhucrowd_single_mcq_test/7"
    assert (q.category, q.task, q.dataset, q.num_images) == (
        "face_localization",
        "crowd_counting",
        "jhucrowd",
        "single",
    )
    assert q.options == ("9", "5", "6", "4")
    assert q.correct == "C"
    assert q.letters == ("A", "B", "C", "D")
    assert q.image_paths == ("images/jhucrowd/question_7.png",)
    assert q.context is None


def test_parse_file_rejects_an_answer_outside_the_options() -> None:
    doc = CROWD_DOC | {
        "questions": {"1": CROWD_DOC["questions"]["7"] | {"correct_answer_option": "E"}}
    }
    with pytest.raises(BenchmarkError, match="not one of its options"):
        parse_file(doc, "bad")


@pytest.mark.parametrize("missing", ["category", "questions"])
def test_parse_file_rejects_other_json(missing: str) -> None:
    doc = {k: v for k, v in CROWD_DOC.items() if k != missing}
    with pytest.raises(BenchmarkError, match="not a FaceXBench question file"):
        parse_file(doc, "other")


def test_prompt_without_task_description_is_the_benchmarks() -> None:
    assert build_prompt(_question()) == (
        "Who among these two appears to be older?\n"
        f"{INSTRUCTION}\n"
        "(A) Image 1\n(B) Image 2\n(C) Both\n(D) None of the above\n"
    )


def test_prompt_with_task_description_puts_it_before_the_question() -> None:
    assert build_prompt(_question(), with_task_description=True) == (
        "Age estimation predicts a person's age.\n"
        "Who among these two appears to be older?\n"
        f"{INSTRUCTION}\n"
        "(A) Image 1\n(B) Image 2\n(C) Both\n(D) None of the above\n"
    )


def test_prompt_starts_with_the_tool_context() -> None:
    q = _question(context=TOOLS_CONTEXT, task_description="Select API calls.")
    assert build_prompt(q, with_task_description=True).startswith(
        f"{TOOLS_CONTEXT}\nSelect API calls.\nWho among"
    )
    assert build_prompt(q).startswith(f"{TOOLS_CONTEXT}\nWho among")


def test_prompt_falls_back_to_the_standard_instruction() -> None:
    assert f"\n{DEFAULT_INSTRUCTION}\n(A)" in build_prompt(_question(instruction=None))


def test_messages_put_images_in_order_before_the_text() -> None:
    urls = ["data:image/png;base64,AA", "data:image/png;base64,BB"]
    (message,) = build_messages(_question(), urls)
    assert message["role"] == "user"
    parts = message["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert [p["image_url"]["url"] for p in parts[:2]] == urls
    assert parts[2]["text"] == build_prompt(_question())


def test_load_benchmark_reads_every_file(benchmark_dir: Path) -> None:
    questions = load_benchmark(benchmark_dir)
    assert {q.id for q in questions} == set(KEY)
    assert {q.id: q.correct for q in questions} == KEY
    tools = [q for q in questions if q.category == "tools_use"]
    assert tools
    assert all(q.context == TOOLS_CONTEXT for q in tools)


def test_load_benchmark_needs_question_files(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="no FaceXBench"):
        load_benchmark(tmp_path)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("bias_fairness", "bias_fairness"),
        ("Bias & Fairness", "bias_fairness"),
        ("face authentication", "fas_deepfakes"),
        ("FAS_DEEPFAKES", "fas_deepfakes"),
        ("Face Tools Use", "tools_use"),
    ],
)
def test_categories_resolve_by_key_or_display_name(name: str, key: str) -> None:
    assert resolve_categories([name]) == {key}


def test_unknown_category_lists_the_valid_ones() -> None:
    with pytest.raises(BenchmarkError, match=r"face_recognition \(Face Recognition\)"):
        resolve_categories(["faces"])


def test_select_filters_by_category(benchmark_dir: Path) -> None:
    questions = load_benchmark(benchmark_dir)
    chosen = select(questions, ["Face Recognition", "tools_use"])
    assert {q.category for q in chosen} == {"face_recognition", "tools_use"}
    assert len(chosen) == 5


def test_sample_is_a_seeded_subset() -> None:
    many = {str(i): CROWD_DOC["questions"]["7"] for i in range(100)}
    questions = parse_file(CROWD_DOC | {"questions": many}, "crowd")
    first = select(questions, sample=10, seed=3)
    assert len(first) == 10
    assert first == select(questions, sample=10, seed=3)
    assert first != select(questions, sample=10, seed=4)
    assert [q.id for q in first] == [q.id for q in questions if q in first]  # keeps file order
    assert select(questions, sample=500) == questions
