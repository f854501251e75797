"""A process-wide budget of decoded pixels, so no burst of images can run the server out of memory.

A 100 KB PNG can declare 25 million transparent pixels: 100 MB once decoded. Per-request limits
cannot bound what many requests decode at once; this does. A decode reserves the pixels it will
allocate (known from the header before any decoding) and gives them back when it ends; past the
budget, decodes wait their turn in arrival order, so a large image is not starved by small ones.
One image larger than the whole budget still runs, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from pathlib import Path

BYTES_PER_PIXEL = 8  # peak while decoding: RGBA or 16-bit source (4) plus its RGB copy (3), rounded
MEMORY_FRACTION = 1 / 16  # of the container's memory, for images being decoded
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def memory_bytes() -> int:
    """The container's memory limit, or the machine's memory where there is none."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), physical)
    return physical


def default_pixel_budget(floor: int) -> int:
    """A sixteenth of memory at 8 bytes a pixel, and never less than `floor` (one largest image):
    an 8 GiB pod decodes ≈ 67 MP at once, a 24 GiB machine ≈ 200 MP."""
    return max(floor, int(memory_bytes() * MEMORY_FRACTION) // BYTES_PER_PIXEL)


class PixelBudget:
    """An async, first-come first-served counting semaphore over pixels."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"pixel budget must be positive, got {capacity}")
        self.capacity = capacity
        self.reserved = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, pixels: int, timeout_s: float) -> int:
        """Hold `pixels` (at most the whole budget) until `release`; TimeoutError past
        `timeout_s`. Returns the amount held."""
        amount = max(0, min(pixels, self.capacity))
        if not self._waiters and self.reserved + amount <= self.capacity:
            self.reserved += amount  # the common case: no await, no trip through the loop
            return amount
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(amount)  # granted just as we gave up: hand it on
            else:
                with contextlib.suppress(ValueError):  # _grant may have dropped it already
                    self._waiters.remove(entry)
                self._grant()  # we may have been the head that blocked smaller ones
            raise
        return amount

    def release(self, amount: int) -> None:
        self.reserved -= amount
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.reserved + self._waiters[0][0] <= self.capacity:
            amount, future = self._waiters.popleft()
            if not future.done():
                self.reserved += amount
                future.set_result(None)
