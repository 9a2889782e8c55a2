"""The status line: what runs, its state, virtual time, speed and the exit reason."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

_STATE_STYLE = {"running": "bold green", "pausing": "bold yellow", "paused": "bold yellow",
                "finished": "bold", "loading": "bold yellow", "playing": "bold green",
                "stopped": "bold magenta", "waiting": "bold yellow"}


class StatusLine(Static):
    """One or two lines of ``label: value`` parts, state first. ``text``: what
    it shows, as plain text."""

    text = ""

    def show(self, state: str, parts: list[tuple[str, str]], note: str = "") -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f" {state.upper()} ", style=_STATE_STYLE.get(state, "bold") + " reverse")
        for label, value in parts:
            line.append("  ")
            if label:
                line.append(f"{label} ", style="dim")
            line.append(value)
        lines = [line]
        if note:
            lines.append(Text(note, style="bold", no_wrap=True, overflow="ellipsis"))
        self.text = "\n".join(t.plain for t in lines)
        self.update(Group(*lines), layout=False)
