"""The hypercall stream: one line per event, coloured and tagged by family.

Renders only the visible lines (Textual's line API), so a stream of a
million events costs the same as one of a hundred. Rows come from a
:class:`RowSource`: the live view's growing list or a trace's index.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar, Protocol

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from pvmon.trace.render import describe
from pvmon.ui.canonical import CanonicalOps, summary
from pvmon.ui.families import FAMILY_STYLE, family_of
from pvmon.ui.filters import EventFilter


class RowSource(Protocol):
    """What the stream draws: ``len()`` rows, ``row(i)`` -> event dict (or None).
    A source that knows canonical operations also has ``pvops_of(i)`` -> the
    operation names of row ``i``, or None while they are not derived."""

    def __len__(self) -> int: ...
    def row(self, i: int) -> dict[str, Any] | None: ...


class EventRows:
    """Rows of the live view: the last ``cap`` events received, and those of
    them that pass the filter. ``extend``, ``set_filter`` and
    ``derive_pvops`` run on the UI thread.

    Canonical operations (:mod:`pvmon.ui.canonical`) are derived only after
    :meth:`derive_pvops`: from then on for each event received, and at once
    for the events held (from mid-run if older ones were dropped). They are
    kept beside the events (``pvops``: event id -> names), never in the event
    dicts, which the engine thread also hands to the trace writer."""

    def __init__(self, cap: int = 50_000) -> None:
        self.cap = cap
        self.all: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.filter = EventFilter()
        self.canonical: CanonicalOps | None = None
        self.pvops: dict[int, tuple[str, ...]] = {}
        self._trimmed = False

    def __len__(self) -> int:
        return len(self.shown)

    def row(self, i: int) -> dict[str, Any] | None:
        return self.shown[i] if 0 <= i < len(self.shown) else None

    def pvops_of(self, i: int) -> tuple[str, ...] | None:
        """Canonical operation names of row ``i``; None before :meth:`derive_pvops`."""
        if self.canonical is None or not 0 <= i < len(self.shown):
            return None
        return self.pvops.get(id(self.shown[i]), ())

    def derive_pvops(self, abi: str, header: dict[str, Any] | None) -> None:
        """Start deriving canonical operations (``abi``, ``header``: the run's,
        as its trace header would say); a no-op once started."""
        if self.canonical is not None:
            return
        self.canonical = CanonicalOps(abi, header, resume=self._trimmed)
        self._derive(self.all)
        if self.filter.canonical:
            self._refilter()

    def _derive(self, events: list[dict[str, Any]]) -> None:
        of, pv = self.canonical.of, self.pvops
        for e in events:
            names = of(e)
            if names:
                pv[id(e)] = names

    def _matches(self, e: dict[str, Any]) -> bool:
        return self.filter.matches(e, self.pvops.get(id(e), ()))

    def extend(self, events: list[dict[str, Any]]) -> None:
        self.all.extend(events)
        if self.canonical is not None:
            self._derive(events)
        flt = self.filter
        if flt:
            self.shown.extend(e for e in events if self._matches(e))
        else:
            self.shown.extend(events)
        if len(self.all) > self.cap:
            drop = len(self.all) - self.cap // 2
            if self.pvops:
                for e in self.all[:drop]:
                    self.pvops.pop(id(e), None)
            del self.all[:drop]
            self._trimmed = True
            self._refilter()

    def set_filter(self, flt: EventFilter) -> None:
        self.filter = flt
        self._refilter()

    def _refilter(self) -> None:
        self.shown = [e for e in self.all if self._matches(e)] if self.filter \
            else list(self.all)


#: Styles of the vCPU column, by vCPU id modulo their number.
CPU_STYLES = ("bold green", "bold magenta", "bold cyan", "bold yellow")


def row_text(ev: dict[str, Any] | None, *, with_time: bool = True,
             pvops: tuple[str, ...] | None = None, with_cpu: bool = False) -> Text:
    """``  seq  time  TAG   description`` for one event, styled by family;
    with ``pvops`` (canonical operation names), ``  seq  time  TAG  ops │
    description``; ``with_cpu``: the vCPU of the event (``cpu``, 0 if it has
    none) after the time, ``c0``, ``c1``... (an SMP run, docs/smp.md)."""
    if ev is None:
        return Text(f"{'-':>7} (no call on this side)", style="dim", no_wrap=True)
    fam = family_of(ev)
    tag, style = FAMILY_STYLE.get(fam, ("", ""))
    seq = ev.get("seq")
    t = ev.get("t")
    head = f"{seq:>7} " if isinstance(seq, int) else f"{'-' if seq is None else '?':>7} "
    if with_time:
        head += f"{t / 1e9:.6f} " if isinstance(t, int) else "         "
    text = Text(head, style="dim", no_wrap=True)
    if with_cpu:
        cpu = ev.get("cpu", 0)
        cpu = cpu if isinstance(cpu, int) else 0
        text.append(f"c{cpu:<2} ", style=CPU_STYLES[cpu % len(CPU_STYLES)])
    text.append(f"{tag:<5} ", style=style)
    if pvops is not None:
        text.append(f"{summary(pvops):<{PVOPS_WIDTH}.{PVOPS_WIDTH}}", style="bold" if pvops
                    else "dim")
        text.append(" │ ", style="dim")
    text.append(describe(ev), style=style)
    return text


#: Cells of the canonical-operations column.
PVOPS_WIDTH = 24


class HypercallStream(Widget, can_focus=True):
    """A list of events with a cursor and a follow mode.

    ``follow``: the cursor sticks to the newest row (the live view's default;
    moving up turns it off, End turns it back on). Posts :class:`Selected`
    when the cursor moves. Not a scroll view on purpose: rows arrive many
    times a second, and a changing virtual size would re-lay out the whole
    screen each time; this widget only repaints itself. The border subtitle
    says where the cursor is."""

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
    #: Show the canonical operations column (when the source has derived them).
    show_pvops: reactive[bool] = reactive(False, init=False)
    #: Show the vCPU column (a run or trace with more than one vCPU).
    show_cpu: reactive[bool] = reactive(False, init=False)

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
                 marks: Collection[int] | None = None, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.source = source
        self.marks = marks if marks is not None else set()
        self.set_reactive(HypercallStream.follow, follow)
        self._rows = 0
        self.top = 0

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
        if self.follow and n or self.cursor >= n:
            self.cursor = n - 1
        elif self.cursor < 0 and n:
            self.cursor = 0
        else:
            self._subtitle()
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
        self._reveal()
        self.refresh()
        self._subtitle()
        self.post_message(self.Selected(self, new, self.event))

    def _reveal(self) -> None:
        """Move the window so that the cursor row is visible."""
        h = self.content_size.height
        row = self.cursor
        if h <= 0 or row < 0:
            return
        if row < self.top:
            self.top = row if self.top - row <= 1 else max(0, row - h // 2)
        elif row >= self.top + h:
            self.top = row - h + 1 if row - (self.top + h) < 1 else row - h // 2
        # never leave empty rows below the last one
        self.top = max(0, min(self.top, len(self.source) - h))

    def _subtitle(self) -> None:
        n = len(self.source)
        where = f"{self.cursor + 1}/{n}" if n else "empty"
        self.border_subtitle = f"{where} · following" if self.follow else \
            f"{where} · end: follow"

    def watch_follow(self, follow: bool) -> None:
        self._subtitle()
        if follow and len(self.source):
            self.cursor = len(self.source) - 1

    # -- actions ------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        if delta < 0:
            self.follow = False
        self.go(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.content_size.height - 1))

    def action_first(self) -> None:
        self.follow = False
        self.go(0)

    def action_last(self) -> None:
        self.follow = True
        self.go(len(self.source) - 1)

    def on_click(self, event: events.Click) -> None:
        row = self.top + event.y - self.styles.gutter.top
        if 0 <= row < len(self.source):
            self.follow = False
            self.go(row)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.action_cursor(-3)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.action_cursor(3)

    def on_resize(self) -> None:
        self._reveal()

    # -- rendering ----------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        base = self.rich_style
        if y == 0:
            self._reveal()
        row = self.top + y
        if row >= len(self.source) or width <= 0:
            return Strip.blank(width, base)
        pvops = None
        if self.show_pvops:
            of = getattr(self.source, "pvops_of", None)
            pvops = of(row) if of is not None else None
        text = row_text(self.source.row(row), with_time=width >= 60, pvops=pvops,
                        with_cpu=self.show_cpu)
        if self.marks:
            mark = "≠ " if row in self.marks else "  "
            text = Text(mark, style="bold red", no_wrap=True) + text
        text.stylize(base)
        cursor = row == self.cursor
        if cursor:
            text.stylize(Style(reverse=True))
        strip = Strip(text.render(self.app.console), text.cell_len)
        return strip.crop_extend(0, width, base + Style(reverse=True) if cursor else base)
