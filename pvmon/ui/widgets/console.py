"""The guest console pane: scrollback of what the guest wrote, made safe
(:mod:`pvmon.ui.console_text`), and keyboard input to the guest when focused."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import Log

from pvmon.ui.console_text import sanitize

_KEYS = {"enter": b"\r", "backspace": b"\x7f", "tab": b"\t", "ctrl+d": b"\x04",
         "ctrl+c": b"\x03", "up": b"\x1b[A", "down": b"\x1b[B", "right": b"\x1b[C",
         "left": b"\x1b[D"}


class GuestConsole(Log):
    """Console output with a scrollback of ``max_lines`` lines.

    When ``interactive`` and focused, typed keys are posted as
    :class:`Typed` (bytes for the guest's hvc0) instead of running bindings;
    Escape gives the keys back to the app."""

    class Typed(Message):
        """Bytes typed for the guest's console."""

        def __init__(self, data: bytes) -> None:
            super().__init__()
            self.data = data

    def __init__(self, *, interactive: bool = False, max_lines: int = 5000,
                 id: str | None = None) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, id=id)
        self.interactive = interactive
        self.can_focus = interactive

    def feed(self, data: bytes) -> None:
        """Append raw guest output."""
        if data:
            self.write(sanitize(data))

    def show(self, data: bytes) -> None:
        """Replace the whole pane with ``data`` (the player's console at a point)."""
        self.clear()
        self.feed(data)

    def on_focus(self) -> None:
        if self.interactive:
            self.border_subtitle = "typing goes to the guest · esc: back"

    def on_blur(self) -> None:
        self.border_subtitle = ""

    def on_key(self, event: events.Key) -> None:
        if not self.interactive:
            return
        if event.key == "escape":
            event.stop()
            event.prevent_default()
            self.screen.focus_next()
            return
        data = _KEYS.get(event.key)
        if data is None and event.is_printable and event.character:
            data = event.character.encode()
        if data is not None:
            event.stop()
            event.prevent_default()
            self.post_message(self.Typed(data))
