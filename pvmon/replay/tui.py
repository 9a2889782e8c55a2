"""``pvmon replay --tui``: the divergence report in the TUI's side-by-side view.

The CLI calls :func:`prepare` before the replay runs (it refuses what cannot
work, then keeps every divergence the replay finds) and :func:`show` after.
A :class:`~pvmon.replay.report.Report` keeps only the first
:data:`~pvmon.replay.report.DETAILED` divergences in full; the view walks all
of them, so :func:`prepare` spills each one to a temporary file as the report
adds it (:class:`~pvmon.ui.report_view.DifferenceLog`: memory stays one
offset per divergence).
"""

from __future__ import annotations

from typing import Any

from pvmon.errors import PvmonError

_log: Any = None          # the DifferenceLog :func:`prepare` started, if any


def prepare(*, as_json: bool = False, matrix: bool = False) -> None:
    """Check that ``--tui`` can work, before a replay spends any time: raises
    PvmonError if ``as_json`` (the two are exclusive), if ``matrix`` (several
    traces or backends: a table, not one replay), or without a terminal.
    Then starts spilling every divergence for :func:`show`."""
    global _log
    if as_json:
        raise PvmonError("--tui and --json are exclusive: --tui shows the report in the TUI, "
                         "--json prints it for programs")
    if matrix:
        raise PvmonError("--tui shows one replay; several traces or backends make an "
                         "open-loop matrix, which is a table (leave out --tui)")
    from pvmon.ui.terminal import require_terminal
    require_terminal("`pvmon replay --tui` shows the divergences in the TUI",
                     "leave out --tui for the text report, or use --json")
    try:
        from pvmon.ui.report_view import DifferenceLog
    except ImportError:
        raise PvmonError("the divergence view is not available in this build; "
                         "run without --tui") from None
    _log = DifferenceLog.observing()


def show(report, run) -> None:
    """Open the divergence screen for ``report`` (a Report of ``run``), with
    every divergence if :func:`prepare` ran before the replay, else the
    report's detailed ones."""
    global _log
    try:
        from pvmon.ui.report_view import show_report
    except ImportError:
        raise PvmonError("the divergence view is not available in this build; "
                         "run without --tui") from None
    log, _log = _log, None
    if log is not None:
        log.stop_observing()
    try:
        show_report(report, run, log)
    finally:
        if log is not None:
            log.close()
