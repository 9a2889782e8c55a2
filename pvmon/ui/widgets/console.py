"""The guest console pane: scrollback of what the guest wrote, made safe
(:mod:`pvmon.ui.console_text`), wrapped to the pane, and keyboard input to
the guest when focused.

Like the stream, it is not a scroll view: output arrives many times a second
and only this pane should repaint when it does."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from pvmon.ui.console_text import sanitize

_KEYS = {"enter": b"\r", "backspace": b"\x7f", "tab": b"\t", "ctrl+d": b"\x04",
         "ctrl+c": b"\x03", "up": b"\x1b[A", "down": b"\x1b[B", "right": b"\x1b[C",
         "left": b"\x1b[D"}


class GuestConsole(Widget):
    """Console output with a scrollback of ``max_lines`` lines.

    When ``interactive`` and focused, typed keys are posted as
    :class:`Typed` (bytes for the guest's hvc0) instead of running bindings;
    Escape gives the keys back to the app; page up/down scroll back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("pageup", "scroll_back(1)", "Scroll back", show=False),
        Binding("pagedown", "scroll_back(-1)", "Scroll forward", show=False),
    ]

    class Typed(Message):
        """Bytes typed for the guest's console."""

        def __init__(self, data: bytes) -> None:
            super().__init__()
            self.data = data

    def __init__(self, *, interactive: bool = False, max_lines: int = 5000,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.interactive = interactive
        self.can_focus = interactive
        self.max_lines = max_lines
        self.lines: list[str] = [""]
        self.back = 0          # logical lines hidden below the window (0: at the end)
        self._rows: list[str] = []

    # -- content ------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Append raw guest output."""
        if not data:
            return
        parts = sanitize(data).expandtabs(8).split("\n")
        self.lines[-1] += parts[0]
        self.lines.extend(parts[1:])
        if self.back:
            self.back += len(parts) - 1
        if len(self.lines) > self.max_lines:
            del self.lines[:len(self.lines) - self.max_lines]
            self.back = min(self.back, len(self.lines) - 1)
        self.refresh()

    def clear(self) -> None:
        self.lines = [""]
        self.back = 0
        self.refresh()

    def show(self, data: bytes) -> None:
        """Replace the whole pane with ``data`` (the player's console at a point)."""
        self.lines = [""]
        self.back = 0
        self.feed(data)
        self.refresh()

    @property
    def text(self) -> str:
        """Everything in the scrollback, as shown (sanitized)."""
        return "\n".join(self.lines)

    # -- rendering ----------------------------------------------------------------------
    def _layout(self, width: int, height: int) -> list[str]:
        """The ``height`` display rows ending ``back`` lines before the end, wrapped."""
        rows: list[str] = []
        i = len(self.lines) - 1 - self.back
        if i == len(self.lines) - 1 and not self.lines[-1] and i > 0:
            i -= 1  # a finished line: do not show an empty last row
        while i >= 0 and len(rows) < height:
            line = self.lines[i]
            chunks = [line[k:k + width] for k in range(0, len(line), width)] or [""]
            rows[:0] = chunks
            i -= 1
        return rows[-height:] if height else []

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size.width, self.content_size.height
        style = self.rich_style
        if y == 0:
            self._rows = self._layout(max(1, width), height)
        if y >= len(self._rows):
            return Strip.blank(width, style)
        text = Text(self._rows[y], no_wrap=True)
        text.stylize(style)
        return Strip(text.render(self.app.console), text.cell_len).crop_extend(0, width, style)

    def action_scroll_back(self, pages: int) -> None:
        step = max(1, self.content_size.height - 1) * pages
        self.back = max(0, min(len(self.lines) - 1, self.back + step))
        self.border_subtitle = f"{self.back} lines back · pagedown" if self.back else \
            self._focus_hint()
        self.refresh()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.back = min(len(self.lines) - 1, self.back + 3)
        self.refresh()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self.back = max(0, self.back - 3)
        self.refresh()

    # -- input --------------------------------------------------------------------------
    def _focus_hint(self) -> str:
        return "typing goes to the guest · esc: back" if self.has_focus and \
            self.interactive else ""

    def on_focus(self) -> None:
        self.border_subtitle = self._focus_hint()

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
