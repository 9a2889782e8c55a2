"""Text and JSON forms of canonical operations for ``pvmon trace pvops``."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pvmon.errors import TraceError
from pvmon.pvops import Deriver, PvOp, clock_reads, derive, mapping_for
from pvmon.pvops.vocab import FAMILIES, family_of

if TYPE_CHECKING:
    from pvmon.trace.reader import TraceReader

# Argument keys shown in hex (addresses, page-table flags, raw descriptors).
_HEX = frozenset({"va", "entry_ma", "flags", "base", "sp", "address", "desc", "event",
                  "failsafe", "syscall", "rip", "tsc"})


def format_args(args: dict[str, Any]) -> str:
    """``k=v`` pairs, addresses and flags in hex."""
    out = []
    for k, v in args.items():
        if type(v) is int and k in _HEX:
            out.append(f"{k}={v:#x}")
        else:
            out.append(f"{k}={v}")
    return " ".join(out)


def format_op(o: PvOp, time: str) -> str:
    """One line of ``--list``: seq, virtual time, operation, arguments, then the
    original call (and its batch, or the native evidence)."""
    where = f"{o.call}" + ("" if o.ret is None else f" = {o.ret}")
    for b in o.batch:
        where += f" [{b.call} #{b.seq} entry {b.index + 1}/{b.size}]"
    if o.native is not None:
        where += f" (native: {o.native})"
    args = format_args(o.args)
    return f"{o.seq:>8} {time} {o.op:<22} {args}{'  ' if args else ''}<- {where}"


@dataclass
class OpCounts:
    """Operations per canonical name and, for each, per original call; bounded
    by the vocabulary and the ABI's calls, never by the trace."""
    ops: Counter[str] = field(default_factory=Counter)
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    native: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, ops: Iterable[PvOp]) -> OpCounts:
        # one dict update per operation, split into the counters at the end (the
        # counters' insertion order, which most_common keeps for ties, is the same)
        seen: dict[tuple[str, str, bool], int] = {}
        get = seen.get
        for o in ops:
            key = (o.op, o.call, o.native is not None)
            seen[key] = get(key, 0) + 1
        return cls._of_seen(seen)

    @classmethod
    def _of_seen(cls, seen: dict[tuple[str, str, bool], int]) -> OpCounts:
        """The counters of ``seen`` ({(op, call, native): count}, in first-seen order)."""
        c = cls()
        for (op, call, native), n in seen.items():
            c.ops[op] += n
            calls = c.calls.get(op)
            if calls is None:
                calls = c.calls[op] = Counter()
            calls[call] += n
            if native:
                c.native[op] += n
        return c

    @classmethod
    def of_trace(cls, reader: TraceReader, abi: str, header: dict[str, Any] | None,
                 jobs: int = 1) -> OpCounts:
        """The counts of every operation derived from ``reader``'s events, equal to
        ``OpCounts.of(derive(reader, abi, header))`` (same counters, same order).

        ``jobs`` > 1 reads runs of frames in forked workers as ``trace stats`` does
        (:func:`pvmon.trace.stats.map_frame_runs`), each run after the first
        mapped from its mapping's ``resume_state()``; when a run's counts depend
        on state it could not see (``continue_state`` answers None), or a mapping
        cannot resume, the trace is counted again in this process.
        Raises :class:`~pvmon.errors.TraceError` as :func:`derive` and the reader do."""
        from pvmon.trace.stats import map_frame_runs
        if not _can_resume(abi):
            return cls.of(derive(reader, abi, header))
        runs = map_frame_runs(reader, functools.partial(_count_run, abi, header), jobs)
        return _merge_counts(runs, reader, abi, header)

    def merge(self, later: OpCounts) -> None:
        """Add the counts of ``later``, a run of operations that follows these."""
        self.ops.update(later.ops)
        for op, c in later.calls.items():
            mine = self.calls.get(op)
            if mine is None:
                self.calls[op] = c
            else:
                mine.update(c)
        self.native.update(later.native)

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def by_family(self) -> dict[str, dict[str, int]]:
        """{family: {operation: count}}, families in vocabulary order, operations
        by count (then name)."""
        out: dict[str, dict[str, int]] = {}
        for fam in FAMILIES:
            ops = sorted(((op, n) for op, n in self.ops.items() if family_of(op) == fam),
                         key=lambda kv: (-kv[1], kv[0]))
            if ops:
                out[fam] = dict(ops)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"operations": self.total, "families": self.by_family(),
                "calls": {op: dict(c.most_common()) for op, c in sorted(self.calls.items())},
                "native": dict(sorted(self.native.items()))}


