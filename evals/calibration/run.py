"""Ask the server about every labelled face, then score, plot and report. The CLI's entry point.

One POST /v1/faces/analyze per image (`detect: false`: FairFace images are already face crops),
with `confidence: true` and `min_confidence: 0`, so the raw model's pick and probability come back
for every attribute. Retries, backoff, the model probe and stopping on a dead server are shared
with `facellm-eval facexbench` (`evals.client`); answers are saved as they arrive and a rerun of
the same command asks only faces not yet answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from evals.calibration.fairface import (
    ATTRIBUTES,
    LabelError,
    LabelledFace,
    load_fairface,
    sample,
    spec,
)
from evals.calibration.metrics import Calibration, calibration
from evals.calibration.plot import diagram_name, reliability_diagram, require_matplotlib
from evals.calibration.records import (
    RECORDS_FILE,
    RecordsWriter,
    ResponseShapeError,
    Saved,
    parse_analysis,
    read_saved,
    scored_records,
)
from evals.calibration.report import render_markdown, report_json
from evals.client import (
    MAX_SERVER_ERRORS_IN_ROW,
    EvalError,
    ServerWatch,
    error_field,
    http_error,
    image_data_url,
    make_client,
    normalize_base_url,
    resolve_model,
    run_bounded,
)
from evals.results import check_run

logger = logging.getLogger(__name__)

#: Fields of our request body: a 4xx naming one is about every request, not this image.
REQUEST_FIELDS = frozenset({"model", "detect", "confidence", "min_confidence", "attributes"})


@dataclass(frozen=True)
class CalibrateConfig:
    """Every option of `facellm-eval calibrate`, with the CLI's defaults."""

    data: Path  # the labels CSV
    images_dir: Path | None = None  # default: the CSV's folder
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    model: str | None = None  # default: the first model the server lists
    concurrency: int = 8
    sample: int | None = None
    seed: int = 0
    out: Path = Path("calibration-results")
    bins: int = 10
    timeout_s: float = 120.0
    max_retries: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.images_dir is not None:
            object.__setattr__(self, "images_dir", Path(self.images_dir))
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise ValueError("concurrency ≥ 1, max_retries ≥ 0 and timeout_s > 0 are required")
        if self.sample is not None and self.sample < 1:
            raise ValueError("sample must be ≥ 1")
        if not 1 <= self.bins <= 100:
            raise ValueError("bins must be between 1 and 100")

    @property
    def images_root(self) -> Path:
        return self.images_dir if self.images_dir is not None else self.data.parent


@dataclass(frozen=True)
class CalibrationRun:
    """What a finished run produced; `asked` counts faces sent by this invocation."""

    report: dict[str, Any]
    scores: tuple[Calibration, ...]
    asked: int
    out_dir: Path


def request_body(image_url: str, model: str) -> dict[str, Any]:
    return {
        "image": image_url,
        "model": model,
        "detect": False,
        "confidence": True,
        "min_confidence": 0,
        "attributes": list(ATTRIBUTES),
    }


class _Analyzer:
    """One face per request; records each answer (or error) as it arrives."""

    def __init__(
        self, client: openai.AsyncOpenAI, model: str, config: CalibrateConfig, watch: ServerWatch
    ) -> None:
        self.client, self.model, self.config, self.watch = client, model, config, watch

    async def analyze(self, face: LabelledFace, writer: RecordsWriter) -> None:
        try:
            url = await asyncio.to_thread(image_data_url, self.config.images_root / face.file)
        except (OSError, ValueError) as exc:
            writer.error(face, f"image: {exc}")
            return
        try:
            body = await self.client.post(
                "/faces/analyze", cast_to=object, body=request_body(url, self.model)
            )
        except openai.APITimeoutError as exc:
            writer.error(face, f"timeout: {exc}")
            return
        except openai.APIConnectionError as exc:
            await self.watch.require_server(exc)
            writer.error(face, f"connection: {exc}")
            return
        except openai.APIStatusError as exc:
            self._refused(exc)
            writer.error(face, http_error(exc))
            return
        self.watch.succeeded()
        try:
            writer.answers(face, parse_analysis(body, ATTRIBUTES))
        except ResponseShapeError as exc:  # the server's answer format, so every face's too
            raise EvalError(
                f"{self.config.base_url}: unexpected answer for {face.file}: {exc}"
            ) from exc

    def _refused(self, exc: openai.APIStatusError) -> None:
        """A refusal of our request options would repeat for every face: stop at the first."""
        param = str(error_field(exc, "param") or "")
        if exc.status_code < 500 and param.split(".")[0] in REQUEST_FIELDS:
            raise EvalError(
                f"the server refused the request option {param!r} ({http_error(exc)}); "
                "calibrate needs POST /v1/faces/analyze with `confidence: true` and "
                "`min_confidence`, on a server built with per-attribute confidence"
            )
        self.watch.count_status(exc)


