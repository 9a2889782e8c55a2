"""One pass over a trace for the player: what the stream shows, the console
as it grows, counts and the rate over virtual time.

Built on a worker thread when a trace is opened (about 1 s per 500k events);
afterwards every seek, filter and console rebuild uses only this index plus
one decompressed frame.
"""

from __future__ import annotations

import bisect
import heapq
import re
from array import array
from collections import Counter
from typing import Any

from pvmon.dispatch.console_output import GuestConsole
from pvmon.trace.reader import TraceReader
from pvmon.trace.render import event_label
from pvmon.ui.console_text import sanitize
from pvmon.ui.filters import EventFilter
from pvmon.ui.rates import RateHistory

# Kinds the stream shows by default. TSC reads and CPUID answers are
# recorded too but would drown the hypercalls. Console events (``con``:
# typed input, output on either channel) are shown when a filter term names
# them: ``console``, ``con``, ``input``, ``output``, ``ring``.
STREAM_KINDS = frozenset({"hc", "fault", "upcall", "exit",
                          # an HVM guest's (KVM, Xen PVH) exits other than hypercalls;
                          # port I/O and MMIO stay out (a console byte each)
                          "msr", "irq", "halt",
                          # an SMP run's scheduler switching vCPUs (docs/smp.md)
                          "vcpu_switch"})


def console_name(direction: str, channel: str) -> str:
    """The name a filter matches for a console event: ``console input ring``,
    ``console output io``, ... (``dir`` "in" is typed input)."""
    return f"console {'input' if direction == 'in' else 'output'} {channel}"


