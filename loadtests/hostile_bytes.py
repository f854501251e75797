"""Byte-level hostile clients for the soak, beside `loadtests/hostile.py`'s: each on a raw
socket, bounded in time, its outcome a string as there.

- `crlf_trickle`: one request, then a bare CRLF every half second on the kept-alive connection.
  The parser skips a CRLF without starting a request; a server whose keep-alive clock restarts on
  any bytes keeps the connection (and a slot of its connection cap) forever.
- `trailer_flood`: a chunked POST whose body ends with `0\\r\\n` and then trailer lines without
  end. A server that buffers trailers grows by every byte of them.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

from loadtests.hostile import CHAT_PATH, CONNECT_TIMEOUT_S, Target, status_of

TRICKLE_EVERY_S = 0.5
TRAILER_BLOCK = b"ab:cd\r\n" * 1024  # 7 KB of trailer lines a write
MAX_TRAILER_BYTES = 200 * 1024 * 1024  # the flood stops here if the server never does


async def crlf_trickle(target: Target, cap_s: float) -> str:
    """A GET /health, then CRLFs: `server_closed` once the server ends the connection (its
    keep-alive clock held), `held_to_cap` if it is still open after `cap_s`."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), CONNECT_TIMEOUT_S
    )
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {target.host}\r\n\r\n".encode())
        await writer.drain()
        status = status_of(await asyncio.wait_for(reader.read(4096), CONNECT_TIMEOUT_S))
        if status != "200":
            return status or "garbage"
        deadline = time.monotonic() + cap_s
        while time.monotonic() < deadline:
            with suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(4096), TRICKLE_EVERY_S) == b"":
                    return "server_closed"
            writer.write(b"\r\n")
            await writer.drain()
        return "held_to_cap"
    except (ConnectionResetError, BrokenPipeError):
        return "server_closed"
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()


async def trailer_flood(target: Target, cap_s: float) -> str:
    """Trailers until the server answers (its status: it must be a 4xx) or closes."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), CONNECT_TIMEOUT_S
    )
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {target.host}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    ).encode()
    answer = asyncio.ensure_future(reader.read(4096))
    try:
        writer.write(head)
        deadline = time.monotonic() + cap_s
        sent = 0
        while not answer.done() and sent < MAX_TRAILER_BYTES and time.monotonic() < deadline:
            writer.write(TRAILER_BLOCK)
            sent += len(TRAILER_BLOCK)
            # A server that stopped reading blocks the drain: the answer must still be read.
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                drained.cancel()
            elif drained.exception() is not None:
                raise drained.exception()  # type: ignore[misc]
        data = await asyncio.wait_for(answer, CONNECT_TIMEOUT_S)
        return status_of(data) or ("server_closed" if not data else "garbage")
    except (ConnectionResetError, BrokenPipeError):
        with suppress(Exception):
            data = await asyncio.wait_for(answer, 1.0)
            return status_of(data) or "server_reset"
        return "server_reset"
    except TimeoutError:
        return "held_to_cap"
    finally:
        answer.cancel()
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()
