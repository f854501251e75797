"""A burst of concurrent chat requests carrying huge transparent PNGs, with the server's memory
sampled while it lasts.

Why: a 5000×5000 fully transparent PNG is ≈ 100 KB on the wire but 100 MB of RGBA once decoded,
so a few dozen such requests at once are a cheap way to push a server towards its memory limit,
and what the allocator keeps afterwards shows up as resident memory that never comes back. This
measures both: the resident memory (RSS) of the server's whole process tree (API process, vLLM
EngineCore, workers) before, at its peak during, and a little after the burst.

    python -m loadtests.image_burst --host http://127.0.0.1:8000 --requests 16 --images 4 \
        --side 5000 [--pid PID]

Without `--pid`, the process listening on the URL's port is measured (if it can be found).
RSS is summed over processes, so pages they share are counted once per process: compare growth,
not absolute totals (`loadtests/rss.py`). `run_burst` is the same thing for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from loadtests.rss import RssSampler, listening_pid, settled_rss, tree_rss

CHAT_PATH = "/v1/chat/completions"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MiB = 1024 * 1024


# --- payload -----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class TransparentPngs:
    """side×side RGBA PNGs, fully transparent but for one pixel that makes each variant distinct.

    Compressing 100 MB of zero rows costs about a second, too much to repeat for 128 images, and
    identical images would let any image or processor cache flatter the server. So the zlib
    stream of every row but the last is built once and each variant only forks the compressor
    (`compressobj.copy()`) to add its own last row: one opaque pixel whose colour is the variant
    number. The pixel is opaque so that the images still differ once composited onto a
    background; the PNG keeps its alpha channel, so the decoder does the RGBA work regardless.
    """

    def __init__(self, side: int) -> None:
        if not 1 <= side <= 20_000:
            raise ValueError("side must be 1…20000")
        self.side = side
        self._row = b"\x00" * (1 + 4 * side)  # filter type 0, then side transparent pixels
        self._compressor = zlib.compressobj(9)
        head = [self._compressor.compress(self._row) for _ in range(side - 1)]
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
        self._prefix = b"".join(head)
        self._header = PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)

    def png(self, variant: int) -> bytes:
        """The variant-th image (same variant, same bytes)."""
        colour = struct.pack(">I", variant & 0xFFFFFF)[1:] + b"\xff"
        last = b"\x00" + colour + self._row[5:]
        compressor = self._compressor.copy()
        idat = self._prefix + compressor.compress(last) + compressor.flush()
        return self._header + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def chat_body(data_urls: list[str], max_tokens: int = 4) -> bytes:
    """An OpenAI chat completion request carrying the given images after a short prompt."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "describe"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in data_urls]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    return json.dumps(body).encode()


def burst_bodies(requests: int, images: int, side: int) -> tuple[list[bytes], int]:
    """One JSON body per request, serialised before the clock starts, all images distinct;
    and the size of one PNG."""
    pngs = TransparentPngs(side)
    bodies = []
    for r in range(requests):
        urls = [
            "data:image/png;base64," + base64.b64encode(pngs.png(r * images + i)).decode()
            for i in range(images)
        ]
        bodies.append(chat_body(urls))
    return bodies, len(pngs.png(0))


# --- the burst ---------------------------------------------------------------------------------


def is_error_envelope(body: bytes) -> bool:
    """`{"error": {"message": str, "type": str, ...}}`, the OpenAI error shape."""
    try:
        error = json.loads(body)["error"]
        return isinstance(error["message"], str) and isinstance(error["type"], str)
    except (ValueError, KeyError, TypeError):
        return False


@dataclass
class Outcome:
    status: str  # the HTTP status, or the transport error's class name
    seconds: float
    envelope_ok: bool  # a 200, or a non-200 in the OpenAI error envelope


async def _send(client: httpx.AsyncClient, body: bytes) -> Outcome:
    start = time.perf_counter()
    try:
        response = await client.post(
            CHAT_PATH, content=body, headers={"Content-Type": "application/json"}
        )
    except httpx.HTTPError as exc:
        return Outcome(type(exc).__name__, time.perf_counter() - start, False)
    ok = response.status_code == 200 or is_error_envelope(response.content)
    return Outcome(str(response.status_code), time.perf_counter() - start, ok)