def _can_resume(abi: str) -> bool:
    """Whether ``abi``'s mapping can count runs from mid-trace (False also for an
    ABI without a mapping: :func:`derive` reports that at its first event)."""
    try:
        return hasattr(mapping_for(abi), "resume_state")
    except TraceError:
        return False


def _merge_counts(runs: list[tuple[OpCounts, dict[str, Any]]], reader: TraceReader, abi: str,
                  header: dict[str, Any] | None) -> OpCounts:
    """The counts of consecutive runs ((counts, mapping states after the run)),
    or the trace counted again in this process when a run's counts depend on
    state it could not see."""
    mods: dict[str, Any] = {}
    (counts, states), *later = runs
    for part, part_states in later:
        for a, st in part_states.items():
            mod = mods.get(a) or mods.setdefault(a, mapping_for(a))
            earlier = states.get(a)
            if earlier is None:
                earlier = mod.new_state(header)
            nxt = mod.continue_state(earlier, st) if hasattr(mod, "continue_state") else None
            if nxt is None:
                return _count_run(abi, header, reader, 0, len(reader.frames))[0]
            states[a] = nxt
        counts.merge(part)
    return counts


class _RunCounter:
    """Counts the operations of consecutive events into one {(op, call, native):
    count} dict (first-seen order, as :meth:`OpCounts.of` keeps it): a frame at a
    time through the trace ABI's ``count_events`` when its mapping has one, else
    each event through :class:`~pvmon.pvops.Deriver` (TSC runs counted whole when
    the ABI reads them as :func:`clock_reads` does)."""

    def __init__(self, abi: str, header: dict[str, Any] | None, resume: bool) -> None:
        self.abi = abi
        self.deriver = Deriver(abi, header, {}, resume=resume)
        self.seen: dict[tuple[str, str, bool], int] = {}
        self._by_abi: dict[str, Any] = {}
        self._fast: Any = None      # the trace ABI's count_events, False when none

    @property
    def states(self) -> dict[str, Any]:
        """ABI name -> its mapping's state after the events counted so far."""
        return self.deriver.states

    def counts(self) -> OpCounts:
        return OpCounts._of_seen(self.seen)

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        """Count ``events`` (raises TraceError for an ABI without a mapping)."""
        fast = self._fast
        if fast is None:
            fast = self._fast = getattr(self.deriver.module(self.abi), "count_events", False)
        if fast:
            fast(events, self.deriver.states[self.abi], self.seen, self.abi, self._one)
            return
        one = self._one
        for ev in events:
            one(ev)

    def _one(self, ev: dict[str, Any]) -> None:
        """Count one event through its ABI's mapping."""
        a = ev.get("abi", self.abi)
        if type(a) is not str:
            a = self.abi
        c = self._by_abi.get(a)
        if c is None:
            c = self._by_abi[a] = self._counter(a)
        c(ev)

    def _counter(self, a: str) -> Any:
        mod = self.deriver.module(a)
        seen = self.seen
        get = seen.get
        if hasattr(mod, "count_events"):
            state = self.deriver.states[a]
            return lambda ev: mod.count_events((ev,), state, seen, a, self._one)
        ops = self.deriver.ops
        # A TSC run is counted whole when the ABI's mapping reads it as clock_reads
        # does (one native time.read_clock per value): the same counts as deriving
        # them one by one.
        fast = a == self.abi and tsc_runs_are_clock_reads(a)
        clock = ("time.read_clock", "rdtsc", True)

        def count(ev: dict[str, Any]) -> None:
            if fast and ev.get("k") == "tsc_run" and "abi" not in ev:
                vals = ev.get("val")
                if isinstance(vals, list) and vals:
                    seen[clock] = get(clock, 0) + len(vals)
                return
            for o in ops(ev):
                key = (o.op, o.call, o.native is not None)
                seen[key] = get(key, 0) + 1
        return count


