"""Canonical paravirtual operations: one vocabulary for every ABI pvmon models.

* :mod:`pvmon.pvops.vocab` is the vocabulary (``OPS``), modelled on Linux's pv_ops.
* Each ABI maps its calls onto it in its own module (Xen PV:
  :mod:`pvmon.backends.xen.pvops`), registered in :data:`MAPPINGS` by ABI name.
* :func:`derive` turns a trace's events into canonical operations when the trace
  is read, streaming: existing traces gain the view without re-recording.

An ABI mapping module provides ``translate(ev, state) -> Iterator[PvOp]`` and
``new_state(header) -> object`` (whatever bounded state it needs across events, such as
the level a page-table frame was pinned at). To be counted in parallel it also provides
``resume_state(header)`` and ``continue_state(earlier, later)`` (see the Xen PV module;
``continue_state`` answers None when the later run depends on state it could not see,
so a mapping that keeps no state uses :func:`stateless_state` and
:func:`stateless_continue`, whose state is never None).
To be counted fast (``trace stats --pvops``) it may provide ``count_events(events, state,
seen, abi_name, other)``: adds to ``seen`` ({(op, call, native): count}) the keys of what
``translate`` yields for each event, in its order, handing ``other`` the events of
another ABI (see the Xen PV module; tests/test_pvops_count.py checks it against derive).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pvmon.errors import TraceError
from pvmon.pvops.vocab import FAMILIES, OPS, OpDef, family_of

__all__ = ["FAMILIES", "MAPPINGS", "OPS", "BatchRef", "Deriver", "OpDef", "PvOp", "clock_reads", "count", "derive",
           "family_of", "mapping_for", "port_reads", "stateless_continue", "stateless_state"]

def stateless_state(header: dict[str, Any] | None = None) -> tuple:
    """``new_state`` and ``resume_state`` of a mapping that keeps no state across
    events: an empty tuple, not None (None is ``continue_state``'s "cannot")."""
    return ()


def stateless_continue(earlier: tuple, later: tuple) -> tuple:
    """``continue_state`` of a mapping that keeps no state: a run counted from
    mid-trace is always right, so parallel counts are never redone."""
    return ()


# ABI name (an event's "abi" field) -> the module holding its mapping.
MAPPINGS: dict[str, str] = {
    "xen": "pvmon.backends.xen.pvops",
    "kvm": "pvmon.backends.kvm.pvops",
    "lguest": "pvmon.backends.lguest.pvops",
    "vmi": "pvmon.backends.vmi.pvops",
    "uml": "pvmon.uml.pvops",
}


@dataclass(frozen=True, slots=True)
class BatchRef:
    """Where an operation sat in a batch: the batching ``call`` (``multicall``,
    ``mmu_update``, ...), the event ``seq`` that carried it, the entry ``index``
    (0-based) and the batch's ``size`` (entries)."""
    call: str
    seq: int
    index: int
    size: int


@dataclass(frozen=True, slots=True)
class PvOp:
    """One canonical operation derived from a trace event.

    ``op`` names an entry of :data:`pvmon.pvops.vocab.OPS`; ``args`` holds the
    normalized arguments, units in the key names (``deadline_ns``, ``period_ns``,
    ``frame`` a 4 KiB frame number, ``level`` 1-4 page-table level or None when
    the trace does not show it, ``flags`` the entry's non-address bits); ``call``
    the original call as the ABI names it (``mmuext_op PIN_L1_TABLE``); ``ret``
    what that call (or batch entry) returned, None when not recorded; ``batch``
    the enclosing batches, outermost first; ``native`` the evidence when the
    guest performed the operation without a call (``rdtsc``; an HVM guest's CR3
    load will come here), else None.
    """
    op: str
    seq: int
    t: int
    call: str
    args: dict[str, Any] = field(default_factory=dict)
    ret: int | None = None
    batch: tuple[BatchRef, ...] = ()
    native: str | None = None

    @property
    def family(self) -> str:
        return family_of(self.op)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (batch entries as maps; ``native`` only when set)."""
        d: dict[str, Any] = {"seq": self.seq, "t": self.t, "op": self.op, "args": self.args,
                             "call": self.call, "ret": self.ret}
        if self.batch:
            d["batch"] = [{"call": b.call, "seq": b.seq, "index": b.index, "size": b.size}
                          for b in self.batch]
        if self.native is not None:
            d["native"] = self.native
        return d


def mapping_for(abi: str) -> Any:
    """The mapping module of ``abi``; :class:`TraceError` when pvmon has none."""
    mod = MAPPINGS.get(abi)
    if mod is None:
        raise TraceError(f"no canonical mapping for ABI {abi!r} yet (known: "
                         f"{', '.join(sorted(MAPPINGS))})")
    return importlib.import_module(mod)


class Deriver:
    """Canonical operations one event at a time, keeping each ABI's mapping
    state across events (what :func:`derive` does over a stream; ``trace cat
    --pvops`` shows them beside each event). Arguments as :func:`derive`'s."""

    def __init__(self, abi: str = "xen", header: dict[str, Any] | None = None,
                 states: dict[str, Any] | None = None, resume: bool = False) -> None:
        self.abi = abi
        self.header = header
        self.states: dict[str, Any] = {} if states is None else states
        self.resume = resume
        self._modules: dict[str, Any] = {}

    def ops(self, ev: dict[str, Any]) -> Iterator[PvOp]:
        """The operations of event ``ev`` (TraceError for an ABI without a mapping)."""
        a = ev.get("abi", self.abi)
        if not isinstance(a, str):
            a = self.abi
        mod = self._modules.get(a)
        if mod is None:
            mod = self.module(a)
        return mod.translate(ev, self.states[a])

    def module(self, a: str) -> Any:
        """The mapping module of ABI ``a``, its state started (fresh, or resumed)
        in :attr:`states` on first use; TraceError for an ABI without a mapping."""
        mod = self._modules.get(a)
        if mod is None:
            mod = self._modules[a] = mapping_for(a)
            # (a mapping that cannot resume starts fresh: OpCounts.of_trace then
            # finds no continue_state and counts serially)
            self.states[a] = mod.resume_state(self.header) \
                if self.resume and hasattr(mod, "resume_state") else mod.new_state(self.header)
        return mod


def clock_reads(ev: dict[str, Any], seq: int, t: int) -> Iterator[PvOp]:
    """``time.read_clock`` (native: ``rdtsc``) for each TSC read of a ``tsc_run``
    event (format 2 on) or a ``tsc`` event (format 1): the engine records them
    the same way for every ABI (docs/trace-format.md). Nothing for other kinds."""
    k = ev.get("k")
    if k == "tsc_run":
        rips, vals = ev.get("rip"), ev.get("val")
        if isinstance(vals, list):
            if not isinstance(rips, list):
                rips = []
            nrips = len(rips)
            for i, v in enumerate(vals):
                yield PvOp("time.read_clock", seq, t, "rdtsc",
                           {"tsc": v, "rip": rips[i] if i < nrips else None}, None, (), "rdtsc")
    elif k == "tsc":
        yield PvOp("time.read_clock", seq, t, "rdtsc", {"tsc": ev.get("val"),
                                                       "rip": ev.get("rip")}, native="rdtsc")


def port_reads(ev: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The port reads of an ``io_run`` event (format 4 on) as the ``io`` events
    (``dir`` ``in``) they stand for, each with the run's ``seq`` and ``t``, for
    a mapping to translate one by one. A malformed run yields what its lists
    agree on."""
    ports, sizes, vals = ev.get("port"), ev.get("size"), ev.get("val")
    if not (isinstance(ports, list) and isinstance(sizes, list) and isinstance(vals, list)):
        return
    seq, t = ev.get("seq"), ev.get("t")
    for port, size, val in zip(ports, sizes, vals):
        yield {"k": "io", "dir": "in", "port": port, "size": size, "val": val,
               "seq": seq, "t": t, "cpu": ev.get("cpu")}


def derive(events: Iterable[dict[str, Any]], abi: str = "xen",
           header: dict[str, Any] | None = None, *, states: dict[str, Any] | None = None,
           resume: bool = False) -> Iterator[PvOp]:
    """Canonical operations of ``events`` (trace event maps, in seq order), as a
    generator: memory stays bounded by the mapping's state, never by the trace.

    ``abi`` is the trace's ABI (header ``backend.abi``); an event carrying its own
    ``abi`` field is mapped by that ABI. ``header`` (the trace header) seeds what
    the mapping knows at the start (Xen PV: the start-of-day page-table root). Events that are no operation (console
    data, upcalls, faults, the exit record) yield nothing.
    ``states``, when given, is filled with each ABI's mapping state (ABI name ->
    state) for the caller to read afterwards; ``resume`` starts each state with
    the mapping's ``resume_state()`` (events from mid-trace, for counting in
    parallel: see :meth:`pvmon.pvops.render.OpCounts.of_trace`).
    Raises :class:`TraceError` for an ABI without a mapping.
    """
    ops = Deriver(abi, header, states, resume).ops
    for ev in events:
        yield from ops(ev)


def count(ops: Iterable[PvOp]) -> Counter[str]:
    """Operations per canonical name."""
    c: Counter[str] = Counter()
    for o in ops:
        c[o.op] += 1
    return c
