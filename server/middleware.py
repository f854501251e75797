"""Pure-ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware).

`RequestContext`: request id (accepted from `X-Request-Id` when well-formed, else generated, echoed
back), an access-log line with sizes and timings (never bodies), per-route metrics, and the body
size cap. `AdmissionGate`: the in-flight limit on generation routes, held until the last byte of a
streamed response so the drain and the 429s both see real load.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import APIError, PayloadTooLarge
from server.limits import Admission
from server.logs import request_id_var, request_images_var
from server.metrics import Metrics

log = logging.getLogger("server.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/faces/analyze"})
KNOWN_ROUTES = GENERATION_PATHS | {
    "/v1/models",
    "/v1/faces/schema",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
}


async def send_error(send: Send, error: APIError, extra_headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send(
        {"type": "http.response.start", "status": error.status, "headers": headers + extra_headers}
    )
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        token = request_id_var.set(rid)
        images: list[dict[str, object]] = []
        images_token = request_images_var.set(images)
        echo = [(b"x-request-id", rid.encode())]
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "received": 0, "sent": 0, "started": False}

        async def capped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["received"] += len(message.get("body", b""))
                if seen["received"] > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"], seen["started"] = message["status"], True
                message["headers"] = list(message.get("headers", [])) + echo
                self._observe_latency(scope, start)
            elif message["type"] == "http.response.body":
                seen["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                raise _BodyTooLarge(self.max_body_bytes)
            await self.app(scope, capped_receive, tracking_send)
        except _BodyTooLarge:
            if seen["started"]:
                raise
            seen["status"] = 413
            await send_error(
                send,
                PayloadTooLarge(
                    f"Request body exceeds {self.max_body_bytes} bytes.", code="body_too_large"
                ),
                echo,
            )
        finally:
            self._log(scope, seen, start, images)
            request_images_var.reset(images_token)
            request_id_var.reset(token)

    def _observe_latency(self, scope: Scope, start: float) -> None:
        self.metrics.http_latency.labels(_route(scope)).observe(time.perf_counter() - start)

    def _log(
        self, scope: Scope, seen: dict[str, Any], start: float, images: list[dict[str, object]]
    ) -> None:
        route = _route(scope)
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
    def __init__(self, app: ASGIApp, admission: Admission, metrics: Metrics) -> None:
        self.app = app
        self.admission = admission
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            self.admission.acquire()
        except APIError as refused:
            if refused.status == 429:
                self.metrics.admission_rejections.inc()
            await send_error(send, refused, [])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.release()


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it instead of answering 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes.")


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


def _declared_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _route(scope: Scope) -> str:
    """A bounded label: known paths as they are, everything else lumped (no cardinality blow-up)."""
    path = str(scope["path"])
    return path if path in KNOWN_ROUTES else "other"
