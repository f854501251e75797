"""Side-by-side benchmark: engine-only ceiling, HTTP floor, this server, vLLM's OpenAI server.

    python -m loadtests.bench [--workload small photo] [--concurrency 1 8 32] [--repeats 3]
    python -m loadtests.bench --workload photo    # the phone-photo workload alone (≈ 3–4 min)

Same machine, same demo model, same engine settings, same requests (one distinct image each).
Two workloads, both by default (`--workload`):
- small: chat over a distinct --image-size² JPEG per request, on all four systems;
- photo (`loadtests.bench_photo`): chat over a distinct 4032×3024 phone photo (≈ 2 MB JPEG) per
  request at --photo-concurrency, on this server and vLLM's; then `/v1/faces/analyze` over photos
  with two faces each, at concurrency 1, on this server only. It runs on the servers the small
  workload started, after it, so it adds no server starts (≈ 40 s a repeat); alone, it starts
  the two servers itself, and repeats twice by default since the starts take most of its time.
The HTTP floor (`loadtests.bench_floor`) is the least any HTTP front can do around the same engine:
it splits what HTTP itself costs here from what this server's layer adds.
With 2 cores nothing runs beside the system under test: each repeat starts every system afresh,
one at a time, in a rotated order (so no system always goes first, or last), and stops it before
the next. A point during which other processes took more than --max-noise of the CPUs is measured
again on fresh images (bounded by --attempts and --patience); what they took is reported.
Besides latency and throughput, each point records the CPU milliseconds per request of every
process of the system (front end, EngineCore, worker, load generator): where the time goes.
Results: results/bench-<time>.json and .md; the tables are also printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench_http import run_points
from loadtests.bench_load import REPEAT_STRIDE, Point, plan_points
from loadtests.bench_photo import PhotoPlan, plan_photo, run_photo
from loadtests.bench_report import report
from loadtests.cpu import NoisePolicy

log = logging.getLogger("loadtests.bench")

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("engine", "floor", "facellm", "vllm")
WORKLOADS = ("small", "photo")
WORKLOAD_SYSTEMS = {"small": SYSTEMS, "photo": ("facellm", "vllm")}
FACES_SYSTEM = "facellm"  # the only one with /v1/faces/analyze
PORTS = range(8121, 8140)
START_TIMEOUT_S = 240
ENGINE_RUN_TIMEOUT_S = 600
# The same engine settings for all three (see model/vllm_engine.py and docs/platform-notes.md).
MAX_MODEL_LEN = 2048
MAX_NUM_SEQS = 64
MAX_IMAGES = 4
STRUCTURED = '{"backend": "xgrammar", "disable_any_whitespace": true}'


@dataclass(frozen=True)
class Bench:
    model_dir: Path
    points: list[Point]
    repeats: int
    max_tokens: int
    image_size: int
    stream_interval: int
    warmup: int
    logs: Path
    noise: NoisePolicy  # own_groups is filled in per system
    workloads: tuple[str, ...]
    photo: PhotoPlan
    api_processes: int = 1  # HTTP processes of ours (and of vLLM's server) over the one engine

    def systems(self) -> tuple[str, ...]:
        """The systems the chosen workloads need, in SYSTEMS order."""
        return tuple(s for s in SYSTEMS if any(s in WORKLOAD_SYSTEMS[w] for w in self.workloads))

    def noise_args(self) -> list[str]:
        n = self.noise
        return [
            *("--max-noise", str(n.max_share), "--attempts", str(n.attempts)),
            *("--quiet-wait", str(n.quiet_wait_s), "--deadline", str(n.deadline)),
        ]


def system_env() -> dict[str, str]:
    """Every system gets this environment (the engine's CPU settings included)."""
    return {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_HOST_IP": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


class Managed:
    """A process in its own session, so stopping it also ends the engine processes it started."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, url: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"not ready in {START_TIMEOUT_S} s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group; return once every member has gone."""
        group = self.proc.pid
        for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 15)):
            if self.proc.poll() is None:
                os.killpg(group, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    self.proc.poll()
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)
        log.warning("process group %d outlived SIGKILL", group)


