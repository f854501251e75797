"""Admission control: non-blocking caps on requests and on engine work in flight, and the drain
switch.

Past a cap a request gets 429 with Retry-After at once instead of queueing: a fast refusal lets
the client or load balancer go elsewhere, where a queue would only turn into timeouts. Requests
alone are a poor measure of load: one chat request may ask for n = 8 choices of 2,048 tokens, one
faces request for dozens of sequences (faces × attributes). So each request also reserves its
work, in engine sequences × output tokens: a chat request before any image is decoded, a faces
request once detection has counted the faces. The request count also tells the SIGTERM drain
when the last request has finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from server.errors import APIError, Overloaded, Unavailable


class Admission:
    def __init__(
        self, max_in_flight: int, retry_after_s: int = 1, work_budget: int | None = None
    ) -> None:
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.work_budget = work_budget  # engine sequences × tokens; None: not limited
        self.in_flight = 0
        self.work = 0  # reserved by the requests in flight
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
            raise self._overloaded("The server is at capacity; retry shortly.")
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1

    def reserve_work(self, amount: int) -> None:
        """Reserve `amount` more work, or 429. A request larger than the whole budget still runs
        when nothing else is reserved: refusing it would refuse it forever."""
        budget = self.work_budget
        if budget is not None and self.work > 0 and self.work + amount > budget:
            raise self._overloaded(
                "The server's engine work is fully booked; retry shortly, or ask for fewer "
                "tokens, choices or faces."
            )
        self.work += amount

    def release_work(self, amount: int) -> None:
        self.work -= amount

    def _overloaded(self, message: str) -> Overloaded:
        return Overloaded(message, headers={"Retry-After": str(self.retry_after_s)})

    @asynccontextmanager
    async def preparing(self) -> AsyncIterator[None]:
        """Count work admitted but not yet with the engine (backlog the engine cannot see)."""
        self.pre_engine += 1
        try:
            yield
        finally:
            self.pre_engine -= 1


@dataclass
class Ticket:
    """One request's hold on admission: its slot and the work it reserved, given back together
    once its response is done (by the middleware, whatever the route did)."""

    admission: Admission
    on_refusal: Callable[[], None] = lambda: None  # counts 429s
    held: bool = False
    work: int = 0

    def take(self) -> None:
        if not self.held:
            self._refusals_counted(self.admission.acquire)
            self.held = True

    def reserve(self, work: int) -> None:
        """Reserve `work` more (engine sequences × tokens) for this request, or 429."""
        self._refusals_counted(lambda: self.admission.reserve_work(work))
        self.work += work

    def give_back(self) -> None:
        if self.work:
            self.admission.release_work(self.work)
            self.work = 0
        if self.held:
            self.held = False
            self.admission.release()

    def _refusals_counted(self, step: Callable[[], None]) -> None:
        try:
            step()
        except APIError as refused:
            if refused.status == 429:
                self.on_refusal()
            raise
