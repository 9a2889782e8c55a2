"""The counts pane: calls per hypercall, the rate over virtual time as a
sparkline (calls per virtual millisecond), and the totals."""

from __future__ import annotations

from collections import Counter

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from pvmon.ui.families import FAMILY_STYLE, HYPERCALL_FAMILY
from pvmon.ui.rates import RateHistory


class StatsPane(Vertical):
    """Counts by hypercall name (most frequent first) and a rate sparkline."""

    def compose(self) -> ComposeResult:
        yield Static("", id="rate-label")
        yield Sparkline([0], id="rate")
        yield Static("", id="counts")

    def show(self, counts: Counter[str], rates: RateHistory) -> None:
        total = sum(counts.values())
        peak = max(rates.per_ms(), default=0.0)
        self.query_one("#rate-label", Static).update(Text(
            f"calls {total} · now {_num(rates.recent_per_ms())}/ms · max {_num(peak)}",
            no_wrap=True, overflow="ellipsis"))
        self.query_one("#rate", Sparkline).data = rates.per_ms() or [0]
        text = Text(no_wrap=True, overflow="ellipsis")
        for name, n in counts.most_common():
            style = FAMILY_STYLE.get(HYPERCALL_FAMILY.get(name, "other"), ("", ""))[1]
            text.append(f"{n:>7} ", style="bold")
            text.append(f"{name}\n", style=style)
        text.rstrip()
        self.query_one("#counts", Static).update(text)


def _num(x: float) -> str:
    """Compact rate: ``540``, ``12k``, ``3.4M``."""
    if x >= 1e6:
        return f"{x / 1e6:.1f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}"
