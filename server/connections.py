"""Connection-level guards uvicorn's HTTP protocol lacks: caps and clocks that bytes cannot reset.

uvicorn's httptools protocol buffers a request's line and headers for as long and as large as the
client sends them: a client that trickles a header byte by byte (slowloris), or sends megabytes of
headers, holds a socket and memory forever. Its keep-alive timeout only starts after a response.
This subclass refuses heads over `max_header_bytes` with 431 and closes connections whose head has
not arrived within `header_timeout_s` (408) — on a new connection and on each new request of a
kept-alive one. Bodies have their own clocks (`server/middleware.py`).

Three more holes, each found by a hostile client:
- Keep-alive idle time. uvicorn restarts its keep-alive timer on any bytes, and the parser skips a
  bare CRLF without starting a request: one `\r\n` every few seconds pinned a connection forever.
  Here the idle deadline is fixed when a response completes; only a new request ends it.
- Trailers. A chunked body may end with trailer lines, which the parser accepts without end and
  uvicorn appends to the request's headers. They are dropped here, counted, and capped (count,
  and bytes that are not body: chunk framing plus trailers) with a 431 and a close.
- Probes. `limit_concurrency` answers 503 to any request past the connection cap, the kubelet's
  probes included; /health and /ready are answered whatever the count.

It also hands each request a way to drop its connection (`ABORT_CONNECTION` in the scope): a
client that stopped reading is cut off by the middleware, and a plain close would wait forever to
flush the megabytes queued for it.
"""

from __future__ import annotations

import asyncio
import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.errors import error_body

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
ABORT_CONNECTION = "facellm.abort_connection"  # scope key: drop the connection, unsent data too
PROBE_PATHS = frozenset({b"/health", b"/ready"})  # answered past the connection cap
MAX_TRAILERS = 32  # trailer lines a chunked body may end with; real clients send none or one
LINGER_S = (
    1.0  # after refusing a client mid-body: the error is out, the close comes this much later
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 32 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = self._head_size = 0
        self._in_head = True
        self._head_clock: asyncio.TimerHandle | None = None
        self._idle_until: float | None = None  # set while kept alive between requests
        self._after_head = self._body_bytes = self._trailers = 0
        self._lingering = False
        self._begun = 0  # requests begun on this connection
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: its bytes are dropped until the close
        idle_until = self._idle_until
        begun = self._begun
        super().data_received(data)  # any bytes cancel uvicorn's keep-alive timer
        if self.transport.is_closing():
            return
        if self._idle_until is not None and idle_until is not None:
            self._keep_idle_deadline(idle_until)  # the bytes began no request
        if self._begun != begun:
            # A request began in this read, maybe after the end of others (pipelined): which of
            # its bytes are the new one's is unknown, so the read is not counted. A head that
            # came whole is measured exactly (`on_headers_complete`); the caps hold from the
            # next read on.
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, "Request line and headers exceed the size limit.")
        else:  # body, chunk framing or trailers of the request under way
            self._after_head += len(data)
            framing = self._after_head - self._body_bytes
            if framing > self.max_header_bytes + self._body_bytes:
                self._refuse(431, "Chunk framing and trailers exceed the size limit.", linger=True)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun += 1
        self._head_bytes = self._head_size = 0
        self._idle_until = None
        self._after_head = self._body_bytes = self._trailers = 0
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head = True
            self._start_head_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle now, until a request begins
            self._idle_until = self.loop.time() + self.timeout_keep_alive

    def _keep_idle_deadline(self, idle_until: float) -> None:
        """Re-arm the keep-alive timer at the deadline it had, not a fresh one."""
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_at(
                idle_until, self.timeout_keep_alive_handler
            )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            self._on_trailer()
            return  # uvicorn would append it to the request's headers, without bound
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def _on_trailer(self) -> None:
        self._trailers += 1
        if self._trailers > MAX_TRAILERS and not self.transport.is_closing():
            if not self._lingering:
                message = f"A chunked body may end with at most {MAX_TRAILERS} trailers."
                self._refuse(431, message, linger=True)
            raise _StopParsing  # stops the parser: the rest of this read is not worth parsing

    def send_400_response(self, msg: str) -> None:
        if not self._lingering:  # else our own refusal stopped the parser, and it is out
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        """A head that arrived whole in one read is measured here, exactly."""
        self._stop_head_clock()
        if self._head_size > self.max_header_bytes:
            self._refuse(431, "Request line and headers exceed the size limit.")
            raise _StopParsing  # stops the parser; uvicorn's own 400 then finds the socket closed
        self._in_head = False
        self.scope[ABORT_CONNECTION] = self.transport.abort  # type: ignore[literal-required]
        cap = self.limit_concurrency
        if cap is not None and httptools.parse_url(self.url).path in PROBE_PATHS:
            self.limit_concurrency = None  # a probe is answered past the connection cap
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency = cap

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

    def _refuse(self, status: int, message: str, linger: bool = False) -> None:
        """An OpenAI-style error, then close: the rest of this connection cannot be trusted.
        Once the app has begun its response, only the close: the error would corrupt it.
        `linger`: the client is still sending (a body); closing at once would answer its next
        bytes with a reset that can destroy the error before it is read, so the error is
        followed by a FIN, and the close comes `LINGER_S` later."""
        code = "headers_too_large" if status == 431 else "header_timeout"
        body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        cycle = self.cycle
        if self._in_head or cycle is None or not cycle.response_started:
            self.transport.write(head + body)
        if cycle is not None and not cycle.response_complete:
            cycle.response_complete = True  # the app's own response goes nowhere now
            cycle.disconnected = True
            cycle.message_event.set()  # a receive() waiting for the body sees the disconnect
        self._in_head = False
        if linger and self.transport.can_write_eof():
            self._lingering = True
            self.transport.write_eof()
            # Not reading meanwhile: a flooding client would keep the loop busy dropping bytes.
            # Its sends block instead, and it has the error to read.
            self.transport.pause_reading()
            self.loop.call_later(LINGER_S, self.transport.close)
            return
        self.transport.close()


class _StopParsing(Exception):
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
