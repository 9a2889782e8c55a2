"""Guest console bytes made safe for a terminal pane.

Guest output is untrusted: escape sequences could move the cursor, retitle
the window or hide text. :func:`sanitize` keeps printable text, newlines and
tabs, drops ANSI escape sequences (CSI, OSC, two-byte ESC), turns a bare
carriage return into nothing (Linux writes ``\\r\\n``), and shows any other
control byte in caret notation (``^G``). Invalid UTF-8 becomes U+FFFD.
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"           # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"     # DCS / PM / APC / SOS strings
    r"|\x1b[ -/]*[0-~]?"                  # other ESC sequences
    r"|\x9b[0-?]*[ -/]*[@-~]")            # 8-bit CSI
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _caret(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c == 0x0D:
        return ""
    if c < 0x20:
        return "^" + chr(c + 0x40)
    if c == 0x7F:
        return "^?"
    return f"\\x{c:02x}"


def sanitize(data: bytes) -> str:
    """Console bytes -> text that is safe to put in a pane (see the module doc)."""
    text = data.decode("utf-8", errors="replace")
    text = _ESCAPES.sub("", text)
    return _CONTROLS.sub(_caret, text)

