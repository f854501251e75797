"""Pure-ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware).

`RequestContext`: request id (accepted from `X-Request-Id` when well-formed, else generated, echoed
back), an access-log line with sizes and timings (never bodies), per-route metrics, the body size
cap, and the clocks a slow or hostile client runs into: an upload that stalls or drags gets 408,
a client that stops reading its response is cut off (the engine request is aborted with it).
`AdmissionGate`: the in-flight limit on generation routes. The route takes its slot (`admit`) only
once the body has arrived and the key was checked, so stalled uploads and bad keys hold none; the
gate gives it back after the last byte of the response, so the drain and the 429s see real load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.admission import Admission
from server.connections import ABORT_CONNECTION
from server.errors import APIError, PayloadTooLarge
from server.logs import request_id_var
from server.metrics import Metrics

log = logging.getLogger("server.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class RouteTable:
    """The app's paths, read from its routers (`create_app`): `known` ones label metrics as they
    are (anything else is "other": a bounded label set); `generation` ones are admitted."""

    known: frozenset[str]
    generation: frozenset[str]

    def label(self, scope: Scope) -> str:
        path = str(scope["path"])
        return path if path in self.known else "other"


# A Content-Length this long is past any body cap; longer ones would also make int() raise.
_MAX_LENGTH_DIGITS = 18
_TICKET = "facellm.admission"
_IMAGES = "facellm.images"  # the scope key under which a request's image record travels
CLIENT_STOPPED = 499  # the scope key under which a generation request finds its slot


@dataclass(frozen=True)
class ClientClocks:
    """How long a client may take: see the same-named settings (`*_timeout_s`)."""

    body_idle_s: float
    body_total_s: float
    write_s: float
    response_s: float  # generation responses end by then, writes included


async def send_error(send: Send, error: APIError, extra_headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send(
        {"type": "http.response.start", "status": error.status, "headers": headers + extra_headers}
    )
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        clocks: ClientClocks,
        routes: RouteTable,
        process: int | None = None,
        body_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_caps = body_caps or {}  # paths whose bodies have a cap of their own
        self.clocks = clocks
        # With several API processes, every response says which one answered.
        self.headers = [] if process is None else [(b"x-facellm-process", str(process).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = request_id_var.set(rid)
        images: list[dict[str, object]] = []
        scope[_IMAGES] = images  # the routes hand it to the image loader (`image_log`)
        echo = [(b"x-request-id", rid.encode()), *self.headers]
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "received": 0, "sent": 0, "started": False}
        clocks = _Clocks(self.clocks, scope["path"] in self.routes.generation)
        cap = self.body_caps.get(scope["path"], self.max_body_bytes)

        async def capped_receive() -> Message:
            message = await clocks.receive(receive)
            if message["type"] == "http.request":
                seen["received"] += len(message.get("body", b""))
                if seen["received"] > cap:
                    raise _BodyTooLarge(cap)
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"], seen["started"] = message["status"], True
                message["headers"] = list(message.get("headers", [])) + echo
                self._observe_latency(scope, start)
            elif message["type"] == "http.response.body":
                seen["sent"] += len(message.get("body", b""))
            await clocks.send(send, message)

        try:
            if _declared_length(scope) > cap:
                raise _BodyTooLarge(cap)
            await self.app(scope, capped_receive, tracking_send)
        except _ClientStopped:
            # The headers are out: nothing more can be said to this client. Drop the connection
            # (a close would wait to flush what the client never reads); counted and logged as
            # 499, nginx's "client closed request".
            seen["status"] = CLIENT_STOPPED
            if (abort := scope.get(ABORT_CONNECTION)) is not None:
                abort()
                await asyncio.sleep(0)  # uvicorn sees the connection lost before we return
        except _BodyTooLarge:
            if seen["started"]:
                raise
            seen["status"] = 413
            await send_error(
                send,
                PayloadTooLarge(f"Request body exceeds {cap} bytes.", code="body_too_large"),
                echo,
            )
        finally:
            self._log(scope, seen, start, images)
            request_id_var.reset(token)

    def _observe_latency(self, scope: Scope, start: float) -> None:
        self.metrics.http_latency.labels(self.routes.label(scope)).observe(
            time.perf_counter() - start
        )

    def _log(
        self, scope: Scope, seen: dict[str, Any], start: float, images: list[dict[str, object]]
    ) -> None:
        route = self.routes.label(scope)
        self.metrics.http_requests.labels(route, scope["method"], str(seen["status"])).inc()
        if route in ("/health", "/ready", "/metrics"):
            return  # probes and scrapes every few seconds would drown the log
        log.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            seen["status"],
            extra={
                "status": seen["status"],
                "bytes_in": seen["received"],
                "bytes_out": seen["sent"],
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                **({"images": images} if images else {}),
            },
        )


class AdmissionGate:
    def __init__(
        self, app: ASGIApp, admission: Admission, metrics: Metrics, routes: RouteTable
    ) -> None:
        self.app = app
        self.admission = admission
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.routes.generation:
            await self.app(scope, receive, send)
            return
        ticket = _Ticket(self.admission, self.metrics)
        scope[_TICKET] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            ticket.give_back()


def image_log(request: Request) -> list[dict[str, object]] | None:
    """Where this request's images are recorded (digest, sizes, decode time — never bytes) for
    its access-log line; `RequestContext` writes the line when the response is done."""
    log: list[dict[str, object]] | None = request.scope.get(_IMAGES)
    return log


def admit(request: Request) -> None:
    """Take this request's admission slot, or refuse it (429 at the limit, 503 when draining).
    Generation routes call it first thing: FastAPI has read and validated the body and run the
    key check by then."""
    ticket: _Ticket = request.scope[_TICKET]
    ticket.take()


@dataclass
class _Ticket:
    admission: Admission
    metrics: Metrics
    held: bool = False

    def take(self) -> None:
        if self.held:
            return
        try:
            self.admission.acquire()
        except APIError as refused:
            if refused.status == 429:
                self.metrics.admission_rejections.inc()
            raise
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.admission.release()


class _Clocks:
    """The body and write deadlines of one request (see `ClientClocks`)."""

    def __init__(self, clocks: ClientClocks, generation: bool) -> None:
        now = asyncio.get_running_loop().time()
        self.clocks = clocks
        self.body_deadline = now + clocks.body_total_s
        self.body_done = False
        # Generation responses: the engine's deadline, plus a grace for the last frames.
        self.response_deadline = now + clocks.response_s + 5 if generation else None

    async def receive(self, receive: Receive) -> Message:
        """While the body is arriving, each wait is bounded; after it, receive only waits for a
        disconnect (Starlette listens for one during streams), which must never time out."""
        if self.body_done:
            return await receive()
        loop = asyncio.get_running_loop()
        timeout = asyncio.timeout_at(min(loop.time() + self.clocks.body_idle_s, self.body_deadline))
        try:
            async with timeout:
                message = await receive()
        except TimeoutError:
            if timeout.expired():
                raise _BodyTimeout() from None
            raise
        self.body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    async def send(self, send: Send, message: Message) -> None:
        """A write waits only while the client's socket is full: bounded per write and, for
        generation routes, by the response deadline."""
        limit = asyncio.get_running_loop().time() + self.clocks.write_s
        if self.response_deadline is not None:
            limit = min(limit, self.response_deadline)
        timeout = asyncio.timeout_at(limit)
        try:
            async with timeout:
                await send(message)
        except TimeoutError:
            if timeout.expired():
                raise _ClientStopped() from None
            raise


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it instead of answering 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes.")


class _BodyTimeout(HTTPException):
    def __init__(self) -> None:
        super().__init__(
            408, "The request body did not arrive in time.", headers={"Connection": "close"}
        )


class _ClientStopped(Exception):
    """The client stopped taking the response: its writes waited past their limit."""


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


def _declared_length(scope: Scope) -> int:
    """The Content-Length header as a number; absurdly long ones count as infinite."""
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit():
            return int(value) if len(value) <= _MAX_LENGTH_DIGITS else 2**63
    return 0
