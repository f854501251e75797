"""Stop working for clients that left.

Starlette does not cancel a handler when its client disconnects, so a non-streaming request would
keep its engine slot until the answer nobody reads is finished. Race the handler against the
disconnect message; the handler's cancellation closes the engine stream, which aborts the request.
Streaming responses close their frames however they end (`ClosingStreamingResponse`): after a
disconnect, and when a client that stopped reading is cut off mid-stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Send

from server.errors import APIError

T = TypeVar("T")


class ClientDisconnected(APIError):
    """The client went away before the answer was ready; logged and counted as nginx's 499."""

    status, type, code = 499, "invalid_request_error", "client_closed_request"


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
    if task in done:
        return task.result()
    await asyncio.gather(task, return_exceptions=True)  # let the engine abort finish
    raise ClientDisconnected("The client closed the connection.")


class ClosingStreamingResponse(StreamingResponse):
    """Starlette leaves an interrupted body iterator for the garbage collector to close; closing
    it here, shielded from the cancellation that may have interrupted it, aborts the engine
    request at once."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            if (aclose := getattr(self.body_iterator, "aclose", None)) is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
