"""Side-by-side benchmark: engine-only ceiling, HTTP floor, this server, vLLM's OpenAI server.

    python -m loadtests.bench [--workload small photo faces] [--concurrency 1 8 32] [--repeats 3]
    python -m loadtests.bench --workload photo    # the phone-photo chats alone (≈ 3–4 min)
    python -m loadtests.bench --workload faces    # face analysis alone, one fresh server (≈ 2 min)

Same machine, same demo model, same engine settings, same requests (one distinct image each).
Four workloads, all by default (`--workload`):
- small: chat over a distinct --image-size² JPEG per request, on all four systems;
- photo (`loadtests.bench.photo`): chat over a distinct 4032×3024 phone photo (≈ 2 MB JPEG) per
  request at --photo-concurrency, on this server and vLLM's;
- faces (`loadtests.bench.faces`): `/v1/faces/analyze` over 12-MP photos with one face and with
  two, on this server only: p50/p95 at concurrency 1, plain and `confidence: true` interleaved,
  faces/s at --face-concurrency, output tokens per face, detector ms per photo.
- batch (`loadtests.bench.batch`): on a server of its own, interactive chat p50 idle and while a
  faces batch runs, and the batch's lines a second against a client sending the same requests.
Photo and faces run on the servers the small workload started, after it, so they add no server
starts; alone, photo repeats twice by default since the starts take most of its time, and faces
runs once (a quick re-measure; --repeats for more).
The HTTP floor (`loadtests.bench.floor`) is the least any HTTP front can do around the same engine:
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
import json
import logging
import sys
import time
from pathlib import Path

from loadtests.bench.batch import BatchPlan, run_batch
from loadtests.bench.batch import markdown as batch_markdown
from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.faces import FacesPlan
from loadtests.bench.load import plan_points
from loadtests.bench.orchestrator import bench_meta, run_all
from loadtests.bench.photo import plan_photo
from loadtests.bench.plan import WORKLOADS, Bench
from loadtests.bench.processes import ROOT
from loadtests.bench.report import report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.split(".")[0])
    p.add_argument(
        "--workload",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS),
        help="small: a distinct --image-size² JPEG per chat request, all four systems; "
        "photo: chat over a distinct 4032×3024 phone photo per request, this server and vLLM's; "
        "faces: /v1/faces/analyze over 12-MP photos of one and two faces, this server; "
        "batch: interactive chat p50 idle vs while a faces batch runs, and batch vs client "
        "throughput (default: all four)",
    )
    p.add_argument("--batch-lines", type=int, default=200, help="faces lines in each batch")
    p.add_argument("--batch-probes", type=int, default=30, help="interactive requests per p50")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--repeats", type=int, help="default: 3 with small; else 2 with photo; faces alone: 1"
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
    p.add_argument("--photo-warmup", type=int, default=2, help="chat photos sent unmeasured")
    p.add_argument(
        "--face-requests",
        type=int,
        default=16,
        help="face analyses per photo kind at concurrency 1, half of them with confidence",
    )
    p.add_argument("--face-concurrency", type=int, default=8, help="of the faces/s point")
    p.add_argument(
        "--face-throughput-requests", type=int, default=16, help="per photo kind, faces/s point"
    )
    p.add_argument(
        "--face-warmup", type=int, default=2, help="photos of each kind sent both ways, unmeasured"
    )
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
    if "small" in args.workload:
        return 3
    return 2 if "photo" in args.workload else 1


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
        photo=plan_photo(args.photo_concurrency, args.photo_requests, args.photo_warmup),
        faces=FacesPlan(
            args.face_requests,
            args.face_concurrency,
            args.face_throughput_requests,
            args.face_warmup,
        ),
        api_processes=args.api_processes,
    )


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
    runs = run_all(bench) if bench.systems() else []  # the batch workload alone: none
    payload, text = (
        report(runs, bench_meta(bench, time.monotonic() - started)) if runs else ({}, "")
    )
    if "batch" in bench.workloads:
        batch = run_batch(bench, BatchPlan(lines=args.batch_lines, probes=args.batch_probes))
        payload["batch"] = batch
        text += batch_markdown(batch)
    (args.out / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / f"bench-{stamp}.md").write_text(text)
    sys.stdout.write(text)
    return 0
