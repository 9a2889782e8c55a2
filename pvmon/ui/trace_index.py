"""One pass over a trace for the player: what the stream shows, the console
as it grows, counts and the rate over virtual time.

Built on a worker thread when a trace is opened (about 1 s per 500k events);
afterwards every seek, filter and console rebuild uses only this index plus
one decompressed frame.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter
from typing import Any

from pvmon.trace.reader import TraceReader
from pvmon.trace.render import event_label
from pvmon.ui.console_text import ConsoleChannels
from pvmon.ui.filters import EventFilter
from pvmon.ui.rates import RateHistory

# Kinds the stream shows by default. TSC reads and CPUID answers are
# recorded too but would drown the hypercalls; the filter can ask for them.
STREAM_KINDS = frozenset({"hc", "fault", "upcall", "exit"})


class TraceIndex:
    """Index of one trace.

    - ``seqs``: seq of every stream event (kinds in :data:`STREAM_KINDS`), in order.
    - ``console_seqs`` / ``console_data``: console output chunks and their seqs.
    - ``counts``: hypercall name -> calls; ``rates``: :class:`RateHistory` of hypercalls.
    - ``exit``: the ``exit`` event, if the trace has one.
    """

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader
        self.seqs = array("Q")
        self._keys: list[dict[str, Any]] = []  # the fields a filter looks at, per row
        self.console_seqs: list[int] = []
        self.console_data: list[bytes] = []
        self.counts: Counter[str] = Counter()
        self.rates = RateHistory()
        self.exit: dict[str, Any] | None = None
        channels = ConsoleChannels()
        for i in range(len(reader.frames)):
            for ev in reader.frame_events(i):
                k = ev["k"]
                if k in STREAM_KINDS:
                    self.seqs.append(ev["seq"])
                    self._keys.append(_filter_key(ev))
                    if k == "hc":
                        self.counts[ev.get("name")] += 1
                        self.rates.add_time(ev["t"])
                    elif k == "exit":
                        self.exit = ev
                elif k == "con" and ev.get("dir") == "out" and \
                        isinstance(ev.get("data"), bytes) and channels.accept(ev.get("ch")):
                    self.console_seqs.append(ev["seq"])
                    self.console_data.append(ev["data"])

    def event(self, seq: int) -> dict[str, Any] | None:
        """The event with this seq (decompresses at most one frame)."""
        for ev in self.reader.events(seq, seq + 1):
            return ev
        return None

    def filtered(self, flt: EventFilter) -> array:
        """Seqs of the stream events that match ``flt``. Name, kind and family
        terms are answered from the index; sub-op and ABI terms read the events."""
        if not flt:
            return self.seqs
        out = array("Q")
        for seq, key in zip(self.seqs, self._keys, strict=True):
            if flt.matches(key):
                out.append(seq)
        return out

    def console_until(self, seq: int) -> bytes:
        """Console output written by events ``<= seq``."""
        n = bisect.bisect_right(self.console_seqs, seq)
        return b"".join(self.console_data[:n])

    def row_of(self, seq: int, rows: array | None = None) -> int:
        """Row (in ``rows``, default all stream events) of the last event ``<= seq``."""
        rows = self.seqs if rows is None else rows
        return max(0, bisect.bisect_right(rows, seq) - 1)


def _filter_key(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields :class:`EventFilter` reads: kind, name, ABI and sub-op."""
    key: dict[str, Any] = {"k": ev["k"], "name": event_label(ev)}
    if "abi" in ev:
        key["abi"] = ev["abi"]
    op = ev.get("op")
    if isinstance(op, dict):
        cmd = op.get("cmd", op.get("op"))
        if isinstance(cmd, str):
            key["op"] = {"cmd": cmd}
    return key
