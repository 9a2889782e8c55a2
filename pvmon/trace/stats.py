"""Aggregate statistics over a trace: counts by kind and hypercall, sub-op histograms, rates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pvmon.trace.reader import TraceReader


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
    cpus: set[Any] = field(default_factory=set)
    first_t: int | None = None
    last_t: int | None = None

    @classmethod
    def of(cls, reader: TraceReader) -> TraceStats:
        """Statistics of every event in ``reader``, one frame at a time."""
        stats = cls()
        for i in range(len(reader.frames)):
            stats.add(reader.frame_events(i))
        return stats

    @property
    def duration_ns(self) -> int:
        """Virtual time from the first to the last event."""
        if self.first_t is None or self.last_t is None:
            return 0
        return self.last_t - self.first_t

    def add(self, events: Iterable[dict[Any, Any]]) -> None:
        """Count ``events`` (a hot loop: it runs once per event of a whole trace)."""
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
                if k == "fault":
                    self.faults[str(ev.get("vec"))] += 1
                elif k == "con":
                    data = ev.get("data")
                    if isinstance(data, (bytes, str)):
                        self.console_bytes[str(ev.get("dir"))] += len(data)
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
                    if type(o) is dict:
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
            "cpus": sorted(map(str, self.cpus)),
        }
