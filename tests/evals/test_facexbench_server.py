"""FaceXBench through the real HTTP server (`create_app`) on uvicorn, with a fake engine.

The fake engine answers each question from the known key (wrong on purpose for some), so every
accuracy is known exactly; it also records what reached it: which questions, how many images in
which order, and the answer constraint.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from evals import facexbench
from evals.__main__ import main
from evals.facexbench import (
    EvalConfig,
    ServerUnavailableError,
    run_facexbench,
    run_facexbench_async,
)
from evals.results import read_outcomes
from model.demo import DEMO_TILES
from model.engine import GenerationRequest
from model.fake_engine import FakeEngine
from server.app import create_app
from server.config import Settings
from tests.evals.fxbench_data import IMAGE_COUNTS, KEY, image_width
from tests.uvicorn_thread import serve_in_thread

WRONG = {
    "fairface_multiple_mcq_age_test/2",  # 3 images
    "lfw_multiple_mcq/2",  # 4 images
    "affectnet_single_mcq/3",
    "tools_retrieval/1",
}
TOO_MANY_IMAGES = "lfw_multiple_mcq/3"  # 5 images; the server takes 4 → HTTP 400, never asked


def held_width(k: int) -> int:
    """The k-th image's width as the engine gets it: resized to the demo's tile canvas."""
    return DEMO_TILES.canvas((image_width(k), 24))[0]


class KeyedResponder:
    """Finds `[question id]` in the prompt and answers from the key; records what it saw."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.widths: dict[str, list[int]] = {}
        self.images_first: dict[str, bool] = {}
        self.choices: dict[str, tuple[str, ...] | None] = {}
        self.prompts: dict[str, str] = {}

    def __call__(self, request: GenerationRequest) -> str:
        parts = [p for m in request.messages for p in m.parts]
        text = "".join(p for p in parts if isinstance(p, str))
        match = re.search(r"\[([^\]]+)\]", text)
        assert match is not None, text
        qid = match.group(1)
        self.asked.append(qid)
        self.prompts[qid] = text
        self.widths[qid] = [p.size[0] for p in parts if not isinstance(p, str)]
        kinds = [isinstance(p, str) for p in parts]
        self.images_first[qid] = kinds == sorted(kinds)
        structured = request.sampling.structured
        self.choices[qid] = structured.choice if structured else None
        key = KEY[qid]
        return "ABCD"[("ABCD".index(key) + 1) % 4] if qid in WRONG else key


def serve(engine: FakeEngine, tmp_path: Path) -> AbstractContextManager[str]:
    """The real app, on uvicorn in a background thread."""
    return serve_in_thread(create_app(Settings(model_cache_dir=tmp_path / "cache"), engine))


@pytest.fixture
def responder() -> KeyedResponder:
    return KeyedResponder()


@pytest.fixture
def engine(responder: KeyedResponder) -> FakeEngine:
    return FakeEngine(model_name="FaceLLM-8B", responder=responder)