def _count_run(abi: str, header: dict[str, Any] | None, reader: TraceReader, start: int,
               stop: int) -> tuple[OpCounts, dict[str, Any]]:
    """Counts of the operations of frames ``start``..``stop`` and the mapping
    states after them (from the header's state at frame 0, else resumed)."""
    run = _RunCounter(abi, header, resume=start > 0)
    for i in range(start, stop):
        run.add(reader.frame_events(i))
    return run.counts(), run.states


def _stats_and_count_run(abi: str, header: dict[str, Any] | None, reader: TraceReader,
                         start: int, stop: int) -> tuple[Any, tuple[OpCounts, dict[str, Any]]]:
    """:meth:`TraceStats._of_frames` and :func:`_count_run` of frames
    ``start``..``stop`` in one read."""
    from pvmon.trace.stats import TraceStats
    stats = TraceStats()
    run = _RunCounter(abi, header, resume=start > 0)
    for i in range(start, stop):
        events = reader.frame_events(i)
        stats.add(events)
        run.add(events)
    return stats, (run.counts(), run.states)


def stats_and_counts(reader: TraceReader, abi: str, header: dict[str, Any] | None,
                     jobs: int = 1) -> tuple[Any, OpCounts]:
    """``(TraceStats.of(reader, jobs), OpCounts.of_trace(reader, abi, header, jobs))``
    (``trace stats --pvops``), reading the trace once when the mapping can count
    runs from mid-trace. Raises :class:`~pvmon.errors.TraceError` as they do."""
    from pvmon.trace.stats import TraceStats, map_frame_runs
    if not _can_resume(abi):
        return TraceStats.of(reader, jobs), OpCounts.of_trace(reader, abi, header, jobs)
    parts = map_frame_runs(reader, functools.partial(_stats_and_count_run, abi, header), jobs)
    stats = parts[0][0]
    for part, _ in parts[1:]:
        stats.merge(part)
    return stats, _merge_counts([c for _, c in parts], reader, abi, header)


@functools.cache
def tsc_runs_are_clock_reads(abi: str) -> bool:
    """Whether ``abi``'s mapping turns a ``tsc_run`` event into exactly
    :func:`pvmon.pvops.clock_reads`'s operations (probed once on a sample event)."""
    ev = {"k": "tsc_run", "seq": 7, "t": 9, "rip": [1, 2], "val": [3, 4]}
    try:
        mod = mapping_for(abi)
        got = list(mod.translate(ev, mod.new_state(None)))
    except Exception:  # noqa: BLE001 - a mapping that cannot take the sample: derive it
        return False
    return got == list(clock_reads(ev, 7, 9))


# ABIs of the vocabulary table, in column order: (heading, where its cells come
# from): a mapping module with a per-call table (``CALLS``, Xen PV; also listed
# call by call with sources below the table) or with ``DOC_CELLS`` (operation ->
# the calls that carry it, UML), or ``express:<key>``: the ABI's cross-ABI
# express table (pvmon.backends.registry.EXPRESS_BY_ABI), how it expresses each
# operation: its call(s), native (and how), or not at all.
DOC_ABIS: tuple[tuple[str, str | None], ...] = (
    ("Xen PV", "pvmon.backends.xen.pvops"), ("Xen PVH", "express:xen-pvh"),
    ("KVM", "express:kvm"), ("VMI", "express:vmi"), ("lguest", "express:lguest"),
    ("UML", "pvmon.uml.pvops"))

