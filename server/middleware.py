"""Pure-ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware).

`RequestContext`: request id (accepted from `X-Request-Id` when well-formed, else generated, echoed
back), the request's scope (`server/context.py`: its one deadline, admission ticket and image
record), an access-log line with sizes and timings (never bodies), per-route metrics, the body
size cap, and the clocks a slow or hostile client runs into: an upload that stalls or drags gets
408, a client that stops reading its response is cut off (the engine request is aborted with it).
It gives the request's admission back after the last byte of the response, so the drain and the
429s see real load.
`KeyGate`: the API-key check, on the request head: a client without a valid key gets 401 before
the server reads any of its body.
`Admit`: the admission dependency of the generation routers. It runs once the body has arrived
and been validated, so stalled uploads and bad keys hold no slot.
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

from server.admission import Admission, Ticket
from server.auth import bearer_matches, refused
from server.connections import ABORT_CONNECTION
from server.context import RequestScope, bind, current_request, unbind
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
CLIENT_STOPPED = 499  # nginx's "client closed request"


@dataclass(frozen=True)
class ClientClocks:
    """How long a client may take: see the same-named settings (`*_timeout_s`)."""

    body_idle_s: float
    body_total_s: float
    write_s: float
    response_s: float  # the one deadline of a generation request: reading to writing


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
        generation = scope["path"] in self.routes.generation
        request = self._scope(generation)
        bound = bind(request)
        echo = [(b"x-request-id", rid.encode()), *self.headers]
        start = time.perf_counter()
        seen: dict[str, Any] = {"received": 0, "sent": 0, "started": False}
        clocks = _Clocks(self.clocks, request.deadline)
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
                request.status, seen["started"] = message["status"], True
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
            request.status = CLIENT_STOPPED
            if (abort := scope.get(ABORT_CONNECTION)) is not None:
                abort()
                await asyncio.sleep(0)  # uvicorn sees the connection lost before we return
        except _BodyTooLarge:
            if seen["started"]:
                raise
            request.status = 413
            await send_error(
                send,
                PayloadTooLarge(f"Request body exceeds {cap} bytes.", code="body_too_large"),
                echo,
            )
        finally:
            if request.ticket is not None:
                request.ticket.give_back()  # after the last byte, however the route ended
            self._log(scope, request, seen, start)
            unbind(bound)
            request_id_var.reset(token)

    def _scope(self, generation: bool) -> RequestScope:
        """A generation request's one deadline starts now: reading, images, engine, writing."""
        if not generation:
            return RequestScope()
        now = asyncio.get_running_loop().time()
        return RequestScope(deadline=now + self.clocks.response_s, timeout_s=self.clocks.response_s)

    def _observe_latency(self, scope: Scope, start: float) -> None:
        self.metrics.http_latency.labels(self.routes.label(scope)).observe(
            time.perf_counter() - start
        )

    def _log(self, scope: Scope, request: RequestScope, seen: dict[str, Any], start: float) -> None:
        route = self.routes.label(scope)
        self.metrics.http_requests.labels(route, scope["method"], str(request.status)).inc()
        if route in ("/health", "/ready", "/metrics"):
            return  # probes and scrapes every few seconds would drown the log
        log.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            request.status,
            extra={
                "status": request.status,
                "bytes_in": seen["received"],
                "bytes_out": seen["sent"],
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                **({"images": request.images} if request.images else {}),
            },
        )


class KeyGate:
    """API keys checked on the head, before any of the body is read; the connection is then
    closed so the client does not send the body either. Every path takes `default` keys (no
    keys: open) except the `open` ones (probes, API docs) and those `keys` names (admin,
    metrics): a new route is protected without having to remember it."""

    def __init__(
        self,
        app: ASGIApp,
        default: tuple[bytes, ...],
        keys: dict[str, tuple[bytes, ...]],
        open_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.default = default
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            keys = self.keys.get(scope["path"], self.default)
            if keys and not bearer_matches(_header(scope, b"authorization"), keys):
                await send_error(send, refused(), [(b"connection", b"close")])
                return
        await self.app(scope, receive, send)


class Admit:
    """The dependency the chat and faces routers carry: a generation request (their POST routes)
    takes its admission slot, or is refused (429 at the limit, 503 when draining). The request's
    scope holds the ticket, and `RequestContext` gives it back after the response."""

    def __init__(self, admission: Admission, metrics: Metrics, generation: frozenset[str]) -> None:
        self.admission = admission
        self.metrics = metrics
        self.generation = generation

    async def __call__(self, request: Request) -> None:  # async: no thread-pool hand-off
        scope = current_request()
        if scope is None or request.scope["path"] not in self.generation:
            return
        if scope.ticket is None:
            scope.ticket = Ticket(self.admission, self.metrics.admission_rejections.inc)
        scope.ticket.take()


def reserve_work(work: int) -> None:
    """Reserve engine work (sequences × tokens) for the request being served, or 429."""
    scope = current_request()
    if scope is not None and scope.ticket is not None:
        scope.ticket.reserve(work)


class _Clocks:
    """The body and write deadlines of one request (see `ClientClocks`)."""

    def __init__(self, clocks: ClientClocks, deadline: float | None) -> None:
        now = asyncio.get_running_loop().time()
        self.clocks = clocks
        self.body_deadline = min(now + clocks.body_total_s, deadline or float("inf"))
        self.body_done = False
        # Generation responses: the request's deadline, plus a grace for the last frames.
        self.response_deadline = None if deadline is None else deadline + 5

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
    candidate = _header(scope, b"x-request-id").decode("latin-1")
    return candidate if REQUEST_ID.match(candidate) else uuid.uuid4().hex


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def _declared_length(scope: Scope) -> int:
    """The Content-Length header as a number; absurdly long ones count as infinite."""
    for key, value in scope["headers"]:
        if key == b"content-length" and value.isdigit():
            return int(value) if len(value) <= _MAX_LENGTH_DIGITS else 2**63
    return 0
