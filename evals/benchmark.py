"""FaceXBench questions: the file format, the taxonomy, selection and the benchmark's own prompt.

Everything here is pure except `load_benchmark`, which only reads the JSON files, so the parsing
and prompt rules are tested without a server or the real data set.

File format (github.com/Kartik-3004/facexbench, `benchmark/*.json`, one file per data set): top
level `category`, `sub-category`, `dataset`, `num_images` ("zero" | "single" | "multiple"),
`prepend_text` (the task description), `postpend_text` (the answer instruction), `context` (tool
use only) and `questions: {id: {image_paths, question_text, options, correct_answer_option,
answer}}`; image paths are relative to the folder holding the JSON files.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The server's faces endpoint asks its questions with the same builder.
from model.questions import DEFAULT_INSTRUCTION, LETTERS, MultipleChoice

#: FaceXBench's category keys (as in its JSON files) → display name and sub-category keys.
CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bias_fairness": ("Bias & Fairness", ("age", "gender", "race")),
    "face_recognition": ("Face Recognition", ("hr_fr", "lr_fr", "celebrity_identification")),
    "fas_deepfakes": ("Face Authentication", ("fas", "deepfakes")),
    "attributes_expression": ("Face Analysis", ("attributes", "expression")),
    "face_localization": ("Face Localization", ("headpose", "segmentation", "crowd_counting")),
    "tools_use": ("Face Tools Use", ("tools_retrieval",)),
}

TASK_NAMES: dict[str, str] = {
    "age": "Age Estimation",
    "gender": "Gender Prediction",
    "race": "Race Estimation",
    "hr_fr": "High-Resolution Face Recognition",
    "lr_fr": "Low-Resolution Face Recognition",
    "celebrity_identification": "Celebrity Identification",
    "fas": "Face Anti-Spoofing",
    "deepfakes": "Deepfake Detection",
    "attributes": "Attributes Prediction",
    "expression": "Facial Expression Recognition",
    "headpose": "Head Pose Estimation",
    "segmentation": "Face Parsing",
    "crowd_counting": "Crowd Counting",
    "tools_retrieval": "Face Tools Retrieval",
}


class BenchmarkError(ValueError):
    """The data folder or a question file is not FaceXBench-shaped."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question, with the file-level fields it needs to be asked alone."""

    id: str  # "<file stem>/<question id>": question ids repeat across files
    category: str
    task: str
    dataset: str
    num_images: str
    image_paths: tuple[str, ...]
    text: str
    options: tuple[str, ...]
    correct: str
    task_description: str | None = None
    instruction: str | None = None
    context: str | None = None

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.options)])


def category_name(key: str) -> str:
    return CATEGORIES[key][0] if key in CATEGORIES else key


def task_name(key: str) -> str:
    return TASK_NAMES.get(key, key)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_file(data: Mapping[str, Any], source: str) -> list[Question]:
    """Turn one FaceXBench JSON document into questions; `source` is the file stem."""
    try:
        category, task = str(data["category"]), str(data["sub-category"])
        items = data["questions"].items()
    except (KeyError, AttributeError) as exc:
        raise BenchmarkError(f"{source}: not a FaceXBench question file ({exc!r})") from exc
    return [_parse_question(data, source, category, task, qid, q) for qid, q in items]


def _parse_question(
    data: Mapping[str, Any], source: str, category: str, task: str, qid: str, q: Any
) -> Question:
    try:
        options = tuple(str(o) for o in q["options"])
        correct = str(q["correct_answer_option"]).strip().upper()
        question = Question(
            id=f"{source}/{qid}",
            category=category,
            task=task,
            dataset=str(data.get("dataset", source)),
            num_images=str(data.get("num_images", "")),
            image_paths=tuple(str(p) for p in q["image_paths"]),
            text=str(q["question_text"]),
            options=options,
            correct=correct,
            task_description=_text(data.get("prepend_text")),
            instruction=_text(data.get("postpend_text")),
            context=_text(data.get("context")),
        )
    except (KeyError, TypeError) as exc:
        raise BenchmarkError(f"{source}/{qid}: malformed question ({exc!r})") from exc
    if not 2 <= len(options) <= len(LETTERS) or correct not in question.letters:
        raise BenchmarkError(f"{source}/{qid}: answer {correct!r} is not one of its options")
    return question


def load_benchmark(data_dir: Path) -> list[Question]:
    """Read every `*.json` question file directly in `data_dir` (the repo's `benchmark/`)."""
    files = sorted(data_dir.glob("*.json"))
    if not files:
        raise BenchmarkError(f"no FaceXBench *.json files in {data_dir}")
    questions: list[Question] = []
    for path in files:
        with path.open(encoding="utf-8") as f:
            questions.extend(parse_file(json.load(f), path.stem))
    return questions


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.casefold())


def resolve_categories(names: Iterable[str]) -> set[str]:
    """Map user-given category names (key or display name, any case) to category keys."""
    known = {_norm(k): k for k in CATEGORIES} | {_norm(v[0]): k for k, v in CATEGORIES.items()}
    resolved = set()
    for name in names:
        if _norm(name) not in known:
            valid = ", ".join(f"{k} ({v[0]})" for k, v in CATEGORIES.items())
            raise BenchmarkError(f"unknown category {name!r}; valid: {valid}")
        resolved.add(known[_norm(name)])
    return resolved


def select(
    questions: Sequence[Question],
    categories: Iterable[str] = (),
    sample: int | None = None,
    seed: int = 0,
) -> list[Question]:
    """Filter by category, then draw a uniform sample that depends only on the seed and the set."""
    wanted = resolve_categories(categories)
    chosen = [q for q in questions if not wanted or q.category in wanted]
    if sample is not None and sample < len(chosen):
        picked = set(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [q for i, q in enumerate(chosen) if i in picked]
    return chosen


def multiple_choice(question: Question, with_task_description: bool = False) -> MultipleChoice:
    """The question as the server's multiple-choice builder takes it."""
    return MultipleChoice(
        question=question.text,
        options=question.options,
        instruction=question.instruction or DEFAULT_INSTRUCTION,
        context=question.context,
        task_description=question.task_description if with_task_description else None,
    )


def build_prompt(question: Question, with_task_description: bool = False) -> str:
    """The benchmark's own prompt text: tool context, task description, question, instruction,
    then the options as "(A) ...", each on its own line."""
    return multiple_choice(question, with_task_description).prompt()


def build_messages(
    question: Question, image_urls: Sequence[str], with_task_description: bool = False
) -> list[dict[str, Any]]:
    """One user turn: the images in the question's order, then the prompt text."""
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": u}} for u in image_urls
    ]
    parts.append({"type": "text", "text": build_prompt(question, with_task_description)})
    return [{"role": "user", "content": parts}]
