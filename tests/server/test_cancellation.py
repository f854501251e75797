"""Stopping work for clients that left (server/cancellation.py), without an engine or a server: a
request's work is cancelled when its client disconnects first, and a streaming body is closed
however its response ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from server.cancellation import ClientDisconnected, ClosingStreamingResponse, unless_disconnected

BOUND_S = 10.0  # the longest any wait below may take


def request(disconnect: asyncio.Event) -> Request:
    """A request whose client sends its (empty) body, then disconnects once `disconnect` is set."""
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def test_the_answer_comes_back_when_the_client_stays() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    result = await asyncio.wait_for(unless_disconnected(request(asyncio.Event()), work()), BOUND_S)
    assert result == "answer"


async def test_the_work_is_cancelled_and_finishes_its_cleanup_when_the_client_leaves() -> None:
    gone = asyncio.Event()
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(BOUND_S * 10)  # an engine answer nobody would read
            return "too late"
        finally:
            await asyncio.sleep(0)  # the engine abort, awaited before the 499
            cleaned_up.set()

    pending = asyncio.ensure_future(unless_disconnected(request(gone), work()))
    await asyncio.wait_for(started.wait(), BOUND_S)
    gone.set()
    with pytest.raises(ClientDisconnected) as excinfo:
        await asyncio.wait_for(pending, BOUND_S)
    assert cleaned_up.is_set()
    assert excinfo.value.status == 499


async def test_the_works_own_error_is_raised_as_it_is() -> None:
    async def work() -> str:
        raise LookupError("the caller's fault")

    with pytest.raises(LookupError, match="the caller's fault"):
        await asyncio.wait_for(unless_disconnected(request(asyncio.Event()), work()), BOUND_S)


class Frames:
    """A streaming body that records whether it was closed, and how far it got."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.count):
                self.sent = i + 1
                yield f"data: {i}\n\n".encode()
        finally:
            self.closed = True


async def stream(frames: Frames, send_fails_after: int | None) -> None:
    """Run the response as the server would, with a client that stops taking writes after
    `send_fails_after` body messages (None: takes everything)."""
    body = frames.__aiter__()
    response = ClosingStreamingResponse(body, media_type="text/event-stream")
    bodies = 0

    async def send(message: Message) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body" and message.get("body"):
            bodies += 1
            if send_fails_after is not None and bodies > send_fails_after:
                raise OSError("the client is gone")

    async def receive() -> Message:
        await asyncio.sleep(BOUND_S * 10)
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.4"}}
    await asyncio.wait_for(response(scope, receive, send), BOUND_S)


async def test_a_whole_stream_closes_its_frames() -> None:
    frames = Frames(5)
    await stream(frames, send_fails_after=None)
    assert frames.sent == 5 and frames.closed


async def test_a_stream_cut_off_mid_way_closes_its_frames_at_once() -> None:
    frames = Frames(1000)
    with pytest.raises(ClientDisconnect):  # Starlette's word for the send's OSError
        await stream(frames, send_fails_after=2)
    assert frames.closed  # at once, not whenever the garbage collector gets to it
    assert frames.sent < 1000
