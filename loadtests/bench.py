"""Side-by-side benchmark: engine-only ceiling, HTTP floor, this server, vLLM's OpenAI server.

    python -m loadtests.bench [--concurrency 1 8 32] [--repeats 3] [--out results]

Same machine, same demo model, same engine settings, same requests (one distinct image each).
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
from loadtests.bench_report import aggregate, markdown
from loadtests.cpu import NoisePolicy

log = logging.getLogger("loadtests.bench")

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("engine", "floor", "facellm", "vllm")
PORTS = range(8121, 8140)
START_TIMEOUT_S = 240
ENGINE_RUN_TIMEOUT_S = 600
# The same engine settings for all three (see model/vllm_engine.py and FIELD-NOTES).
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
    ]
    return cmd, env, "/health"


def run_server(system: str, bench: Bench, repeat: int, image_offset: int) -> dict[str, Any]:
    port = free_port()
    cmd, env, ready = server_command(system, bench, port)
    proc = Managed(cmd, bench.logs / f"{system}-{repeat}.log", env)
    try:
        startup_s = proc.wait_ready(f"http://127.0.0.1:{port}{ready}")
        points = asyncio.run(
            run_points(
                f"http://127.0.0.1:{port}",
                bench.points,
                image_size=bench.image_size,
                image_offset=image_offset,
                max_tokens=bench.max_tokens,
                warmup=bench.warmup,
                noise=replace(bench.noise, own_groups=frozenset({os.getpgrp(), proc.proc.pid})),
                server_group=proc.proc.pid,  # its own session: the group id is its pid
            )
        )
    finally:
        proc.stop()
    return {"startup_s": startup_s, "points": points}


def run_engine(bench: Bench, repeat: int, image_offset: int) -> dict[str, Any]:
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
    return result


def run_all(bench: Bench) -> list[dict[str, Any]]:
    runs = []
    for repeat in range(bench.repeats):
        image_offset = REPEAT_STRIDE * (repeat + 1)  # fresh images in every repeat
        order = SYSTEMS[repeat % len(SYSTEMS) :] + SYSTEMS[: repeat % len(SYSTEMS)]
        for system in order:
            log.info("repeat %d: %s", repeat + 1, system)
            if system == "engine":
                result = run_engine(bench, repeat, image_offset)
            else:
                result = run_server(system, bench, repeat, image_offset)
            runs.append({"system": system, "repeat": repeat, **result})
            for p in result["points"]:
                log.info(
                    "  c=%d: %.1f req/s, e2e p50 %.0f ms (others took %.0f%% CPU; attempt %d)",
                    *(p["concurrency"], p["req_per_s"], p["e2e_p50_ms"]),
                    *(100 * p["others_cpu_share"], p["attempts"]),
                )
    return runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split(".")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests-per-user", type=int, default=16, help="requests per point / users")
    p.add_argument("--min-requests", type=int, default=64, help="fewest requests in a point")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--stream-interval", type=int, default=1, help="tokens per streamed event, all systems"
    )
    p.add_argument("--warmup", type=int, default=32, help="requests before measuring")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument(
        "--max-noise", type=float, default=0.15, help="share of CPUs others may take in a point"
    )
    p.add_argument("--attempts", type=int, default=2, help="tries per point while too noisy")
    p.add_argument(
        "--quiet-wait", type=float, default=10, help="seconds to wait for quiet before a point"
    )
    p.add_argument(
        "--patience", type=float, default=600, help="seconds after which nothing waits or retries"
    )
    return p.parse_args(argv)


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
    points = plan_points(args.concurrency, args.requests_per_user, args.min_requests)
    bench = Bench(
        model_dir,
        points,
        args.repeats,
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
    )
    started = time.monotonic()
    runs = run_all(bench)
    summary = aggregate(runs)
    meta = {
        "model_dir": str(model_dir),
        "points": [vars(p) for p in points],
        "repeats": args.repeats,
        "max_tokens": args.max_tokens,
        "image_size": args.image_size,
        "stream_interval": args.stream_interval,
        "cpus": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
    }
    table = markdown(summary, meta)
    payload = {"meta": meta, "summary": summary, "runs": runs}
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"bench-{stamp}.md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
