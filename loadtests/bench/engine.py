"""The engine-only ceiling: `VLLMEngine` in this process, fed decoded images, no HTTP at all.

Run by `loadtests.bench` as its own subprocess, so the engine shares no interpreter with the
benchmark's HTTP client:

    python -m loadtests.bench.engine --model-dir DIR --points 1:64:0,8:256:64 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.engine_flags import add_engine_args, engine_config
from loadtests.bench.load import PROMPT, Point, Sample, warm_up_and_run
from loadtests.images import face_data_urls
from model.engine import ChatMessage, GenerationRequest, SamplingOptions
from model.vllm_engine import VLLMEngine


def decoded_images(count: int, size: int, start: int) -> list[Image.Image]:
    """The very JPEGs the HTTP systems receive, decoded here before the clock starts."""
    urls = face_data_urls(count, size, start=start)
    images = []
    for url in urls:
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        image.load()
        images.append(image)
    return images


async def send(engine: VLLMEngine, image: Image.Image, max_tokens: int) -> Sample:
    request = GenerationRequest(
        request_id=f"bench-{uuid.uuid4().hex}",
        messages=(ChatMessage(role="user", parts=(image, PROMPT)),),
        sampling=SamplingOptions(max_tokens=max_tokens, temperature=1.0, top_p=1.0),
    )
    start = time.perf_counter()
    first: float | None = None
    tokens = prompt_tokens = 0
    async for chunk in engine.generate(request):
        if first is None and chunk.completion_tokens > 0:
            first = time.perf_counter()
        tokens, prompt_tokens = chunk.completion_tokens, chunk.prompt_tokens
    end = time.perf_counter()
    return Sample(
        ttft_s=(first or end) - start, e2e_s=end - start, tokens=tokens, prompt_tokens=prompt_tokens
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    engine = VLLMEngine(engine_config(args))
    started = time.perf_counter()
    await engine.start()
    startup_s = time.perf_counter() - started
    try:
        noise = NoisePolicy(
            own_groups=frozenset({os.getpgrp()}),
            max_share=args.max_noise,
            attempts=args.attempts,
            quiet_wait_s=args.quiet_wait,
            deadline=args.deadline,
        )
        points = await warm_up_and_run(
            args.points,
            lambda count, first: decoded_images(count, args.image_size, first),
            lambda image: send(engine, image, args.max_tokens),
            warmup=args.warmup,
            image_offset=args.image_offset,
            noise=noise,
            system_group=os.getpgrp(),
        )
    finally:
        await engine.shutdown()
    return {"startup_s": startup_s, "points": points}


def parse_points(text: str) -> list[Point]:
    """`"1:64:0,8:256:64"` → concurrency:requests:first_image for each point."""
    return [Point(*(int(x) for x in item.split(":"))) for item in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench.engine")
    add_engine_args(p)
    p.add_argument("--points", type=parse_points, required=True)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--image-offset", type=int, default=0)
    p.add_argument("--warmup", type=int, default=32, help="requests before measuring")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-noise", type=float, default=0.15)
    p.add_argument("--attempts", type=int, default=2)
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--deadline", type=float, default=math.inf, help="epoch s: no retries after")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.write_text(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":  # vLLM starts EngineCore subprocesses that re-import the main module
    main()
