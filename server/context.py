"""One request's context: what travels from the middleware down to the image loader and the
engine calls, without being handed through every signature.

`RequestContext` (server/middleware.py) opens a `RequestScope` for each HTTP request and binds
it to a contextvar; tasks the handler starts copy the binding, so the image loader, the services
and `run_generation` all find the same scope. It carries the request's one deadline, the
admission ticket, the record of its images for the access log, and its status.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from server.admission import Ticket
from server.errors import Timeout


@dataclass
class RequestScope:
    deadline: float | None = None  # event-loop time by which the whole request must end
    timeout_s: float | None = None  # the setting that set it, for the 504's message
    images: list[dict[str, object]] = field(default_factory=list)  # never bytes: digests, sizes
    status: int = 500  # the response's, once it started
    ticket: Ticket | None = None  # the admission slot and work, for generation routes

    def seconds_left(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()

    def timed_out(self) -> Timeout:
        timeout = "its deadline" if self.timeout_s is None else f"{self.timeout_s:g} s"
        return Timeout(f"The request did not finish within {timeout}.", code="request_timeout")


_current: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "facellm_request", default=None
)


def current_request() -> RequestScope | None:
    """The scope of the request being served, or None outside one (tests, batch jobs)."""
    return _current.get()


def bind(scope: RequestScope) -> contextvars.Token[RequestScope | None]:
    return _current.set(scope)


def unbind(token: contextvars.Token[RequestScope | None]) -> None:
    _current.reset(token)


@asynccontextmanager
async def request_deadline() -> AsyncIterator[None]:
    """Run the block under the request's one deadline: past it, 504 (the work is cancelled)."""
    scope = current_request()
    if scope is None or scope.deadline is None:
        yield
        return
    try:
        async with asyncio.timeout_at(scope.deadline) as wait:
            yield
    except TimeoutError:
        if wait.expired():
            raise scope.timed_out() from None
        raise