def _tallies(group: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {k: (v["correct"], v["total"]) for k, v in group.items()}


def _assert_expected_report(report: dict[str, Any]) -> None:
    assert report["overall"] == {
        "correct": 10,
        "total": 15,
        "accuracy": 66.67,
        "published": 56.14,
        "delta": 10.53,
    }
    assert _tallies(report["categories"]) == {
        "bias_fairness": (4, 5),
        "face_recognition": (1, 3),
        "attributes_expression": (2, 3),
        "face_localization": (2, 2),
        "tools_use": (1, 2),
    }
    assert _tallies(report["tasks"]) == {
        "age": (2, 3),
        "gender": (2, 2),
        "hr_fr": (1, 3),
        "expression": (2, 3),
        "crowd_counting": (2, 2),
        "tools_retrieval": (1, 2),
    }
    assert _tallies(report["num_images"]) == {
        "multiple": (3, 6),
        "single": (6, 7),
        "zero": (1, 2),
    }
    (error,) = report["errors"]
    assert error["id"] == TOO_MANY_IMAGES
    assert error["error"].startswith("HTTP 400")
    assert report["invalid_answers"] == []
    assert report["missing"] == []


def test_accuracies_through_the_server_are_exact(
    benchmark_dir: Path, tmp_path: Path, engine: FakeEngine, responder: KeyedResponder
) -> None:
    out = tmp_path / "out"
    with serve(engine, tmp_path) as url:
        run = run_facexbench(benchmark_dir, url, out=out, concurrency=4, progress=False)
    assert run.asked == 15
    assert run.report["model"] == "FaceLLM-8B"
    assert run.report["variant"] == "8B"
    assert run.report["max_images_per_question"] == 5
    _assert_expected_report(run.report)
    assert json.loads((out / "report.json").read_text()) == run.report
    markdown = (out / "report.md").read_text()
    assert "| **Overall** | 15 | 10 | 66.67 | 56.14 | +10.53 |" in markdown
    assert "| Face Recognition | 3 | 1 | 33.33 | 62.50 | -29.17 |" in markdown
    # what reached the engine: every question but the 5-image one, once, images first and in order
    assert sorted(responder.asked) == sorted(set(KEY) - {TOO_MANY_IMAGES})
    for qid in responder.asked:
        assert responder.widths[qid] == [held_width(k) for k in range(1, IMAGE_COUNTS[qid] + 1)]
        assert responder.images_first[qid]
        assert responder.choices[qid] == ("A", "B", "C", "D")
    assert responder.widths["lfw_multiple_mcq/2"] == [64, 128, 192, 256]  # 1-4 demo tiles wide
    assert (
        "You have to perform the task" not in responder.prompts["fairface_multiple_mcq_age_test/1"]
    )
    assert responder.prompts["tools_retrieval/1"].startswith("Ignore the black image provided.\n")


def test_cli_with_task_description_and_category(
    benchmark_dir: Path,
    tmp_path: Path,
    engine: FakeEngine,
    responder: KeyedResponder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    args = ["facexbench", "--data", str(benchmark_dir), "--out", str(out), "--no-progress"]
    args += ["--with-task-description", "--category", "Bias & Fairness", "--variant", "1B"]
    with serve(engine, tmp_path) as url:
        code = main([*args, "--base-url", url])
    assert code == 0
    assert sorted(responder.asked) == sorted(
        q for q in KEY if q.split("_")[0] in ("fairface", "utkface")
    )
    prompt = responder.prompts["utkface_single_mcq_gender_test/1"]
    assert prompt.startswith("You have to perform the task of gender.\n[utkface")
    report = json.loads((out / "report.json").read_text())
    assert report["variant"] == "1B"
    assert report["subset"] == "categories Bias & Fairness"
    assert report["overall"]["correct"] == 4
    assert "FaceXBench FaceLLM-8B: 80.00% (4/5)" in capsys.readouterr().out


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_an_interrupted_run_resumes_without_asking_again(
    benchmark_dir: Path, tmp_path: Path, responder: KeyedResponder
) -> None:
    engine = FakeEngine(model_name="FaceLLM-8B", responder=responder, step_delay_s=0.1)
    out = tmp_path / "out"
    with serve(engine, tmp_path) as url:
        config = EvalConfig(
            data=benchmark_dir, base_url=url, out=out, concurrency=2, progress=False, max_retries=0
        )
        first = asyncio.create_task(run_facexbench_async(config))
        await _wait_for(lambda: len(read_outcomes(out)) >= 4)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # let requests already on the wire reach the engine before counting
        seen = -1
        for _ in range(20):
            if seen == len(responder.asked):
                break
            seen = len(responder.asked)
            await asyncio.sleep(0.3)
        answered = {i for i, o in read_outcomes(out).items() if o.error is None}
        assert 4 <= len(answered) < 14
        run = await run_facexbench_async(config)
    asked_again = responder.asked[seen:]
    assert sorted(asked_again) == sorted(set(KEY) - answered - {TOO_MANY_IMAGES})
    assert run.asked == 15 - len(answered)
    _assert_expected_report(run.report)


def test_a_server_failing_every_request_stops_the_run(
    benchmark_dir: Path, tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(facexbench, "MAX_SERVER_ERRORS_IN_ROW", 3)
    out = tmp_path / "out"
    with serve(engine, tmp_path) as url:
        engine.dead = True
        with pytest.raises(ServerUnavailableError, match="failed 3 requests in a row"):
            run_facexbench(
                benchmark_dir, url, out=out, concurrency=1, max_retries=0, progress=False
            )
    outcomes = read_outcomes(out)
    assert 3 <= len(outcomes) < 15
    assert all((o.error or "").startswith("HTTP 5") for o in outcomes.values())
