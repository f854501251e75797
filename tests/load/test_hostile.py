"""The soak's hostile clients (loadtests/hostile.py) against tiny local peers (no model): each
must tell what the server did to it — answered, closed, reset, or held it until the cap — and
never hang past its cap."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from loadtests import hostile
from loadtests.hostile import HostilePlan, Payloads, Tally, Target, lane, status_of

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[Target]:
    """A server on 127.0.0.1 running `handler` per connection, closed afterwards."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield Target("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def read_head(reader: asyncio.StreamReader) -> int:
    """Read a request's head; the Content-Length it declares."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


def answer(status: int, body: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Never answer; wait (bounded) for the client to leave."""
    await read_head(reader)
    await asyncio.wait_for(reader.read(), 5)


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)


async def refuse_408(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(answer(408))
    await writer.drain()


@pytest.fixture
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostile, "POLL_S", 0.05)


@pytest.mark.parametrize(
    ("handler", "outcome"),
    [(refuse_408, "408"), (close_at_once, "server_closed"), (hold, "held_to_cap")],
)
async def test_stalled_upload_reports_what_the_server_did(handler: Handler, outcome: str) -> None:
    async with peer(handler) as target:
        start = time.monotonic()
        assert await hostile.stalled_upload(target, 1_000_000, 1000, cap_s=0.3) == outcome
        assert time.monotonic() - start < 2


async def test_declared_oversize_reads_the_refusal() -> None:
    async def refuse_413(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await read_head(reader) == 1001
        writer.write(answer(413))
        await writer.drain()

    async with peer(refuse_413) as target:
        assert await hostile.declared_oversize(target, 1000) == "413"


async def read_request(reader: asyncio.StreamReader) -> None:
    """Read one request, and then the pipelined copy the never-reading client sends."""
    for _ in range(2):
        await reader.readexactly(await read_head(reader))


async def complete_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(answer(200, b"data: {}\n\ndata: [DONE]\n\n"))
    await writer.drain()


async def refuse_429(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(answer(429, b'{"error": {}}'))
    await writer.drain()


async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Write far more than any buffer holds to a client that does not read, then give up."""
    await read_request(reader)
    writer.write(b"x" * (16 * 1024 * 1024))
    await asyncio.wait_for(reader.read(), 5)  # until the client gives up
    writer.transport.abort()  # the unread data is dropped, not flushed


async def close_behind_unread_data(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Leave 256 KB in the kernel (no user-space buffer) and close: the FIN waits behind the
    data, so only the server's end shows the close (FIN_WAIT1)."""
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 256 * 1024)
    await writer.drain()


@pytest.mark.usefixtures("fast_poll")
@pytest.mark.parametrize(
    ("handler", "outcome"),
    [
        (complete_then_close, "completed_then_closed"),
        (refuse_429, "429"),
        (cut_short, "server_closed"),
        (close_behind_unread_data, "server_closed"),
        (reset, "server_reset"),
        (flood, "held_to_cap"),
    ],
)
async def test_never_read_tells_how_the_connection_ended(handler: Handler, outcome: str) -> None:
    async with peer(handler) as target:
        start = time.monotonic()
        assert await hostile.never_read(target, b"{}", 4096, cap_s=0.5, copies=2) == outcome
        assert time.monotonic() - start < 7


async def test_lane_is_bounded_and_files_exceptions_under_their_kind() -> None:
    calls: list[float] = []

    async def broken(left: float) -> str:
        calls.append(left)
        raise ConnectionRefusedError

    tally = Tally()
    deadline = asyncio.get_running_loop().time() + 10
    plan = HostilePlan(max_attempts=3, pause_s=0.01)
    await lane(hostile._Named("stalled_upload", broken), tally, deadline, plan)
    assert tally.outcomes == {"stalled_upload": {"ConnectionRefusedError": 3}}
    assert len(calls) == 3 and all(0 < left <= 10 for left in calls)


async def test_lane_stops_at_its_deadline() -> None:
    async def quick(left: float) -> str:
        return "200"

    tally = Tally()
    deadline = asyncio.get_running_loop().time() + 0.2
    await lane(hostile._Named("x", quick), tally, deadline, HostilePlan(pause_s=0.05))
    assert 1 <= tally.outcomes["x"]["200"] <= 6


async def test_a_hold_cut_by_the_end_of_the_run_is_not_a_hold_to_the_cap() -> None:
    caps: list[float] = []

    async def held(cap: float) -> str:
        caps.append(cap)
        return "held_to_cap"

    attempt = hostile._clamped(held, cap_s=60)
    assert await attempt(100) == "held_to_cap"
    assert await attempt(5) == "held_to_run_end"
    assert caps == [60, 5]


def test_payloads_break_the_limits_they_target() -> None:
    plan = HostilePlan(max_image_pixels=10_000, max_images=2)
    payloads = Payloads.build(plan, ["data:image/jpeg;base64,AA=="])
    assert len(payloads.too_many_images["messages"][0]["content"]) == 3 + 1  # + the text
    url = payloads.too_many_pixels["messages"][0]["content"][0]["image_url"]["url"]
    png = base64.b64decode(url.split(",", 1)[1])
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert width * height > plan.max_image_pixels


def test_attempts_per_kind_follow_the_plan() -> None:
    plan = HostilePlan(stalled_uploads=3, never_read=2, midstream=1, refusals=1)
    payloads = Payloads(b"", {}, {}, {}, {})
    client = httpx.AsyncClient()  # never used: the attempts are only built
    attempts = hostile.hostile_attempts(Target("127.0.0.1", 9), client, plan, payloads)
    kinds = [getattr(a, "kind", None) for a in attempts]
    assert kinds.count("stalled_upload") == 3
    assert kinds.count("never_read") == 2
    assert kinds.count("midstream_disconnect") == 1
    assert kinds[-1] in hostile.REFUSAL_KINDS


def test_tcp_states_of_both_ends_from_the_kernel_table() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F40 0100007F:A000 04 00000000:00000000\n"  # server end: FIN_WAIT1
        "   1: 0100007F:A000 0100007F:1F40 01 00000000:00000000\n"  # our end: ESTABLISHED
    )
    ours, server = ("127.0.0.1", 0xA000), ("127.0.0.1", 0x1F40)
    assert hostile.tcp_states(ours, server, table) == ("ESTABLISHED", "FIN_WAIT1")
    assert hostile.tcp_states(ours, ("127.0.0.1", 1), table) == (None, None)


def test_server_errors_are_the_5xx_outcomes_only() -> None:
    tally = Tally()
    for outcome in ("500", "503", "429", "held_to_cap", "ReadTimeout"):
        tally.add("x", outcome, 0.1)
    assert tally.server_errors() == 2


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"HTTP/1.1 413 Payload Too Large\r\n\r\n", "413"),
        (b"HTTP/1.0 200 OK\r\n", "200"),
        (b"", None),
        (b"garbage", None),
    ],
)
def test_status_of_a_raw_response(data: bytes, status: str | None) -> None:
    assert status_of(data) == status
