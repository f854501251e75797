"""Locust's JSON stats → a summary per entry, and the SLO verdict.

Final numbers come from the JSON file, not the CSV: the CSV is written on a timer and misses the
last second of the run. Entries whose type is one of the custom metrics (TTFT, TOKENS/S) carry a
measurement in the response-time column and are kept out of the request totals and SLOs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRIC_TYPES = frozenset({"TTFT", "TOKENS/S"})


@dataclass(frozen=True)
class EntrySummary:
    type: str
    name: str
    requests: int
    failures: int
    per_s: float
    p50: float
    p95: float
    p99: float
    max: float

    @property
    def is_metric(self) -> bool:
        return self.type in METRIC_TYPES


@dataclass(frozen=True)
class Slo:
    max_error_ratio: float = 0.0
    max_p95_ms: float | None = None


def percentile(histogram: Mapping[int, int], count: int, fraction: float) -> float:
    """Nearest-rank percentile over locust's (rounded) response-time histogram."""
    if count <= 0:
        return 0.0
    rank = fraction * count
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def summarize_entry(entry: Mapping[str, Any]) -> EntrySummary:
    histogram = {int(k): int(v) for k, v in entry["response_times"].items()}
    count = sum(histogram.values())
    top = float(entry["max_response_time"] or 0)
    elapsed = (entry.get("last_request_timestamp") or entry["start_time"]) - entry["start_time"]
    return EntrySummary(
        type=entry["method"],
        name=entry["name"],
        requests=int(entry["num_requests"]),
        failures=int(entry["num_failures"]),
        per_s=entry["num_requests"] / elapsed if elapsed > 0 else 0.0,
        # The histogram rounds values above 100 to 2 significant digits; the max is exact.
        p50=min(top, percentile(histogram, count, 0.50)),
        p95=min(top, percentile(histogram, count, 0.95)),
        p99=min(top, percentile(histogram, count, 0.99)),
        max=top,
    )


def load_stats(path: Path) -> list[EntrySummary]:
    entries = json.loads(path.read_text())
    return sorted((summarize_entry(e) for e in entries), key=lambda s: (s.is_metric, s.name))


def slo_breaches(entries: Iterable[EntrySummary], slo: Slo) -> list[str]:
    """What broke the SLO, in words; empty when the run passed."""
    requests = [e for e in entries if not e.is_metric]
    total = sum(e.requests for e in requests)
    failures = sum(e.failures for e in requests)
    breaches: list[str] = []
    if total == 0:
        breaches.append("no requests were made")
    elif failures / total > slo.max_error_ratio:
        breaches.append(
            f"error ratio {failures / total:.4f} ({failures}/{total}) > {slo.max_error_ratio}"
        )
    if slo.max_p95_ms is not None:
        breaches.extend(
            f"{e.type} {e.name}: p95 {e.p95:.0f} ms > {slo.max_p95_ms:.0f} ms"
            for e in requests
            if e.p95 > slo.max_p95_ms
        )
    return breaches


def markdown_table(entries: Iterable[EntrySummary]) -> str:
    lines = [
        "| type | name | count | failures | per s | p50 | p95 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        unit = " tok/s" if e.type == "TOKENS/S" else " ms"
        lines.append(
            f"| {e.type} | {e.name} | {e.requests} | {e.failures} | {e.per_s:.1f} "
            f"| {e.p50:.0f}{unit} | {e.p95:.0f}{unit} | {e.p99:.0f}{unit} | {e.max:.0f}{unit} |"
        )
    return "\n".join(lines)


def write_summary(
    out: Path, entries: list[EntrySummary], breaches: list[str], run: Mapping[str, Any]
) -> None:
    """summary.json (machine-readable) and summary.md (for a PR or a ticket)."""
    verdict = "PASS" if not breaches else "FAIL: " + "; ".join(breaches)
    payload = {"run": dict(run), "entries": [asdict(e) for e in entries], "breaches": breaches}
    (out / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    settings = ", ".join(f"{k}={v}" for k, v in run.items())
    (out / "summary.md").write_text(
        f"# Load test\n\n{settings}\n\n{markdown_table(entries)}\n\n**{verdict}**\n"
    )
