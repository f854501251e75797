"""`ImageLoader.load`: the one way a request's image becomes pixels.

Every image goes the same way: bytes (data URL, bare base64, or an allowed remote URL) → header
checked and decode planned for the image's use (`Need`) → pixels reserved from the process-wide
budget → decoded to that need → recorded for the access log (in the request's scope) as a digest
with sizes, never as bytes, base64 or URL. Small images stay on the event loop; the rest decode
in a worker thread. When the request ends first (another image failed, its deadline passed, its
client left), a decode waiting for the budget never starts, and a running one stops at its next
chunk of input and gives its pixels back.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec

import httpx
from PIL import Image

from server.context import current_request
from server.errors import Unavailable
from server.media.budget import PixelBudget
from server.media.decode import (
    Need,
    Planned,
    Size,
    base64_bytes,
    data_url_bytes,
    finish,
    open_image,
)
from server.media.policy import MediaPolicy, not_allowed
from server.media.remote import Resolver, fetch, system_resolver
from server.metrics import Metrics

# Up to these, an image decodes on the event loop (≈ 1 ms at most). A thread hop costs more than
# it saves on small images: under load the thread waits for the GIL (measured at 8–32 concurrent
# requests: p50 ≈ 4 ms, p90 ≈ 10 ms) to do ≈ 0.3 ms of work on a 256² JPEG. Small means few
# encoded bytes *and* few pixels to decode, since a tiny PNG can unpack to megapixels.
INLINE_DECODE_BYTES = 96 * 1024
INLINE_DECODE_PIXELS = 512 * 512
_URL_SCHEMES = ("data:", "http:", "https:", "file:", "ftp:")
P = ParamSpec("P")


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # upright RGB, at the size its use needs
    original: Size  # the upright size the client sent, for coordinates in responses


@dataclass
class ImageLoader:
    policy: MediaPolicy
    metrics: Metrics
    budget: PixelBudget
    wait_timeout_s: float  # longest wait for room in the budget: the request's deadline
    client: httpx.AsyncClient | None = None
    resolver: Resolver = system_resolver

    async def load(
        self,
        source: str,
        param: str,
        need: Need,
        *,
        raw_base64: bool = False,
        log: list[dict[str, object]] | None = None,
    ) -> LoadedImage:
        """A URL (`data:`, or http(s) when allowed) — or, with `raw_base64`, bare base64 too.
        The image is recorded for the request's access-log line in `log`, else in the scope of
        the request being served (`server/context.py`)."""
        start = time.perf_counter()
        data = await self._bytes(source, param, raw_base64)
        planned = open_image(data, self.policy, need, param)
        image = await self._decode(planned, len(data), param)
        seconds = time.perf_counter() - start
        self.metrics.image_decode.observe(seconds)
        if log is None and (scope := current_request()) is not None:
            log = scope.images
        if log is not None:
            log.append(
                {
                    "sha256_16": _digest(source),  # ≈ 20 µs for a typical image: not worth a thread
                    "chars": len(source),
                    "width": planned.original[0],
                    "height": planned.original[1],
                    "held": f"{image.width}x{image.height}",
                    "decode_ms": round(seconds * 1000, 2),
                }
            )
        return LoadedImage(image, planned.original)

    async def _bytes(self, source: str, param: str, raw_base64: bool) -> bytes:
        scheme = source[:16].partition(":")[0].lower()
        if raw_base64 and not source[:8].lower().startswith(_URL_SCHEMES):
            return await _maybe_in_thread(len(source), base64_bytes, source, self.policy, param)
        if scheme == "data":
            return await _maybe_in_thread(len(source), data_url_bytes, source, self.policy, param)
        if scheme not in ("http", "https"):
            raise not_allowed(
                "Only data: image URLs (and http(s) URLs when enabled) are accepted.", param
            )
        if not self.policy.allow_remote_images:
            raise not_allowed(
                "Remote image URLs are disabled on this server; send the image inline as a data "
                "URL (data:image/jpeg;base64,...).",
                param,
            )
        return await fetch(source, self.policy, self.client, self.resolver, param)

    async def _decode(self, planned: Planned, encoded_bytes: int, param: str) -> Image.Image:
        """Decode under a budget reservation that lasts exactly as long as the decode. If the
        caller goes away mid-decode, the decode is told to stop (at its next chunk of input),
        and the reservation is released when its thread is done."""
        try:
            amount = await self.budget.acquire(planned.pixels, self.wait_timeout_s)
        except TimeoutError:
            raise Unavailable(
                "The server is busy decoding other images; retry shortly.",
                code="image_decode_busy",
                headers={"Retry-After": "1"},
            ) from None
        if encoded_bytes <= INLINE_DECODE_BYTES and planned.pixels <= INLINE_DECODE_PIXELS:
            try:
                return finish(planned, param)
            finally:
                self.budget.release(amount)
        job = asyncio.get_running_loop().run_in_executor(None, finish, planned, param)

        def done(job: asyncio.Future[Image.Image]) -> None:
            self.budget.release(amount)
            if not job.cancelled():
                job.exception()  # retrieved here too, in case the caller stopped waiting

        job.add_done_callback(done)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            planned.cancel()  # a queued decode then never starts; a running one stops soon
            raise


async def _maybe_in_thread(
    size: int, fn: Callable[P, bytes], *args: P.args, **kwargs: P.kwargs
) -> bytes:
    if size <= INLINE_DECODE_BYTES:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]
