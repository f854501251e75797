"""The batch workload of the benchmark: what a running batch costs interactive traffic, and how
fast a batch goes next to a client sending the same requests itself.

On one fresh server of ours (SQLite store in the run's log directory):
1. interactive chat latency, idle: --batch-probes requests one at a time (p50; measured again
   at the end, both halves in the idle p50, since a shared machine drifts over minutes);
2. a client sending the batch's faces requests itself, at each concurrency: the best req/s;
3. the same requests as a batch, alone: lines a second from creation to `completed`;
4. the interactive probes again while another such batch runs: p50 against the idle one.
Goals (issue 24): p50 while a batch runs ≤ 1.2 × idle; batch throughput ≥ 0.8 × the client's
best. Both ratios are printed with their parts; nothing here asserts them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from loadtests.bench.plan import Bench
from loadtests.bench.processes import Managed, free_port
from loadtests.bench.systems import facellm_command
from loadtests.images import face_data_urls

log = logging.getLogger("loadtests.bench")

FACES, CHAT = "/v1/faces/analyze", "/v1/chat/completions"
MAX_P50_RATIO, MIN_THROUGHPUT_RATIO = 1.2, 0.8
BATCH_TIMEOUT_S = 900


@dataclass(frozen=True)
class BatchPlan:
    lines: int = 200  # faces requests in each batch, and sent by the client at each concurrency
    probes: int = 30  # interactive requests for each p50
    concurrency: tuple[int, ...] = (1, 4, 8, 16)


def run_batch(bench: Bench, plan: BatchPlan) -> dict[str, Any]:
    """Start our server, measure, stop it: the workload's figures."""
    port = free_port()
    cmd, env, ready = facellm_command(bench, port)
    env["FACELLM_BATCH_DIR"] = str(bench.logs / "batch-store")
    proc = Managed(cmd, bench.logs / "batch-server.log", env)
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}{ready}")
        return asyncio.run(measure(f"http://127.0.0.1:{port}", plan, bench.max_tokens))
    finally:
        proc.stop()


async def measure(base: str, plan: BatchPlan, max_tokens: int) -> dict[str, Any]:
    images = face_data_urls(plan.lines, start=90_000)
    faces = [{"image": url, "attributes": ["age_group", "eyewear"]} for url in images]
    chat = {
        "messages": [{"role": "user", "content": "Describe the weather in one word."}],
        "max_tokens": max_tokens,
    }
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        idle = await probe(client, chat, plan.probes)
        best = {c: await client_rate(client, faces, c) for c in plan.concurrency}
        alone = await batch_rate(client, faces)
        busy, still_running, lines_meanwhile = await probe_during_batch(
            client, faces, chat, plan.probes
        )
        idle += await probe(client, chat, plan.probes)  # before and after: a shared machine drifts
    best_c = max(best, key=lambda c: best[c])
    return {
        "lines": plan.lines,
        "idle_p50_ms": statistics.median(idle),
        "busy_p50_ms": statistics.median(busy),
        "p50_ratio": statistics.median(busy) / statistics.median(idle),
        "probes_while_running": still_running,
        "lines_during_probes": lines_meanwhile,
        "client_req_per_s": best,
        "client_best_concurrency": best_c,
        "batch_lines_per_s": alone,
        "throughput_ratio": alone / best[best_c],
    }


async def probe(client: httpx.AsyncClient, body: dict[str, Any], count: int) -> list[float]:
    """Latencies (ms) of `count` interactive requests, one at a time."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        (await client.post(CHAT, json=body)).raise_for_status()
        times.append(1000 * (time.perf_counter() - start))
    return times


async def client_rate(client: httpx.AsyncClient, bodies: list[dict[str, Any]], c: int) -> float:
    """Requests a second when a client sends `bodies` itself, `c` at a time."""
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            (await client.post(FACES, json=queue.pop())).raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return len(bodies) / (time.perf_counter() - start)


async def submit(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> str:
    lines = [
        {"custom_id": f"b{i}", "method": "POST", "url": FACES, "body": body}
        for i, body in enumerate(bodies)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = await client.post(
        "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
    )
    uploaded.raise_for_status()
    created = await client.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": FACES,
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    return str(created.json()["id"])


async def status(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/batches/{batch_id}")
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


async def batch_rate(client: httpx.AsyncClient, bodies: list[dict[str, Any]]) -> float:
    """Lines a second of a batch of `bodies`, from its creation to `completed`."""
    start = time.perf_counter()
    batch_id = await submit(client, bodies)
    deadline = start + BATCH_TIMEOUT_S
    while (batch := await status(client, batch_id))["status"] != "completed":
        if batch["status"] in ("failed", "expired", "cancelled") or time.perf_counter() > deadline:
            raise RuntimeError(f"batch {batch_id} ended {batch['status']}")
        await asyncio.sleep(0.1)
    return len(bodies) / (time.perf_counter() - start)


async def probe_during_batch(
    client: httpx.AsyncClient,
    bodies: list[dict[str, Any]],
    chat: dict[str, Any],
    count: int,
) -> tuple[list[float], int, int]:
    """Interactive latencies while a batch runs, how many were sent while it still ran (a batch
    that finished first would flatter the figure), and the lines it finished meanwhile (batch
    lines yield to interactive traffic: under back-to-back requests, few or none)."""
    batch_id = await submit(client, bodies)
    deadline = time.perf_counter() + BATCH_TIMEOUT_S
    while (await status(client, batch_id))["status"] != "in_progress":
        if time.perf_counter() > deadline:
            raise RuntimeError(f"batch {batch_id} never started")
        await asyncio.sleep(0.05)
    before = (await status(client, batch_id))["request_counts"]["completed"]
    times = await probe(client, chat, count)
    after = await status(client, batch_id)
    await client.post(f"/v1/batches/{batch_id}/cancel")
    running = after["status"] == "in_progress"
    return times, count if running else 0, after["request_counts"]["completed"] - before


def markdown(result: dict[str, Any]) -> str:
    rates = ", ".join(f"c={c}: {r:.1f}" for c, r in result["client_req_per_s"].items())
    p50_ok = "met" if result["p50_ratio"] <= MAX_P50_RATIO else "NOT met"
    rate_ok = "met" if result["throughput_ratio"] >= MIN_THROUGHPUT_RATIO else "NOT met"
    return "\n".join(
        [
            "## Batch workload (faces lines at low priority)",
            "",
            f"- interactive chat p50: idle {result['idle_p50_ms']:.0f} ms, while a batch runs "
            f"{result['busy_p50_ms']:.0f} ms: ratio {result['p50_ratio']:.2f} "
            f"(goal ≤ {MAX_P50_RATIO}: {p50_ok}; {result['probes_while_running']} probes "
            f"sent while the batch still ran, {result['lines_during_probes']} lines finished "
            "meanwhile)",
            f"- client sending the {result['lines']} requests itself, req/s: {rates}",
            f"- the same as a batch, alone: {result['batch_lines_per_s']:.1f} lines/s: ratio "
            f"{result['throughput_ratio']:.2f} to the client's best "
            f"(goal ≥ {MIN_THROUGHPUT_RATIO}: {rate_ok})",
            "",
        ]
    )
