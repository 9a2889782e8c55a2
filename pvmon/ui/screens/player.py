"""The trace player: the live view's panes over a recorded .pvt trace.

Opening indexes the trace on a worker thread (:class:`~pvmon.ui.trace_index.TraceIndex`);
after that, moving the cursor, scrubbing the timeline, jumping to an event or
a virtual time, and filtering cost one frame decompression at most. Searching
scans the trace forward or backward on a worker thread, through the shown
events and the console: output the guest wrote and input typed into it.
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import click
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer

from pvmon.engine.disasm import disassemble_around
from pvmon.errors import PvmonError
from pvmon.guests.code import ImageCode, image_for_header
from pvmon.trace.reader import TraceReader
from pvmon.trace.render import describe, format_ret, format_time
from pvmon.ui.filters import EventFilter, unknown_canonical_message
from pvmon.ui.screens.guest_panes import compose_guest_panes, title_guest_panes
from pvmon.ui.screens.prompt import PromptScreen
from pvmon.ui.trace_index import TraceIndex
from pvmon.ui.widgets.console import GuestConsole
from pvmon.ui.widgets.disasm import DisassemblyPane
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.registers import RegisterPane
from pvmon.ui.widgets.stats import StatsPane, compact
from pvmon.ui.widgets.status import StatusLine
from pvmon.ui.widgets.timeline import Timeline

_ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8")   # Xen x86-64 hypercall arguments


def _contains(seqs: array, seq: int) -> bool:
    """True if sorted ``seqs`` holds ``seq``."""
    i = bisect.bisect_left(seqs, seq)
    return i < len(seqs) and seqs[i] == seq


class TraceRows:
    """Rows of the player: the events whose seqs are in ``seqs``."""

    def __init__(self, index: TraceIndex | None = None, seqs: array | None = None) -> None:
        self.index = index
        self.seqs = seqs if seqs is not None else array("Q")

    def __len__(self) -> int:
        return len(self.seqs)

    def row(self, i: int) -> dict[str, Any] | None:
        if self.index is None or not 0 <= i < len(self.seqs):
            return None
        return self.index.event(self.seqs[i])

    def pvops_of(self, i: int) -> tuple[str, ...] | None:
        """Canonical operation names of row ``i`` (None until derived)."""
        if self.index is None or self.index.pvops is None or not 0 <= i < len(self.seqs):
            return None
        return self.index.pvops.get(self.seqs[i], ())


def registers_of(ev: dict[str, Any] | None) -> tuple[dict[str, int], str]:
    """The registers a trace records for an event, and a note: a hypercall's
    number and argument registers (Xen x86-64 ABI), a fault's RIP and CR2."""
    if not ev:
        return {}, ""
    regs: dict[str, int] = {}
    if isinstance(ev.get("rip"), int):
        regs["rip"] = ev["rip"]
    if ev.get("k") == "hc":
        if isinstance(ev.get("nr"), int):
            regs["rax"] = ev["nr"]
        args = ev.get("args")
        if isinstance(args, (list, tuple)):
            for name, v in zip(_ARG_REGS, args):
                if isinstance(v, int):
                    regs[name] = v
        return regs, f"as recorded at entry · returned {format_ret(ev.get('ret'))}"
    if ev.get("k") == "fault" and isinstance(ev.get("cr2"), int):
        regs["cr2"] = ev["cr2"]
    return regs, "as recorded"


def parse_position(text: str) -> tuple[str, int]:
    """``"1234"``/``"#1234"`` -> ("seq", 1234); ``"1.5ms"``/``"0.01s"``/``"t=2us"`` ->
    ("time", ns). Raises ValueError with a readable message."""
    from pvmon.trace.cli import parse_time
    t = text.strip().lstrip("#")
    if re.fullmatch(r"[0-9]+", t):
        return "seq", int(t)
    t = t.removeprefix("t=").strip()
    try:
        return "time", parse_time(t)
    except click.BadParameter:
        raise ValueError(f"{text!r} is neither an event number (1234) nor a virtual time "
                         "(1.5ms, 0.01s)") from None


