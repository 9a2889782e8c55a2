"""A replay's divergence report as the divergence view's rows.

A :class:`pvmon.replay.report.Report` keeps the first
:data:`~pvmon.replay.report.DETAILED` divergences in memory and spills the
rest to a compressed file it reads in order
(:meth:`~pvmon.replay.report.Report.iter_divergences`). The view needs them
by index, so ``pvmon replay --tui`` copies them once into a
:class:`DifferenceLog` (a temporary file; memory is one offset per
divergence), and the view reads them back as it draws.

The rows are: for each divergence, the recorded hypercalls just before it
(which the replay matched, so both columns show the recorded call), then the
divergence itself (left: the recorded event, right: the replayed one,
``None`` where the call exists on one side only). Rows are built in one pass
and kept as two integer arrays; events are fetched when a row is drawn. The
explanation pane describes the selected difference.
"""

from __future__ import annotations

import bisect
import os
import tempfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from pvmon.guests.code import ImageCode
from pvmon.trace.render import format_time, jsonable
from pvmon.ui.divergence import Divergence

CONTEXT_CALLS = 4      # matched hypercalls shown before each divergence
CONTEXT_SPAN = 400     # ... found among this many recorded events before it
_CACHE = 512           # differences kept decoded (a screen shows a few dozen)

Event = dict[str, Any]


@dataclass(frozen=True)
class Difference:
    """One divergence as the view needs it (a plain-data copy of
    :class:`pvmon.replay.report.Divergence`): ``n``, the replay's number for
    it; ``what``: ``(what, detail)`` per way the events differ; ``left`` /
    ``right``: the recorded and replayed events (None: only on the other
    side); ``seq``, ``t`` (ns), ``rip``: where; ``why``: ``(text, source)``
    of each declared backend difference that accounts for it."""

    n: int
    what: tuple[tuple[str, str], ...]
    left: Event | None
    right: Event | None
    seq: int | None
    t: int | None
    rip: int | None
    why: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, div: Any) -> Difference:
        """From a report's ``Divergence``."""
        w = div.where
        return cls(div.n, tuple((d.what, d.detail) for d in div.deltas), div.left, div.right,
                   w.seq, w.t, w.rip, tuple((f.text, f.source) for f in div.explanation))

    def pack(self) -> bytes:
        """msgpack bytes (events that msgpack cannot hold go as their JSON form)."""
        fields = [self.n, self.what, self.left, self.right, self.seq, self.t, self.rip,
                  self.why]
        try:
            return msgpack.packb(fields, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return msgpack.packb(jsonable(fields), use_bin_type=True)

    @classmethod
    def unpack(cls, data: bytes) -> Difference:
        n, what, left, right, seq, t, rip, why = msgpack.unpackb(
            data, raw=False, strict_map_key=False)
        return cls(n, tuple(map(tuple, what)), left, right, seq, t, rip,
                   tuple(map(tuple, why)))


class DifferenceLog(Sequence[Difference]):
    """Every divergence of one replay, appended as the report adds them and
    read back by index. Records are msgpack in an anonymous temporary file
    (gone when closed or when the process ends); memory holds an offset per
    record and a few hundred decoded ones."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="pvmon-divergences-")  # noqa: SIM115 - lives as long as the log
        self._ends = array("Q")
        self._size = 0
        self._unflushed = False
        self._cache: dict[int, Difference] = {}

    @classmethod
    def from_report(cls, report: Any) -> DifferenceLog:
        """Every divergence of ``report`` (a
        :class:`~pvmon.replay.report.Report`), in order, the spilled ones too."""
        log = cls()
        for div in report.iter_divergences():
            log.add(div)
        return log

    def add(self, div: Any) -> None:
        """Append a report ``Divergence`` (or a :class:`Difference`)."""
        rec = (div if isinstance(div, Difference) else Difference.of(div)).pack()
        self._file.write(rec)
        self._size += len(rec)
        self._ends.append(self._size)
        self._unflushed = True

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> Difference:  # type: ignore[override]
        if i < 0:
            i += len(self._ends)
        if not 0 <= i < len(self._ends):
            raise IndexError(i)
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        if self._unflushed:
            self._file.flush()
            self._unflushed = False
        start = self._ends[i - 1] if i else 0
        d = Difference.unpack(os.pread(self._file.fileno(), self._ends[i] - start, start))
        if len(self._cache) >= _CACHE:
            self._cache.clear()
        self._cache[i] = d
        return d

    def close(self) -> None:
        """Delete the file."""
        self._file.close()
        self._cache.clear()


class ReportRows:
    """The rows of the view: row ``i`` is either difference
    ``diff_of[i]`` (>= 0) or, where that is -1, the recorded event
    ``seq_of[i]`` (a matched call, shown on both sides). ``differs``: the rows
    of differences, in order. Events are read when asked for (a context row
    decompresses at most one trace frame; the reader keeps the last one)."""

    def __init__(self, diffs: Sequence[Difference], reader: Any) -> None:
        self.diffs = diffs
        self.reader = reader
        self.diff_of = array("q")
        self.seq_of = array("q")
        self.differs = array("q")
        last_seq = -1
        for k, d in enumerate(diffs):
            anchor = (d.left or {}).get("seq", d.seq)
            if isinstance(anchor, int) and anchor > last_seq + 1:
                before = [ev["seq"] for ev in
                          reader.events(max(last_seq + 1, anchor - CONTEXT_SPAN), anchor)
                          if ev["k"] == "hc"][-CONTEXT_CALLS:]
                for seq in before:
                    self.diff_of.append(-1)
                    self.seq_of.append(seq)
            self.differs.append(len(self.diff_of))
            self.diff_of.append(k)
            self.seq_of.append(-1)
            if isinstance(anchor, int):
                last_seq = max(last_seq, anchor)

    def __len__(self) -> int:
        return len(self.diff_of)

    def event(self, row: int, side: str) -> Event | None:
        """The ``side`` ("left" or "right") event of ``row``."""
        k = self.diff_of[row]
        if k >= 0:
            return getattr(self.diffs[k], side)
        seq = self.seq_of[row]
        return next(self.reader.events(seq, seq + 1), None)

    def difference_at(self, row: int) -> int:
        """Index (0-based) of the difference on ``row``, or of the next one
        after it for a context row (``len(diffs)`` if none follows)."""
        return bisect.bisect_left(self.differs, row)


class _Side(Sequence[Event | None]):
    """One column of :class:`ReportRows`."""

    def __init__(self, rows: ReportRows, side: str) -> None:
        self.rows = rows
        self.side = side

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Event | None:  # type: ignore[override]
        if i < 0:
            i += len(self.rows)
        if not 0 <= i < len(self.rows):
            raise IndexError(i)
        return self.rows.event(i, self.side)


class _Explainer:
    """The explanation pane's text for a row: the difference on it (or the
    next one), why, and the report's totals."""

    def __init__(self, report: Any, rows: ReportRows, complete: bool) -> None:
        self.rows = rows
        n = len(rows.diffs)
        shown = "" if complete or report.total <= n else \
            f"; the first {n:,} are here (the report keeps no more)"
        outcome = report.ending.get("outcome") if isinstance(report.ending, dict) else None
        self.totals = (f"{report.total:,} divergence(s) in {report.compared:,} events compared"
                       + shown + (f"; outcome: {outcome}" if outcome else ""))
        self.notes = list(report.notes[:2])

    def __call__(self, row: int) -> str:
        rows = self.rows
        n = len(rows.diffs)
        if not n:
            return self.totals
        k = rows.difference_at(row)
        if k < n and rows.differs[k] == row:
            d = rows.diffs[k]
            where = f"event {d.seq}" if d.seq is not None else "end of trace"
            if d.t is not None:
                where += f", {format_time(d.t)}"
            lines = [f"difference {k + 1:,} of {n:,} at {where}: "
                     + "; ".join(f"{what}: {detail}" for what, detail in d.what)]
            lines += [f"why: {text}" + (f" ({source})" if source else "")
                      for text, source in d.why]
        else:
            nxt = f"difference {k + 1:,} of {n:,} follows (n)" if k < n else \
                "no difference follows (N: the previous one)"
            lines = [f"the same recorded call in both runs; {nxt}"]
        return "\n".join([*lines, self.totals, *self.notes])


