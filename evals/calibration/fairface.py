"""Labelled faces in FairFace's CSV layout, with FairFace's labels mapped to our attribute values.

FairFace (github.com/joojs/fairface) ships `fairface_label_{train,val}.csv` with the header
`file,age,gender,race,service_test`; `file` is relative to the folder holding the CSV (e.g.
`val/1.jpg`). Extra columns are ignored. Our own value spellings are accepted too, so a CSV
written for another data set can use them directly.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from model import attributes as attrs

#: CSV column → the attribute it labels.
COLUMNS: dict[str, str] = {
    "age": "age_group",
    "gender": "perceived_gender",
    "race": "perceived_race",
}
ATTRIBUTES: tuple[str, ...] = tuple(COLUMNS.values())

#: FairFace's spellings that differ from ours (matched case-insensitively).
_FAIRFACE: dict[str, dict[str, str]] = {
    "age_group": {"more than 70": "70+"},
    "perceived_gender": {},
    "perceived_race": {
        "east asian": "east_asian",
        "southeast asian": "southeast_asian",
        "middle eastern": "middle_eastern",
    },
}


class LabelError(ValueError):
    """The CSV is not in FairFace's layout, or holds a label we cannot map; says where."""


def spec(attribute: str) -> attrs.Attribute:
    """The attribute's definition (values, abstain value) in the served vocabulary."""
    return next(a for a in attrs.ATTRIBUTES if a.name == attribute)


def _label_table(attribute: str) -> dict[str, str]:
    """Every accepted spelling (case-folded) → our value; the abstain value is no label."""
    definition = spec(attribute)
    table = {v.casefold(): v for v in definition.values if v != definition.abstain}
    table.update({k.casefold(): v for k, v in _FAIRFACE[attribute].items()})
    return table


LABELS: dict[str, dict[str, str]] = {a: _label_table(a) for a in ATTRIBUTES}


def map_label(attribute: str, raw: str) -> str | None:
    """FairFace's label (or ours) → our value; None when unknown."""
    return LABELS[attribute].get(raw.strip().casefold())


@dataclass(frozen=True)
class LabelledFace:
    """One CSV row: the image (as written in the CSV) and its label per attribute."""

    line: int
    file: str
    labels: Mapping[str, str]


def _row(line: int, row: Mapping[str, str | None]) -> LabelledFace:
    file = (row.get("file") or "").strip()
    if not file:
        raise LabelError(f"line {line}: empty `file`")
    labels: dict[str, str] = {}
    for column, attribute in COLUMNS.items():
        raw = row.get(column) or ""
        value = map_label(attribute, raw)
        if value is None:
            known = ", ".join(sorted(LABELS[attribute]))
            raise LabelError(f"line {line}: unknown {column} label {raw!r} (known: {known})")
        labels[attribute] = value
    return LabelledFace(line, file, labels)


def load_fairface(path: Path) -> list[LabelledFace]:
    """Every row of the CSV, in file order; any bad row fails the whole load, naming its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a spreadsheet's BOM
    except OSError as exc:
        raise LabelError(f"cannot read {path}: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("file", *COLUMNS) if c not in header]
    if missing:
        raise LabelError(
            f"{path}: no column {', '.join(missing)}; expected FairFace's header "
            f"file,age,gender,race (got {','.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    faces: list[LabelledFace] = []
    seen: dict[str, int] = {}
    for row in reader:
        face = _row(reader.line_num, row)
        if face.file in seen:
            raise LabelError(f"line {face.line}: {face.file!r} already on line {seen[face.file]}")
        seen[face.file] = face.line
        faces.append(face)
    if not faces:
        raise LabelError(f"{path} has no labelled faces")
    return faces


def sample(faces: Sequence[LabelledFace], n: int | None, seed: int) -> list[LabelledFace]:
    """A seeded uniform sample of `n` faces in file order (all when `n` is None or too big)."""
    if n is None or n >= len(faces):
        return list(faces)
    chosen = set(random.Random(seed).sample(range(len(faces)), n))
    return [f for i, f in enumerate(faces) if i in chosen]
