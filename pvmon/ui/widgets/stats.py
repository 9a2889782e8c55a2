"""The counts pane: calls per hypercall and the call rate as a sparkline
(the live view: calls per wall-clock second; the player: calls per virtual
millisecond)."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from pvmon.ui.families import FAMILY_STYLE, HYPERCALL_FAMILY


class StatsPane(Vertical):
    """Counts by hypercall name (most frequent first) and a rate sparkline."""

    def compose(self) -> ComposeResult:
        yield Static("", id="rate-label")
        yield Sparkline([0], id="rate")
        yield Static("", id="counts")

    def show(self, counts: Counter[str], series: list[float], caption: str) -> None:
        """``counts``: calls by name; ``series``: the sparkline's values, oldest
        first; ``caption``: the line above it (what the series measures)."""
        self.query_one("#rate-label", Static).update(
            Text(caption, no_wrap=True, overflow="ellipsis"), layout=False)
        # An all-zero series would draw full bars: draw nothing instead.
        self.query_one("#rate", Sparkline).data = series if any(series) else []
        text = Text(no_wrap=True, overflow="ellipsis")
        for name, n in counts.most_common():
            style = FAMILY_STYLE.get(HYPERCALL_FAMILY.get(name, "other"), ("", ""))[1]
            text.append(f"{n:>7} ", style="bold")
            text.append(f"{name}\n", style=style)
        text.rstrip()
        self.query_one("#counts", Static).update(text, layout=False)


def rate_caption(total: int, now: float, peak: float, unit: str) -> str:
    """``calls 52141 · now 8.1k/s · max 9.9k/s``."""
    return f"calls {total} · now {compact(now)}/{unit} · max {compact(peak)}/{unit}"


def compact(x: float) -> str:
    """Compact rate: ``540``, ``8.1k``, ``12k``, ``3.4M``."""
    if x >= 1e6:
        return f"{x / 1e6:.1f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"