# Operations an ABI performs without a call of its own, or through another
# operation's call: (ABI heading, operation) -> the cell text.
DOC_NOTES: dict[tuple[str, str], str] = {
    ("Xen PV", "time.read_clock"): "native: `rdtsc` (`tsc_run` events) + pvclock in "
                                   "shared memory",
    ("Xen PV", "cpu.cpuid"): "forced-emulation `cpuid` (`cpuid` events)",
    ("Xen PV", "irq.mask"): "none: a bit in shared memory (`evtchn_mask`, "
                            "`evtchn_upcall_mask`)",
    ("Xen PV", "irq.send_ipi"): "`event_channel_op send` on a port bound by `bind_ipi`",
    ("Xen PV", "lock.kick"): "`event_channel_op send` on the spinlock IPI port "
                             "(shown as irq.send_ipi)",
}


def _express_cells(key: str) -> dict[str, list[str]]:
    """Operation -> its cell, from the express table of ABI ``key``: the
    call(s), ``native: how``, or nothing (the table's "—")."""
    import importlib

    from pvmon.backends.registry import EXPRESS_BY_ABI
    module, _, attr = EXPRESS_BY_ABI[key].partition(":")
    mod = importlib.import_module(module)
    ways = (getattr(mod, attr) if attr else mod).WAYS
    out: dict[str, list[str]] = {}
    for op, way in ways.items():
        if way.how == "call":
            out[op] = [f"`{c}`" for c in way.calls]
        elif way.how == "native":
            out[op] = [f"native: {', '.join(way.calls)}"]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_tables() -> str:
    """docs/pvops.md's generated part: the vocabulary table (one canonical
    operation per row, one column per ABI) and each mapped ABI's sources."""
    import importlib

    from pvmon.pvops.vocab import OPS
    mods: dict = {}
    per_abi: dict[str, dict[str, list[str]]] = {}
    for heading, where in DOC_ABIS:
        if where is None:
            continue
        if where.startswith("express:"):
            per_abi[heading] = _express_cells(where.removeprefix("express:"))
            continue
        mod = mods[heading] = importlib.import_module(where)
        cells: dict[str, list[str]] = {}
        if hasattr(mod, "CALLS"):
            for call, entries in mod.CALLS.items():
                items = entries.items() if isinstance(entries, dict) else [(None, entries)]
                for sub, e in items:
                    label = f"`{call}`" if sub is None else f"`{call} {sub}`"
                    cells.setdefault(e.op, []).append(label)
        else:
            cells = {op: list(labels) for op, labels in mod.DOC_CELLS.items()}
        per_abi[heading] = cells
    head = ["operation", "meaning", "Linux"] + [h for h, _ in DOC_ABIS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op in OPS.values():
        row = [f"`{op.name}`", _cell(op.meaning), _cell(op.linux)]
        for heading, mod_name in DOC_ABIS:
            if mod_name is None:
                row.append("to come")
                continue
            cell = ", ".join(per_abi[heading].get(op.name, []))
            note = DOC_NOTES.get((heading, op.name))
            if op.name == "unmapped" and hasattr(mods.get(heading), "UNMAPPED"):
                cell = ", ".join(f"`{k}`" for k in mods[heading].UNMAPPED)
            row.append(_cell(cell or note or "—") if not (cell and note)
                       else _cell(f"{cell}; {note}"))
        lines.append("| " + " | ".join(row) + " |")
    out = [("<!-- generated by pvmon.pvops.render.markdown_tables(); "
           "tests/test_pvops.py checks it -->"), "", *lines]
    for heading, mod in mods.items():
        if not hasattr(mod, "CALLS"):
            continue
        out += ["", f"### {heading}: each call with its source", "",
                "| call | sub-op | operation | xen.git header | Linux |", "|---|---|---|---|---|"]
        for call, entries in mod.CALLS.items():
            items = entries.items() if isinstance(entries, dict) else [("", entries)]
            for sub, e in items:
                out.append(f"| `{call}` | {f'`{sub}`' if sub else ''} | `{e.op}` | "
                           f"`{e.header}` | {_cell(e.linux)} |")
        out += ["", f"### {heading}: calls with no canonical operation", "",
                "| call | why |", "|---|---|"]
        out += [f"| `{k}` | {_cell(v)} |" for k, v in mod.UNMAPPED.items()]
    return "\n".join(out) + "\n"
