"""Benchmark runs → medians and spreads per system and concurrency, ratios, a Markdown report.

Each workload part (the small images, chat over photos, faces) is summarised on its own; the
faces part in `loadtests.bench.faces_report`.

Ratios are taken within a repeat (same images, same machine state, minutes apart) and then
summarised over repeats, so their spread shows how far a single comparison can be trusted.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from loadtests.bench.faces_report import faces_markdown, faces_summary

METRICS = (
    "req_per_s",
    "tok_per_s",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "others_cpu_share",
)
ROLES = ("front", "engine_core", "worker", "client")
OURS, CEILING, FLOOR, VLLM = "facellm", "engine", "floor", "vllm"
SYSTEMS = (CEILING, FLOOR, OURS, VLLM)
LABELS = {
    CEILING: "engine only (ceiling)",
    FLOOR: "HTTP floor",
    OURS: "FaceLLM Serve",
    VLLM: "vLLM OpenAI server",
}
RATIO_METRICS = ("req_per_s", "ttft_p50_ms", "e2e_p50_ms", "e2e_p95_ms")
PARTS = ("small", "photo_chat")  # workload parts aggregated here, as run records name them
# The goal for this layer (issue 6): near-ceiling throughput and p50 latency at every point.
MIN_THROUGHPUT_RATIO = 0.9
MAX_LATENCY_RATIO = 1.1


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _by_key(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {
        (run["system"], run["repeat"], point["concurrency"]): point
        for run in runs
        for point in run["points"]
    }


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{concurrency: {"systems": {system: {metric: spread}}, "ratios": {name: spread}}}."""
    points = _by_key(runs)
    repeats = sorted({r for _, r, _ in points})
    summary: dict[str, Any] = {}
    for c in sorted({c for _, _, c in points}):
        systems = {
            s: {m: spread([points[s, r, c][m] for r in repeats]) for m in METRICS}
            | {"errors": sum(points[s, r, c]["errors"] for r in repeats)}
            | {"cpu_ms_per_request": _cpu(points, s, c, repeats)}
            for s in SYSTEMS
            if all((s, r, c) in points for r in repeats)
        }
        ratios: dict[str, dict[str, float]] = {}
        pairs = [(OURS, CEILING), (OURS, FLOOR), (OURS, VLLM), (FLOOR, CEILING)]
        for one, other in pairs:
            if one not in systems or other not in systems:
                continue
            for metric in RATIO_METRICS:
                ratios[f"{metric} {_short(one)}/{other}"] = spread(
                    [points[one, r, c][metric] / points[other, r, c][metric] for r in repeats]
                )
        summary[str(c)] = {"systems": systems, "ratios": ratios}
    return summary


def _short(system: str) -> str:
    return "ours" if system == OURS else system


def _cpu(
    points: Mapping[tuple[str, int, int], Mapping[str, Any]],
    system: str,
    c: int,
    repeats: list[int],
) -> dict[str, float]:
    """Median CPU milliseconds per request of each of the system's processes."""
    return {
        role: statistics.median(
            points[system, r, c]["cpu_ms_per_request"].get(role, 0.0) for r in repeats
        )
        for role in ROLES
    }


