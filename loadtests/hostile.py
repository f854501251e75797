"""Hostile clients for the soak (`loadtests/soak.py`): what a slow, broken or malicious peer does
to a server, each bounded in count and in time.

- `stalled_upload`: headers promise a large body, part of it arrives, then nothing. Whatever the
  server reserved for the request (an admission slot, a buffer, a socket) is held until it gives
  up on the body; a server without a body timeout keeps it until the client leaves.
- `never_read`: a streamed chat with many tokens on a socket with a tiny receive buffer that is
  never read. The server's writes block once the kernel and transport buffers are full; without a
  write timeout the request never ends. Loopback's 64 KiB segments let the server's kernel buffer
  up to 4 MB (tcp_wmem), more than one answer can fill (≈ 2-3.5 MB for 1900 tokens with 20 top
  logprobs each), so a few such requests are pipelined on the connection.
- `midstream_disconnect`: a streamed chat closed after a chunk or two; the engine must abort it.
- Refusals (`oversized_body`, `oversized_chunked`, `too_many_pixels`, `too_many_images`,
  `trailer_flood`, `scan_bomb`): a body over the cap (declared, and streamed without a length), an
  image over the pixel cap, too many images, a chunked body that ends in endless trailers, a JPEG
  of 1,000 repeated scans. Each must get a 4xx, quickly.
- `crlf_trickle`: a kept-alive connection fed a bare CRLF every half second; the server must
  close it at its keep-alive timeout (`loadtests/hostile_bytes.py`, with `trailer_flood`).

Raw sockets where httpx cannot misbehave on purpose (stall a body, never read), httpx elsewhere.
Outcomes are strings: an HTTP status (`"413"`), or what happened to the connection
(`server_closed`, `server_reset`, `held_to_cap`, `disconnected`), or an exception's class name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import httpx

from loadtests.image_burst import TransparentPngs
from loadtests.images import scan_bomb

CHAT_PATH = "/v1/chat/completions"
CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 30.0  # for a refusal: it should come at once
POLL_S = 1.0  # how often a never-reading client looks at its connection's TCP state
MiB = 1024 * 1024
REFUSAL_KINDS = (
    "oversized_body",
    "oversized_chunked",
    "too_many_pixels",
    "too_many_images",
    "trailer_flood",
    "scan_bomb",
)
KINDS = ("stalled_upload", "never_read", "midstream_disconnect", "crlf_trickle", *REFUSAL_KINDS)

Run = Callable[[float], Awaitable[str]]  # seconds it may take → outcome
Attempt = Callable[[float], Awaitable[tuple[str, str]]]  # … → (kind, outcome)


@dataclass(frozen=True)
class HostilePlan:
    """How many hostile clients of each kind run at once, and how long each may hold on.

    Server limits are the server's defaults; pass the ones in force so refusals are provoked."""

    stalled_uploads: int = 20
    stalled_cap_s: float = 60.0
    stalled_sent_bytes: int = 64 * 1024
    never_read: int = 4
    never_read_cap_s: float = 60.0
    never_read_max_tokens: int = 1900  # fits max_model_len 2048 with the image prompt
    never_read_top_logprobs: int = 20  # ≈ 1.5 KB per token
    never_read_pipelined: int = 4  # requests sent back to back: more than the kernel buffers
    never_read_rcvbuf: int = 4096
    midstream: int = 2
    midstream_chunks: int = 2
    crlf_trickles: int = 2
    crlf_cap_s: float = 30.0  # well past the keep-alive timeout (5 s by default)
    refusals: int = 1  # lanes cycling through REFUSAL_KINDS
    pause_s: float = 1.0  # between two attempts of one lane: a refused client must not spin
    max_attempts: int = 1000  # per lane
    max_body_bytes: int = 20 * MiB
    max_image_pixels: int = 25_000_000
    max_images: int = 4


