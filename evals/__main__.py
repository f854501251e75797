"""`facellm-eval`: command-line front end; parses options and hands them to `evals.facexbench`
(FaceXBench accuracy) or `evals.calibration` (confidence calibration on labelled faces)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from evals.benchmark import CATEGORIES, BenchmarkError
from evals.calibration import CalibrateConfig, run_calibrate_async
from evals.calibration.fairface import LabelError
from evals.calibration.records import RECORDS_FILE
from evals.facexbench import EvalConfig, EvalError, run_facexbench_async
from evals.results import RESULTS_FILE, ResumeMismatchError
from evals.scoring import PUBLISHED


def _server_options(command: argparse.ArgumentParser) -> None:
    """Options every command that asks a running server shares."""
    command.add_argument(
        "--base-url", default="http://127.0.0.1:8000/v1", help="server URL (/v1 optional)"
    )
    command.add_argument(
        "--api-key", default=None, help="API key (default: $OPENAI_API_KEY, else none needed)"
    )
    command.add_argument("--model", default=None, help="model id (default: the first one served)")
    command.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default 8)"
    )
    command.add_argument("--timeout", type=float, default=120.0, help="seconds per request attempt")
    command.add_argument(
        "--max-retries", type=int, default=2, help="retries per request (default 2)"
    )
    command.add_argument("--no-progress", action="store_true", help="no progress bar")


def _calibrate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cal = commands.add_parser(
        "calibrate",
        help="confidence calibration of face attributes on labelled faces",
        description="Analyse every face of a FairFace-layout CSV (file,age,gender,race) through "
        "POST /v1/faces/analyze with confidence=true and no abstention, then write records.jsonl, "
        "report.md, report.json and one reliability diagram per attribute (accuracy, ECE). "
        "Needs matplotlib: pip install 'facellm-serve[eval]'. Rerun the same command to resume.",
    )
    cal.add_argument("--data", type=Path, required=True, help="labels CSV, e.g. FairFace's")
    cal.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="where `file` is relative to (default: the CSV's folder)",
    )
    _server_options(cal)
    cal.add_argument("--sample", type=int, default=None, help="ask a random sample of N faces")
    cal.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    cal.add_argument("--out", type=Path, default=Path("calibration-results"), help="output folder")
    cal.add_argument("--bins", type=int, default=10, help="confidence bins of ECE (default 10)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facellm-eval", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fx = commands.add_parser(
        "facexbench",
        help="FaceXBench accuracy through a running server",
        description="Ask every FaceXBench question through the server's OpenAI API (answers "
        "constrained to the option letters), then write report.md and report.json. Rerun the "
        "same command to resume an interrupted run.",
    )
    fx.add_argument("--data", type=Path, required=True, help="FaceXBench's benchmark/ folder")
    _server_options(fx)
    fx.add_argument(
        "--with-task-description",
        action="store_true",
        help="prepend each task's description (the paper's in-context setting)",
    )
    fx.add_argument(
        "--category",
        nargs="+",
        default=[],
        metavar="NAME",
        help=f"only these categories: {', '.join(CATEGORIES)} (or display names)",
    )
    fx.add_argument("--sample", type=int, default=None, help="ask a random sample of N questions")
    fx.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    fx.add_argument("--out", type=Path, default=Path("facexbench-results"), help="output folder")
    fx.add_argument(
        "--variant",
        choices=list(PUBLISHED),
        default=None,
        help="published numbers to compare with (default: inferred from the model id)",
    )
    _calibrate_parser(commands)
    return parser


def _config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        data=args.data,
        base_url=args.base_url,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
        model=args.model,
        concurrency=args.concurrency,
        with_task_description=args.with_task_description,
        categories=tuple(args.category),
        sample=args.sample,
        seed=args.seed,
        out=args.out,
        variant=args.variant,
        timeout_s=args.timeout,
        max_retries=args.max_retries,
        progress=not args.no_progress,
    )


def _calibrate_config(args: argparse.Namespace) -> CalibrateConfig:
    return CalibrateConfig(
        data=args.data,
        images_dir=args.images_dir,
        base_url=args.base_url,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
        model=args.model,
        concurrency=args.concurrency,
        sample=args.sample,
        seed=args.seed,
        out=args.out,
        bins=args.bins,
        timeout_s=args.timeout,
        max_retries=args.max_retries,
        progress=not args.no_progress,
    )


def _calibrate(args: argparse.Namespace) -> int:
    run = asyncio.run(run_calibrate_async(_calibrate_config(args)))
    scores = "; ".join(
        f"{s.attribute} accuracy {s.accuracy:.3f} ECE {s.ece:.3f} (n={s.count})" for s in run.scores
    )
    sys.stdout.write(
        f"Calibration {run.report['model']}: {scores}; report: {run.out_dir / 'report.md'}\n"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per request would drown the progress bar
        logging.getLogger(noisy).setLevel(logging.WARNING)
    saved = RECORDS_FILE if args.command == "calibrate" else RESULTS_FILE
    try:
        if args.command == "calibrate":
            return _calibrate(args)
        config = _config(args)
        run = asyncio.run(run_facexbench_async(config))
    except (EvalError, BenchmarkError, LabelError, ResumeMismatchError, ValueError) as exc:
        sys.stderr.write(f"facellm-eval: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(
            f"facellm-eval: interrupted; answers so far are in {args.out / saved}, "
            "rerun the same command to resume\n"
        )
        return 130
    overall = run.report["overall"]
    sys.stdout.write(
        f"FaceXBench {run.report['model']}: {overall['accuracy']:.2f}% "
        f"({overall['correct']}/{overall['total']}); report: {run.out_dir / 'report.md'}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
