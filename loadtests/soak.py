"""Soak and chaos run: good clients and hostile ones at once, for minutes, against a live server.

    python -m loadtests.soak --host http://127.0.0.1:8000 [--duration 600] [--pid PID] [--json]

Why: a server that passes a 20 s load test can still leak a little memory per request, keep a
socket per dead client, or let a few slow peers hold every admission slot. Only a long run with
both kinds of traffic shows that. Good clients (closed loop) send image chats, streamed and not,
and face analyses; every answer to them must be a 200. Hostile clients (`loadtests/hostile.py`)
stall uploads, never read, hang up mid-stream, trickle CRLFs on kept-alive connections, flood
trailers, and send oversized requests and JPEG scan bombs, all along.

Goals (exit status 1 if one fails, thresholds are flags): no error for good clients (a non-200
to a good client, or a 5xx to anyone); the server tree's resident memory grows by at most
5 MB/min (least-squares slope over the samples after the first 20 % of the run); the server
process holds at most a few more file descriptors at the end than at the start; refusals are 4xx.
Without `--pid`, the process listening on the URL's port is measured (if it can be found).
`run_soak` is the same thing for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import psutil

from loadtests import hostile
from loadtests.hostile import HostilePlan, Payloads, Tally, Target, chat_body
from loadtests.images import face_data_urls
from loadtests.locust.runner import duration_seconds
from loadtests.rss import RssSampler, listening_pid

FACES_PATH = "/v1/faces/analyze"
GOOD_KINDS = ("chat", "stream", "faces")
GOOD_TIMEOUT_S = 60.0
ERROR_BACKOFF_S = 0.2  # after a refused good request: closed loop, not a spin
MAX_SSE_LINES = 10_000
MB = 1_000_000


# --- the figures ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0…100): always a value that was measured."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[min(len(ordered), int(rank)) - 1]


def slope_mb_per_min(samples: list[tuple[float, int]], after_s: float) -> float | None:
    """Least-squares slope of RSS (bytes) over time (s) for samples at or after `after_s`, in
    MB per minute. The warm-up is left out: caches and pools fill then, which is not a leak.
    None with fewer than 3 samples or no spread in time."""
    points = [(t / 60, rss / MB) for t, rss in samples if t >= after_s]
    if len(points) < 3:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / var


@dataclass(frozen=True)
class Goals:
    max_good_errors: int = 0
    max_rss_slope_mb_min: float = 5.0
    fd_margin: int = 10


@dataclass
class SoakResult:
    duration_s: float
    good_requests: int
    good_errors: int  # non-200 to good clients, plus 5xx to hostile ones
    good_statuses: dict[str, int]  # "kind status" → count
    good_error_samples: list[str]
    good_p50_s: float | None
    good_p99_s: float | None
    hostile: dict[str, dict[str, int]]
    hostile_median_s: dict[str, float]
    hostile_5xx: int
    rss_slope_mb_per_min: float | None = None
    rss_samples: int = 0
    rss_first_mb: float | None = None
    rss_last_mb: float | None = None
    fds_start: int | None = None
    fds_end: int | None = None
    healthy_after: bool = False
    health_p99_s: float | None = None  # /health, probed all along, as the kubelet would
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """The report as text: counts, statuses, hostile outcomes, memory, fds, verdict."""

        def fmt(value: float | None, spec: str) -> str:
            return "n/a" if value is None else format(value, spec)

        lines = [
            f"soak {self.duration_s:.0f} s: good requests {self.good_requests}, "
            f"errors {self.good_errors} (5xx to hostile clients {self.hostile_5xx}), "
            f"p50 {fmt(self.good_p50_s, '.3f')} s, p99 {fmt(self.good_p99_s, '.3f')} s; "
            f"/health p99 {fmt(self.health_p99_s, '.3f')} s",
            f"good statuses {dict(sorted(self.good_statuses.items()))}",
            *(f"  error: {e}" for e in self.good_error_samples),
            *(
                f"hostile {kind}: {dict(sorted(c.items()))}, "
                f"median {self.hostile_median_s.get(kind, 0):.1f} s"
                for kind, c in sorted(self.hostile.items())
            ),
            f"RSS slope {fmt(self.rss_slope_mb_per_min, '+.2f')} MB/min over {self.rss_samples} "
            f"samples ({fmt(self.rss_first_mb, '.0f')} → {fmt(self.rss_last_mb, '.0f')} MB)",
            f"fds {self.fds_start} → {self.fds_end}; /health after: "
            f"{'200' if self.healthy_after else 'not 200'}",
            "PASS" if self.passed else "FAIL: " + "; ".join(self.failures),
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def goal_failures(result: SoakResult, goals: Goals) -> list[str]:
    """Every goal the run missed, in words (unmeasured figures are not failures, but no good
    request at all is: a server that refuses everything has no errors to count)."""
    failures = []
    if result.good_requests == 0:
        failures.append("no good request was made")
    if result.good_errors > goals.max_good_errors:
        failures.append(f"{result.good_errors} errors for good clients (> {goals.max_good_errors})")
    slope = result.rss_slope_mb_per_min
    if slope is not None and slope > goals.max_rss_slope_mb_min:
        failures.append(f"RSS grows {slope:.2f} MB/min (> {goals.max_rss_slope_mb_min})")
    start, end = result.fds_start, result.fds_end
    if start is not None and end is not None and end > start + goals.fd_margin:
        failures.append(f"{end} fds at the end, {start} at the start (margin {goals.fd_margin})")
    for kind in hostile.REFUSAL_KINDS:
        outcomes = result.hostile.get(kind, {}).items()
        bad = {o: n for o, n in outcomes if not _is_4xx(o) and (o, kind) not in _ALSO_REFUSED}
        if bad:
            failures.append(f"{kind} not refused with a 4xx: {bad}")
    if held := result.hostile.get("crlf_trickle", {}).get("held_to_cap"):
        failures.append(f"{held} CRLF-trickling connections outlived the keep-alive timeout")
    if not result.healthy_after:
        failures.append("/health did not answer 200 after the run")
    return failures


# A trailer flooder still sending when the server closes (after its 431 and a second's linger)
# may see the close's reset before it reads the 431: refused and closed all the same.
_ALSO_REFUSED = frozenset({("server_reset", "trailer_flood")})


def _is_4xx(outcome: str) -> bool:
    return outcome.isdigit() and outcome.startswith("4")


# --- good clients --------------------------------------------------------------------------------


@dataclass
class GoodStats:
    latencies: list[float] = field(default_factory=list)  # of 200s only
    health: list[float] = field(default_factory=list)  # of /health probes answered 200
    statuses: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    max_samples: int = 5

    def record(self, kind: str, outcome: str, seconds: float, detail: str = "") -> None:
        self.statuses[f"{kind} {outcome}"] += 1
        if outcome == "200":
            self.latencies.append(seconds)
        elif len(self.error_samples) < self.max_samples:
            self.error_samples.append(f"{kind} {outcome} after {seconds:.2f} s {detail}".strip())

    @property
    def errors(self) -> int:
        return sum(n for key, n in self.statuses.items() if not key.endswith(" 200"))


async def good_request(client: httpx.AsyncClient, kind: str, image: str) -> tuple[str, str]:
    """One good request of `kind`: its outcome ("200" when all is well) and a detail for errors.
    A stream is read to its end and counts as an error if it carries an error event."""
    if kind == "faces":
        response = await client.post(FACES_PATH, json={"image": image, "max_faces": 1})
        return str(response.status_code), response.text[:160]
    if kind == "chat":
        response = await client.post(hostile.CHAT_PATH, json=chat_body([image]))
        return str(response.status_code), response.text[:160]
    async with client.stream("POST", hostile.CHAT_PATH, json=chat_body([image], stream=True)) as r:
        if r.status_code != 200:
            return str(r.status_code), (await r.aread()).decode(errors="replace")[:160]
        lines = 0
        async for line in r.aiter_lines():
            lines += 1
            if line.startswith("data:") and '"error"' in line:
                return "stream_error", line[:160]
            if line.strip() == "data: [DONE]" or lines >= MAX_SSE_LINES:
                return "200", ""
    return "stream_truncated", ""


async def timed_request(client: httpx.AsyncClient, kind: str, image: str, stats: GoodStats) -> str:
    """One good request, timed and recorded; a transport error is an outcome, not a crash."""
    start = time.perf_counter()
    try:
        outcome, detail = await good_request(client, kind, image)
    except httpx.HTTPError as exc:
        outcome, detail = type(exc).__name__, str(exc)[:160]
    stats.record(kind, outcome, time.perf_counter() - start, detail)
    return outcome


async def good_lane(
    client: httpx.AsyncClient, index: int, images: list[str], deadline: float, stats: GoodStats
) -> None:
    """A closed-loop client: one request after another, kinds in turn, until `deadline`."""
    loop = asyncio.get_running_loop()
    for n in range(1_000_000):
        if loop.time() >= deadline:
            return
        kind = GOOD_KINDS[(index + n) % len(GOOD_KINDS)]
        if await timed_request(client, kind, images[(7 * index + n) % len(images)], stats) != "200":
            await asyncio.sleep(ERROR_BACKOFF_S)


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 600.0
    clients: int = 4
    warmup_fraction: float = 0.2
    rss_interval_s: float = 1.0
    settle_s: float = 20.0  # after the run, for fds to come back
    plan: HostilePlan = field(default_factory=HostilePlan)
    goals: Goals = field(default_factory=Goals)


def num_fds(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).num_fds())
    except psutil.Error:
        return None


PROBE_EVERY_S = 0.25


async def probe_lane(client: httpx.AsyncClient, deadline: float, stats: GoodStats) -> None:
    """/health every `PROBE_EVERY_S`, as the kubelet probes: it must answer 200 throughout."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        start = time.monotonic()
        try:
            status = str((await client.get("/health")).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == "200":
            stats.health.append(time.monotonic() - start)
        else:
            stats.record("health", status, 0.0)
        await asyncio.sleep(PROBE_EVERY_S)


async def _traffic(
    base_url: str, cfg: SoakConfig, pid: int | None, sampler: RssSampler | None
) -> tuple[GoodStats, Tally, int | None]:
    """Warm up (one good request of each kind), read the fds, then run good and hostile lanes
    side by side until the deadline; every lane stops by itself, stragglers are cancelled."""
    images = face_data_urls(32, 256)
    payloads = Payloads.build(cfg.plan, images)
    stats, tally = GoodStats(), Tally()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    opts: dict[str, Any] = {"base_url": base_url, "trust_env": False, "limits": limits}
    async with (
        httpx.AsyncClient(timeout=GOOD_TIMEOUT_S, **opts) as good,
        httpx.AsyncClient(timeout=hostile.ANSWER_TIMEOUT_S, **opts) as bad,
    ):
        loop = asyncio.get_running_loop()
        for i, kind in enumerate(GOOD_KINDS):
            await timed_request(good, kind, images[i], stats)
        fds_start = num_fds(pid)
        if sampler:
            sampler.start()
        deadline = loop.time() + cfg.duration_s
        attempts = hostile.hostile_attempts(Target.parse(base_url), bad, cfg.plan, payloads)
        tasks = [
            *(good_lane(good, i, images, deadline, stats) for i in range(cfg.clients)),
            *(hostile.lane(a, tally, deadline, cfg.plan) for a in attempts),
            probe_lane(good, deadline, stats),
        ]
        running = [asyncio.ensure_future(t) for t in tasks]
        _, late = await asyncio.wait(running, timeout=cfg.duration_s + GOOD_TIMEOUT_S + 10)
        for task in late:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return stats, tally, fds_start


def _settled_fds(pid: int | None, start: int | None, cfg: SoakConfig) -> int | None:
    """The server's fds once it has had up to `settle_s` to notice the closed connections."""
    end = num_fds(pid)
    deadline = time.monotonic() + cfg.settle_s
    while end is not None and start is not None and end > start + cfg.goals.fd_margin:
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
        end = num_fds(pid)
    return end


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=10, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def run_soak(base_url: str, cfg: SoakConfig | None = None, pid: int | None = None) -> SoakResult:
    """The whole soak, blocking: traffic for `cfg.duration_s`, then the figures and goals."""
    cfg = cfg or SoakConfig()
    base_url = base_url.rstrip("/")
    max_samples = int(cfg.duration_s / cfg.rss_interval_s) + 600
    sampler = RssSampler(pid, cfg.rss_interval_s, max_samples) if pid else None
    start = time.monotonic()
    try:
        stats, tally, fds_start = asyncio.run(_traffic(base_url, cfg, pid, sampler))
    finally:
        if sampler:
            sampler.stop()
    samples = sampler.samples if sampler else []
    result = SoakResult(
        duration_s=time.monotonic() - start,
        good_requests=sum(stats.statuses.values()),
        good_errors=stats.errors + tally.server_errors(),
        good_statuses=dict(stats.statuses),
        good_error_samples=stats.error_samples,
        good_p50_s=percentile(stats.latencies, 50),
        good_p99_s=percentile(stats.latencies, 99),
        hostile={kind: dict(c) for kind, c in tally.outcomes.items()},
        hostile_median_s={k: percentile(v, 50) or 0.0 for k, v in tally.seconds.items()},
        hostile_5xx=tally.server_errors(),
        rss_slope_mb_per_min=slope_mb_per_min(samples, cfg.warmup_fraction * cfg.duration_s),
        rss_samples=len(samples),
        rss_first_mb=samples[0][1] / MB if samples else None,
        rss_last_mb=samples[-1][1] / MB if samples else None,
        fds_start=fds_start,
        fds_end=_settled_fds(pid, fds_start, cfg),
        healthy_after=_healthy(base_url),
        health_p99_s=percentile(stats.health, 99),
    )
    result.failures = goal_failures(result, cfg.goals)
    return result


# --- CLI -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="http://127.0.0.1:8000", help="the server's base URL")
    p.add_argument("--duration", type=duration_seconds, default=600, help="600, 90s, 10m…")
    p.add_argument("--pid", type=int, help="server pid (default: whoever listens on --host)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--clients", type=int, default=4, help="good closed-loop clients")
    p.add_argument("--stalled", type=int, default=20, help="stalled uploads at once")
    p.add_argument("--never-read", type=int, default=4, help="never-reading clients at once")
    p.add_argument("--midstream", type=int, default=2, help="mid-stream disconnecters at once")
    p.add_argument("--hold-cap", type=float, default=60.0, help="longest hold of a hostile, s")
    p.add_argument("--max-good-errors", type=int, default=0, help="goal: errors for good clients")
    p.add_argument("--max-rss-slope", type=float, default=5.0, help="goal: RSS growth, MB/min")
    p.add_argument("--fd-margin", type=int, default=10, help="goal: fds at end ≤ start + this")
    p.add_argument("--warmup-fraction", type=float, default=0.2, help="left out of the slope")
    p.add_argument("--max-body-bytes", type=int, default=20 * hostile.MiB, help="server's cap")
    p.add_argument("--max-image-pixels", type=int, default=25_000_000, help="server's cap")
    p.add_argument("--max-images", type=int, default=4, help="server's images per request")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> SoakConfig:
    """The flags as a config; one hold cap for both kinds that hold connections, so a run's
    length bounds both the same way."""
    plan = HostilePlan(
        stalled_uploads=args.stalled,
        stalled_cap_s=args.hold_cap,
        never_read=args.never_read,
        never_read_cap_s=args.hold_cap,
        midstream=args.midstream,
        max_body_bytes=args.max_body_bytes,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
    )
    goals = Goals(args.max_good_errors, args.max_rss_slope, args.fd_margin)
    return SoakConfig(
        duration_s=float(args.duration),
        clients=args.clients,
        warmup_fraction=args.warmup_fraction,
        plan=plan,
        goals=goals,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pid = args.pid or listening_pid(args.host)
    if pid is None:
        print("server pid not found: RSS and fds are not measured (pass --pid)", file=sys.stderr)
    result = run_soak(args.host, config_from(args), pid)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
