"""``pvmon replay --tui``: the divergence report in the TUI's side-by-side view.

The CLI calls :func:`prepare` before the replay runs (it refuses what cannot
work) and :func:`show` after.
The view walks every divergence by index: :func:`show` copies the report's
(the first :data:`~pvmon.replay.report.DETAILED` in memory, the rest spilled)
into a :class:`~pvmon.ui.report_view.DifferenceLog`, a temporary file read by
offset.
"""

from __future__ import annotations

from pvmon.errors import PvmonError


def prepare(*, as_json: bool = False, matrix: bool = False) -> None:
    """Check that ``--tui`` can work, before a replay spends any time: raises
    PvmonError if ``as_json`` (the two are exclusive), if ``matrix`` (several
    traces or backends: a table, not one replay), or without a terminal.
    """
    if as_json:
        raise PvmonError("--tui and --json are exclusive: --tui shows the report in the TUI, "
                         "--json prints it for programs")
    if matrix:
        raise PvmonError("--tui shows one replay; several traces or backends make an "
                         "open-loop matrix, which is a table (leave out --tui)")
    from pvmon.ui.terminal import require_terminal
    require_terminal("`pvmon replay --tui` shows the divergences in the TUI",
                     "leave out --tui for the text report, or use --json")


def show(report, run) -> None:
    """Open the divergence screen for ``report`` (a Report of ``run``), every
    divergence walkable."""
    try:
        from pvmon.ui.report_view import DifferenceLog, show_report
    except ImportError:
        raise PvmonError("the divergence view is not available in this build; "
                         "run without --tui") from None
    log = DifferenceLog.from_report(report)
    try:
        show_report(report, run, log)
    finally:
        log.close()
