"""One benchmark run: every repeat, every system started afresh in a rotated order, each
workload run on it, then stopped (see loadtests/bench/cli.py for the whole story)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import replace
from typing import Any

from loadtests.bench.client import run_points
from loadtests.bench.faces import run_faces
from loadtests.bench.load import REPEAT_STRIDE
from loadtests.bench.photo import run_photo
from loadtests.bench.plan import FACES_SYSTEM, WORKLOAD_SYSTEMS, Bench
from loadtests.bench.processes import Managed, free_port
from loadtests.bench.systems import engine_command, server_command, system_env

log = logging.getLogger("loadtests.bench")

ENGINE_RUN_TIMEOUT_S = 600


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
    """The small workload, then the photo one, then faces, on a started server: {part: points}."""
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
            image_offset=image_offset,
            max_tokens=bench.max_tokens,
            noise=noise,
            server_group=group,
        )
    if "faces" in bench.workloads and system == FACES_SYSTEM:
        workloads |= await run_faces(
            base, bench.faces, image_offset=image_offset, noise=noise, server_group=group
        )
    return workloads


def run_engine(bench: Bench, repeat: int, image_offset: int) -> dict[str, Any]:
    """The ceiling, in its own process; the small workload only (it takes no HTTP)."""
    out = bench.logs / f"engine-{repeat}.json"
    proc = Managed(
        engine_command(bench, image_offset, out), bench.logs / f"engine-{repeat}.log", system_env()
    )
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
            *(_part(workload, p), p["concurrency"], p["req_per_s"], p["e2e_p50_ms"]),
            *(100 * p["others_cpu_share"], p["attempts"]),
        )


def _part(workload: str, point: dict[str, Any]) -> str:
    """The workload, and the photo kind of a faces point."""
    return f"{workload} ({point['kind']})" if "kind" in point else workload


def bench_meta(bench: Bench, wall_s: float) -> dict[str, Any]:
    return {
        "model_dir": str(bench.model_dir),
        "workloads": list(bench.workloads),
        "api_processes": bench.api_processes,
        "points": [vars(p) for p in bench.points],
        "photo": bench.photo.meta(),
        "faces": bench.faces.meta(),
        "repeats": bench.repeats,
        "max_tokens": bench.max_tokens,
        "image_size": bench.image_size,
        "stream_interval": bench.stream_interval,
        "cpus": os.cpu_count(),
        "wall_s": round(wall_s, 1),
    }
