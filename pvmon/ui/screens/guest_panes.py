"""The pane layout the live view and the trace player share: the event stream
over the guest console on the left; registers, code and counts on the right."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from pvmon.ui.widgets.console import GuestConsole
from pvmon.ui.widgets.disasm import DisassemblyPane
from pvmon.ui.widgets.hypercalls import EventRows, HypercallStream
from pvmon.ui.widgets.registers import RegisterPane
from pvmon.ui.widgets.stats import StatsPane


def compose_guest_panes(rows: EventRows, *, live: bool) -> ComposeResult:
    """The panes, with ids ``stream``, ``console``, ``regs``, ``code`` and
    ``stats``. ``live``: the stream follows new events and the console takes
    typed input (the live view); otherwise both only show (the player)."""
    with Horizontal(id="body"):
        with Vertical(id="main"):
            yield HypercallStream(rows, follow=live, id="stream")
            yield GuestConsole(interactive=live, id="console")
        with Vertical(id="side"):
            yield RegisterPane(id="regs")
            yield DisassemblyPane("", id="code")
            yield StatsPane(id="stats")


def title_guest_panes(screen: Screen, *, stream: str, console: str) -> None:
    """Set the panes' border titles and focus the event stream."""
    titles = {"stream": stream, "console": console, "regs": "registers", "code": "code",
              "stats": "counts"}
    for pane, title in titles.items():
        screen.query_one(f"#{pane}").border_title = title
    screen.query_one("#stream").focus()
