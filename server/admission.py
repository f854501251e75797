"""Admission control: a non-blocking cap on requests in flight, and the drain switch.

Past the cap a request gets 429 with Retry-After at once instead of queueing: a fast refusal lets
the client or load balancer go elsewhere, where a queue would only turn into timeouts. The same
count tells the SIGTERM drain when the last request has finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.errors import Overloaded, Unavailable


class Admission:
    def __init__(self, max_in_flight: int, retry_after_s: int = 1) -> None:
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.pre_engine = 0  # admitted, still decoding images / detecting faces
        self.draining = False

    def acquire(self) -> None:
        if self.draining:
            raise Unavailable(
                "The server is shutting down; retry on another replica.",
                code="draining",
                headers={"Retry-After": "1"},
            )
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                "The server is at capacity; retry shortly.",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    @asynccontextmanager
    async def preparing(self) -> AsyncIterator[None]:
        """Count work admitted but not yet with the engine (backlog the engine cannot see)."""
        self.pre_engine += 1
        try:
            yield
        finally:
            self.pre_engine -= 1