async def _send_all(
    base_url: str, bodies: list[bytes], timeout_s: float, abort: threading.Event
) -> list[Outcome]:
    """All bodies at once on their own connections; whatever has not answered when `timeout_s`
    is up or `abort` is set counts as `timeout` / `aborted`."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=timeout_s, limits=limits, trust_env=False
    ) as client:
        tasks = {asyncio.create_task(_send(client, body)) for body in bodies}
        deadline = time.monotonic() + timeout_s
        pending = tasks
        while pending and time.monotonic() < deadline and not abort.is_set():
            wait_s = min(0.1, max(0.0, deadline - time.monotonic()))
            _, pending = await asyncio.wait(pending, timeout=wait_s)
        for task in pending:
            task.cancel()
        why = "aborted" if abort.is_set() else "timeout"
        outcomes = [t.result() for t in tasks if t not in pending]
        return outcomes + [Outcome(why, timeout_s, False) for _ in pending]


@dataclass
class BurstResult:
    requests: int
    images: int
    side: int
    png_bytes: int
    wall_s: float
    statuses: dict[str, int]
    bad_envelopes: int
    latency_max_s: float
    pid: int | None = None
    baseline_rss: int = 0
    peak_rss: int = 0
    after_rss: int = 0
    samples: int = 0
    peak_rss_by_process: dict[str, int] = field(default_factory=dict)
    after_rss_by_process: dict[str, int] = field(default_factory=dict)

    @property
    def peak_growth(self) -> int:
        return self.peak_rss - self.baseline_rss

    @property
    def after_growth(self) -> int:
        return self.after_rss - self.baseline_rss

    def summary(self) -> str:
        lines = [
            f"{self.requests} requests × {self.images} images of {self.side}² "
            f"({self.png_bytes / 1024:.0f} KB PNG each): {self.wall_s:.1f} s, "
            f"statuses {dict(sorted(self.statuses.items()))}, bad envelopes {self.bad_envelopes}",
        ]
        if self.pid is not None:
            lines.append(
                f"tree RSS: baseline {self.baseline_rss / MiB:.0f} MiB, "
                f"peak +{self.peak_growth / MiB:.0f} MiB, "
                f"after +{self.after_growth / MiB:.0f} MiB ({self.samples} samples)"
            )
            for name, rss in self.peak_rss_by_process.items():
                after = self.after_rss_by_process.get(name, 0)
                lines.append(f"  {name}: peak {rss / MiB:.0f} MiB, after {after / MiB:.0f} MiB")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_growth": self.peak_growth, "after_growth": self.after_growth}


def run_burst(
    base_url: str,
    *,
    requests: int = 16,
    images: int = 4,
    side: int = 5000,
    pid: int | None = None,
    timeout_s: float = 300.0,
    settle_s: float = 2.0,
    interval_s: float = 0.05,
    min_available: int = 2 * 1024 * MiB,
) -> BurstResult:
    """Send `requests` chat completions at once, each with `images` distinct side×side
    transparent PNGs, and measure the tree of `pid` (if given): baseline before, peak during,
    and `settle_s` after the last response. The burst is bounded by `timeout_s` in total, and
    given up (statuses `aborted`) if the machine's available memory falls under
    `min_available` (then the server may still be busy: the caller decides whether to kill it).
    """
    if not 1 <= requests <= 1024 or not 1 <= images <= 64:
        raise ValueError("requests must be 1…1024 and images 1…64")
    bodies, png_bytes = burst_bodies(requests, images, side)
    max_samples = int(timeout_s / interval_s) + 1000
    sampler = RssSampler(pid, interval_s, max_samples, min_available) if pid else None
    abort = sampler.low_memory if sampler else threading.Event()
    baseline = settled_rss(sampler, 0.0) if sampler else 0
    if sampler:
        sampler.start()
    start = time.perf_counter()
    try:
        outcomes = asyncio.run(_send_all(base_url, bodies, timeout_s, abort))
    finally:
        wall = time.perf_counter() - start
        if sampler:
            _finish_sampling(sampler, 0.0 if abort.is_set() else settle_s)
    result = BurstResult(
        requests=requests,
        images=images,
        side=side,
        png_bytes=png_bytes,
        wall_s=wall,
        statuses=dict(Counter(o.status for o in outcomes)),
        bad_envelopes=sum(not o.envelope_ok for o in outcomes),
        latency_max_s=max(o.seconds for o in outcomes),
        pid=pid,
    )
    if sampler:
        result.baseline_rss = baseline
        result.peak_rss = max(sampler.peak(), baseline)
        result.after_rss = sampler.after_total
        result.samples = len(sampler.samples)
        result.peak_rss_by_process = sampler.labelled(sampler.peak_by_pid)
        result.after_rss_by_process = sampler.labelled(sampler.after_by_pid)
    return result


def _finish_sampling(sampler: RssSampler, settle_s: float) -> None:
    """Stop sampling the burst, then read the settled RSS (in total and by process)."""
    sampler.stop()
    sampler.after_total = settled_rss(sampler, settle_s)
    sampler.after_by_pid = tree_rss(sampler.root)


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--requests", type=int, default=16, help="concurrent chat requests")
    parser.add_argument("--images", type=int, default=4, help="images per request")
    parser.add_argument("--side", type=int, default=5000, help="image side, pixels")
    parser.add_argument("--pid", type=int, help="server pid (default: whoever listens on --host)")
    parser.add_argument("--timeout", type=float, default=300.0, help="total time limit, seconds")
    parser.add_argument("--settle", type=float, default=2.0, help="wait before the after RSS")
    parser.add_argument(
        "--min-available-gib",
        type=float,
        default=2.0,
        help="give up if the machine's available memory falls under this",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    pid = args.pid or listening_pid(args.host)
    if pid is None:
        print("server pid not found: RSS is not measured (pass --pid)", file=sys.stderr)
    result = run_burst(
        args.host,
        requests=args.requests,
        images=args.images,
        side=args.side,
        pid=pid,
        timeout_s=args.timeout,
        settle_s=args.settle,
        min_available=int(args.min_available_gib * 1024 * MiB),
    )
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