class TraceIndex:
    """Index of one trace.

    - ``seqs``: seq of every stream event (kinds in :data:`STREAM_KINDS`), in order.
    - ``console_seqs`` / ``console_data``: console output chunks and their seqs
      (the guest console once, as `pvmon run` prints it: see
      :class:`~pvmon.dispatch.console_output.GuestConsole`; held-back ring
      output at the seq of the event that released it).
    - ``input_seqs`` / ``input_data``: console input typed into the guest.
    - ``con_seqs``: seq of every console event (both directions and channels),
      the rows a filter can add to the stream.
    - ``counts``: hypercall name -> calls; ``rates``: :class:`RateHistory` of hypercalls.
    - ``exit``: the ``exit`` event, if the trace has one.
    - ``pvops``: seq -> canonical operation names of every event that carries
      some, None until :meth:`derive_pvops` ran (``pvops_error``: why an ABI
      gave none).
    """

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader
        self.seqs = array("Q")
        self._keys: list[dict[str, Any]] = []  # the fields a filter looks at, per row
        self.console_seqs: list[int] = []
        self.console_data: list[bytes] = []
        self.input_seqs: list[int] = []
        self.input_data: list[bytes] = []
        self.con_seqs = array("Q")
        self._con_keys: list[dict[str, Any]] = []   # shared: one dict per (dir, channel)
        self.counts: Counter[str] = Counter()
        self.rates = RateHistory()
        self.exit: dict[str, Any] | None = None
        self.pvops: dict[int, tuple[str, ...]] | None = None
        self.pvops_error: str | None = None
        self._pv_extra = array("Q")      # seqs of other events carrying operations
        self._pv_extra_keys: list[dict[str, Any]] = []
        self._text: dict[str, tuple[str, list[int], list[int]]] = {}
        con_keys: dict[tuple[str, str], dict[str, Any]] = {}
        at = 0      # seq of the console event being fed to `console`

        def shown(data: bytes) -> None:
            if data:
                self.console_seqs.append(at)
                self.console_data.append(data)
        console = GuestConsole(shown)
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
                elif k == "con":
                    d, ch = str(ev.get("dir")), str(ev.get("ch"))
                    key = con_keys.get((d, ch))
                    if key is None:
                        key = con_keys[(d, ch)] = {"k": "con", "name": console_name(d, ch)}
                    self.con_seqs.append(ev["seq"])
                    self._con_keys.append(key)
                    data = ev.get("data")
                    if not isinstance(data, bytes):
                        continue
                    if d == "in":
                        self.input_seqs.append(ev["seq"])
                        self.input_data.append(data)
                    elif d == "out":
                        at = ev["seq"]
                        console(ch, data)
        console.close()

    def event(self, seq: int) -> dict[str, Any] | None:
        """The event with this seq (decompresses at most one frame)."""
        for ev in self.reader.events(seq, seq + 1):
            return ev
        return None

    def derive_pvops(self) -> None:
        """Derive the canonical operations of every event (:mod:`pvmon.pvops`,
        as ``pvmon trace cat --pvops`` does): one more pass over the trace
        (worker thread). Sets :attr:`pvops`
        last, so another thread sees it whole or not at all."""
        if self.pvops is not None:
            return
        from pvmon.ui.canonical import CanonicalOps, trace_abi
        reader = self.reader
        canon = CanonicalOps(trace_abi(reader.header), reader.header)
        out: dict[int, tuple[str, ...]] = {}
        extra, extra_keys = array("Q"), []
        for i in range(len(reader.frames)):
            for ev in reader.frame_events(i):
                names = canon.of(ev)
                if names:
                    seq = ev["seq"]
                    out[seq] = names
                    if ev["k"] not in STREAM_KINDS and ev["k"] != "con":
                        extra.append(seq)
                        extra_keys.append(_filter_key(ev))
        self._pv_extra, self._pv_extra_keys = extra, extra_keys
        self.pvops_error = canon.error
        self.pvops = out

    def filtered(self, flt: EventFilter) -> array:
        """Seqs of the events that match ``flt``, in order: stream events, and
        console events when a positive term names them (``console``,
        ``input``, ``ring``, ...; see :func:`console_name`). A dotted term
        matches canonical operations (once :meth:`derive_pvops` ran; before,
        none), and a positive one also adds the events of other kinds that
        carry them (TSC reads: ``time.read_clock``; port I/O). Answered from
        the index alone."""
        if not flt:
            return self.seqs
        pv = self.pvops if flt.canonical and self.pvops is not None else {}
        rows = array("Q", (seq for seq, key in zip(self.seqs, self._keys, strict=True)
                           if flt.matches(key, pv.get(seq, ()))))
        if flt.include:   # exclusions alone keep the default kinds
            con = [seq for seq, key in zip(self.con_seqs, self._con_keys, strict=True)
                   if flt.matches(key, pv.get(seq, ()))]
            extra = [seq for seq, key in zip(self._pv_extra, self._pv_extra_keys, strict=True)
                     if flt.matches(key, pv[seq])] if pv and flt.canonical_include else []
            if con or extra:
                return array("Q", heapq.merge(rows, con, extra))
        return rows

    def console_hits(self, needle: str, direction: str = "out") -> list[int]:
        """Seqs of the console events where ``needle`` occurs (case-insensitive)
        in the console output the pane shows (``direction`` "out") or in the
        typed input ("in"), in order. A match split across events counts at the
        event that completes it (the guest writes, and users type, in pieces)."""
        if not needle:
            return []
        if direction not in self._text:
            seqs, data = (self.input_seqs, self.input_data) if direction == "in" else \
                (self.console_seqs, self.console_data)
            parts = [sanitize(d) for d in data]
            starts, pos = [], 0
            for p in parts:
                starts.append(pos)
                pos += len(p)
            self._text[direction] = ("".join(parts), starts, seqs)
        text, starts, seqs = self._text[direction]
        hits: list[int] = []
        for m in re.finditer(re.escape(needle), text, re.IGNORECASE):
            seq = seqs[bisect.bisect_right(starts, m.end() - 1) - 1]
            if not hits or hits[-1] != seq:
                hits.append(seq)
        return hits

    def console_until(self, seq: int) -> bytes:
        """Console output written by events ``<= seq``."""
        n = bisect.bisect_right(self.console_seqs, seq)
        return b"".join(self.console_data[:n])

    def row_of(self, seq: int, rows: array | None = None) -> int:
        """Row (in ``rows``, default all stream events) of the last event ``<= seq``."""
        rows = self.seqs if rows is None else rows
        return max(0, bisect.bisect_right(rows, seq) - 1)


def _filter_key(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields :class:`EventFilter` reads: kind, name, ABI, sub-op, the
    vCPU (``cpu``; omitted for 0), a switch's ``from`` and the fd of a UML
    ``read``/``write``."""
    key: dict[str, Any] = {"k": ev["k"], "name": event_label(ev)}
    cpu = ev.get("cpu")
    if cpu:
        key["cpu"] = cpu
    if "from" in ev:
        key["from"] = ev["from"]
    if key["name"] in ("read", "write") and isinstance(ev.get("args"), (list, tuple)):
        key["args"] = ev["args"][:1]     # a UML console read or write (families.family_of)
    if "abi" in ev:
        key["abi"] = ev["abi"]
    op = ev.get("op")
    if isinstance(op, dict):
        cmd = op.get("cmd", op.get("op"))
        if isinstance(cmd, str):
            key["op"] = {"cmd": cmd}
    return key
