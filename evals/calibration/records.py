"""The server's `confidence: true` answer → predictions, and the records file that keeps them.

`records.jsonl` gets, per face, one line per attribute (`file`, `attribute`, `label`,
`predicted`, `confidence`, plus `abstained` and `alternatives`), or one `{file, error}` line
when the face could not be analysed. Lines are appended as answers arrive, so a rerun asks only
faces without every attribute answered; the last line for a face and attribute wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.calibration.fairface import LabelledFace
from evals.calibration.metrics import Record
from evals.results import JsonlAppender, read_jsonl

RECORDS_FILE = "records.jsonl"


class ResponseShapeError(ValueError):
    """The server's answer is not the `confidence: true` shape."""


@dataclass(frozen=True)
class Prediction:
    """The model's own pick for one attribute and the probability it gave it.

    With `min_confidence: 0` the server should never abstain; if it still did, `value` would
    be the abstain value and the model's pick the most probable alternative, which is what
    calibration is about, so that is what `predicted` holds (and `abstained` says so).
    """

    predicted: str
    confidence: float
    abstained: bool = False
    alternatives: tuple[tuple[str, float], ...] = ()


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResponseShapeError(f"{where}: confidence {value!r} is not a number")
    if not 0.0 <= value <= 1.0:  # also NaN
        raise ResponseShapeError(f"{where}: confidence {value!r} is not in [0, 1]")
    return float(value)


def _alternatives(entry: Mapping[str, Any], where: str) -> tuple[tuple[str, float], ...]:
    raw = entry.get("alternatives") or []
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise ResponseShapeError(f"{where}: alternatives is not a list of objects")
    return tuple((str(a.get("value")), _probability(a.get("confidence"), where)) for a in raw)


def _prediction(entry: Any, where: str) -> Prediction:
    if not isinstance(entry, dict):
        raise ResponseShapeError(
            f"{where} is {entry!r}, not an object with value and confidence: the server ignored "
            "`confidence: true` (it needs the confidence option of POST /v1/faces/analyze)"
        )
    value, alternatives = entry.get("value"), _alternatives(entry, where)
    if not isinstance(value, str):
        raise ResponseShapeError(f"{where}: value {value!r} is not a string")
    confidence = _probability(entry.get("confidence"), where)
    if entry.get("abstained") is True:
        if not alternatives:
            raise ResponseShapeError(f"{where}: abstained without alternatives")
        picked, confidence = max(alternatives, key=lambda a: a[1])
        return Prediction(picked, confidence, True, alternatives)
    return Prediction(value, confidence, False, alternatives)


def parse_analysis(body: Any, attributes: Sequence[str]) -> dict[str, Prediction]:
    """The one face of a `detect: false` analysis → its prediction per attribute."""
    faces = body.get("faces") if isinstance(body, dict) else None
    if not isinstance(faces, list) or len(faces) != 1 or not isinstance(faces[0], dict):
        raise ResponseShapeError(f"expected exactly one face, got {str(body)[:200]}")
    found = faces[0].get("attributes")
    if not isinstance(found, dict):
        raise ResponseShapeError("the face has no attributes object")
    missing = [a for a in attributes if a not in found]
    if missing:
        raise ResponseShapeError(f"the face misses attributes {', '.join(missing)}")
    return {a: _prediction(found[a], f"attributes.{a}") for a in attributes}


@dataclass
class Saved:
    """What the records file holds: answers per file and attribute, and the last error per file."""

    answers: dict[str, dict[str, Prediction]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def complete(self, file: str, attributes: Sequence[str]) -> bool:
        return all(a in self.answers.get(file, {}) for a in attributes)

    def add(self, record: Mapping[str, Any]) -> None:
        file = str(record["file"])
        if "error" in record:
            self.errors[file] = str(record["error"])
            return
        prediction = Prediction(
            predicted=str(record["predicted"]),
            confidence=_probability(record["confidence"], file),
            abstained=bool(record.get("abstained", False)),
            alternatives=tuple((str(v), float(c)) for v, c in record.get("alternatives") or []),
        )
        self.answers.setdefault(file, {})[str(record["attribute"])] = prediction
        self.errors.pop(file, None)


def read_saved(out_dir: Path) -> Saved:
    saved = Saved()
    for record in read_jsonl(out_dir / RECORDS_FILE):
        try:
            saved.add(record)
        except (KeyError, TypeError, ValueError):
            continue  # a line from something else: ignore it as a torn one
    return saved


class RecordsWriter:
    def __init__(self, out_dir: Path) -> None:
        self._file = JsonlAppender(out_dir / RECORDS_FILE)

    def answers(self, face: LabelledFace, predictions: Mapping[str, Prediction]) -> None:
        for attribute, p in predictions.items():
            self._file.write(
                {
                    "file": face.file,
                    "attribute": attribute,
                    "label": face.labels[attribute],
                    "predicted": p.predicted,
                    "confidence": p.confidence,
                    "abstained": p.abstained,
                    "alternatives": [list(a) for a in p.alternatives],
                }
            )

    def error(self, face: LabelledFace, message: str) -> None:
        self._file.write({"file": face.file, "error": message})

    def close(self) -> None:
        self._file.close()


def scored_records(faces: Sequence[LabelledFace], saved: Saved, attribute: str) -> list[Record]:
    """Answers joined with the CSV's labels (the CSV is the truth, even on resume)."""
    return [
        Record(face.file, attribute, face.labels[attribute], p.predicted, p.confidence)
        for face in faces
        if (p := saved.answers.get(face.file, {}).get(attribute)) is not None
    ]
