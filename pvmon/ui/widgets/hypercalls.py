"""The hypercall stream: one line per event, coloured and tagged by family.

Renders only the visible lines (Textual's line API), so a stream of a
million events costs the same as one of a hundred. Rows come from a
:class:`RowSource`: the live view's growing list or a trace's index.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from pvmon.trace.render import describe
from pvmon.ui.families import FAMILY_STYLE, family_of
from pvmon.ui.filters import EventFilter


class RowSource(Protocol):
    """What the stream draws: ``len()`` rows, ``row(i)`` -> event dict (or None)."""

    def __len__(self) -> int: ...
    def row(self, i: int) -> dict[str, Any] | None: ...


class EventRows:
    """Rows of the live view: the last ``cap`` events received, and those of
    them that pass the filter. ``extend`` and ``set_filter`` run on the UI thread."""

    def __init__(self, cap: int = 50_000) -> None:
        self.cap = cap
        self.all: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.filter = EventFilter()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.shown)

    def row(self, i: int) -> dict[str, Any] | None:
        return self.shown[i] if 0 <= i < len(self.shown) else None

    def extend(self, events: list[dict[str, Any]]) -> None:
        self.all.extend(events)
        flt = self.filter
        if flt:
            self.shown.extend(e for e in events if flt.matches(e))
        else:
            self.shown.extend(events)
        if len(self.all) > self.cap:
            drop = len(self.all) - self.cap // 2
            self.dropped += drop
            del self.all[:drop]
            self._refilter()

    def set_filter(self, flt: EventFilter) -> None:
        self.filter = flt
        self._refilter()

    def _refilter(self) -> None:
        self.shown = [e for e in self.all if self.filter.matches(e)] if self.filter \
            else list(self.all)


def row_text(ev: dict[str, Any] | None, *, with_time: bool = True) -> Text:
    """``  seq  time  TAG   description`` for one event, styled by family."""
    if ev is None:
        return Text(f"{'-':>7} (no call on this side)", style="dim", no_wrap=True)
    fam = family_of(ev)
    tag, style = FAMILY_STYLE.get(fam, ("", ""))
    seq = ev.get("seq")
    t = ev.get("t")
    head = f"{seq:>7} " if isinstance(seq, int) else f"{'?':>7} "
    if with_time:
        head += f"{t / 1e9:.6f} " if isinstance(t, int) else "         "
    text = Text(head, style="dim", no_wrap=True)
    text.append(f"{tag:<5} ", style=style)
    text.append(describe(ev), style=style)
    return text


class HypercallStream(ScrollView, can_focus=True):
    """A scrolling list of events with a cursor and a follow mode.

    ``follow``: the cursor sticks to the newest row (the live view's default;
    moving up turns it off, End turns it back on). Posts :class:`Selected`
    when the cursor moves."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last/follow", show=False),
    ]

    cursor: reactive[int] = reactive(-1, always_update=True, init=False)
    follow: reactive[bool] = reactive(True, init=False)

    class Selected(Message):
        """The cursor moved to ``row`` (event ``event``)."""

        def __init__(self, stream: HypercallStream, row: int,
                     event: dict[str, Any] | None) -> None:
            super().__init__()
            self.stream = stream
            self.row = row
            self.event = event

        @property
        def control(self) -> HypercallStream:
            return self.stream

    def __init__(self, source: RowSource, *, follow: bool = True,
                 marks: set[int] | None = None, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.source = source
        self.marks = marks if marks is not None else set()
        self.set_reactive(HypercallStream.follow, follow)
        self._rows = 0

    # -- data ---------------------------------------------------------------------------
    def set_source(self, source: RowSource) -> None:
        self.source = source
        self._rows = -1
        self.sync()

    def sync(self) -> None:
        """Pick up rows added to the source (call after extending it)."""
        n = len(self.source)
        if n == self._rows:
            return
        self._rows = n
        self.virtual_size = Size(self.size.width, n)
        if self.follow and n or self.cursor >= n:
            self.cursor = n - 1
        elif self.cursor < 0 and n:
            self.cursor = 0
        self.refresh()

    @property
    def event(self) -> dict[str, Any] | None:
        """The event under the cursor."""
        return self.source.row(self.cursor) if self.cursor >= 0 else None

    def go(self, row: int) -> None:
        """Move the cursor to ``row`` (clamped); turns follow off unless it is the last."""
        n = len(self.source)
        if not n:
            return
        row = max(0, min(row, n - 1))
        self.follow = row == n - 1 and self.follow
        self.cursor = row

    # -- reactive -----------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self._reveal()
        self.call_after_refresh(self._reveal)
        self.post_message(self.Selected(self, new, self.event))

    def _reveal(self) -> None:
        """Scroll so that the cursor row is visible."""
        row = self.cursor
        h = self.scrollable_content_region.height
        if row < 0 or h <= 0:
            return
        top = self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False, immediate=True)
        elif row >= top + h:
            self.scroll_to(y=row - h + 1, animate=False, immediate=True)

    def watch_follow(self, follow: bool) -> None:
        self.border_subtitle = "following" if follow else "end: follow"
        if follow and len(self.source):
            self.cursor = len(self.source) - 1

    # -- actions ------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        if delta < 0:
            self.follow = False
        self.go(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        h = max(1, self.scrollable_content_region.height - 1)
        self.action_cursor(direction * h)

    def action_first(self) -> None:
        self.follow = False
        self.go(0)

    def action_last(self) -> None:
        self.follow = True
        self.go(len(self.source) - 1)

    def on_click(self, event: Any) -> None:
        row = self.scroll_offset.y + event.y
        if 0 <= row < len(self.source):
            self.follow = False
            self.go(row)

    # -- rendering ----------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        row = scroll_y + y
        base = self.rich_style
        if row >= len(self.source):
            return Strip.blank(width, base)
        text = row_text(self.source.row(row), with_time=width >= 60)
        mark = "≠ " if row in self.marks else ""
        if self.marks:
            text = Text(mark or "  ", style="bold red", no_wrap=True) + text
        text.stylize(base)
        if row == self.cursor:
            text.stylize(Style(reverse=True))
        strip = Strip(text.render(self.app.console), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width,
                                 base + Style(reverse=True) if row == self.cursor else base)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.source))
        self.call_after_refresh(self._reveal)
