"""What `confidence: true` costs a face analysis: the same photos, plain and with confidences,
side by side in one run against a running server.

Each two-face 12-MP photo is sent plain, then with confidences (then the next photo), so drift
in the machine hits both alike. Prints p50 and mean latency of each, their ratios, and how many
engine tokens each took (confidences can take a second decoding pass; see server/answers.py).

    python -m loadtests.bench.confidence --host http://127.0.0.1:8000 --requests 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from loadtests.photos import photo_data_urls

TIMEOUT_S = 120.0
FIRST_PHOTO = 9000  # photos of their own: no cache of earlier runs' decodes to ride on


@dataclass
class Side:
    """One way of asking: its latencies and engine tokens."""

    name: str
    options: dict[str, object]
    latencies_s: list[float]
    tokens: int = 0

    def summary(self) -> dict[str, float]:
        return {
            "p50_ms": 1000 * statistics.median(self.latencies_s),
            "mean_ms": 1000 * statistics.fmean(self.latencies_s),
            "tokens_per_request": self.tokens / len(self.latencies_s),
        }


def send(client: httpx.Client, url: str, side: Side) -> None:
    start = time.perf_counter()
    r = client.post("/v1/faces/analyze", json={"image": url, **side.options})
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    side.latencies_s.append(elapsed)
    side.tokens += r.json()["usage"]["total_tokens"]


def run(host: str, requests: int, warmup: int) -> dict[str, dict[str, float]]:
    urls = photo_data_urls("faces", requests + warmup, FIRST_PHOTO)
    with httpx.Client(base_url=host, timeout=TIMEOUT_S) as client:
        for url in urls[:warmup]:  # not measured: one-time costs (grammars, first decodes)
            for options in ({}, {"confidence": True}):
                send(client, url, Side("warm-up", options, []))
        plain, scored = Side("plain", {}, []), Side("confidence", {"confidence": True}, [])
        for url in urls[warmup:]:
            for side in (plain, scored):
                send(client, url, side)
    return {side.name: side.summary() for side in (plain, scored)}


def ratios(result: dict[str, dict[str, float]]) -> dict[str, float]:
    plain, scored = result["plain"], result["confidence"]
    return {key: scored[key] / plain[key] for key in plain}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=20, help="photos measured (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="photos sent first, not measured")
    args = parser.parse_args(argv)
    result = run(args.host, args.requests, args.warmup)
    result["confidence/plain"] = ratios(result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