def _cell(s: Mapping[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def goal_met(ratios: Mapping[str, Mapping[str, float]]) -> str:
    thr = ratios.get(f"req_per_s ours/{CEILING}")
    lat = ratios.get(f"e2e_p50_ms ours/{CEILING}")
    if thr is None or lat is None:
        return "n/a"
    ok = thr["median"] >= MIN_THROUGHPUT_RATIO and lat["median"] <= MAX_LATENCY_RATIO
    return "yes" if ok else "**no**"


def markdown(summary: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """Three tables: absolute numbers per system, our ratios against the others, CPU per role."""
    lines = [
        "# Benchmark: engine only vs HTTP floor vs FaceLLM Serve vs vLLM's OpenAI server",
        "",
        f"{meta['repeats']} repeats; {meta['max_tokens']} output tokens, streamed, "
        f"stream interval {meta.get('stream_interval', 1)}; "
        f"{meta['image_size']}² JPEG, a different one per request; {meta['cpus']} CPUs; "
        f"{meta['wall_s']} s in all. Median over repeats (min–max). "
        "Others' CPU %: the most that processes outside the benchmark took in a repeat. "
        "HTTP floor: the least an HTTP front can do around the same engine (JSON, image "
        "decode, SSE; `loadtests/bench/floor.py`).",
        "",
        "| conc | system | req/s | output tok/s | TTFT p50 ms | TTFT p95 ms "
        "| e2e p50 ms | e2e p95 ms | errors | others' CPU % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, point in summary.items():
        for system, m in point["systems"].items():
            lines.append(
                f"| {c} | {LABELS[system]} | {_cell(m['req_per_s'], 1)} | {_cell(m['tok_per_s'])} "
                f"| {_cell(m['ttft_p50_ms'], 1)} | {_cell(m['ttft_p95_ms'], 1)} "
                f"| {_cell(m['e2e_p50_ms'], 1)} | {_cell(m['e2e_p95_ms'], 1)} | {m['errors']} "
                f"| {100 * m['others_cpu_share']['max']:.0f} |"
            )
    lines += [
        "",
        f"Goal: throughput ≥ {MIN_THROUGHPUT_RATIO} × ceiling and p50 e2e ≤ "
        f"{MAX_LATENCY_RATIO} × ceiling.",
        "",
        "| conc | req/s ours/ceiling | req/s ours/floor | req/s ours/vLLM | req/s floor/ceiling "
        "| e2e p50 ours/ceiling | e2e p50 ours/floor | e2e p50 ours/vLLM "
        "| TTFT p50 ours/ceiling | TTFT p50 ours/vLLM | goal met |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c, point in summary.items():
        r = point["ratios"]

        def ratio(name: str, r: Mapping[str, Mapping[str, float]] = r) -> str:
            return _cell(r[name], 2) if name in r else "n/a"

        cells = [
            ratio(f"{metric} {pair}")
            for metric, pairs in (
                ("req_per_s", ("ours/engine", "ours/floor", "ours/vllm", "floor/engine")),
                ("e2e_p50_ms", ("ours/engine", "ours/floor", "ours/vllm")),
                ("ttft_p50_ms", ("ours/engine", "ours/vllm")),
            )
            for pair in pairs
        ]
        lines.append(f"| {c} | {' | '.join(cells)} | {goal_met(r)} |")
    return "\n".join([*lines, "", *cpu_table(summary)]) + "\n"


def cpu_table(summary: Mapping[str, Any]) -> list[str]:
    """Where the CPU goes per request; a layer's cost is its front process minus the ceiling's."""
    lines = [
        "CPU ms per request (median over repeats). Front: the process that takes requests "
        "(the HTTP server, or the ceiling's in-process driver); client: the HTTP load generator.",
        "",
        "| conc | system | front | EngineCore | worker | client | total |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c, point in summary.items():
        for system, m in point["systems"].items():
            cpu = m["cpu_ms_per_request"]
            cells = " | ".join(f"{cpu[role]:.2f}" for role in ROLES)
            lines.append(f"| {c} | {LABELS[system]} | {cells} | {sum(cpu.values()):.2f} |")
    return lines


def _median_body_mb(runs: Sequence[Mapping[str, Any]], part: str) -> float | None:
    sizes = [p["body_mb"] for r in runs if r["workload"] == part for p in r["points"]]
    return statistics.median(sizes) if sizes else None


def report(
    runs: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """(JSON payload, Markdown) of a run: a section per workload that ran."""
    summaries = {part: aggregate([r for r in runs if r["workload"] == part]) for part in PARTS}
    faces = faces_summary(runs)
    meta = {
        **meta,
        "photo_body_mb": {p: _median_body_mb(runs, p) for p in ("photo_chat", "faces")},
    }
    sections = []
    if "small" in meta["workloads"]:
        sections.append(markdown(summaries["small"], meta))
    else:
        sections.append("# Benchmark: FaceLLM Serve (and vLLM's OpenAI server), phone photos\n")
    if "photo" in meta["workloads"]:
        sections.append(photo_markdown(summaries["photo_chat"], meta))
    if "faces" in meta["workloads"]:
        sections.append("\n".join(faces_markdown(faces, meta)) + "\n")
    payload = {
        "meta": meta,
        "summary": summaries["small"],
        "photo": {"chat": summaries["photo_chat"]},
        "faces": faces,
        "runs": list(runs),
    }
    return payload, "\n".join(sections)


def _mb(meta: Mapping[str, Any], part: str) -> str:
    size = meta.get("photo_body_mb", {}).get(part)
    return "?" if size is None else f"{size:.1f}"


PHOTO_RATIOS = ("req_per_s", "e2e_p50_ms", "e2e_p95_ms", "ttft_p50_ms")


def photo_markdown(chat: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """Chat over photos, ours and vLLM's, with ratios."""
    lines = [
        "## Photo workload: a different 4032×3024 phone photo per request",
        "",
        "JPEG at quality 90, made from scikit-image's astronaut photograph "
        f"(`loadtests/photos.py`); {meta['repeats']} repeats, median (min–max), on the servers "
        "the small workload started when both ran. Others' CPU %: the most that processes "
        "outside the benchmark took in a repeat.",
        "",
        f"### Chat over photos ({_mb(meta, 'photo_chat')} MB request bodies)",
        "",
        f"The small workload's request with a photo: {meta['max_tokens']} output tokens, streamed.",
        "",
        "| conc | system | req/s | e2e p50 ms | e2e p95 ms | TTFT p50 ms | errors "
        "| others' CPU % |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
        *_photo_rows(chat),
        "",
        "| conc | req/s ours/vLLM | e2e p50 ours/vLLM | e2e p95 ours/vLLM | TTFT p50 ours/vLLM |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c, point in chat.items():
        r = point["ratios"]
        names = [f"{metric} ours/{VLLM}" for metric in PHOTO_RATIOS]
        cells = [_cell(r[name], 2) if name in r else "n/a" for name in names]
        lines.append(f"| {c} | {' | '.join(cells)} |")
    lines += ["", *cpu_table(chat)]
    return "\n".join(lines) + "\n"


def _photo_rows(summary: Mapping[str, Any]) -> list[str]:
    rows = []
    for c, point in summary.items():
        for system, m in point["systems"].items():
            cells = [_cell(m["req_per_s"], 2), _cell(m["e2e_p50_ms"]), _cell(m["e2e_p95_ms"])]
            cells += [_cell(m["ttft_p50_ms"])]
            cells += [str(m["errors"]), f"{100 * m['others_cpu_share']['max']:.0f}"]
            rows.append(f"| {c} | {LABELS[system]} | {' | '.join(cells)} |")
    return rows
