"""How the HTTP front scales with API processes.

`--engine fake` (the default) takes the engine out: N processes of the real server
(`server.serving.serve_app`), each on its own socket in the port's SO_REUSEPORT group as
`FACELLM_API_PROCESSES` runs them, over the fake engine (it answers at once), so all a request
costs is the front's own work: the body, base64, the image decode, the answer. `--engine vllm`
runs `python -m server` with FACELLM_API_PROCESSES=N on the demo model instead: the whole server.
Closed-loop clients send image chats for a while at each N (each N `--repeats` times,
interleaved); printed: req/s per run, and each N's median against the first N's. The load
generator shares the machine's cores (its CPU time is printed too).

    python -m loadtests.bench.front --api-processes 1 2 --duration 20 --concurrency 32
    python -m loadtests.bench.front --engine vllm --repeats 2 --duration 30 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from loadtests.bench.client import JSON_HEADERS, chat_body
from loadtests.images import face_data_urls

READY_TIMEOUT_S = 60.0
IMAGES = 64  # distinct 256² JPEGs, sent round robin


def serve_fake(port: int, cache_dir: str, listener: socket.socket) -> None:
    """One API process over the fake engine (spawned)."""
    from model.fake_engine import FakeEngine
    from server.config import Settings
    from server.serving import serve_app

    settings = Settings(port=port, model_cache_dir=Path(cache_dir), log_level="warning")
    raise SystemExit(serve_app(settings, FakeEngine, sockets=[listener]))


def start_group(count: int, port: int, cache_dir: str) -> list[multiprocessing.process.BaseProcess]:
    context = multiprocessing.get_context("spawn")
    processes = []
    for _ in range(count):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1024)
        process = context.Process(target=serve_fake, args=(port, cache_dir, listener))
        process.start()
        listener.close()
        processes.append(process)
    return processes


async def wait_ready(base_url: str, count: int) -> None:
    """Until /ready has answered 200 many times in a row (connections spread over processes)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    streak = 0
    async with aiohttp.ClientSession() as session:
        while streak < 8 * count:
            if time.monotonic() > deadline:
                raise TimeoutError("the API processes did not get ready")
            try:
                async with session.get(f"{base_url}/ready", headers={"Connection": "close"}) as r:
                    streak = streak + 1 if r.status == 200 else 0
            except aiohttp.ClientError:
                streak = 0
                await asyncio.sleep(0.2)


async def load(base_url: str, bodies: Sequence[bytes], concurrency: int, seconds: float) -> int:
    """Closed loop: `concurrency` clients, each sending the next body when answered."""
    done = 0
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(first: int) -> None:
            nonlocal done
            i = first
            while time.monotonic() < stop:
                body = bodies[i % len(bodies)]
                url = f"{base_url}/v1/chat/completions"
                async with session.post(url, data=body, headers=JSON_HEADERS) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}")
                done += 1
                i += concurrency

        await asyncio.gather(*(client(k) for k in range(concurrency)))
    return done


def measure(count: int, args: argparse.Namespace, bodies: Sequence[bytes]) -> dict[str, float]:
    base_url = f"http://127.0.0.1:{args.port}"
    stop = start_group(count, args.port, args.cache_dir) if args.engine == "fake" else None
    server = None if stop is not None else start_server(count, args.port)
    try:
        asyncio.run(wait_ready(base_url, count))
        asyncio.run(load(base_url, bodies, args.concurrency, min(args.duration, 5.0)))  # warm-up
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        served = asyncio.run(load(base_url, bodies, args.concurrency, args.duration))
        wall = time.monotonic() - started
        used = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = (used.ru_utime - cpu.ru_utime) + (used.ru_stime - cpu.ru_stime)
    finally:
        for process in stop or []:
            process.terminate()
        for process in stop or []:
            process.join(10)
        if server is not None:
            server.terminate()
            server.wait(60)
    return {
        "api_processes": count,
        "requests": served,
        "req_per_s": served / wall,
        "client_cpu_ms_per_request": 1000 * client_cpu / max(served, 1),
    }


def start_server(count: int, port: int) -> subprocess.Popen[bytes]:
    """The whole server on the demo model, with `count` API processes."""
    env = {
        **os.environ,
        "FACELLM_API_PROCESSES": str(count),
        "FACELLM_PORT": str(port),
        "FACELLM_ENFORCE_EAGER": "true",
        "FACELLM_MAX_MODEL_LEN": "2048",
        "FACELLM_LOG_LEVEL": "warning",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_HOST_IP": "127.0.0.1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engine", choices=["fake", "vllm"], default="fake")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each N, interleaved")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=8131)
    parser.add_argument("--cache-dir", default="/tmp/facellm-bench-front")
    args = parser.parse_args(argv)
    bodies = [chat_body(url, "demo", 8) for url in face_data_urls(IMAGES)]
    runs = [measure(n, args, bodies) for _ in range(args.repeats) for n in args.api_processes]
    medians = {
        n: statistics.median(r["req_per_s"] for r in runs if r["api_processes"] == n)
        for n in args.api_processes
    }
    first = medians[args.api_processes[0]]
    summary = {n: {"median_req_per_s": m, "vs_first": m / first} for n, m in medians.items()}
    print(json.dumps({"engine": args.engine, "runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
