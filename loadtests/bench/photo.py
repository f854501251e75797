"""The photo workload of the benchmark: 12-megapixel phone photos (`loadtests.photos`), ≈ 2 MB each.

Chat completions over photos — the very request body of the small workload, only the image
differs — at each concurrency, against this server and vLLM's, on a server that is already up
(the one the small-image workload measured, when both run). Face analysis over photos is a
workload of its own (`loadtests.bench.faces`).

A 12 MP JPEG takes ≈ 0.2 s to make, so only the photos a run sends are made, before the clock, and
each batch is kept for the next system of the same repeat, which sends the very same bytes.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp

from loadtests.bench.client import TIMEOUT, chat_body, stream_chat
from loadtests.bench.cpu import NoisePolicy
from loadtests.bench.load import (
    WARMUP_FIRST_IMAGE,
    Point,
    Sample,
    closed_loop,
    plan_points,
    point_items,
    run_point,
)
from loadtests.photos import photo_data_urls

log = logging.getLogger("loadtests.bench")

PER_USER = 2  # chat requests per concurrent user; --photo-requests is the floor
# Batches kept of each kind: a repeat's warm-up and points (and a retry), so the second system of
# a repeat finds them all; older ones go (≈ 2.7 MB a request body).
_KEPT_BATCHES = 4


@dataclass(frozen=True)
class PhotoPlan:
    """What the photo workload sends to each server, in each repeat."""

    chat_points: tuple[Point, ...]
    warmup: int  # chat requests before measuring

    def meta(self) -> dict[str, Any]:
        return {"chat_points": [vars(p) for p in self.chat_points], "warmup": self.warmup}


def plan_photo(concurrencies: Sequence[int], min_requests: int, warmup: int) -> PhotoPlan:
    """Chat points of max(min_requests, PER_USER × concurrency) photos each."""
    points = plan_points(concurrencies, PER_USER, min_requests)
    return PhotoPlan(tuple(points), warmup)


@lru_cache(maxsize=_KEPT_BATCHES)
def chat_bodies(count: int, first: int, model: str, max_tokens: int) -> tuple[bytes, ...]:
    urls = photo_data_urls("chat", count, first)
    return tuple(chat_body(url, model, max_tokens) for url in urls)


def _body_mb(bodies: Sequence[bytes]) -> float:
    return statistics.fmean(len(b) for b in bodies) / 1e6 if bodies else 0.0


Send = Callable[[bytes], Awaitable[Sample]]
ItemsFor = Callable[[int], Sequence[bytes]]


async def _warm_up(bodies: Sequence[bytes], send: Send, what: str) -> None:
    """A few photos at once first: the first large images pay one-time costs points should not."""
    if not bodies:
        return
    _, errors, _ = await closed_loop(len(bodies), bodies, send)
    if errors:
        log.warning("  photo %s warm-up: %d errors, first: %s", what, len(errors), errors[0])


async def _measure(
    point: Point, items_for: ItemsFor, send: Send, noise: NoisePolicy, server_group: int
) -> dict[str, Any]:
    """`run_point`, plus the mean request body of the attempt that counted (a cache hit)."""
    result = await run_point(point, items_for, send, noise, server_group)
    result["body_mb"] = _body_mb(items_for(result["attempts"] - 1))
    return result


async def run_photo(
    base_url: str,
    plan: PhotoPlan,
    *,
    image_offset: int,
    max_tokens: int,
    noise: NoisePolicy,
    server_group: int,
    model: str = "demo",
) -> dict[str, list[dict[str, Any]]]:
    """Chat points over photos: {"photo_chat": points}."""
    chat_url = f"{base_url}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=max(p.concurrency for p in plan.chat_points) + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:

        async def send_chat(body: bytes) -> Sample:
            return await stream_chat(session, chat_url, body)

        def photo_chats(count: int, first: int) -> Sequence[bytes]:
            return chat_bodies(count, first, model, max_tokens)

        await _warm_up(photo_chats(plan.warmup, WARMUP_FIRST_IMAGE), send_chat, "chat")
        chat = [
            await _measure(
                point, point_items(point, image_offset, photo_chats), send_chat, noise, server_group
            )
            for point in plan.chat_points
        ]
    return {"photo_chat": chat}
