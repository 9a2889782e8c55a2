"""The divergence view: two runs' calls aligned side by side, the first
divergence selected, the explanation of the selected difference and the code
below. n / N walk every difference."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static

from pvmon.engine.disasm import disassemble_around
from pvmon.guests.code import ImageCode
from pvmon.trace.render import format_time
from pvmon.ui.divergence import Divergence
from pvmon.ui.widgets.disasm import DisassemblyPane
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.status import StatusLine


class SideRows:
    """One side of a :class:`Divergence` as a stream row source."""

    def __init__(self, events: Sequence[dict[str, Any] | None]) -> None:
        self.events = events

    def __len__(self) -> int:
        return len(self.events)

    def row(self, i: int) -> dict[str, Any] | None:
        return self.events[i] if 0 <= i < len(self.events) else None


class DifferingRows:
    """The rows that differ, as the streams' marks: membership by binary
    search in the sorted ``differs`` (no set of a million rows)."""

    def __init__(self, divergence: Divergence) -> None:
        self.div = divergence

    def __contains__(self, row: object) -> bool:
        return isinstance(row, int) and self.div.differs_at(row)

    def __len__(self) -> int:
        return len(self.div.differs)


class DivergenceScreen(Screen[None]):
    """Shows a :class:`~pvmon.ui.divergence.Divergence`; both columns move together."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "difference(1)", "Next diff"),
        Binding("N", "difference(-1)", "Prev diff", key_display="N"),
        Binding("d", "first", "First diff"),
        Binding("tab", "other_side", "Other side", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, divergence: Divergence) -> None:
        super().__init__()
        self.div = divergence

    def compose(self) -> ComposeResult:
        marks = DifferingRows(self.div)
        yield StatusLine(id="status")
        with Horizontal(id="pair"):
            yield HypercallStream(SideRows(self.div.left), follow=False, marks=marks,
                                  id="left")
            yield HypercallStream(SideRows(self.div.right), follow=False, marks=marks,
                                  id="right")
        with Vertical(id="below"):
            yield Static("", id="explanation")
            with Horizontal(id="codes"):
                yield DisassemblyPane("", id="left-code")
                yield DisassemblyPane("", id="right-code")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        d = self.div
        left, right = self.query_one("#left", HypercallStream), \
            self.query_one("#right", HypercallStream)
        left.border_title = escape(d.left_label)
        right.border_title = escape(d.right_label)
        self.query_one("#explanation").border_title = "explanation"
        self.query_one("#explanation", Static).update(Text(d.explanation_at(d.first)))
        for s in (left, right):
            s.sync()
        left.focus()
        self.select(d.first)

    def select(self, row: int) -> None:
        """Put both cursors on ``row``."""
        for s in self.query(HypercallStream):
            s.follow = False
            s.go(row)

    def on_hypercall_stream_selected(self, message: HypercallStream.Selected) -> None:
        """Move the other column to the row this one moved to. Messages arrive
        after the fact: one whose row is no longer its stream's cursor is
        stale (a later move follows) and acting on it would pull both columns
        back, so it is dropped."""
        if message.row != message.stream.cursor:
            return
        for s in self.query(HypercallStream):
            if s is not message.stream and s.cursor != message.row:
                s.go(message.row)
        self._show(message.row)

    def _show(self, row: int) -> None:
        d = self.div
        a = d.left[row] if 0 <= row < len(d.left) else None
        b = d.right[row] if 0 <= row < len(d.right) else None
        self._code("#left-code", a, d.left_code, d.left_label)
        self._code("#right-code", b, d.right_code, d.right_label)
        n_before = bisect.bisect_left(d.differs, row)
        where = "differs" if d.differs_at(row) else "same"
        if d.explain is not None:
            self.query_one("#explanation", Static).update(Text(d.explanation_at(row)))
        parts = [("row", f"{row}/{len(d.left)}"), ("", where),
                 ("differences", str(len(d.differs))), ("first", f"row {d.first}")]
        if d.differs:
            parts.append(("this is", f"difference {n_before + 1 if where == 'differs' else '-'}"))
        for label, ev in ((d.left_label, a), (d.right_label, b)):
            if ev is not None and isinstance(ev.get("t"), int):
                parts.append((label, f"#{ev.get('seq')} {format_time(ev['t'])}"))
        self.query_one(StatusLine).show("divergence", parts)

    def _code(self, sel: str, ev: dict[str, Any] | None, code: ImageCode | None,
              label: str) -> None:
        pane = self.query_one(sel, DisassemblyPane)
        rip = ev.get("rip") if ev else None
        if not isinstance(rip, int):
            pane.show([], label, note="no call on this side" if ev is None else "no RIP")
            return
        if code is None:
            pane.show([], f"{label}: {rip:#x}", note="guest image not given: no code")
            return
        base, data = code.window(rip)
        insns = disassemble_around(data, base, rip, before=2, after=4,
                                   func_start=code.func_start(rip))
        pane.show(insns, f"{label}: {code.symbolize(rip)}")

    def action_difference(self, direction: int) -> None:
        d = self.div
        cur = self.query_one("#left", HypercallStream).cursor
        if direction > 0:
            i = bisect.bisect_right(d.differs, cur)
            target = d.differs[i] if i < len(d.differs) else None
        else:
            i = bisect.bisect_left(d.differs, cur) - 1
            target = d.differs[i] if i >= 0 else None
        if target is None:
            self.notify("no more differences", severity="warning")
        else:
            self.select(target)

    def action_first(self) -> None:
        self.select(self.div.first)

    def action_other_side(self) -> None:
        left = self.query_one("#left", HypercallStream)
        (self.query_one("#right") if left.has_focus else left).focus()

    def action_help(self) -> None:
        from pvmon.ui.screens.help import HelpScreen
        self.app.push_screen(HelpScreen(self, "divergence"))
