"""Connection-level guards uvicorn's HTTP protocol lacks: a size cap and a clock on request heads.

uvicorn's httptools protocol buffers a request's line and headers for as long and as large as the
client sends them: a client that trickles a header byte by byte (slowloris), or sends megabytes of
headers, holds a socket and memory forever. Its keep-alive timeout only starts after a response.
This subclass refuses heads over `max_header_bytes` with 431 and closes connections whose head has
not arrived within `header_timeout_s` (408) — on a new connection and on each new request of a
kept-alive one. Bodies have their own clocks (`server/middleware.py`).

It also hands each request a way to drop its connection (`ABORT_CONNECTION` in the scope): a
client that stopped reading is cut off by the middleware, and a plain close would wait forever to
flush the megabytes queued for it.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.errors import error_body

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
ABORT_CONNECTION = "facellm.abort_connection"  # scope key: drop the connection, unsent data too


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 32 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = self._head_size = 0
        self._in_head = True
        self._head_clock: asyncio.TimerHandle | None = None
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, "Request line and headers exceed the size limit.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_size = 0
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head = True
            self._start_head_clock()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """A head that arrived whole in one read is measured here, exactly."""
        self._stop_head_clock()
        if self._head_size > self.max_header_bytes:
            self._refuse(431, "Request line and headers exceed the size limit.")
            raise _HeadRefused  # stops the parser; uvicorn's own 400 then finds the socket closed
        self._in_head = False
        self.scope[ABORT_CONNECTION] = self.transport.abort  # type: ignore[literal-required]
        super().on_headers_complete()

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self._head_clock = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None

    def _head_too_slow(self) -> None:
        self._head_clock = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "The request headers did not arrive in time.")

    def _refuse(self, status: int, message: str) -> None:
        """An OpenAI-style error, then close: the rest of this connection cannot be trusted."""
        code = "headers_too_large" if status == 431 else "header_timeout"
        body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self._in_head = False
        self.transport.close()


class _HeadRefused(Exception):
    pass


def guarded_protocol(
    max_header_bytes: int, header_timeout_s: float
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn builds one instance per connection)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