class PlayerScreen(Screen[None]):
    """Plays the trace at ``path``. ``closable``: q closes this screen (it was
    opened on top of another) instead of quitting."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "goto", "Go to"),
        Binding("f", "filter", "Filter"),
        Binding("p", "toggle_pvops", "Pv-ops", show=False),   # footer is full: in ? and ^p
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "search_next(1)", "Next"),
        Binding("N", "search_next(-1)", "Prev", key_display="N"),
        Binding("o", "open_trace", "Open"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "close", "Quit"),
    ]

    def __init__(self, path: str | Path, *, closable: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.closable = closable
        self.reader: TraceReader | None = None
        self.index: TraceIndex | None = None
        self.rows = TraceRows()
        self.filter = EventFilter()
        self.search_text = ""
        self._search_at: tuple[int, int] | None = None   # (console hit seq, row seq shown)
        self.code: ImageCode | None = None
        self._shown_seq: int | None = None
        self._pending: dict[str, Any] | None = None
        self._error = ""

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield from compose_guest_panes(self.rows, live=False)
        yield Timeline(id="timeline")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        title_guest_panes(self, stream="events", console="console at the selected event")
        self._show_status("loading")
        self.load()
        self.set_interval(1 / 10, self._apply_selection)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self) -> None:
        """Open and index the trace (worker thread)."""
        try:
            reader = TraceReader(self.path)
            index = TraceIndex(reader)
            code = image_for_header(reader.header)
        except PvmonError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._loaded, reader, index, code)

    def _failed(self, message: str) -> None:
        self._error = message
        self._show_status("error")
        self.notify(message, severity="error", timeout=10, markup=False)

    def _loaded(self, reader: TraceReader, index: TraceIndex, code: ImageCode | None) -> None:
        self.reader, self.index, self.code = reader, index, code
        self.rows = TraceRows(index, index.seqs)
        stream = self.query_one(HypercallStream)
        stream.show_cpu = self.vcpus > 1
        stream.set_source(self.rows)
        stream.go(0)
        per_ms = index.rates.per_ms()
        self.query_one(StatsPane).show(
            index.counts, per_ms, f"calls {sum(index.counts.values())} · max "
            f"{compact(max(per_ms, default=0))}/ms virtual")
        r = index.rates
        self.query_one(Timeline).set_density(r.counts, r.start_ns,
                                             r.start_ns + len(r.counts) * r.width_ns)
        self._show_status("playing")

    @property
    def vcpus(self) -> int:
        """The recorded run's vCPUs (header ``machine.vcpus``; 1 if it has none)."""
        m = self.reader.header.get("machine") if self.reader is not None else None
        n = m.get("vcpus") if isinstance(m, dict) else None
        return n if isinstance(n, int) and n > 0 else 1

    def on_unmount(self) -> None:
        if self.reader is not None:
            self.reader.close()

    # -- selection ----------------------------------------------------------------------
    def on_hypercall_stream_selected(self, message: HypercallStream.Selected) -> None:
        self._pending = message.event
        self._apply_selection()

    def _apply_selection(self) -> None:
        ev = self._pending
        if ev is None or self.index is None or ev.get("seq") == self._shown_seq:
            return
        self._shown_seq = ev.get("seq")
        seq = ev.get("seq", 0)
        self.query_one(GuestConsole).show(self.index.console_until(seq))
        regs, note = registers_of(ev)
        self.query_one(RegisterPane).show(regs, note)
        cpu = ev.get("cpu", 0)
        self.query_one("#regs").border_title = f"registers at #{seq}" + \
            (f" · vCPU {cpu}" if self.vcpus > 1 else "")
        self._show_code(ev)
        if isinstance(ev.get("t"), int):
            self.query_one(Timeline).position_ns = ev["t"]
        self._show_status("playing")

    def _show_code(self, ev: dict[str, Any]) -> None:
        pane = self.query_one(DisassemblyPane)
        rip = ev.get("rip")
        if not isinstance(rip, int):
            pane.show([], note="this event has no RIP")
            return
        if self.code is None:
            pane.show([], f"{rip:#x}", note="guest image not here: no code")
            return
        base, data = self.code.window(rip)
        insns = disassemble_around(data, base, rip, func_start=self.code.func_start(rip))
        pane.show(insns, self.code.symbolize(rip), note="" if insns else "RIP outside the image")

    def _show_status(self, state: str) -> None:
        parts: list[tuple[str, str]] = [("", self.path.name)]
        note = self._error
        r, idx = self.reader, self.index
        if r is not None and idx is not None:
            h = r.header
            g = h.get("guest", {}) if isinstance(h.get("guest"), dict) else {}
            b = h.get("backend", {}) if isinstance(h.get("backend"), dict) else {}
            parts += [("", str(g.get("name", "?"))), ("", f"{b.get('name', '?')}")]
            stream = self.query_one(HypercallStream)
            ev = stream.event
            parts.append(("event", f"#{ev.get('seq') if ev else '-'}/{len(r)}"))
            if ev and isinstance(ev.get("t"), int):
                parts.append(("vt", format_time(ev["t"])))
            n = self.vcpus
            if n > 1:     # the vCPU on the engine at the selected event
                parts.append(("vcpu", f"{ev.get('cpu', 0) if ev else '-'} of {n}"))
            if not r.complete:
                parts.append(("", f"truncated after {r.truncated_after}"))
            if self.filter:
                parts.append(("filter", self.filter.text))
            if idx.exit is not None and not note:
                x = idx.exit
                sym = self.code.symbolize(x.get("rip", 0)) if self.code else ""
                note = f"exit: {x.get('reason')} - {x.get('detail', '')} {sym}".rstrip()
        self.query_one(StatusLine).show(state, parts, note)

    # -- seeking --------------------------------------------------------------------------
    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        self.seek_time(message.t_ns)

    def seek_seq(self, seq: int) -> None:
        """Select the shown event at or before ``seq``."""
        if self.index is None:
            return
        self.query_one(HypercallStream).go(self.index.row_of(seq, self.rows.seqs))

    def seek_time(self, t_ns: int) -> None:
        """Select the event at virtual time ``t_ns`` (ns)."""
        if self.reader is not None:
            self.seek_seq(self.reader.seek_time(t_ns))

    def action_goto(self) -> None:
        def done(text: str | None) -> None:
            if not text:
                return
            try:
                kind, value = parse_position(text)
            except ValueError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            (self.seek_seq if kind == "seq" else self.seek_time)(value)

        self.app.push_screen(PromptScreen("Go to event number or virtual time:", "",
                                          placeholder="1234  or  1.5ms  or  0.002s"), done)

    def action_filter(self) -> None:
        from pvmon.ui.screens.help import FILTER_HELP

        def done(text: str | None) -> None:
            if text is not None:
                self.set_filter(text)

        self.app.push_screen(PromptScreen("Show only:", self.filter.text, hint=FILTER_HELP,
                                          placeholder="mmu -mmu_update"), done)

    def set_filter(self, text: str) -> None:
        """Show only the events matching ``text``; keeps the selected event if
        shown. A dotted term (``mmu.set_pte``, ``irq.``) derives the canonical
        operations first (on a worker thread; the filter applies when done)."""
        if self.index is None:
            return
        flt = EventFilter.parse(text)
        unknown = flt.unknown_canonical()
        if unknown:
            self.notify(unknown_canonical_message(unknown), severity="warning", markup=False)
        if flt.canonical and self.index.pvops is None:
            self.derive_pvops(lambda: self.set_filter(text))
            return
        cur = self.query_one(HypercallStream).event
        self.filter = flt
        self.rows = TraceRows(self.index, self.index.filtered(self.filter))
        stream = self.query_one(HypercallStream)
        stream.set_source(self.rows)
        self._title_stream()
        self.seek_seq(cur.get("seq", 0) if cur else 0)
        self._show_status("playing")

    def _title_stream(self) -> None:
        stream = self.query_one(HypercallStream)
        title = f"events \\[{escape(self.filter.text)}]" if self.filter else "events"
        stream.border_title = title + (" · pv-ops" if stream.show_pvops else "")

    @work(thread=True, exclusive=True, group="pvops", exit_on_error=False)
    def derive_pvops(self, then: Callable[[], None]) -> None:
        """Derive the trace's canonical operations (worker thread), then call
        ``then`` on the UI thread."""
        index = self.index
        if index is None:
            return
        if index.pvops is None:
            self.app.call_from_thread(self.notify, "deriving canonical operations...",
                                      timeout=2, markup=False)
            index.derive_pvops()
            if index.pvops_error:
                self.app.call_from_thread(self.notify, index.pvops_error, severity="warning",
                                          markup=False)
        self.app.call_from_thread(then)

    def action_toggle_pvops(self) -> None:
        """Show or hide the canonical operations column (docs/pvops.md)."""
        if self.index is None:
            return
        stream = self.query_one(HypercallStream)
        if stream.show_pvops:
            stream.show_pvops = False
            self._title_stream()
            return

        def show() -> None:
            stream.show_pvops = True
            self._title_stream()
        if self.index.pvops is None:
            self.derive_pvops(show)
        else:
            show()

    # -- search ---------------------------------------------------------------------------
    def action_search(self) -> None:
        def done(text: str | None) -> None:
            if text:
                self.search_text = text
                self.search(text, 1)

        self.app.push_screen(PromptScreen("Search events and the console for:",
                                          self.search_text,
                                          placeholder="PIN_L4_TABLE  or  mfn=0x1234  or  login:"),
                             done)

    def action_search_next(self, direction: int) -> None:
        if self.search_text:
            self.search(self.search_text, direction)
        else:
            self.action_search()

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def search(self, text: str, direction: int) -> None:
        """Find the next (``direction`` 1) or previous (-1) match of ``text``
        (case-insensitive): a shown event whose readable line contains it, or
        console output or typed input that contains it (see
        :meth:`TraceIndex.console_hits`), whichever comes first; worker thread."""
        idx, reader = self.index, self.reader
        if idx is None or reader is None:
            return
        shown = self.rows.seqs
        cur = self.app.call_from_thread(lambda: self.query_one(HypercallStream).event)
        start = cur.get("seq", -1) if cur else -1
        if self._search_at is not None and self._search_at[1] == start:
            start = self._search_at[0]   # continue from the console match shown last
        needle = text.lower()
        forward = direction > 0
        # the nearest console match (output or input) in the search direction
        con: tuple[int, str] | None = None
        for what in ("out", "in"):
            hits = idx.console_hits(text, what)
            if forward:
                i = bisect.bisect_right(hits, start)
                s = hits[i] if i < len(hits) else None
            else:
                i = bisect.bisect_left(hits, start) - 1 if start >= 0 else -1
                s = hits[i] if i >= 0 else None
            if s is not None and (con is None or (s < con[0] if forward else s > con[0])):
                con = (s, what)
        # the nearest shown event, scanned no further than the console match
        hit = None
        frames = reader.frames
        fi = max(0, bisect.bisect_right([f.first_seq for f in frames], max(start, 0)) - 1)
        order = range(fi, len(frames)) if forward else range(fi, -1, -1)
        for i in order:
            evs = reader.frame_events(i)
            for ev in (evs if forward else reversed(evs)):
                s = ev["seq"]
                if (s <= start) if forward else (s >= start):
                    continue
                if con is not None and ((s > con[0]) if forward else (s < con[0])):
                    break
                if _contains(shown, s) and needle in describe(ev).lower():
                    hit = s
                    break
            else:
                continue
            break
        if hit is not None:
            self.app.call_from_thread(self._found, text, hit, None)
        else:
            self.app.call_from_thread(self._found, text, con[0] if con else None,
                                      con[1] if con else None)

    def _found(self, text: str, seq: int | None, console: str | None) -> None:
        """Show match ``seq``: an event in the stream, or (``console`` "out" or
        "in") a console event: the first shown event at or after it is
        selected, so the console pane includes the match."""
        if seq is None:
            self.notify(f"no more matches for {text!r}", severity="warning", markup=False)
            return
        self._search_at = None
        if console is None or self.index is None:
            self.seek_seq(seq)
            return
        rows = self.rows.seqs
        if _contains(rows, seq):
            self.seek_seq(seq)
            return
        row = min(bisect.bisect_left(rows, seq), len(rows) - 1)
        self.query_one(HypercallStream).go(row)
        if len(rows):
            self._search_at = (seq, rows[row])
        where = "typed input" if console == "in" else "console output"
        self.notify(f"{text!r} in the {where} at #{seq}", markup=False)

    # -- other ----------------------------------------------------------------------------
    def action_open_trace(self) -> None:
        def done(text: str | None) -> None:
            if text:
                self.app.open_trace(text)  # type: ignore[attr-defined]

        self.app.push_screen(PromptScreen("Open trace:", "", placeholder="run.pvt"), done)

    def action_help(self) -> None:
        from pvmon.ui.screens.help import HelpScreen
        self.app.push_screen(HelpScreen(self, "player"))

    async def action_close(self) -> None:
        if self.closable:
            self.dismiss()
        else:
            await self.app.action_quit()
