"""What the divergence view shows: two runs' events aligned side by side.

The replay and diff code (``pvmon/replay/``) builds a :class:`Divergence` and
hands it to :func:`pvmon.ui.app.run_divergence`. Events are trace event dicts
(``docs/trace-format.md``); only their ``k``, ``name``, ``op``/``args``,
``ret``, ``rip``, ``seq`` and ``t`` are read.
"""

from __future__ import annotations

import bisect
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvmon.guests.code import ImageCode

Event = dict[str, Any]


def call_key(ev: Event | None) -> tuple[Any, ...] | None:
    """What has to be equal for two events to be "the same call": kind, name,
    decoded arguments and result (times, seqs, RIPs may differ)."""
    if ev is None:
        return None
    return (ev.get("k"), ev.get("name"), repr(ev.get("op") or ev.get("args")), ev.get("ret"))


@dataclass
class Divergence:
    """Two aligned event sequences and the report's explanation.

    - ``left``, ``right``: lists of equal length; row ``i`` pairs ``left[i]``
      with ``right[i]``; ``None`` is a gap (the call exists on one side only).
    - ``first``: row index of the first divergence (selected when the view opens).
    - ``explanation``: the report's text, plain (several lines allowed).
    - ``left_label``, ``right_label``: column titles, e.g. ``"recorded xen-4.17"``.
    - ``differs``: row indexes that differ; computed with :func:`call_key` if empty.
    - ``left_code``, ``right_code``: guest images for disassembly and symbols
      (:class:`~pvmon.guests.code.ImageCode`), or None.
    - ``explain``: the explanation pane's text when row ``i`` is selected
      (:meth:`explanation_at`); None: ``explanation`` whatever the row.

    ``left``, ``right`` and ``differs`` may be any sequences (a replay's view
    reads its rows from disk as they are drawn: :mod:`pvmon.ui.report_view`);
    ``differs`` must be sorted.
    """

    left: Sequence[Event | None]
    right: Sequence[Event | None]
    first: int
    explanation: str
    left_label: str = "left"
    right_label: str = "right"
    differs: Sequence[int] = field(default_factory=list)
    left_code: ImageCode | None = None
    right_code: ImageCode | None = None
    explain: Callable[[int], str] | None = None

    def __post_init__(self) -> None:
        if len(self.left) != len(self.right):
            raise ValueError("left and right must be aligned (equal length, None for gaps)")
        if not self.differs:
            self.differs = [i for i, (a, b) in enumerate(zip(self.left, self.right))
                            if call_key(a) != call_key(b)]
        if self.left and not 0 <= self.first < len(self.left):
            raise ValueError(f"first={self.first} outside the {len(self.left)} rows")

    def explanation_at(self, row: int) -> str:
        """What the explanation pane says while ``row`` is selected."""
        return self.explain(row) if self.explain is not None else self.explanation

    def differs_at(self, row: int) -> bool:
        """True if ``row`` is one of :attr:`differs` (a binary search)."""
        i = bisect.bisect_left(self.differs, row)
        return i < len(self.differs) and self.differs[i] == row


def align(left: Sequence[Event], right: Sequence[Event],
          key: Callable[[Event], Any] = lambda ev: (ev.get("k"), ev.get("name"))
          ) -> tuple[list[Event | None], list[Event | None]]:
    """Align two event lists by ``key`` (default: kind and hypercall name) with
    :class:`difflib.SequenceMatcher`; unmatched events face ``None``. A simple
    alignment for tools and tests; the replay package may supply its own."""
    ka = [key(e) for e in left]
    kb = [key(e) for e in right]
    sm = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    out_l: list[Event | None] = []
    out_r: list[Event | None] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            out_l += left[i1:i2]
            out_r += right[j1:j2]
            continue
        n = max(i2 - i1, j2 - j1)
        a = list(left[i1:i2]) if tag != "insert" else []
        b = list(right[j1:j2]) if tag != "delete" else []
        if tag == "replace":
            out_l += a + [None] * (n - len(a))
            out_r += b + [None] * (n - len(b))
        else:
            out_l += a + [None] * len(b)
            out_r += [None] * len(a) + b
    return out_l, out_r


def first_difference(left: Sequence[Event | None], right: Sequence[Event | None]) -> int:
    """Row of the first pair whose :func:`call_key` differs (0 if none)."""
    for i, (a, b) in enumerate(zip(left, right)):
        if call_key(a) != call_key(b):
            return i
    return 0


def show_report(report: Any, run: Any, log: Sequence[Any] | None = None) -> None:
    """``pvmon replay ... --tui``: the view of a replay
    :class:`~pvmon.replay.report.Report` and, if given, the ``log`` of every
    divergence (see :mod:`pvmon.ui.report_view`)."""
    from pvmon.ui.report_view import show_report as show
    show(report, run, log)
