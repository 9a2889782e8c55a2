"""The stream filter: which events a pane shows.

A filter is text of space- or comma-separated terms. An event matches if any
positive term matches it and no ``-term`` does; an empty filter matches
everything. A term matches an event when it equals its ABI (``xen``), its
family (``mmu``, ``cpu``, ``events``, ``time``, ``console``, ``sched``,
``fault``), its kind (``hc``, ``fault``, ``upcall``, ...), or is a substring
of its name (``mmu`` matches ``mmu_update`` and ``mmuext_op``) or of its sub-op
(``PIN_L4``). ``cpu:N`` matches the events of vCPU ``N`` (the event's ``cpu``,
0 in a trace without it; a ``vcpu_switch`` matches the vCPU it came from
too); ``cpu:0 cpu:1`` names both.

A term with a dot names canonical paravirtual operations (:mod:`pvmon.pvops`,
docs/pvops.md), matched against the operations an event carries:
``mmu.set_pte`` one operation, ``mmu.`` or ``mmu.*`` a canonical family
(``mmu cpu irq time sched power info console memory batch lock``), ``*.eoi``
a glob; case-insensitive. The canonical operations come from the caller
(:meth:`EventFilter.matches`' ``ops``): the filter itself derives nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pvmon.backends.registry import abi_names
from pvmon.errors import PvmonError
from pvmon.pvops.vocab import FAMILIES as PVOPS_FAMILIES
from pvmon.pvops.vocab import OPS as PVOPS
from pvmon.ui.families import FAMILY_STYLE, family_of


def _subop(ev: dict[Any, Any]) -> str:
    op = ev.get("op")
    if isinstance(op, dict):
        v = op.get("cmd", op.get("op"))
        if isinstance(v, str):
            return v
    return ""


@functools.lru_cache(maxsize=256)
def canonical_pattern(term: str) -> re.Pattern[str] | None:
    """The canonical operations a term names, as a compiled glob over
    operation names (``mmu.`` is ``mmu.*``); None if ``term`` has no dot."""
    if "." not in term:
        return None
    t = term.lower()
    if t.endswith("."):
        t += "*"
    return re.compile(fnmatch.translate(t))


_CPU_TERM = re.compile(r"cpu:(\d+)", re.IGNORECASE)


def cpu_term(term: str) -> int | None:
    """The vCPU id a ``cpu:N`` term names; None for any other term."""
    m = _CPU_TERM.fullmatch(term)
    return int(m.group(1)) if m else None


def _cpu_matches(cpu: int, ev: dict[Any, Any]) -> bool:
    on = ev.get("cpu", 0)
    if on == cpu:
        return True
    return ev.get("k") == "vcpu_switch" and ev.get("from") == cpu


def _term_matches(term: str, ev: dict[Any, Any], ops: tuple[str, ...] = ()) -> bool:
    if term[:4].lower() == "cpu:":
        cpu = cpu_term(term)
        if cpu is not None:
            return _cpu_matches(cpu, ev)
    pat = canonical_pattern(term)
    if pat is not None:
        return any(pat.match(o) for o in ops)
    name = str(ev.get("name") or ev.get("k") or "")
    t = term.lower()
    if t in (str(ev.get("abi", "")).lower(), str(ev.get("k", "")).lower()):
        return True
    if t in FAMILY_STYLE and family_of(ev) == t:
        return True
    return t in name.lower() or (bool(t) and t in _subop(ev).lower())


@dataclass(frozen=True)
class EventFilter:
    """A parsed filter. ``text``: as typed; ``include``/``exclude``: its terms."""

    text: str = ""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EventFilter:
        terms = [t for t in re.split(r"[\s,]+", text.strip()) if t]
        inc = tuple(t for t in terms if not t.startswith("-"))
        exc = tuple(t[1:] for t in terms if t.startswith("-") and len(t) > 1)
        return cls(text.strip(), inc, exc)

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    @property
    def canonical(self) -> bool:
        """True if a term names canonical operations (the caller must pass
        each event's ``ops`` to :meth:`matches`)."""
        return any("." in t for t in (*self.include, *self.exclude))

    @property
    def canonical_include(self) -> bool:
        """True if a positive term names canonical operations: events of any
        kind that carry them are shown, not only the stream's default kinds."""
        return any("." in t for t in self.include)

    def matches(self, ev: dict[Any, Any], ops: tuple[str, ...] = ()) -> bool:
        """``ev`` (an event, or a key with its ``k``, ``name``, ``abi``,
        ``op``, ``cpu`` and a switch's ``from``) passes. ``ops``: the names of
        the canonical operations it carries (``("mmu.set_pte",
        "mmu.flush_tlb")``), for dotted terms."""
        if self.include and not any(_term_matches(t, ev, ops) for t in self.include):
            return False
        return not any(_term_matches(t, ev, ops) for t in self.exclude)

    def unknown_canonical(self) -> list[str]:
        """Dotted terms that name no canonical operation (a typo: they match nothing)."""
        out = []
        for t in (*self.include, *self.exclude):
            pat = canonical_pattern(t)
            if pat is not None and not any(pat.match(o) for o in PVOPS):
                out.append(t)
        return out


def unknown_canonical_message(terms: list[str]) -> str:
    """One line naming dotted filter terms that match no canonical operation,
    with the closest operations."""
    parts = []
    for t in terms:
        close = difflib.get_close_matches(t.lower(), list(PVOPS), n=3, cutoff=0.6)
        parts.append(f"{t!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    fams = ", ".join(f"{f}." for f in PVOPS_FAMILIES if f != "unmapped")
    return (f"no canonical operation matches {'; '.join(parts)}: families are {fams}; "
            "operations as in docs/pvops.md (mmu.set_pte)")


# ------------------------------------------------------------ known terms
#: Event kinds a trace holds (docs/trace-format.md).
EVENT_KINDS = ("hc", "fault", "upcall", "con", "tsc", "tsc_run", "cpuid", "syscall", "exit",
               "msr", "io", "io_run", "mmio", "irq", "halt", "vcpu_switch")
#: ABIs a trace's hypercall events name.
ABIS = ("xen",)


class UnknownFilterTerm(PvmonError):
    """A filter term that names no hypercall, event kind, family, ABI or sub-op."""


def vocabulary() -> dict[str, str]:
    """Every term a filter knows -> what it names: ``"hypercall"`` (the ABI
    tables' names), ``"event kind"``, ``"family"``, ``"ABI"`` or ``"sub-op"``
    (the ABI tables' sub-op names). A term that is several things is listed
    as the first of these."""
    words: dict[str, str] = {}
    abi = abi_names("xen")
    for what, names in (("hypercall", abi.HYPERCALLS.values()), ("event kind", EVENT_KINDS),
                        ("family", (f for f in FAMILY_STYLE if f != "other")),
                        ("ABI", ABIS),
                        ("sub-op", (s for table in abi.SUBOPS.values()
                                    for s in table.values()))):
        for name in names:
            words.setdefault(name, what)
    return words


def unknown_terms(terms: Iterable[str], seen: Callable[[], Iterable[str]] | None = None
                  ) -> list[str]:
    """The ``terms`` (case-insensitive for sub-ops) that name nothing pvmon knows
    (:func:`vocabulary`, or ``hypercall_<nr>`` for an unassigned number), in
    order. ``seen``: called only when some term is unknown, for the names a
    particular trace holds (which a newer recorder may have added)."""
    words = vocabulary()
    lower = {w.lower() for w in words}
    out = [t for t in terms if t not in words and t.lower() not in lower
           and not _UNASSIGNED.fullmatch(t)]
    if out and seen is not None:
        have = set(seen())
        out = [t for t in out if t not in have]
    return out


def unknown_term_error(unknown: list[str]) -> UnknownFilterTerm:
    """One line naming the unknown terms and the known ones closest to each."""
    words = list(vocabulary())
    parts = []
    for term in unknown:
        close = difflib.get_close_matches(term, words, n=3, cutoff=0.6)
        parts.append(f"{term!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return UnknownFilterTerm(
        f"unknown filter term{'s' if len(unknown) > 1 else ''} {'; '.join(parts)}: terms are "
        "hypercall names, event kinds (" + ", ".join(EVENT_KINDS) + "), families ("
        + ", ".join(f for f in FAMILY_STYLE if f != "other") + "), ABIs and sub-ops")


_UNASSIGNED = re.compile(r"hypercall_(\d+|0x[0-9a-f]+)")


@dataclass(frozen=True)
class TermFilter:
    """``pvmon trace cat --filter``: an event matches when one of the terms is
    its name (a hypercall's name, else its kind), its family, its ABI or its
    sub-op (case-insensitive), exactly; unlike :class:`EventFilter`, no
    substrings. Build it with :meth:`parse`, which refuses unknown terms."""

    names: frozenset[str]
    families: frozenset[str]
    abis: frozenset[str]
    subops: frozenset[str]

    @classmethod
    def parse(cls, terms: Iterable[str], seen: Callable[[], Iterable[str]] | None = None
              ) -> TermFilter:
        """Raises :class:`UnknownFilterTerm` (one line, close matches named)
        when a term names nothing; ``seen`` as for :func:`unknown_terms`."""
        terms = list(dict.fromkeys(terms))
        unknown = unknown_terms(terms, seen)
        if unknown:
            raise unknown_term_error(unknown)
        return cls(frozenset(terms), frozenset(t for t in terms if t in FAMILY_STYLE),
                   frozenset(t for t in terms if t in ABIS),
                   frozenset(t.lower() for t in terms))

    def matches(self, ev: dict[Any, Any]) -> bool:
        label = str(ev.get("name")) if ev.get("k") == "hc" else str(ev.get("k"))
        if label in self.names:
            return True
        if self.families and family_of(ev) in self.families:
            return True
        if self.abis and ev.get("abi") in self.abis:
            return True
        sub = _subop(ev)
        return bool(sub) and sub.lower() in self.subops
