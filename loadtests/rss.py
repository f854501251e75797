"""Resident memory of a server's whole process tree (API process, vLLM EngineCore, workers),
sampled on a thread while a load runs.

RSS is summed over processes, so pages they share are counted once per process: compare growth,
not absolute totals.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import psutil


def tree_rss(root: psutil.Process) -> dict[int, int]:
    """RSS in bytes of `root` and each live descendant, by pid (processes that vanish are
    skipped: a sample must never fail mid-burst)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    rss = {}
    for proc in procs:
        try:
            rss[proc.pid] = proc.memory_info().rss
        except psutil.Error:
            continue
    return rss


@dataclass
class RssSampler:
    """Samples the tree's total RSS every `interval_s` on a thread (psutil calls block, and the
    event loop is busy sending), keeping at most `max_samples` so a hung run cannot grow it.

    When the machine's available memory falls under `min_available`, `low_memory` is set: the
    burst stops waiting for answers rather than push the machine (and its neighbours) into the
    OOM killer."""

    pid: int
    interval_s: float = 0.05
    max_samples: int = 20_000
    min_available: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    peak_by_pid: dict[int, int] = field(default_factory=dict)
    low_memory: threading.Event = field(default_factory=threading.Event)
    names: dict[int, str] = field(default_factory=dict)
    after_total: int = 0
    after_by_pid: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.root = psutil.Process(self.pid)

    def total(self) -> int:
        return sum(tree_rss(self.root).values())

    def labelled(self, by_pid: dict[int, int]) -> dict[str, int]:
        """`name[pid]` → value, for the report. Names are read again here, since vLLM renames
        its processes (`VLLM::EngineCore`…) after they start; gone ones keep the name seen."""
        names = {p: _process_name(p) for p in by_pid}
        return {
            f"{names[p] if names[p] != '?' else self.names.get(p, '?')}[{p}]": v
            for p, v in sorted(by_pid.items())
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set() and len(self.samples) < self.max_samples:
            rss = tree_rss(self.root)
            self.samples.append((time.monotonic() - t0, sum(rss.values())))
            for pid, value in rss.items():
                self.peak_by_pid[pid] = max(value, self.peak_by_pid.get(pid, 0))
                if pid not in self.names:
                    self.names[pid] = _process_name(pid)
            if psutil.virtual_memory().available < self.min_available:
                self.low_memory.set()
            self._stop.wait(self.interval_s)

    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


def settled_rss(sampler: RssSampler, seconds: float, reads: int = 3) -> int:
    """The tree's RSS after `seconds` of quiet, as the median of a few reads 100 ms apart."""
    time.sleep(seconds)
    values = []
    for _ in range(reads):
        values.append(sampler.total())
        time.sleep(0.1)
    return sorted(values)[len(values) // 2]


def listening_pid(base_url: str) -> int | None:
    """The pid listening on the URL's TCP port, if this user may see it."""
    port = httpx.URL(base_url).port
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return int(conn.pid) if conn.pid is not None else None
    return None


def _process_name(pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except psutil.Error:
        return "?"
