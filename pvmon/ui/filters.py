"""The stream filter: which events a pane shows.

A filter is text of space- or comma-separated terms. An event matches if any
positive term matches it and no ``-term`` does; an empty filter matches
everything. A term matches an event when it equals its ABI (``xen``), its
family (``mmu``, ``cpu``, ``events``, ``time``, ``console``, ``sched``,
``fault``), its kind (``hc``, ``fault``, ``upcall``, ...), or is a substring
of its name (``mmu`` matches ``mmu_update`` and ``mmuext_op``) or of its sub-op
(``PIN_L4``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pvmon.ui.families import FAMILY_STYLE, family_of


def _subop(ev: dict[Any, Any]) -> str:
    op = ev.get("op")
    if isinstance(op, dict):
        v = op.get("cmd", op.get("op"))
        if isinstance(v, str):
            return v
    return ""


def _term_matches(term: str, ev: dict[Any, Any]) -> bool:
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

    def matches(self, ev: dict[Any, Any]) -> bool:
        if self.include and not any(_term_matches(t, ev) for t in self.include):
            return False
        return not any(_term_matches(t, ev) for t in self.exclude)
