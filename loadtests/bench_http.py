"""The HTTP side of the benchmark: one aiohttp client, used identically for every server.

Each request is a streamed image chat completion, so the same request yields time to first
token (the first chunk that is not the opening role-only chunk), end-to-end time (to `[DONE]`),
and the token counts from the final usage chunk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from loadtests.bench_load import (
    PROMPT,
    RETRY_STRIDE,
    WARMUP_CONCURRENCY,
    WARMUP_FIRST_IMAGE,
    Point,
    Sample,
    closed_loop,
    run_point,
)
from loadtests.cpu import NoisePolicy
from loadtests.images import face_data_urls

TIMEOUT = aiohttp.ClientTimeout(total=120)


class RequestFailed(Exception):
    """A non-200 status, an in-stream error event, or a stream without usage."""


def chat_body(image_url: str, model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": PROMPT},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "top_p": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def stream_chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Sample:
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, int] = {}
    async with session.post(url, json=body) as resp:
        if resp.status != 200:
            raise RequestFailed(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for raw in resp.content:
            data = raw.decode().removeprefix("data:").strip()
            if not data or data == "[DONE]":
                continue
            event = json.loads(data)
            if "error" in event:
                raise RequestFailed(str(event["error"])[:200])
            choices = event.get("choices") or []
            if first is None and choices and "role" not in choices[0].get("delta", {}):
                first = time.perf_counter()
            usage = event.get("usage") or usage
    end = time.perf_counter()
    if not usage:
        raise RequestFailed("no usage in the stream")
    return Sample(
        ttft_s=(first or end) - start,
        e2e_s=end - start,
        tokens=usage["completion_tokens"],
        prompt_tokens=usage["prompt_tokens"],
    )


async def run_points(
    base_url: str,
    points: Sequence[Point],
    *,
    image_size: int,
    image_offset: int,
    max_tokens: int,
    warmup: int,
    noise: NoisePolicy,
    server_group: int,
    model: str = "demo",
) -> list[dict[str, Any]]:
    """Warm the server up, then run every point; one summary per point."""
    url = f"{base_url}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=max(p.concurrency for p in points) + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:

        async def send(image_url: str) -> Sample:
            return await stream_chat(session, url, chat_body(image_url, model, max_tokens))

        warm = face_data_urls(warmup, image_size, start=WARMUP_FIRST_IMAGE)
        await closed_loop(WARMUP_CONCURRENCY, warm, send)
        results = []
        for point in points:

            def images_for(attempt: int, point: Point = point) -> list[str]:
                first = image_offset + point.first_image + attempt * RETRY_STRIDE
                return face_data_urls(point.requests, image_size, first)

            results.append(await run_point(point, images_for, send, noise, server_group))
    return results
