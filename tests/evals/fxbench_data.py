"""Test data: a synthetic mini FaceXBench in the real file format, real images from scikit-image.

Every question text starts with `[<question id>]`, so a fake engine can find which question it is
being asked and answer from `KEY`. Image k of a question is 16 + 8k pixels wide, so the order in
which images reach the engine can be read back from their sizes.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage import data as skdata

INSTRUCTION = (
    "Please answer the question and provide only the correct option letter, e.g., A, B, C, D."
)
TOOLS_CONTEXT = "Ignore the black image provided.\n1. Age Estimation:\n    api_name: api_1"

# stem → (category, sub-category, num_images, [(images, options, correct letter), ...])
FILES: dict[str, tuple[str, str, str, list[tuple[int, list[Any], str]]]] = {
    "fairface_multiple_mcq_age_test": (
        "bias_fairness",
        "age",
        "multiple",
        [
            (2, ["Image 1", "None of the above", "Image 2", "Both Images"], "B"),
            (3, ["Image 2", "Image 1", "None of the above", "Image 3"], "D"),
            (2, ["Both Images", "Image 2", "Image 1", "None of the above"], "A"),
        ],
    ),
    "utkface_single_mcq_gender_test": (
        "bias_fairness",
        "gender",
        "single",
        [(1, ["Male", "Female", "Both", "None of the above"], "A")] * 2,
    ),
    "lfw_multiple_mcq": (
        "face_recognition",
        "hr_fr",
        "multiple",
        [
            (2, ["Yes", "No", "Cannot tell", "None of the above"], "B"),
            (4, ["Image 1", "Image 2", "Image 3", "Image 4"], "C"),
            (5, ["Image 1", "Image 2", "Image 3", "Image 5"], "D"),  # over the server's 4
        ],
    ),
    "affectnet_single_mcq": (
        "attributes_expression",
        "expression",
        "single",
        [(1, ["happy", "sad", "angry", "neutral"], "C")] * 3,
    ),
    "jhucrowd_single_mcq_test": (
        "face_localization",
        "crowd_counting",
        "single",
        [(1, [28, 33, 32, 30], "D"), (1, [41, 40, 43, 38], "B")],
    ),
    "tools_retrieval": (
        "tools_use",
        "tools_retrieval",
        "zero",
        [(1, ["api_1-predict_age", "api_2-classify_gender", "api_3-predict_race", "none"], "A")]
        * 2,
    ),
}

KEY: dict[str, str] = {
    f"{stem}/{i}": spec[2]
    for stem, (_, _, _, questions) in FILES.items()
    for i, spec in enumerate(questions, start=1)
}
IMAGE_COUNTS: dict[str, int] = {
    f"{stem}/{i}": spec[0]
    for stem, (_, _, _, questions) in FILES.items()
    for i, spec in enumerate(questions, start=1)
}


@cache
def _picture(index: int) -> Image.Image:
    source = (skdata.astronaut, skdata.chelsea, skdata.coffee)[index % 3]
    return Image.fromarray(source()).resize((64, 64))


def image_width(k: int) -> int:
    """Width of the k-th (1-based) image of every question (24 px high): aspect k:1, so each
    position keeps a distinct width through the server's resize to the model's tile canvas."""
    return 24 * k


def build_benchmark(root: Path) -> Path:
    """Write the mini benchmark (JSON files + images/ folder) under root; return root."""
    for stem, (category, task, num_images, questions) in FILES.items():
        doc: dict[str, Any] = {
            "category": category,
            "sub-category": task,
            "dataset": stem.split("_")[0],
            "question_type": "MCQ",
            "num_images": num_images,
            "prepend_text": f"You have to perform the task of {task}.",
        }
        if category == "tools_use":
            doc["context"] = TOOLS_CONTEXT
        doc["postpend_text"] = INSTRUCTION
        doc["questions"] = {}
        (root / "images" / stem).mkdir(parents=True)
        for i, (n_images, options, correct) in enumerate(questions, start=1):
            paths = []
            for k in range(1, n_images + 1):
                rel = f"images/{stem}/question_{i}_{k}.png"
                picture = _picture((i + k) % 3).resize((image_width(k), 24))
                if category == "tools_use":
                    picture = Image.fromarray(np.zeros((24, image_width(k), 3), np.uint8))
                picture.save(root / rel)
                paths.append(rel)
            doc["questions"][str(i)] = {
                "image_paths": paths,
                "question_text": f"[{stem}/{i}] Which option is right?",
                "options": options,
                "correct_answer_option": correct,
                "answer": options["ABCD".index(correct)],
            }
        (root / f"{stem}.json").write_text(json.dumps(doc, indent=4), encoding="utf-8")
    return root