def server_command(system: str, bench: Bench, port: int) -> tuple[list[str], dict[str, str], str]:
    """(argv, env, readiness path) of an HTTP system with the shared engine settings."""
    env = system_env()
    if system == "facellm":
        env |= {
            "FACELLM_MODEL": str(bench.model_dir),
            "FACELLM_SERVED_MODEL_NAME": "demo",
            "FACELLM_PORT": str(port),
            "FACELLM_ENFORCE_EAGER": "true",
            "FACELLM_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            "FACELLM_MAX_NUM_SEQS": str(MAX_NUM_SEQS),
            "FACELLM_MAX_IMAGES_PER_PROMPT": str(MAX_IMAGES),
            "FACELLM_STREAM_INTERVAL": str(bench.stream_interval),
            "FACELLM_API_PROCESSES": str(bench.api_processes),
        }
        return [sys.executable, "-m", "server"], env, "/ready"
    if system == "floor":
        cmd = [
            *(sys.executable, "-m", "loadtests.bench_floor", "--model-dir", str(bench.model_dir)),
            *("--port", str(port), "--max-model-len", str(MAX_MODEL_LEN)),
            *("--max-num-seqs", str(MAX_NUM_SEQS), "--max-images", str(MAX_IMAGES)),
            *("--stream-interval", str(bench.stream_interval)),
        ]
        return cmd, env, "/health"
    cmd = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(bench.model_dir), "--served-model-name", "demo"),
        *("--host", "127.0.0.1", "--port", str(port), "--enforce-eager"),
        *("--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", str(MAX_NUM_SEQS)),
        *("--dtype", "bfloat16", "--limit-mm-per-prompt", json.dumps({"image": MAX_IMAGES})),
        *("--structured-outputs-config", STRUCTURED),
        *("--stream-interval", str(bench.stream_interval)),
        *("--generation-config", "vllm"),  # sampling from the request alone, as in ours
        *("--api-server-count", str(bench.api_processes)),
    ]
    return cmd, env, "/health"


def run_server(system: str, bench: Bench, repeat: int, image_offset: int) -> dict[str, Any]:
    """Start the system once and run every chosen workload on it: {"startup_s", "workloads"}."""
    port = free_port()
    cmd, env, ready = server_command(system, bench, port)
    proc = Managed(cmd, bench.logs / f"{system}-{repeat}.log", env)
    try:
        startup_s = proc.wait_ready(f"http://127.0.0.1:{port}{ready}")
        workloads = asyncio.run(serve_workloads(system, bench, port, image_offset, proc.proc.pid))
    finally:
        proc.stop()
    return {"startup_s": startup_s, "workloads": workloads}


async def serve_workloads(
    system: str, bench: Bench, port: int, image_offset: int, group: int
) -> dict[str, list[dict[str, Any]]]:
    """The small workload, then the photo one, on a started server: {workload: points}."""
    base = f"http://127.0.0.1:{port}"
    # The server runs in its own session: its process group id is its pid.
    noise = replace(bench.noise, own_groups=frozenset({os.getpgrp(), group}))
    workloads: dict[str, list[dict[str, Any]]] = {}
    if "small" in bench.workloads:
        workloads["small"] = await run_points(
            base,
            bench.points,
            image_size=bench.image_size,
            image_offset=image_offset,
            max_tokens=bench.max_tokens,
            warmup=bench.warmup,
            noise=noise,
            server_group=group,
        )
    if "photo" in bench.workloads and system in WORKLOAD_SYSTEMS["photo"]:
        workloads |= await run_photo(
            base,
            bench.photo,
            faces=system == FACES_SYSTEM,
            image_offset=image_offset,
            max_tokens=bench.max_tokens,
            noise=noise,
            server_group=group,
        )
    return workloads


def run_engine(bench: Bench, repeat: int, image_offset: int) -> dict[str, Any]:
    """The ceiling, in its own process; the small workload only (it takes no HTTP)."""
    out = bench.logs / f"engine-{repeat}.json"
    spec = ",".join(f"{p.concurrency}:{p.requests}:{p.first_image}" for p in bench.points)
    cmd = [
        *(sys.executable, "-m", "loadtests.bench_engine", "--model-dir", str(bench.model_dir)),
        *("--points", spec, "--image-size", str(bench.image_size)),
        *("--image-offset", str(image_offset), "--warmup", str(bench.warmup)),
        *("--max-tokens", str(bench.max_tokens), "--max-model-len", str(MAX_MODEL_LEN)),
        *("--max-num-seqs", str(MAX_NUM_SEQS), "--max-images", str(MAX_IMAGES)),
        *("--stream-interval", str(bench.stream_interval), "--out", str(out)),
        *bench.noise_args(),
    ]
    proc = Managed(cmd, bench.logs / f"engine-{repeat}.log", system_env())
    try:
        code = proc.proc.wait(ENGINE_RUN_TIMEOUT_S)
    finally:
        proc.stop()
    if code != 0:
        raise RuntimeError(f"engine-only run exited {code}; see {proc.log_path}")
    result: dict[str, Any] = json.loads(out.read_text())
    return {"startup_s": result["startup_s"], "workloads": {"small": result["points"]}}


