"""Raw terminal mode for live console input (``pvmon run`` typing to a guest).

The guest's console wants every key as it is typed: no line editing or echo by
the host's terminal (the guest echoes), no signals from Ctrl-C or Ctrl-Z (they
go to the guest as bytes), CR not turned into NL, no XON/XOFF flow control.
Output processing stays on, so the host terminal still renders the guest's
NLs. POSIX termios (termios(3)); Ctrl-] to leave is the callers' own key.
"""

from __future__ import annotations

from collections.abc import Callable


def raw_input_mode(fd: int) -> Callable[[], None]:
    """Put the terminal on ``fd`` in raw input mode (byte by byte: VMIN 1,
    VTIME 0); returns the function that restores its earlier mode (discarding
    input not yet read). Raises termios.error when ``fd`` is not a terminal."""
    import termios
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[0] &= ~(termios.ICRNL | termios.IXON)
    new[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
    new[6][termios.VMIN], new[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, new)
    return lambda: termios.tcsetattr(fd, termios.TCSAFLUSH, old)
