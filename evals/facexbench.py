"""Run FaceXBench against a running FaceLLM server over its OpenAI API, and write the report.

Each question is one chat request (images as `data:` URLs, then the benchmark's prompt) whose
answer is constrained to the option letters with structured outputs, so scoring needs no answer
parsing. Answers are appended to `results.jsonl` as they arrive; rerunning the same command asks
only what is still unanswered. `run_facexbench` is the Python entry point the CLI also uses.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from PIL import Image
from tqdm import tqdm

from evals.benchmark import BenchmarkError, Question, build_messages, load_benchmark, select
from evals.report import render_markdown, report_json
from evals.results import ResultsWriter, check_run, pending, read_outcomes
from evals.scoring import PUBLISHED, Outcome, Scores, score

logger = logging.getLogger(__name__)

MIME_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
PROBE_TIMEOUT_S = 10.0
#: This many 5xx answers in a row (after the client's retries) mean the server is up but broken.
MAX_SERVER_ERRORS_IN_ROW = 20


class EvalError(RuntimeError):
    """The run cannot go on (server unreachable, model not served); the message says why."""


class ServerUnavailableError(EvalError):
    pass


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


def normalize_base_url(url: str) -> str:
    """Accept the server root or its `/v1` prefix."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def infer_variant(model_id: str) -> str | None:
    """`Idiap/FaceLLM-8B`, `facellm-38b`… → the published variant; `demo` → None."""
    match = re.search(r"(?<![0-9.])(\d+)b(?![a-z0-9])", model_id.casefold())
    size = f"{match.group(1)}B" if match else None
    return size if size in PUBLISHED else None


def image_data_url(path: Path) -> str:
    """The file as a `data:` URL; formats the server does not take are re-encoded as PNG."""
    mime = MIME_TYPES.get(path.suffix.lower())
    if mime is not None:
        data = path.read_bytes()
    else:
        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").save(buffer, format="PNG")
        mime, data = "image/png", buffer.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _http_error(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {exc.status_code}: {message or exc.message}"


async def resolve_model(client: openai.AsyncOpenAI, wanted: str | None, base_url: str) -> str:
    """Check the server answers and serves `wanted` (default: its first model)."""
    try:
        listed = await client.with_options(timeout=PROBE_TIMEOUT_S, max_retries=0).models.list()
    except openai.APIConnectionError as exc:
        raise ServerUnavailableError(f"cannot reach a FaceLLM server at {base_url}: {exc}") from exc
    except openai.APIStatusError as exc:
        raise EvalError(f"{base_url}/models refused the request: {_http_error(exc)}") from exc
    served = [m.id for m in listed.data]
    if wanted is None:
        if not served:
            raise EvalError(f"{base_url} serves no model")
        return served[0]
    if wanted not in served:
        raise EvalError(f"{base_url} does not serve {wanted!r}; it serves {served}")
    return wanted


class _Asker:
    """Asks questions one request each; a lost connection aborts only if the server is down."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, config: EvalConfig) -> None:
        self.client, self.model, self.config = client, model, config
        self.server_errors_in_row = 0
        self.broken: str | None = None  # why the run must stop, once it must

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
            await self._require_server(exc)
            return Outcome(question.id, error=f"connection: {exc}")
        except openai.APIStatusError as exc:
            self._count_status(exc)
            return Outcome(question.id, error=_http_error(exc))
        self.server_errors_in_row = 0
        if not response.choices:
            return Outcome(question.id, error="response without choices")
        return Outcome(question.id, answer=(response.choices[0].message.content or "").strip())

    def _count_status(self, exc: openai.APIStatusError) -> None:
        """A caller-side 4xx is the question's problem; a run of 5xx is the server's."""
        self.server_errors_in_row = self.server_errors_in_row + 1 if exc.status_code >= 500 else 0
        if self.server_errors_in_row >= MAX_SERVER_ERRORS_IN_ROW:
            self.broken = (
                f"the server at {self.config.base_url} failed {self.server_errors_in_row} requests "
                f"in a row (last: {_http_error(exc)}); answers so far are saved in "
                f"{self.config.out}, rerun the same command to resume"
            )

    async def _require_server(self, cause: Exception) -> None:
        try:
            await self.client.with_options(timeout=PROBE_TIMEOUT_S, max_retries=0).models.list()
        except openai.APIError as exc:
            raise ServerUnavailableError(
                f"the server at {self.config.base_url} went away mid-run ({cause}); answers so far "
                f"are saved in {self.config.out}, rerun the same command to resume"
            ) from exc


async def _ask_all(asker: _Asker, todo: Sequence[Question], outcomes: dict[str, Outcome]) -> None:
    """Ask `todo` with at most `concurrency` requests in flight, saving each answer at once."""
    config = asker.config
    semaphore = asyncio.Semaphore(config.concurrency)
    writer = ResultsWriter(config.out)
    bar = tqdm(total=len(todo), desc="FaceXBench", unit="q", disable=not config.progress)

    async def one(question: Question) -> None:
        async with semaphore:
            start = time.perf_counter()
            outcome = await asker.ask(question)
        writer.write(question, outcome, time.perf_counter() - start)
        outcomes[question.id] = outcome
        bar.update(1)
        if asker.broken is not None:
            raise ServerUnavailableError(asker.broken)

    try:
        async with asyncio.TaskGroup() as group:
            for question in todo:
                group.create_task(one(question))
    except* ServerUnavailableError as failures:
        raise failures.exceptions[0] from None
    finally:
        bar.close()
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
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key=config.api_key,
        max_retries=config.max_retries,
        timeout=config.timeout_s,
    )
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
