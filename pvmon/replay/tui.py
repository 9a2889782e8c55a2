"""``pvmon replay --tui``: the divergence report in the TUI's side-by-side view."""

from __future__ import annotations

from pvmon.errors import PvmonError


def show(report, run) -> None:
    """Open the divergence screen for ``report`` (a Report of ``run``)."""
    try:
        from pvmon.ui.divergence import show_report
    except ImportError:
        raise PvmonError("the divergence view is not available in this build; "
                         "run without --tui") from None
    show_report(report, run)
