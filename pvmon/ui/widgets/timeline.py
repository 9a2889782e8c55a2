"""The player's timeline: hypercall density over virtual time, with the
current position marked; click or use left/right to scrub."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

_BARS = " ▁▂▃▄▅▆▇█"


class Timeline(Widget, can_focus=True):
    """``density``: events per bucket over ``[start_ns, end_ns]``; ``position_ns``:
    the cursor. Posts :class:`Seek` with a virtual time when scrubbed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "nudge(-1)", "Back", show=False),
        Binding("right", "nudge(1)", "Forward", show=False),
        Binding("shift+left", "nudge(-10)", "Back more", show=False),
        Binding("shift+right", "nudge(10)", "Forward more", show=False),
    ]

    position_ns: reactive[int] = reactive(0)

    class Seek(Message):
        """Scrubbed to virtual time ``t_ns``."""

        def __init__(self, t_ns: int) -> None:
            super().__init__()
            self.t_ns = t_ns

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.density: list[int] = []
        self.start_ns = 0
        self.end_ns = 1

    def set_density(self, density: list[int], start_ns: int, end_ns: int) -> None:
        self.density = density
        self.start_ns = start_ns
        self.end_ns = max(end_ns, start_ns + 1)
        self.refresh()

    def _cells(self) -> int:
        return max(1, self.size.width)

    def _time_of(self, x: int) -> int:
        span = self.end_ns - self.start_ns
        return self.start_ns + span * x // max(1, self._cells() - 1)

    def _cell_of(self, t_ns: int) -> int:
        span = self.end_ns - self.start_ns
        return max(0, min(self._cells() - 1,
                          (t_ns - self.start_ns) * (self._cells() - 1) // span))

    def render(self) -> Text:
        w = self._cells()
        n = len(self.density)
        if n >= w:      # several buckets per cell: add them up
            buckets = [0] * w
            for i, c in enumerate(self.density):
                buckets[i * w // n] += c
        else:           # a bucket spans several cells
            buckets = [self.density[x * n // w] for x in range(w)] if n else [0] * w
        peak = max(buckets) or 1
        pos = self._cell_of(self.position_ns)
        text = Text(no_wrap=True)
        for x, c in enumerate(buckets):
            ch = _BARS[min(8, (c * 8 + peak - 1) // peak)] if c else "·"
            if x == pos:
                text.append("┃", style="bold reverse")
            else:
                text.append(ch, style="cyan")
        return text

    def action_nudge(self, cells: int) -> None:
        x = self._cell_of(self.position_ns) + cells
        self.post_message(self.Seek(self._time_of(max(0, min(self._cells() - 1, x)))))

    def on_click(self, event: events.Click) -> None:
        self.post_message(self.Seek(self._time_of(event.x)))