def divergence_from_report(report: Any, run: Any,
                           log: Sequence[Difference] | None = None) -> Divergence:
    """The view of a replay ``report`` of ``run`` (a
    :class:`pvmon.replay.source.RecordedRun`, whose reader stays open while the
    view is shown). ``log``: every divergence of the replay (a
    :class:`DifferenceLog`, :meth:`DifferenceLog.from_report`); without one,
    the report's divergences in memory."""
    complete = log is not None and len(log) >= report.total
    diffs: Sequence[Difference] = log if log is not None else \
        [Difference.of(d) for d in report.divergences]
    rows = ReportRows(diffs, run.reader)
    explain = _Explainer(report, rows, complete)
    first = rows.differs[0] if len(rows.differs) else 0
    code = ImageCode(run.guest) if getattr(run, "guest", None) is not None else None
    return Divergence(_Side(rows, "left"), _Side(rows, "right"), first,
                      explain(first) if len(rows) else explain.totals,
                      left_label=report.left, right_label=report.right,
                      differs=rows.differs, left_code=code, right_code=code,
                      explain=explain)


def show_report(report: Any, run: Any, log: Sequence[Difference] | None = None) -> None:
    """``pvmon replay ... --tui``: open the divergence view of ``report``."""
    from pvmon.ui.app import run_divergence
    run_divergence(divergence_from_report(report, run, log))