def run_all(bench: Bench) -> list[dict[str, Any]]:
    """Every repeat, every system once in rotated order: one run record per workload it ran."""
    runs = []
    systems = bench.systems()
    for repeat in range(bench.repeats):
        image_offset = REPEAT_STRIDE * (repeat + 1)  # fresh images in every repeat
        order = systems[repeat % len(systems) :] + systems[: repeat % len(systems)]
        for system in order:
            log.info("repeat %d: %s", repeat + 1, system)
            if system == "engine":
                result = run_engine(bench, repeat, image_offset)
            else:
                result = run_server(system, bench, repeat, image_offset)
            for workload, points in result["workloads"].items():
                runs.append(
                    {"system": system, "repeat": repeat, "workload": workload, "points": points}
                    | {"startup_s": result["startup_s"]}
                )
                log_points(workload, points)
    return runs


def log_points(workload: str, points: list[dict[str, Any]]) -> None:
    for p in points:
        log.info(
            "  %s c=%d: %.2f req/s, e2e p50 %.0f ms (others took %.0f%% CPU; attempt %d)",
            *(workload, p["concurrency"], p["req_per_s"], p["e2e_p50_ms"]),
            *(100 * p["others_cpu_share"], p["attempts"]),
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split(".")[0])
    p.add_argument(
        "--workload",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="small: a distinct --image-size² JPEG per chat request, all four systems; "
        "photo: a distinct 4032×3024 phone photo per request — chat on this server and vLLM's, "
        "then /v1/faces/analyze (two faces a photo) on this server (default: both)",
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--repeats", type=int, help="default: 3, or 2 for the photo workload alone (≈ 3–4 min)"
    )
    p.add_argument("--requests-per-user", type=int, default=16, help="requests per point / users")
    p.add_argument("--min-requests", type=int, default=64, help="fewest requests in a point")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--stream-interval", type=int, default=1, help="tokens per streamed event, all systems"
    )
    p.add_argument("--warmup", type=int, default=32, help="requests before measuring")
    p.add_argument("--photo-concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--photo-requests", type=int, default=12, help="min per photo chat point")
    p.add_argument("--face-requests", type=int, default=10, help="face analyses over photos")
    p.add_argument("--photo-warmup", type=int, default=2, help="photos of each kind, unmeasured")
    p.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="HTTP API processes over the one engine: ours (FACELLM_API_PROCESSES) and vLLM's "
        "server (--api-server-count)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument(
        "--max-noise", type=float, default=0.15, help="share of CPUs others may take in a point"
    )
    p.add_argument("--attempts", type=int, default=2, help="tries per point while too noisy")
    p.add_argument(
        "--quiet-wait", type=float, default=10, help="seconds to wait for quiet before a point"
    )
    p.add_argument(
        "--patience", type=float, default=900, help="seconds after which nothing waits or retries"
    )
    return p.parse_args(argv)


def repeats(args: argparse.Namespace) -> int:
    if args.repeats is not None:
        return int(args.repeats)
    return 3 if "small" in args.workload else 2


def make_bench(args: argparse.Namespace, model_dir: Path, logs: Path) -> Bench:
    return Bench(
        model_dir,
        plan_points(args.concurrency, args.requests_per_user, args.min_requests),
        repeats(args),
        args.max_tokens,
        args.image_size,
        args.stream_interval,
        args.warmup,
        logs,
        NoisePolicy(
            own_groups=frozenset(),
            max_share=args.max_noise,
            attempts=args.attempts,
            quiet_wait_s=args.quiet_wait,
            deadline=time.time() + args.patience,
        ),
        workloads=tuple(w for w in WORKLOADS if w in args.workload),
        photo=plan_photo(
            args.photo_concurrency, args.photo_requests, args.face_requests, args.photo_warmup
        ),
        api_processes=args.api_processes,
    )


def bench_meta(bench: Bench, wall_s: float) -> dict[str, Any]:
    return {
        "model_dir": str(bench.model_dir),
        "workloads": list(bench.workloads),
        "api_processes": bench.api_processes,
        "points": [vars(p) for p in bench.points],
        "photo": bench.photo.meta(),
        "repeats": bench.repeats,
        "max_tokens": bench.max_tokens,
        "image_size": bench.image_size,
        "stream_interval": bench.stream_interval,
        "cpus": os.cpu_count(),
        "wall_s": round(wall_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    from model.weights import resolve_weights

    model_dir = resolve_weights(
        "demo", cache_dir=Path.home() / ".cache" / "facellm", allow_download=False
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = args.out / f"bench-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    bench = make_bench(args, model_dir, logs)
    started = time.monotonic()
    runs = run_all(bench)
    payload, text = report(runs, bench_meta(bench, time.monotonic() - started))
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"bench-{stamp}.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
