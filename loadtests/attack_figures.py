"""The figures of issue 22's attacks, one at a time, against a live server:

    python -m loadtests.attack_figures --host http://127.0.0.1:8000 [--pid PID] [--seconds 20]

For each attack (CRLF tricklers filling connections, trailer floods, JPEG scan bombs) run alone
for `--seconds`, it reports /health's p99 (probed every 0.1 s, as a good client), the server
process's resident memory growth, and for scan bombs the server's CPU per refusal. Without
`--pid`, the process listening on the URL's port is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from collections.abc import Awaitable, Callable

import httpx
import psutil

from loadtests.hostile import Target, chat_body
from loadtests.hostile_bytes import crlf_trickle, trailer_flood
from loadtests.images import scan_bomb
from loadtests.rss import listening_pid
from loadtests.soak import percentile

PROBE_EVERY_S = 0.1
MB = 1_000_000


async def _probe(client: httpx.AsyncClient, until: float, latencies: list[float]) -> None:
    while time.monotonic() < until:
        start = time.monotonic()
        response = await client.get("/health")
        if response.status_code == 200:
            latencies.append(time.monotonic() - start)
        await asyncio.sleep(PROBE_EVERY_S)


async def _repeat(attack: Callable[[], Awaitable[str]], until: float, outcomes: list[str]) -> None:
    while time.monotonic() < until:
        outcomes.append(await attack())


async def measure(name: str, base_url: str, process: psutil.Process, seconds: float) -> str:
    target = Target.parse(base_url)
    bomb = chat_body(["data:image/jpeg;base64," + base64.b64encode(scan_bomb()).decode()])
    attacks: dict[str, tuple[int, Callable[[], Awaitable[str]]]] = {
        "crlf_trickle": (16, lambda: crlf_trickle(target, seconds)),
        "trailer_flood": (4, lambda: trailer_flood(target, seconds)),
    }
    latencies: list[float] = []
    outcomes: list[str] = []
    rss0, cpu0 = process.memory_info().rss, sum(process.cpu_times()[:2])
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as client:
        if name == "scan_bomb":
            lanes = [_repeat(lambda: _post(client, bomb), until, outcomes) for _ in range(2)]
        else:
            count, attack = attacks[name]
            lanes = [_repeat(attack, until, outcomes) for _ in range(count)]
        await asyncio.gather(_probe(client, until, latencies), *lanes)
    grown = (process.memory_info().rss - rss0) / MB
    cpu = sum(process.cpu_times()[:2]) - cpu0
    p99 = percentile(latencies, 99)
    line = (
        f"{name}: {len(outcomes)} attempts {sorted(set(outcomes))}, /health p99 "
        f"{'n/a' if p99 is None else f'{p99 * 1000:.1f} ms'} ({len(latencies)} probes), "
        f"RSS {grown:+.1f} MB"
    )
    if name == "scan_bomb" and outcomes:
        line += f", server CPU {cpu / len(outcomes) * 1000:.1f} ms a refusal (request included)"
    return line


async def _post(client: httpx.AsyncClient, body: dict[str, object]) -> str:
    return str((await client.post("/v1/chat/completions", json=body)).status_code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    pid = args.pid or listening_pid(args.host)
    if pid is None:
        parser.error("no --pid, and no process found listening on the URL's port")
    process = psutil.Process(pid)
    for name in ("crlf_trickle", "trailer_flood", "scan_bomb"):
        print(asyncio.run(measure(name, args.host, process, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