@dataclass
class Tally:
    """Outcomes by kind, and how long each attempt took (to see who closed what, and when)."""

    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, outcome: str, seconds: float) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1
        self.seconds.setdefault(kind, []).append(seconds)

    def server_errors(self) -> int:
        """5xx answers seen by hostile clients: a server error is a bug whoever it is sent to."""
        return sum(n for c in self.outcomes.values() for o, n in c.items() if is_5xx(o))


def is_5xx(outcome: str) -> bool:
    return outcome.isdigit() and outcome.startswith("5")


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @classmethod
    def parse(cls, base_url: str) -> Target:
        url = httpx.URL(base_url)
        return cls(url.host, url.port or (443 if url.scheme == "https" else 80))

    def head(self, length: int, path: str = CHAT_PATH) -> bytes:
        """A POST's request line and headers, promising `length` bytes of JSON."""
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        ).encode()


def status_of(data: bytes) -> str | None:
    """The status code of a raw HTTP response's first line, or None if it is not one."""
    parts = data.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return parts[1].decode()
    return None


def chat_body(urls: list[str], max_tokens: int = 16, stream: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    content.append({"type": "text", "text": "Describe this face."})
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    return body | ({"stream": True} if stream else {})


# --- one attempt of each kind --------------------------------------------------------------------


async def send_and_wait(target: Target, data: bytes, wait_s: float) -> str:
    """Send raw `data` (a request's head and part of its body) on a new connection, then wait up
    to `wait_s` for the server to answer (its status), close or reset; or `held_to_cap`."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), CONNECT_TIMEOUT_S
    )
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), wait_s)
        return status_of(answer) or ("server_closed" if not answer else "garbage")
    except TimeoutError:
        return "held_to_cap"
    except ConnectionResetError:
        return "server_reset"
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def stalled_upload(target: Target, declared: int, sent: int, cap_s: float) -> str:
    """Promise `declared` bytes, send `sent`, then wait for the server to answer or close."""
    prefix = b'{"messages": ['
    body = prefix + b" " * max(0, sent - len(prefix))
    return await send_and_wait(target, target.head(declared) + body, cap_s)


async def declared_oversize(target: Target, limit: int) -> str:
    """Declare a body one byte over the cap, send a little of it, and read the answer."""
    body = b"{" + b" " * 65535
    return await send_and_wait(target, target.head(limit + 1) + body, ANSWER_TIMEOUT_S)


# /proc/net/tcp's state column (include/net/tcp_states.h).
_TCP_STATES = {
    "01": "ESTABLISHED",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0B": "CLOSING",
}


def _proc_address(address: tuple[str, int]) -> str:
    """An IPv4 address and port as /proc/net/tcp prints them (the address in host order)."""
    (number,) = struct.unpack("=I", socket.inet_aton(address[0]))
    return f"{number:08X}:{address[1]:04X}"


def tcp_states(
    ours: tuple[str, int], theirs: tuple[str, int], table: str | None = None
) -> tuple[str | None, str | None]:
    """The TCP state of both ends of one loopback connection: (our socket's, the server's), None
    for an end the kernel no longer has. Both, because a server that closes a connection whose
    client does not read leaves its FIN queued behind the unread data: our end still says
    ESTABLISHED, the server's end says FIN_WAIT1."""
    if table is None:
        with open("/proc/net/tcp") as f:
            table = f.read()
    local, remote = _proc_address(ours), _proc_address(theirs)
    states: dict[tuple[str, str], str] = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3:
            states[fields[1], fields[2]] = _TCP_STATES.get(fields[3], fields[3])
    return states.get((local, remote)), states.get((remote, local))


async def never_read(
    target: Target, body: bytes, rcvbuf: int, cap_s: float, copies: int = 1
) -> str:
    """Send `copies` streamed requests back to back (HTTP/1.1 pipelining) on a socket with a
    small receive buffer, never read the answers, and watch both ends of the connection until the
    server lets go or `cap_s` is up."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
        sock.setblocking(False)
        await asyncio.wait_for(
            loop.sock_connect(sock, (target.host, target.port)), CONNECT_TIMEOUT_S
        )
        requests = (target.head(len(body)) + body) * copies
        await asyncio.wait_for(loop.sock_sendall(sock, requests), cap_s)
        ours, theirs = sock.getsockname()[:2], sock.getpeername()[:2]
        deadline = loop.time() + cap_s
        while loop.time() < deadline:
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - loop.time())))
            mine, server = tcp_states(ours, theirs)
            if mine is None:
                return "server_reset"
            if (mine, server) != ("ESTABLISHED", "ESTABLISHED"):
                return await _closed_how(sock)
        return "held_to_cap"
    finally:
        sock.close()


async def _closed_how(sock: socket.socket, limit: int = 16 * MiB, timeout_s: float = 5.0) -> str:
    """Once the server has let go, read what it sent (bounded) to tell a refusal (its status,
    e.g. `429`) and a response that was complete (`completed_then_closed`: it finished, then
    closed an idle connection) from one cut short (`server_closed`, or `server_reset`: it gave up
    on a client that does not read)."""
    loop = asyncio.get_running_loop()
    head = tail = b""
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(limit // 65536):
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                head = head or data[:64]
                tail = (tail + data)[-64:]
    except ConnectionResetError:
        return "server_reset"
    except (OSError, TimeoutError):
        pass
    status = status_of(head)
    if status not in (None, "200"):
        return str(status)
    return "completed_then_closed" if b"[DONE]" in tail else "server_closed"


async def midstream_disconnect(client: httpx.AsyncClient, body: dict[str, Any], chunks: int) -> str:
    """Start a streamed chat, read `chunks` chunks of it, and hang up."""
    async with client.stream("POST", CHAT_PATH, json=body) as response:
        if response.status_code != 200:
            return str(response.status_code)
        seen = 0
        async for _ in response.aiter_raw():
            seen += 1
            if seen >= chunks:
                return "disconnected"
        return "ended_before_disconnect"


async def chunked_oversize(client: httpx.AsyncClient, limit: int) -> str:
    """A body over the cap sent without a length (chunked), so only counting can catch it."""

    async def body() -> AsyncIterator[bytes]:
        chunk = b" " * MiB
        for _ in range(limit // MiB + 2):
            yield chunk

    headers = {"Content-Type": "application/json"}
    response = await client.post(CHAT_PATH, content=body(), headers=headers)
    return str(response.status_code)


async def post_json(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post(CHAT_PATH, json=body)
    return str(response.status_code)


# --- lanes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payloads:
    """Bodies built once, before the clock starts (the big PNG costs about a second)."""

    never_read: bytes
    midstream: dict[str, Any]
    too_many_pixels: dict[str, Any]
    too_many_images: dict[str, Any]
    scan_bomb: dict[str, Any]

    @classmethod
    def build(cls, plan: HostilePlan, images: list[str]) -> Payloads:
        side = math.isqrt(plan.max_image_pixels) + 1
        png = TransparentPngs(side).png(0)
        big = "data:image/png;base64," + base64.b64encode(png).decode()
        many = [images[i % len(images)] for i in range(plan.max_images + 1)]
        bloated = {"logprobs": True, "top_logprobs": plan.never_read_top_logprobs}
        return cls(
            never_read=json.dumps(
                chat_body(images[:1], plan.never_read_max_tokens, stream=True) | bloated
            ).encode(),
            midstream=chat_body(images[1:2], plan.never_read_max_tokens, stream=True),
            too_many_pixels=chat_body([big]),
            too_many_images=chat_body(many),
            scan_bomb=chat_body(
                ["data:image/jpeg;base64," + base64.b64encode(scan_bomb()).decode()]
            ),
        )


async def lane(attempt: Attempt, tally: Tally, deadline: float, plan: HostilePlan) -> None:
    """Run `attempt(seconds_left)` again and again until `deadline` (loop time) or
    `plan.max_attempts`, recording each outcome; a failure is an outcome, never a crash."""
    loop = asyncio.get_running_loop()
    for n in range(plan.max_attempts):
        left = deadline - loop.time()
        if left <= 0:
            return
        start = time.monotonic()
        try:
            kind, outcome = await attempt(left)
        except (OSError, TimeoutError, httpx.HTTPError) as exc:
            kind, outcome = getattr(attempt, "kind", "?"), type(exc).__name__
        tally.add(kind, outcome, time.monotonic() - start)
        if n + 1 < plan.max_attempts:
            await asyncio.sleep(max(0.0, min(plan.pause_s, deadline - loop.time())))


@dataclass
class _Named:
    """An attempt that knows its kind, so an exception can still be filed under it."""

    kind: str
    run: Run

    async def __call__(self, left: float) -> tuple[str, str]:
        return self.kind, await self.run(left)


@dataclass
class _Refusals:
    """One lane cycling through the refusal kinds, so each is tried evenly over the run."""

    target: Target
    client: httpx.AsyncClient
    plan: HostilePlan
    payloads: Payloads
    turn: int = 0
    kind: str = REFUSAL_KINDS[0]

    async def __call__(self, left: float) -> tuple[str, str]:
        self.kind = REFUSAL_KINDS[self.turn % len(REFUSAL_KINDS)]
        self.turn += 1
        limit = self.plan.max_body_bytes
        if self.kind == "oversized_body":
            outcome = await declared_oversize(self.target, limit)
        elif self.kind == "oversized_chunked":
            outcome = await chunked_oversize(self.client, limit)
        elif self.kind == "too_many_pixels":
            outcome = await post_json(self.client, self.payloads.too_many_pixels)
        elif self.kind == "trailer_flood":
            from loadtests.hostile_bytes import trailer_flood  # it imports this module

            outcome = await trailer_flood(self.target, ANSWER_TIMEOUT_S)
        elif self.kind == "scan_bomb":
            outcome = await post_json(self.client, self.payloads.scan_bomb)
        else:
            outcome = await post_json(self.client, self.payloads.too_many_images)
        return self.kind, outcome


def _clamped(run: Run, cap_s: float) -> Run:
    """`run(cap)` with its hold capped at `cap_s` and at the time left in the run; a hold cut
    short by the end of the run is `held_to_run_end`, not `held_to_cap` (the server may still
    have let go within the cap)."""

    async def attempt(left: float) -> str:
        outcome = await run(min(cap_s, left))
        return "held_to_run_end" if outcome == "held_to_cap" and left < cap_s else outcome

    return attempt


def hostile_attempts(
    target: Target, client: httpx.AsyncClient, plan: HostilePlan, payloads: Payloads
) -> list[Attempt]:
    """One attempt callable per lane; each clamps its hold to the time left in the run."""
    declared = min(8 * MiB, plan.max_body_bytes // 2)  # under the cap: no early 413
    stalled = _Named(
        "stalled_upload",
        _clamped(
            lambda cap: stalled_upload(target, declared, plan.stalled_sent_bytes, cap),
            plan.stalled_cap_s,
        ),
    )
    blocked = _Named(
        "never_read",
        _clamped(
            lambda cap: never_read(
                target,
                payloads.never_read,
                plan.never_read_rcvbuf,
                cap,
                plan.never_read_pipelined,
            ),
            plan.never_read_cap_s,
        ),
    )
    cut = _Named(
        "midstream_disconnect",
        lambda _: midstream_disconnect(client, payloads.midstream, plan.midstream_chunks),
    )
    from loadtests.hostile_bytes import crlf_trickle  # it imports this module

    trickle = _Named(
        "crlf_trickle", _clamped(lambda cap: crlf_trickle(target, cap), plan.crlf_cap_s)
    )
    return [
        *([stalled] * plan.stalled_uploads),
        *([blocked] * plan.never_read),
        *([cut] * plan.midstream),
        *([trickle] * plan.crlf_trickles),
        *(_Refusals(target, client, plan, payloads) for _ in range(plan.refusals)),
    ]
