"""Scores → `report.json` (every number, every problem question) and `report.md` (the tables).

Pure: the caller writes the files. The markdown is rendered from the JSON form only, so the two
can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evals.benchmark import CATEGORIES, category_name, task_name
from evals.scoring import PUBLISHED, Scores, Tally

MAX_LISTED = 50  # problem questions shown in the markdown; report.json lists all
SOURCE = "FaceLLM paper (arXiv 2507.10300), FaceXBench results"


def _tally(tally: Tally, published: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "correct": tally.correct,
        "total": tally.total,
        "accuracy": round(tally.accuracy, 2),
    }
    if published is not None:
        out["published"] = published
        out["delta"] = round(tally.accuracy - published, 2)
    return out


def report_json(scores: Scores, meta: Mapping[str, Any], variant: str | None) -> dict[str, Any]:
    """The machine-readable report; `meta` says what was run (model, url, prompt options…)."""
    pub = PUBLISHED.get(variant or "", {})
    categories = [c for c in CATEGORIES if c in scores.categories]
    categories += sorted(set(scores.categories) - set(categories))
    known_tasks = [(c, t) for c, (_, tasks) in CATEGORIES.items() for t in tasks]
    tasks = [k for k in known_tasks if k in scores.tasks]
    tasks += sorted(set(scores.tasks) - set(tasks))
    return {
        **meta,
        "variant": variant,
        "aggregation": "micro: correct / questions within each group, as FaceXBench does",
        "overall": _tally(scores.overall, pub.get("overall")),
        "categories": {
            c: {"name": category_name(c), **_tally(scores.categories[c], pub.get(c))}
            for c in categories
        },
        "tasks": {
            t: {"name": task_name(t), "category": c, **_tally(scores.tasks[(c, t)])}
            for c, t in tasks
        },
        "num_images": {k: _tally(v) for k, v in sorted(scores.num_images.items())},
        "errors": [{"id": i, "error": e} for i, e in scores.errors],
        "invalid_answers": [{"id": i, "answer": a} for i, a in scores.invalid],
        "missing": scores.missing,
        "published": {"source": SOURCE, **pub} if pub else None,
    }


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _category_table(report: Mapping[str, Any]) -> list[str]:
    """Ours beside the served variant's published numbers (Δ), or beside all three if unknown."""
    variant = report.get("variant")
    shown = [variant] if variant in PUBLISHED else list(PUBLISHED)
    head = ["Category", "Questions", "Correct", "Ours %"]
    head += [f"FaceLLM-{v} %" for v in shown] + (["Δ"] if len(shown) == 1 else [])
    lines = [_row(head), _row(["---"] + ["---:"] * (len(head) - 1))]
    rows = [("**Overall**", "overall", report["overall"])]
    rows += [(c["name"], key, c) for key, c in report["categories"].items()]
    for name, key, tally in rows:
        cells = [name, str(tally["total"]), str(tally["correct"]), _pct(tally["accuracy"])]
        cells += [_pct(PUBLISHED[v].get(key)) for v in shown]
        if len(shown) == 1:
            delta = tally.get("delta")
            cells.append("—" if delta is None else f"{delta:+.2f}")
        lines.append(_row(cells))
    return lines


def _simple_table(title: str, entries: Mapping[str, Mapping[str, Any]], label: str) -> list[str]:
    lines = [f"## {title}", "", _row([label, "Questions", "Correct", "Accuracy %"])]
    lines.append(_row(["---", "---:", "---:", "---:"]))
    for key, t in entries.items():
        name = t.get("name", key)
        lines.append(_row([name, str(t["total"]), str(t["correct"]), _pct(t["accuracy"])]))
    return [*lines, ""]


def _problems(report: Mapping[str, Any]) -> list[str]:
    items = [
        f"- `{e['id']}`: answer {e['answer']!r} is not an option" for e in report["invalid_answers"]
    ]
    items += [f"- `{i}`: not answered" for i in report["missing"]]
    items += [f"- `{e['id']}`: error: {e['error']}" for e in report["errors"]]
    if not items:
        return []
    more = len(items) - MAX_LISTED
    tail = [f"- … and {more} more (all in report.json)"] if more > 0 else []
    return ["## Problem questions (counted wrong)", "", *items[:MAX_LISTED], *tail, ""]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human report: what ran, the side-by-side table, per-task and per-image-count tables."""
    overall = report["overall"]
    problems = len(report["errors"]) + len(report["invalid_answers"]) + len(report["missing"])
    prompt = "task description + question" if report.get("with_task_description") else "question"
    lines = [
        f"# FaceXBench — `{report.get('model')}`",
        "",
        f"- Server: {report.get('base_url')}; variant: {report.get('variant') or 'unknown'}",
        f"- Prompt: {prompt}, answers constrained to the option letters (no answer parsing)",
        f"- Questions: {overall['total']}; {problems} with an error, a non-option answer or no "
        "answer, counted wrong",
        "- Accuracy = correct / questions within each group (micro average, as FaceXBench)",
    ]
    if report.get("subset"):
        lines.append(f"- Subset: {report['subset']}; published numbers: whole benchmark")
    lines += ["", "## Accuracy by category", "", *_category_table(report), ""]
    lines += [f"Published: {SOURCE}.", ""]
    lines += _simple_table("Accuracy by task", report["tasks"], "Task")
    lines += _simple_table("Accuracy by number of images", report["num_images"], "Images")
    lines += _problems(report)
    return "\n".join(lines)
