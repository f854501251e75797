"""Run FaceXBench against a running FaceLLM server over its OpenAI API, and write the report.

Each question is one chat request (images as `data:` URLs, then the benchmark's prompt) whose
answer is constrained to the option letters with structured outputs, so scoring needs no answer
parsing. Answers are appended to `results.jsonl` as they arrive; rerunning the same command asks
only what is still unanswered. `run_facexbench` is the Python entry point the CLI also uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from evals.benchmark import BenchmarkError, Question, build_messages, load_benchmark, select
from evals.client import (
    MAX_SERVER_ERRORS_IN_ROW,
    EvalError,
    ServerUnavailableError,
    ServerWatch,
    http_error,
    image_data_url,
    make_client,
    normalize_base_url,
    resolve_model,
    run_bounded,
)
from evals.report import render_markdown, report_json
from evals.results import ResultsWriter, check_run, pending, read_outcomes
from evals.scoring import PUBLISHED, Outcome, Scores, score

logger = logging.getLogger(__name__)

# Shared HTTP pieces re-exported: callers and tests import them from here. The limit is read from
# this module at run time, so it can be lowered here.
__all__ = [
    "MAX_SERVER_ERRORS_IN_ROW",
    "EvalConfig",
    "EvalError",
    "EvalRun",
    "ServerUnavailableError",
    "image_data_url",
    "infer_variant",
    "normalize_base_url",
    "resolve_model",
    "run_facexbench",
    "run_facexbench_async",
]


@dataclass(frozen=True)
class EvalConfig:
    """Every option of `facellm-eval facexbench`, with the CLI's defaults."""

    data: Path
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    model: str | None = None  # default: the first model the server lists
    concurrency: int = 8
    with_task_description: bool = False
    categories: tuple[str, ...] = ()
    sample: int | None = None
    seed: int = 0
    out: Path = Path("facexbench-results")
    variant: str | None = None  # default: inferred from the model id
    timeout_s: float = 120.0
    max_retries: int = 2
    max_tokens: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "categories", tuple(self.categories))
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise ValueError("concurrency ≥ 1, max_retries ≥ 0 and timeout_s > 0 are required")
        if self.sample is not None and self.sample < 1:
            raise ValueError("sample must be ≥ 1")
        if self.variant is not None and self.variant not in PUBLISHED:
            raise ValueError(f"variant must be one of {sorted(PUBLISHED)}")


@dataclass(frozen=True)
class EvalRun:
    """What a finished run produced; `asked` counts requests sent by this invocation."""

    report: dict[str, Any]
    scores: Scores
    asked: int
    out_dir: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def infer_variant(model_id: str) -> str | None:
    """`Idiap/FaceLLM-8B`, `facellm-38b`… → the published variant; `demo` → None."""
    match = re.search(r"(?<![0-9.])(\d+)b(?![a-z0-9])", model_id.casefold())
    size = f"{match.group(1)}B" if match else None
    return size if size in PUBLISHED else None


