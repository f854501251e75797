"""The batch runner: validates new batches, claims lines under a lease and runs them, ends
batches (completed, cancelled, expired) with their output and error files.

Low priority, three times over: lines go to vLLM at a larger priority number; a line starts only
after `idle_s` without interactive requests in flight, and not while the engine has a queue; and
an interactive request preempts the lines running (cancelled, their leases released: they run
again later, still answered once). Batches use only the capacity interactive traffic leaves. On
drain or shutdown the runner stops claiming and gives its unfinished lines back: a restart, or
another replica, runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from server.batch.execute import LineExecutor
from server.batch.finalize import error_file, write_results
from server.batch.records import BatchRecord, ClaimedLine
from server.batch.store import Store
from server.batch.validate import check_lines
from server.metrics import Metrics

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # how often an idle runner looks for new work
BUSY_POLL_S = 0.02  # how soon a runner with lines running, or held back, looks again
COUNTS_EVERY_S = 5.0  # the batches-by-status gauge
RETRY_PAUSE_S = 1.0  # no new line for this long after the server answered a line 503


@dataclass(frozen=True)
class RunnerOptions:
    concurrency: int
    max_lines_per_s: float  # 0: unbounded
    lease_s: float
    max_line_bytes: int
    max_lines: int
    retention_s: float
    idle_s: float = 0.5  # interactive quiet this long before a line starts
    preempt: bool = True  # interactive traffic cancels running lines (they run again later)


class BatchRunner:
    def __init__(
        self,
        store: Store,
        executor: LineExecutor,
        options: RunnerOptions,
        interactive: Callable[[], bool],
        engine_queued: Callable[[], bool],
        draining: Callable[[], bool],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.executor = executor
        self.options = options
        self.interactive = interactive  # interactive requests in flight: batch lines yield
        self.engine_queued = engine_queued  # the engine has a queue: no line would start now
        self.draining = draining
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._next_start = 0.0  # the earliest time the next line may start
        self._renewed = self._counted = 0.0
        self._last_busy = 0.0  # when interactive traffic was last seen

    async def start(self) -> None:
        await self.store.release(await self._dead_owners())
        self._loop = asyncio.create_task(self._run(), name="batch-runner")

    async def stop(self) -> None:
        """Stop claiming, cancel the lines running here and give them back."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        await self._give_back()

    async def _give_back(self) -> None:
        """Cancel the lines running here and release every lease held: they run again (here
        or on another replica) as if never started. Their engine requests are aborted."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.release([self.owner])

    def wake(self) -> None:
        """New work may be waiting (a batch was created or cancelled here)."""
        self._wake.set()

    async def _dead_owners(self) -> list[str]:
        """Holders of leases that were processes on this host and are gone (a SIGKILL): their
        lines need not wait for the lease to run out. Another host's leases only time out."""
        dead = []
        for owner in await self.store.lease_owners():
            host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                dead.append(owner)
            elif host == socket.gethostname() and pid == str(os.getpid()):
                dead.append(owner)  # this pid, an earlier life (a container's pid 1)
        return dead

    async def _run(self) -> None:
        while True:
            try:
                worked = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("batch runner step failed")
                worked = False
            if not worked:
                self._wake.clear()
                wait = BUSY_POLL_S if self.running or self.interactive() else IDLE_POLL_S
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()

    async def _step(self) -> bool:
        """One piece of work: a batch's validation or end, else more lines. False: nothing."""
        now = time.time()
        await self._housekeeping(now)
        if self.draining():
            return False
        if self.interactive():
            self._last_busy = now
            if self.running and self.options.preempt:
                await self._give_back()
        lease_until = now + self.options.lease_s
        batch = await self.store.claim_batch(self.owner, now, lease_until)
        if batch is not None:
            await self._advance(batch)
            return True
        return await self._fill(now, lease_until)

    async def _housekeeping(self, now: float) -> None:
        if now - self._renewed >= self.options.lease_s / 3:
            self._renewed = now
            await self.store.renew(self.owner, now + self.options.lease_s)
        if now - self._counted >= COUNTS_EVERY_S:
            self._counted = now
            counts = await self.store.counts()
            for status in self.metrics.batch_statuses:
                self.metrics.batches.labels(status).set(counts.get(status, 0))
            if self.options.retention_s:
                for file_id in await self.store.purge(int(now - self.options.retention_s)):
                    await asyncio.to_thread(self.store.blobs.delete, file_id)

    async def _fill(self, now: float, lease_until: float) -> bool:
        room = self.options.concurrency - len(self.running)
        if room <= 0 or now - self._last_busy < self.options.idle_s or self.engine_queued():
            return False
        if now < self._next_start:  # the rate bound, or a pause after a 503
            return False
        if rate := self.options.max_lines_per_s:
            room = 1
        lines = await self.store.claim_lines(self.owner, now, lease_until, room)
        for line in lines:
            key = (line.batch_id, line.line_no)
            self.running[key] = asyncio.create_task(self._run_line(line), name="batch-line")
        if lines and rate:
            self._next_start = max(now, self._next_start) + 1 / rate
        return bool(lines)

    async def _run_line(self, line: ClaimedLine) -> None:
        try:
            raw = await asyncio.to_thread(
                self.store.blobs.read, line.input_file_id, line.start, line.size
            )
            result = await self.executor.run(line.endpoint, line.custom_id, raw)
            if result.retry:
                log.warning("batch line %s/%d: server unavailable, will run again",
                            line.batch_id, line.line_no)  # fmt: skip
                self._next_start = time.time() + RETRY_PAUSE_S
                await self.store.release_line(line, self.owner)
            elif await self.store.record(line, result, int(time.time())):
                self.metrics.batch_lines.labels("completed" if result.ok else "failed").inc()
        except asyncio.CancelledError:
            raise  # the lease stays until released or run out: the line runs again
        except Exception:
            log.exception("batch line %s/%d not recorded", line.batch_id, line.line_no)
        finally:
            self.running.pop((line.batch_id, line.line_no), None)
            self._wake.set()

    async def _advance(self, batch: BatchRecord) -> None:
        self._counted = 0.0  # a status changes: the gauge catches up at the next step
        now = int(time.time())
        if batch.status == "validating":
            await self._validate(batch)
        elif batch.status == "cancelling":
            await self._cancel_local(batch.id)
            await self._end(batch, "cancelled")
        elif batch.status == "in_progress" and (batch.stamps["expires_at"] or 0) <= now:
            await self._cancel_local(batch.id)
            await self._end(batch, "expired")
        elif batch.status == "in_progress":
            if await self.store.move(batch.id, "in_progress", "finalizing", now):
                await self._end(batch, "completed")
        elif batch.status == "finalizing":  # a finalizer died midway
            await self._end(batch, "completed")

    async def _validate(self, batch: BatchRecord) -> None:
        opts = self.options
        lines = self.store.blobs.lines(batch.input_file_id, opts.max_line_bytes)
        checked = await asyncio.to_thread(
            check_lines, batch.endpoint, lines, opts.max_line_bytes, opts.max_lines
        )
        now = int(time.time())
        if checked.errors:
            errors = await asyncio.to_thread(error_file, self.store, batch, checked.errors)
            await self.store.finish(batch, "failed", now, [errors], checked.errors[:1000])
            log.info("batch %s failed validation: %d bad lines", batch.id, len(checked.errors))
        elif await self.store.start(batch.id, checked.lines, now):
            log.info("batch %s in progress: %d lines", batch.id, len(checked.lines))

    async def _end(self, batch: BatchRecord, ending: str) -> None:
        files = await asyncio.to_thread(
            write_results, self.store, batch, ending, self.options.retention_s
        )
        await self.store.finish(batch, ending, int(time.time()), files)  # type: ignore[arg-type]
        log.info("batch %s %s", batch.id, ending)

    async def _cancel_local(self, batch_id: str) -> None:
        tasks = [task for (bid, _), task in self.running.items() if bid == batch_id]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
