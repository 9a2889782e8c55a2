"""Printing strings that come from a guest, a trace, a profile or a command
line exactly as they are.

Such a string may hold Rich markup (``[red]``, ``[/oops]``: a closing tag
that matches nothing raises ``MarkupError``), emoji codes (``:smile:``),
terminal control sequences (ESC, CR, BEL: they recolour the terminal, move
the cursor or overwrite what was printed) or bidirectional-text controls
(which reorder what a reader sees). :func:`printable` shows the controls as
escapes; :func:`markup` also escapes Rich markup, for building markup
strings; :func:`text` gives a Rich ``Text`` (never parsed as markup); and
:func:`console` is a Rich console that parses no emoji codes and highlights
nothing, for every report pvmon prints.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 controls but TAB and LF, DEL, C1 controls, and the Unicode controls that
# break lines or reorder text (ALM, LRM/RLM, line/paragraph separators, LRE..RLO
# embeddings, LRI..PDI isolates).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_CONTROLS_AND_NEWLINES = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _show(m: re.Match[str]) -> str:
    ch = m.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def printable(value: Any, *, multiline: bool = False) -> str:
    """``str(value)`` with control characters shown as escapes (ESC as
    ``\\x1b``, CR as ``\\r``, U+202E as ``\\u202e``), so the string prints as
    one line of visible characters. ``multiline``: keep LF and TAB as they
    are (for a profile's TOML text). Everything else is unchanged."""
    s = value if isinstance(value, str) else str(value)
    if s.isprintable():          # the common case: nothing to do
        return s
    return (_CONTROLS if multiline else _CONTROLS_AND_NEWLINES).sub(_show, s)


def markup(value: Any, *, multiline: bool = False) -> str:
    """:func:`printable`, escaped for Rich markup: put it inside a markup
    string (``f"[bold]exit:[/] {markup(detail)}"``) and it prints literally.
    Print with :func:`console` (or any console made with ``emoji=False``):
    markup escaping does not cover emoji codes."""
    from rich.markup import escape
    return escape(printable(value, multiline=multiline))


def text(value: Any, *, multiline: bool = False, style: str = "") -> Text:
    """:func:`printable` as a Rich ``Text``: never parsed as markup or emoji,
    safe as a table cell under any console."""
    from rich.text import Text
    return Text(printable(value, multiline=multiline), style=style)


def console(*, stderr: bool = False) -> Console:
    """The Rich console pvmon's reports print on: no emoji codes, no
    automatic highlighting (both change what a string shows)."""
    from rich.console import Console
    return Console(stderr=stderr, highlight=False, emoji=False)