class _Asker:
    """Asks questions one request each; `watch` decides when failures stop the run."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        config: EvalConfig,
        watch: ServerWatch | None = None,
    ) -> None:
        self.client, self.model, self.config = client, model, config
        self.watch = watch or ServerWatch(
            client, config.base_url, config.out, MAX_SERVER_ERRORS_IN_ROW
        )

    async def ask(self, question: Question) -> Outcome:
        try:
            urls = await asyncio.to_thread(
                lambda: [image_data_url(self.config.data / p) for p in question.image_paths]
            )
        except (OSError, ValueError) as exc:
            return Outcome(question.id, error=f"image: {exc}")
        messages = build_messages(question, urls, self.config.with_task_description)
        try:
            response = await self.client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=self.config.max_tokens,
                temperature=0.0,
                extra_body={"structured_outputs": {"choice": list(question.letters)}},
            )
        except openai.APITimeoutError as exc:
            return Outcome(question.id, error=f"timeout: {exc}")
        except openai.APIConnectionError as exc:
            await self.watch.require_server(exc)
            return Outcome(question.id, error=f"connection: {exc}")
        except openai.APIStatusError as exc:
            self.watch.count_status(exc)
            return Outcome(question.id, error=http_error(exc))
        self.watch.succeeded()
        if not response.choices:
            return Outcome(question.id, error="response without choices")
        return Outcome(question.id, answer=(response.choices[0].message.content or "").strip())


async def _ask_all(asker: _Asker, todo: Sequence[Question], outcomes: dict[str, Outcome]) -> None:
    """Ask `todo` with at most `concurrency` requests in flight, saving each answer at once."""
    config = asker.config
    writer = ResultsWriter(config.out)

    async def one(question: Question) -> None:
        start = time.perf_counter()
        outcome = await asker.ask(question)
        writer.write(question, outcome, time.perf_counter() - start)
        outcomes[question.id] = outcome

    try:
        await run_bounded(
            todo,
            one,
            asker.watch,
            concurrency=config.concurrency,
            desc="FaceXBench",
            unit="q",
            progress=config.progress,
        )
    finally:
        writer.close()


def _check_data(config: EvalConfig, questions: Sequence[Question]) -> int:
    """Fail fast when no image is where the files say (a wrong --data), warn when some are not;
    return the most images one question carries (the server must accept that many)."""
    missing = [
        q.id for q in questions if not all((config.data / p).is_file() for p in q.image_paths)
    ]
    if missing and len(missing) == len(questions):
        first = questions[0].image_paths[0] if questions[0].image_paths else "?"
        raise BenchmarkError(
            f"no question's images found under {config.data} (e.g. {first}); --data must be the "
            "folder holding the *.json files and their images/ folder"
        )
    if missing:
        logger.warning("%d questions have missing images; they will count as errors", len(missing))
    most = max(len(q.image_paths) for q in questions)
    logger.info("up to %d images per question (server: FACELLM_MAX_IMAGES_PER_PROMPT)", most)
    return most


def _write_report(out_dir: Path, report: dict[str, Any]) -> None:
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")


def _subset(config: EvalConfig) -> str | None:
    parts = [f"categories {', '.join(config.categories)}"] if config.categories else []
    if config.sample is not None:
        parts.append(f"random sample of {config.sample} (seed {config.seed})")
    return "; ".join(parts) or None


async def run_facexbench_async(config: EvalConfig) -> EvalRun:
    """Ask every selected question not yet answered in `config.out`, then score and report all."""
    questions = select(load_benchmark(config.data), config.categories, config.sample, config.seed)
    if not questions:
        raise BenchmarkError(f"no questions selected from {config.data}")
    most_images = _check_data(config, questions)
    base_url = normalize_base_url(config.base_url)
    client = make_client(base_url, config.api_key, config.timeout_s, config.max_retries)
    async with client:
        model = await resolve_model(client, config.model, base_url)
        run = {"model": model, "with_task_description": config.with_task_description}
        check_run(config.out, run)
        outcomes = read_outcomes(config.out)
        todo = pending(questions, outcomes)
        logger.info("%d of %d questions to ask", len(todo), len(questions))
        await _ask_all(_Asker(client, model, config), todo, outcomes)
    variant = config.variant or infer_variant(model)
    meta = {
        **run,
        "base_url": base_url,
        "data": str(config.data),
        "subset": _subset(config),
        "max_images_per_question": most_images,
    }
    scores = score(questions, outcomes)
    report = report_json(scores, meta, variant)
    _write_report(config.out, report)
    return EvalRun(report, scores, len(todo), config.out, outcomes)


def run_facexbench(data: Path | str, base_url: str, **options: Any) -> EvalRun:
    """Blocking entry point with the CLI's options as keywords (see `EvalConfig`)."""
    config = EvalConfig(data=Path(data), base_url=base_url, **options)
    return asyncio.run(run_facexbench_async(config))