def _check_images(config: CalibrateConfig, faces: list[LabelledFace]) -> None:
    """Fail fast on a wrong --images-dir (no image found); warn when only some are missing."""
    root = config.images_root
    missing = [f.file for f in faces if not (root / f.file).is_file()]
    if len(missing) == len(faces):
        raise LabelError(
            f"no image found under {root} (e.g. {faces[0].file}); `file` is relative to the "
            "CSV's folder, or to --images-dir"
        )
    if missing:
        logger.warning(
            "%d images are missing (e.g. %s); they will be errors", len(missing), missing[0]
        )


async def _ask(
    client: openai.AsyncOpenAI, model: str, config: CalibrateConfig, todo: list[LabelledFace]
) -> None:
    watch = ServerWatch(client, config.base_url, config.out, MAX_SERVER_ERRORS_IN_ROW)
    analyzer = _Analyzer(client, model, config, watch)
    writer = RecordsWriter(config.out)

    async def one(face: LabelledFace) -> None:
        await analyzer.analyze(face, writer)

    try:
        await run_bounded(
            todo,
            one,
            watch,
            concurrency=config.concurrency,
            desc="calibrate",
            unit="face",
            progress=config.progress,
        )
    finally:
        writer.close()


def write_outputs(
    config: CalibrateConfig, faces: list[LabelledFace], saved: Saved, meta: dict[str, Any]
) -> tuple[dict[str, Any], tuple[Calibration, ...]]:
    """Score every face answered, draw the diagrams, write report.json and report.md."""
    scores = tuple(
        calibration(a, scored_records(faces, saved, a), config.bins, spec(a).abstain)
        for a in ATTRIBUTES
    )
    unanswered = [f.file for f in faces if not saved.complete(f.file, ATTRIBUTES)]
    errors = {f: saved.errors[f] for f in unanswered if f in saved.errors}
    missing = [f for f in unanswered if f not in saved.errors]
    report = report_json(scores, meta, errors, missing)
    for s in scores:
        reliability_diagram(s, config.out / diagram_name(s.attribute))
    (config.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (config.out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report, scores


def _meta(
    config: CalibrateConfig, model: str, base_url: str, selected: int, total: int
) -> dict[str, Any]:
    """What was run, for the report (its `attributes` key holds the scores)."""
    subset = (
        f"random sample of {selected} of {total} (seed {config.seed})" if selected < total else None
    )
    options = {k: v for k, v in request_body("", model).items() if k not in ("image", "model")}
    return {
        "model": model,
        "base_url": base_url,
        "data": str(config.data),
        "images_dir": str(config.images_root),
        "faces": selected,
        "subset": subset,
        "bins": config.bins,
        "request": options,
    }


async def run_calibrate_async(config: CalibrateConfig) -> CalibrationRun:
    """Ask every selected face not yet answered in `config.out`, then score and report all."""
    require_matplotlib()  # before hours of requests, not after
    all_faces = load_fairface(config.data)
    faces = sample(all_faces, config.sample, config.seed)
    _check_images(config, faces)
    base_url = normalize_base_url(config.base_url)
    async with make_client(
        base_url, config.api_key, config.timeout_s, config.max_retries
    ) as client:
        model = await resolve_model(client, config.model, base_url)
        run = {"command": "calibrate", "model": model, "attributes": list(ATTRIBUTES)}
        check_run(config.out, run, RECORDS_FILE)
        saved = read_saved(config.out)
        todo = [f for f in faces if not saved.complete(f.file, ATTRIBUTES)]
        logger.info("%d of %d faces to ask", len(todo), len(faces))
        await _ask(client, model, config, todo)
    meta = _meta(config, model, base_url, len(faces), len(all_faces))
    report, scores = write_outputs(config, faces, read_saved(config.out), meta)
    return CalibrationRun(report, scores, len(todo), config.out)


def run_calibrate(data: Path | str, base_url: str, **options: Any) -> CalibrationRun:
    """Blocking entry point with the CLI's options as keywords (see `CalibrateConfig`)."""
    config = CalibrateConfig(data=Path(data), base_url=base_url, **options)
    return asyncio.run(run_calibrate_async(config))
