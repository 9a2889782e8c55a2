"""Aggregate statistics over a trace: counts by kind and hypercall, sub-op histograms, rates."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pvmon.errors import TraceError
from pvmon.trace.reader import TraceReader

T = TypeVar("T")

#: Below this many frames, or this many events, a trace is read in one process
#: (starting a worker costs about as much as reading 10,000 events).
PARALLEL_MIN_FRAMES = 8
PARALLEL_MIN_EVENTS = 20_000
#: Each worker process gets at least this many frames.
PARALLEL_MIN_FRAMES_PER_JOB = 4


def default_jobs() -> int:
    """Worker processes for reading a whole trace: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _run_of_frames(fn: Callable[[TraceReader, int, int], T], path: str, start: int,
                   stop: int) -> T:
    with TraceReader(path) as reader:
        if stop > len(reader.frames):
            raise TraceError(f"{path}: the file changed while it was read")
        return fn(reader, start, stop)


def map_frame_runs(reader: TraceReader, fn: Callable[[TraceReader, int, int], T],
                   jobs: int = 1) -> list[T]:
    """``fn(reader, start, stop)`` over contiguous runs of ``reader``'s frames, in
    frame order, one result per run (merge them in order).

    ``jobs`` > 1 splits the frames into that many runs; this process reads the
    first while forked worker processes, each opening the file itself, read the
    rest (``fn`` must be a module-level function or a class's method, as pickle
    names it). Traces of fewer than :data:`PARALLEL_MIN_FRAMES` frames or
    :data:`PARALLEL_MIN_EVENTS` events are one run read in this process.
    Raises what ``fn`` raises, and :class:`~pvmon.errors.TraceError` when the
    file changed while it was read."""
    n = len(reader.frames)
    jobs = max(1, min(jobs, n // PARALLEL_MIN_FRAMES_PER_JOB))
    if jobs == 1 or n < PARALLEL_MIN_FRAMES or len(reader) < PARALLEL_MIN_EVENTS:
        return [fn(reader, 0, n)]
    bounds = [n * j // jobs for j in range(jobs + 1)]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(jobs - 1, mp_context=ctx) as pool:
        later = pool.map(_run_of_frames, [fn] * (jobs - 1),
                         [os.fspath(reader.path)] * (jobs - 1), bounds[1:-1], bounds[2:])
        first = fn(reader, 0, bounds[1])
        return [first, *later]


@dataclass
class HypercallStats:
    """One hypercall name: ``count`` calls, ``subops`` histogram of ``cmd``/``op`` values
    (for batched calls, of every sub-operation), ``batched``/``batch_ops``/``batch_max``
    for calls carrying an ``ops`` list, ``errors`` histogram of negative return values."""

    count: int = 0
    subops: Counter[str] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    batched: int = 0
    batch_ops: int = 0
    batch_max: int = 0


@dataclass
class TraceStats:
    """Counts over a run of events. Times are virtual, in ns."""

    events: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    hypercalls: dict[str, HypercallStats] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    console_bytes: Counter[str] = field(default_factory=Counter)
    #: TSC values the guest read (one per ``tsc`` event, one per value of a ``tsc_run``).
    tsc_reads: int = 0
    #: Port reads of an HVM platform guest (one per ``io`` event in, one per
    #: value of an ``io_run``).
    port_reads: int = 0
    cpus: set[Any] = field(default_factory=set)
    first_t: int | None = None
    last_t: int | None = None

    @classmethod
    def of(cls, reader: TraceReader, jobs: int = 1) -> TraceStats:
        """Statistics of every event in ``reader``, one frame at a time.

        ``jobs`` > 1 splits the frames into that many contiguous runs, each read by
        a forked worker process that opens the file itself; the parts are merged in
        order (decoding msgpack is the cost, and it scales with cores). Traces of
        fewer than :data:`PARALLEL_MIN_FRAMES` frames or :data:`PARALLEL_MIN_EVENTS`
        events are read in this process.
        Raises :class:`~pvmon.errors.TraceError` as the serial read would."""
        stats, *later = map_frame_runs(reader, cls._of_frames, jobs)
        for part in later:
            stats.merge(part)
        return stats

    @classmethod
    def _of_frames(cls, reader: TraceReader, start: int, stop: int) -> TraceStats:
        stats = cls()
        for i in range(start, stop):
            stats.add(reader.frame_events(i))
        return stats

    def merge(self, later: TraceStats) -> None:
        """Add the statistics of ``later``, a run of events that follows this one."""
        self.events += later.events
        self.by_kind.update(later.by_kind)
        for name, hs in later.hypercalls.items():
            mine = self.hypercalls.get(name)
            if mine is None:
                self.hypercalls[name] = hs
                continue
            mine.count += hs.count
            mine.subops.update(hs.subops)
            mine.errors.update(hs.errors)
            mine.batched += hs.batched
            mine.batch_ops += hs.batch_ops
            mine.batch_max = max(mine.batch_max, hs.batch_max)
        self.faults.update(later.faults)
        self.console_bytes.update(later.console_bytes)
        self.tsc_reads += later.tsc_reads
        self.port_reads += later.port_reads
        self.cpus |= later.cpus
        if self.first_t is None:
            self.first_t = later.first_t
        if later.last_t is not None:
            self.last_t = later.last_t

    @property
    def duration_ns(self) -> int:
        """Virtual time from the first to the last event."""
        if self.first_t is None or self.last_t is None:
            return 0
        return self.last_t - self.first_t

    def add(self, events: Iterable[dict[Any, Any]]) -> None:
        """Count ``events`` (a hot loop: it runs once per event of a whole trace).
        (Counting a frame in list-comprehension passes instead measured slower.)"""
        by_kind = self.by_kind
        hcs = self.hypercalls
        n = 0
        first_t = last_t = None
        cpus = self.cpus
        last_cpu = object()
        for ev in events:
            n += 1
            if first_t is None:
                first_t = ev["t"]
            last_t = ev["t"]
            cpu = ev.get("cpu")
            if cpu is not last_cpu and cpu != last_cpu:
                last_cpu = cpu
                cpus.add(cpu if type(cpu) is int else repr(cpu))
            k = ev["k"]
            by_kind[k] += 1
            if k != "hc":
                self._other(ev, k)
                continue
            name = ev.get("name")
            if not isinstance(name, str):
                name = f"hc{ev.get('nr')!r}"
            hs = hcs.get(name)
            if hs is None:
                hs = hcs[name] = HypercallStats()
            hs.count += 1
            ret = ev.get("ret")
            if type(ret) is int and ret < 0:
                hs.errors[ret] += 1
            op = ev.get("op")
            if type(op) is not dict:
                continue
            ops = op.get("ops")
            if type(ops) is list:
                hs.batched += 1
                nops = len(ops)
                hs.batch_ops += nops
                hs.batch_max = max(hs.batch_max, nops)
                sub = hs.subops
                for o in ops:
                    if type(o) is str:          # batched sub-ops recorded by name
                        sub[o] += 1
                    elif type(o) is dict:
                        c = o.get("cmd", o.get("op"))
                        if c is not None:
                            sub[c if type(c) is str else repr(c)] += 1
            else:
                c = op.get("cmd", op.get("op"))
                if c is not None:
                    hs.subops[c if type(c) is str else repr(c)] += 1
        self.events += n
        if n:
            if self.first_t is None:
                self.first_t = first_t
            self.last_t = last_t

    def _other(self, ev: dict[Any, Any], k: Any) -> None:
        """The details counted for an event that is not a hypercall."""
        if k == "tsc_run":
            vals = ev.get("val")
            if type(vals) is list:
                self.tsc_reads += len(vals)
        elif k == "tsc":
            self.tsc_reads += 1
        elif k == "io_run":
            vals = ev.get("val")
            if type(vals) is list:
                self.port_reads += len(vals)
        elif k == "io":
            if ev.get("dir") == "in":
                self.port_reads += 1
        elif k == "fault":
            self.faults[str(ev.get("vec"))] += 1
        elif k == "con":
            data = ev.get("data")
            if isinstance(data, (bytes, str)):
                self.console_bytes[str(ev.get("dir"))] += len(data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (rates in calls per virtual second)."""
        seconds = self.duration_ns / 1e9
        return {
            "events": self.events,
            "duration_ns": self.duration_ns,
            "by_kind": dict(self.by_kind.most_common()),
            "hypercalls": {
                name: {
                    "count": hs.count,
                    "rate_per_s": hs.count / seconds if seconds else None,
                    "subops": dict(hs.subops.most_common()),
                    "errors": {str(k): v for k, v in hs.errors.most_common()},
                    "batched": hs.batched,
                    "batch_ops": hs.batch_ops,
                    "batch_max": hs.batch_max,
                }
                for name, hs in sorted(self.hypercalls.items(), key=lambda kv: -kv[1].count)
            },
            "faults": dict(self.faults.most_common()),
            "console_bytes": dict(self.console_bytes),
            "tsc_reads": self.tsc_reads,
            "port_reads": self.port_reads,
            "cpus": sorted(map(str, self.cpus)),
        }
