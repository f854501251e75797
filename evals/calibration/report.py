"""Calibration scores → `report.json` (every number) and `report.md` (rendered from the JSON only,
so the two never disagree). Pure: the caller writes the files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evals.calibration.metrics import ECE_DEFINITION, Bin, Calibration
from evals.calibration.plot import diagram_name

MAX_LISTED = 50  # problem faces shown in the markdown; report.json lists all
DIGITS = 4


def _num(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def _bin(b: Bin) -> dict[str, Any]:
    return {
        "lower": _num(b.lower),
        "upper": _num(b.upper),
        "count": b.count,
        "accuracy": _num(b.accuracy),
        "mean_confidence": _num(b.mean_confidence),
    }


def _attribute(scores: Calibration) -> dict[str, Any]:
    return {
        "count": scores.count,
        "accuracy": _num(scores.accuracy),
        "mean_confidence": _num(scores.mean_confidence),
        "ece": _num(scores.ece),
        "abstain_answers": scores.abstain_answers,
        "diagram": diagram_name(scores.attribute),
        "bins": [_bin(b) for b in scores.bins],
    }


def report_json(
    scores: Sequence[Calibration],
    meta: Mapping[str, Any],
    errors: Mapping[str, str],
    missing: Sequence[str],
) -> dict[str, Any]:
    """`meta` says what was run (model, url, data, request options, bins, subset…)."""
    return {
        **meta,
        "ece_definition": ECE_DEFINITION,
        "values": "fractions in [0, 1]; accuracy = returned value equals the label",
        "attributes": {s.attribute: _attribute(s) for s in scores},
        "errors": [{"file": f, "error": e} for f, e in errors.items()],
        "missing": list(missing),
    }


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _summary(report: Mapping[str, Any]) -> list[str]:
    head = ["Attribute", "Faces", "Accuracy", "Mean confidence", "ECE", "Answered abstain"]
    lines = [_row(head), _row(["---"] + ["---:"] * (len(head) - 1))]
    for name, a in report["attributes"].items():
        cells = [f"`{name}`", str(a["count"]), _fmt(a["accuracy"])]
        cells += [_fmt(a["mean_confidence"]), _fmt(a["ece"]), str(a["abstain_answers"])]
        lines.append(_row(cells))
    return lines


def _section(name: str, a: Mapping[str, Any]) -> list[str]:
    lines = [f"## `{name}`", "", f"![Reliability diagram of {name}]({a['diagram']})", ""]
    # The last column is each bin's term of ECE: (n_b / N) · |acc_b − conf_b|.
    lines += [_row(["Confidence", "Answers", "Accuracy", "Mean confidence", "ECE term"])]
    lines.append(_row(["---", "---:", "---:", "---:", "---:"]))
    total = a["count"] or 1
    for b in a["bins"]:
        gap = None
        if b["count"]:
            gap = b["count"] / total * abs(b["accuracy"] - b["mean_confidence"])
        interval = f"[{b['lower']:.2f}, {b['upper']:.2f}{']' if b['upper'] >= 1 else ')'}"
        cells = [interval, str(b["count"]), _fmt(b["accuracy"])]
        lines.append(_row([*cells, _fmt(b["mean_confidence"]), _fmt(gap)]))
    return [*lines, ""]


def _problems(report: Mapping[str, Any]) -> list[str]:
    items = [f"- `{e['file']}`: {e['error']}" for e in report["errors"]]
    items += [f"- `{f}`: not answered" for f in report["missing"]]
    if not items:
        return []
    more = len(items) - MAX_LISTED
    tail = [f"- … and {more} more (all in report.json)"] if more > 0 else []
    return ["## Faces left out (no answer)", "", *items[:MAX_LISTED], *tail, ""]


def render_markdown(report: Mapping[str, Any]) -> str:
    left_out = len(report["errors"]) + len(report["missing"])
    lines = [
        f"# Confidence calibration — `{report.get('model')}`",
        "",
        f"- Server: {report.get('base_url')}; data: {report.get('data')} "
        f"({report.get('faces')} faces{'; ' + report['subset'] if report.get('subset') else ''})",
        "- Request: POST /v1/faces/analyze with detect=false, confidence=true, "
        "min_confidence=0 (the raw model, no abstention)",
        f"- {left_out} faces without an answer are left out of every number below",
        f"- {report['ece_definition']}; B = {report.get('bins')}. Every value is a fraction "
        "in [0, 1]; an answer of the abstain value counts as wrong.",
        "",
        "## Summary",
        "",
        *_summary(report),
        "",
    ]
    for name, a in report["attributes"].items():
        lines += _section(name, a)
    lines += _problems(report)
    return "\n".join(lines)
