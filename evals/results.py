"""The results file: one JSON line per answer, appended as it arrives, so a run can resume.

A question counts as done once it has an answer; errored questions are asked again on resume (most
errors are transient). The last line for a question wins. A torn last line (the process killed
mid-write) is ignored rather than fatal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from evals.benchmark import Question
from evals.scoring import Outcome

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"


class ResumeMismatchError(ValueError):
    """The output folder holds answers from a run asked differently."""


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The file's JSON objects in order; a torn or foreign line is skipped, a missing file empty."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def parse_outcomes(lines: Iterable[str]) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    for line in lines:
        try:
            record = json.loads(line)
            outcome = Outcome(
                id=str(record["id"]), answer=record.get("answer"), error=record.get("error")
            )
        except (ValueError, KeyError, TypeError):
            continue
        outcomes[outcome.id] = outcome
    return outcomes


def pending(questions: Sequence[Question], outcomes: Mapping[str, Outcome]) -> list[Question]:
    """The questions still to ask: those without an answer (never asked, or errored)."""
    return [q for q in questions if q.id not in outcomes or outcomes[q.id].error is not None]


def read_outcomes(out_dir: Path) -> dict[str, Outcome]:
    path = out_dir / RESULTS_FILE
    if not path.exists():
        return {}
    with path.open(encoding="utf-8") as f:
        return parse_outcomes(f)


def check_run(out_dir: Path, run: Mapping[str, Any], results_file: str = RESULTS_FILE) -> None:
    """Refuse to mix answers to differently-asked questions; record how this run asks them."""
    path = out_dir / RUN_FILE
    if path.exists() and (out_dir / results_file).exists():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (before.get(k), v) for k, v in run.items() if before.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in changed.items())
            raise ResumeMismatchError(
                f"{out_dir} holds results of a different run ({detail}); use another --out"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(run), indent=2) + "\n", encoding="utf-8")


def _ends_torn(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"


class JsonlAppender:
    """Appends one flushed JSON line per record, so nothing answered is lost to an interruption."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = _ends_torn(path)
        self._file: IO[str] = path.open("a", encoding="utf-8")
        if torn:  # end the torn line so the next record starts on its own
            self._file.write("\n")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ResultsWriter:
    """FaceXBench's results file: one line per outcome."""

    def __init__(self, out_dir: Path) -> None:
        self._file = JsonlAppender(out_dir / RESULTS_FILE)

    def write(self, question: Question, outcome: Outcome, latency_s: float) -> None:
        self._file.write(
            {
                "id": outcome.id,
                "answer": outcome.answer,
                "error": outcome.error,
                "correct": question.correct,
                "category": question.category,
                "task": question.task,
                "latency_s": round(latency_s, 3),
            }
        )

    def close(self) -> None:
        self._file.close()
