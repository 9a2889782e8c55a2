"""A replay's divergence report as the divergence view's rows.

:class:`pvmon.replay.report.Report` keeps the divergences themselves (the
first :data:`~pvmon.replay.report.DETAILED` in full), not the whole replayed
stream. The rows built here are therefore: for each detailed divergence, the
recorded hypercalls just before it (which the replay matched, so both
columns show the recorded call), then the divergence itself (left: the
recorded event, right: the replayed one, ``None`` where the call exists on
one side only). The explanation says what was left out.
"""

from __future__ import annotations

from typing import Any

from pvmon.guests.code import ImageCode
from pvmon.trace.render import format_time
from pvmon.ui.divergence import Divergence

CONTEXT_CALLS = 4      # matched hypercalls shown before each divergence


def divergence_from_report(report: Any, run: Any) -> Divergence:
    """Rows for the divergence view from a replay ``report`` of ``run`` (a
    :class:`pvmon.replay.source.RecordedRun`)."""
    left: list[dict | None] = []
    right: list[dict | None] = []
    differs: list[int] = []
    last_seq = -1
    for div in report.divergences:
        anchor = (div.left or {}).get("seq", div.where.seq)
        if isinstance(anchor, int) and anchor > last_seq + 1:
            before = [ev for ev in run.reader.events(max(last_seq + 1, anchor - 400), anchor)
                      if ev["k"] == "hc"][-CONTEXT_CALLS:]
            for ev in before:
                left.append(ev)
                right.append(ev)
        differs.append(len(left))
        left.append(div.left)
        right.append(div.right)
        if isinstance(anchor, int):
            last_seq = max(last_seq, anchor)
    code = ImageCode(run.guest) if getattr(run, "guest", None) is not None else None
    return Divergence(left, right, differs[0] if differs else 0, _explanation(report),
                      left_label=report.left, right_label=report.right, differs=differs,
                      left_code=code, right_code=code)


def _explanation(report: Any) -> str:
    if not report.total:
        return f"no divergence: {report.right} matches {report.left} " \
               f"over {report.compared:,} events"
    lines = [f"{report.total:,} divergence(s) in {report.compared:,} events compared"
             + (f"; the first {len(report.divergences)} are shown"
                if report.total > len(report.divergences) else "")]
    first = report.divergences[0]
    w = first.where
    where = f"event {w.seq}" if w.seq is not None else "end of trace"
    if w.t is not None:
        where += f", {format_time(w.t)}"
    lines.append(f"first at {where}: " + "; ".join(f"{d.what}: {d.detail}"
                                                   for d in first.deltas))
    lines += [f"why: {f.text}" for f in first.explanation]
    lines += report.notes[:2]
    return "\n".join(lines)


def show_report(report: Any, run: Any) -> None:
    """``pvmon replay ... --tui``: open the divergence view of ``report``."""
    from pvmon.ui.app import run_divergence
    run_divergence(divergence_from_report(report, run))
