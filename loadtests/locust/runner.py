"""Headless load test: locust in a subprocess → reports under a results folder → SLO exit code.

    python -m loadtests.locust --host http://127.0.0.1:8000 --users 8 --duration 20s \
        [--spawn-rate N] [--max-error-ratio 0.0] [--max-p95-ms X] [--out results/DIR]

Locust runs as a subprocess (its gevent monkey-patching stays out of the caller). Exit codes:
0 pass, 1 an SLO was breached, 2 locust produced no stats.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from loadtests.locust.report import Slo, load_stats, markdown_table, slo_breaches, write_summary
from loadtests.locust.settings import DEFAULT_MIX, parse_mix

log = logging.getLogger("loadtests.locust")

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
FACES_PATH = "/v1/faces/analyze"
STOP_TIMEOUT_S = 30  # in-flight requests may finish after --run-time


def duration_seconds(text: str) -> int:
    """Locust's time spans (`20s`, `2m`, `1h30m`, `90`) in seconds, for our own deadline."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 20s, 5m, 1h30m)")
    h, m, s = (int(g or 0) for g in parts.groups())
    return 3600 * h + 60 * m + s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.locust", description=__doc__.split("\n")[0]
    )
    p.add_argument("--host", required=True, help="base URL of the server under test")
    p.add_argument("--users", type=int, default=8, help="concurrent users (closed loop)")
    p.add_argument("--duration", default="20s", help="run time, locust syntax (20s, 5m)")
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: all)")
    p.add_argument("--max-error-ratio", type=float, default=0.0, help="SLO: failures / requests")
    p.add_argument("--max-p95-ms", type=float, help="SLO: p95 latency of every request kind")
    p.add_argument("--out", type=Path, help="results folder (default: results/load-<time>)")
    p.add_argument("--mix", help=f"scenario weights (default {DEFAULT_MIX!r})")
    p.add_argument(
        "--faces",
        choices=("auto", "on", "off"),
        default="auto",
        help="the faces scenario; auto = on when the server's OpenAPI lists " + FACES_PATH,
    )
    p.add_argument("--step-users", type=int, help="step load: users added per step (opt-in)")
    p.add_argument("--step-seconds", type=int, default=10, help="step load: seconds per step")
    args = p.parse_args(argv)
    args.seconds = duration_seconds(args.duration)
    return args


def server_has_faces(host: str) -> bool:
    try:
        spec = httpx.get(f"{host.rstrip('/')}/openapi.json", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return False
    return FACES_PATH in spec.get("paths", {})


def scenario_mix(args: argparse.Namespace) -> str:
    mix = parse_mix(args.mix or os.environ.get("FACELLM_LOAD_MIX") or DEFAULT_MIX)
    faces = args.faces == "on" or (args.faces == "auto" and server_has_faces(args.host))
    if not faces:
        mix["faces"] = 0
    return ",".join(f"{name}:{weight}" for name, weight in mix.items())


def locust_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"),
        *("--host", args.host, "--users", str(args.users)),
        *("--spawn-rate", str(args.spawn_rate or args.users), "--run-time", args.duration),
        *("--stop-timeout", str(STOP_TIMEOUT_S), "--loglevel", "WARNING"),
        *("--json-file", str(out / "stats"), "--csv", str(out / "stats")),
        *("--html", str(out / "report.html")),
    ]


def run_locust(args: argparse.Namespace, out: Path, mix: str) -> int:
    env = {**os.environ, "FACELLM_LOAD_MIX": mix, "PYTHONPATH": str(ROOT)}
    if args.step_users:
        env |= {
            "FACELLM_LOAD_STEP_USERS": str(args.step_users),
            "FACELLM_LOAD_STEP_SECONDS": str(args.step_seconds),
        }
    deadline = args.seconds + STOP_TIMEOUT_S + 120  # + start-up and report writing
    with (out / "locust.log").open("wb") as log_file:
        proc = subprocess.run(
            locust_command(args, out),
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=deadline,
            check=False,
        )
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    out: Path = args.out or ROOT / "results" / time.strftime("load-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    mix = scenario_mix(args)
    log.info("locust → %s: %d users, %s, mix %s", args.host, args.users, args.duration, mix)
    code = run_locust(args, out, mix)
    stats = out / "stats.json"
    if not stats.is_file():
        log.error("locust exited %d without stats; see %s", code, out / "locust.log")
        return 2
    entries = load_stats(stats)
    breaches = slo_breaches(entries, Slo(args.max_error_ratio, args.max_p95_ms))
    run = {"host": args.host, "users": args.users, "duration": args.duration, "mix": mix}
    write_summary(out, entries, breaches, run)
    log.info("%s\n", markdown_table(entries))
    for breach in breaches:
        log.error("SLO breached: %s", breach)
    log.info("%s; reports in %s", "FAIL" if breaches else "PASS", out)
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
