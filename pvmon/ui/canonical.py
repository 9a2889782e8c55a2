"""Canonical paravirtual operations in the TUI's stream (:mod:`pvmon.pvops`).

The stream's ``p`` key shows, beside each event, the canonical operations it
carries (``mmu.set_pte×3 mmu.flush_tlb``), and a filter term with a dot
(``mmu.set_pte``, ``irq.``) selects by them (:mod:`pvmon.ui.filters`). Both
derive the operations with :class:`pvmon.pvops.Deriver` as ``pvmon trace cat
--pvops`` does, only once asked: the live view from the events it holds on,
the player in one pass over the trace on a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pvmon.errors import TraceError
from pvmon.pvops import Deriver, PvOp

#: One shared tuple per distinct list of operation names (a trace repeats few).
_INTERNED: dict[tuple[str, ...], tuple[str, ...]] = {}


def op_names(ops: Iterable[PvOp]) -> tuple[str, ...]:
    """The operation names of ``ops``, in order, as an interned tuple."""
    names = tuple(o.op for o in ops)
    if not names:
        return ()
    return _INTERNED.setdefault(names, names)


def summary(names: tuple[str, ...]) -> str:
    """``mmu.set_pte×3 mmu.flush_tlb``: each operation once, in order of first
    appearance, with its count when more than one; ``-`` for none."""
    if not names:
        return "-"
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return " ".join(n if c == 1 else f"{n}×{c}" for n, c in counts.items())


class CanonicalOps:
    """Canonical operation names per event, one event at a time in seq order.

    ``abi``: the trace's ABI (header ``backend.abi``); ``header``: the trace
    header (or the live session's); ``resume``: the events start mid-run (the
    mapping's state starts as ``resume_state`` makes it). An ABI without a
    mapping gives no operations and sets :attr:`error` (one line)."""

    def __init__(self, abi: str, header: dict[str, Any] | None, *, resume: bool = False) -> None:
        self._deriver = Deriver(abi, header, resume=resume)
        self.error: str | None = None

    def of(self, ev: dict[str, Any]) -> tuple[str, ...]:
        """The names of the operations ``ev`` carries (``()`` for none)."""
        if any(type(v) is tuple for v in ev.values()):
            # a live event as the engine built it: its tuples are lists once
            # written and read back, which is what the mappings expect
            ev = {k: list(v) if type(v) is tuple else v for k, v in ev.items()}
        try:
            return op_names(self._deriver.ops(ev))
        except TraceError as exc:
            self.error = str(exc)
            return ()


def trace_abi(header: dict[str, Any]) -> str:
    """A trace header's ABI (``backend.abi``; "xen" when absent, as in old traces)."""
    backend = header.get("backend")
    a = backend.get("abi") if isinstance(backend, dict) else None
    return a if isinstance(a, str) else "xen"


__all__ = ["CanonicalOps", "op_names", "summary", "trace_abi"]
