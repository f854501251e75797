"""The HTTP side of the benchmark: one aiohttp client, used identically for every server.

Each request is a streamed image chat completion, so the same request yields time to first
token (the first chunk that is not the opening role-only chunk), end-to-end time (to `[DONE]`),
and the token counts from the final usage chunk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp

from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.load import PROMPT, Point, Sample, warm_up_and_run
from loadtests.images import face_data_urls

TIMEOUT = aiohttp.ClientTimeout(total=120)
JSON_HEADERS = {"Content-Type": "application/json"}


class RequestFailed(Exception):
    """A non-200 status, an in-stream error event, or a stream without usage."""


def chat_body(image_url: str, model: str, max_tokens: int) -> bytes:
    """The request, serialized before the clock starts (as the ceiling's images are decoded)."""
    body = {
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
    return json.dumps(body).encode()


def events(raw: bytes) -> Iterator[dict[str, Any]]:
    """The JSON events of an SSE body (`[DONE]` and blank lines skipped)."""
    for line in raw.split(b"\n"):
        data = line.removeprefix(b"data:").strip()
        if data and data != b"[DONE]":
            yield json.loads(data)


def has_token(event: dict[str, Any]) -> bool:
    """A chunk carrying generated text: not the opening role-only chunk, not the usage chunk."""
    choices = event.get("choices") or []
    return bool(choices) and "role" not in choices[0].get("delta", {})


async def stream_chat(session: aiohttp.ClientSession, url: str, body: bytes) -> Sample:
    """One streamed request. The client shares the CPUs with the server it measures, so it parses
    events only until the first token, then keeps bytes and parses once at the end."""
    start = time.perf_counter()
    first: float | None = None
    raw = bytearray()
    async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            raise RequestFailed(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        async for block in resp.content.iter_any():
            raw += block
            if first is None and any(map(has_token, events(raw[: raw.rfind(b"\n") + 1]))):
                first = time.perf_counter()
    end = time.perf_counter()
    usage: dict[str, int] = {}
    for event in events(bytes(raw)):
        if "error" in event:
            raise RequestFailed(str(event["error"])[:200])
        usage = event.get("usage") or usage
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

        async def send(body: bytes) -> Sample:
            return await stream_chat(session, url, body)

        def bodies(count: int, first: int) -> list[bytes]:
            urls = face_data_urls(count, image_size, first)
            return [chat_body(url, model, max_tokens) for url in urls]

        return await warm_up_and_run(
            points,
            bodies,
            send,
            warmup=warmup,
            image_offset=image_offset,
            noise=noise,
            system_group=server_group,
        )
