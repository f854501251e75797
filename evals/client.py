"""HTTP plumbing every `facellm-eval` command shares: the client, its retries, the model probe,
images as `data:` URLs, and telling one request's failure from a server that is down.

Retries with backoff are the OpenAI client's own (429, 408, 409, 5xx, timeouts and lost
connections; `Retry-After` honoured), so every command retries the same way.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import openai
from PIL import Image
from tqdm import tqdm

MIME_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
PROBE_TIMEOUT_S = 10.0
#: This many 5xx answers in a row (after the client's retries) mean the server is up but broken.
MAX_SERVER_ERRORS_IN_ROW = 20

T = TypeVar("T")


class EvalError(RuntimeError):
    """The run cannot go on (server unreachable, model not served); the message says why."""


class ServerUnavailableError(EvalError):
    pass


def normalize_base_url(url: str) -> str:
    """Accept the server root or its `/v1` prefix."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def make_client(
    base_url: str, api_key: str, timeout_s: float, max_retries: int
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=normalize_base_url(base_url),
        api_key=api_key,
        max_retries=max_retries,
        timeout=timeout_s,
    )


def image_data_url(path: Path) -> str:
    """The file as a `data:` URL; formats the server does not take are re-encoded as PNG."""
    mime = MIME_TYPES.get(path.suffix.lower())
    if mime is not None:
        data = path.read_bytes()
    else:
        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").save(buffer, format="PNG")
        mime, data = "image/png", buffer.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def error_field(exc: openai.APIStatusError, name: str) -> Any:
    """A field of the server's error envelope (`message`, `param`, …), None when absent."""
    body = exc.body
    return body.get(name) if isinstance(body, dict) else None


def http_error(exc: openai.APIStatusError) -> str:
    return f"HTTP {exc.status_code}: {error_field(exc, 'message') or exc.message}"


async def resolve_model(client: openai.AsyncOpenAI, wanted: str | None, base_url: str) -> str:
    """Check the server answers and serves `wanted` (default: its first model)."""
    try:
        listed = await client.with_options(timeout=PROBE_TIMEOUT_S, max_retries=0).models.list()
    except openai.APIConnectionError as exc:
        raise ServerUnavailableError(f"cannot reach a FaceLLM server at {base_url}: {exc}") from exc
    except openai.APIStatusError as exc:
        raise EvalError(f"{base_url}/models refused the request: {http_error(exc)}") from exc
    served = [m.id for m in listed.data]
    if wanted is None:
        if not served:
            raise EvalError(f"{base_url} serves no model")
        return served[0]
    if wanted not in served:
        raise EvalError(f"{base_url} does not serve {wanted!r}; it serves {served}")
    return wanted


class ServerWatch:
    """Tells one request's failure (kept, the run goes on) from the server's (the run stops).

    A caller-side 4xx is the request's problem; `max_in_row` 5xx in a row, or a lost connection
    while the server no longer lists its models, are the server's. `out` is named in the message
    because what was saved there lets a rerun resume.
    """

    def __init__(
        self, client: openai.AsyncOpenAI, base_url: str, out: Path, max_in_row: int
    ) -> None:
        self.client, self.base_url, self.out, self.max_in_row = client, base_url, out, max_in_row
        self.errors_in_row = 0
        self.broken: str | None = None  # why the run must stop, once it must

    def succeeded(self) -> None:
        self.errors_in_row = 0

    def count_status(self, exc: openai.APIStatusError) -> None:
        self.errors_in_row = self.errors_in_row + 1 if exc.status_code >= 500 else 0
        if self.errors_in_row >= self.max_in_row:
            self.broken = (
                f"the server at {self.base_url} failed {self.errors_in_row} requests in a row "
                f"(last: {http_error(exc)}); answers so far are saved in {self.out}, rerun the "
                "same command to resume"
            )

    async def require_server(self, cause: Exception) -> None:
        try:
            await self.client.with_options(timeout=PROBE_TIMEOUT_S, max_retries=0).models.list()
        except openai.APIError as exc:
            raise ServerUnavailableError(
                f"the server at {self.base_url} went away mid-run ({cause}); answers so far "
                f"are saved in {self.out}, rerun the same command to resume"
            ) from exc


async def run_bounded(
    items: Sequence[T],
    work: Callable[[T], Awaitable[None]],
    watch: ServerWatch,
    *,
    concurrency: int,
    desc: str,
    unit: str,
    progress: bool,
) -> None:
    """`work` on every item with at most `concurrency` in flight; stops once `watch` is broken
    or `work` raises `EvalError`.

    `work` saves its own result, so whatever finished before a stop (or Ctrl-C) is kept.
    """
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress)

    async def one(item: T) -> None:
        async with semaphore:
            await work(item)
        bar.update(1)
        if watch.broken is not None:
            raise ServerUnavailableError(watch.broken)

    try:
        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(one(item))
    except* EvalError as failures:  # the first reason to stop, not a group of them
        raise failures.exceptions[0] from None
    finally:
        bar.close()
