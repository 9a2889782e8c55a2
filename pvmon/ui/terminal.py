"""Whether the TUI has a terminal to run in.

Textual reads keys from stdin and draws on stderr. Without a terminal there
it cannot work: with stdin at end of file (``</dev/null``, a pipe, cron, CI)
its input thread read EOF forever at 100 % of a core and the screen never
answered, and with stderr redirected the screen's escape codes went into a
file. stdout carries nothing while the TUI runs, but a redirected stdout
(``| less``, ``> out``) means the user is scripting, and a pager would fight
the TUI for the terminal. So every TUI entry point asks for all three to be
terminals and otherwise says so in one line (exit status 2) before anything
starts. This module imports nothing heavy: the CLI calls it before it loads
Textual or runs a replay.
"""

from __future__ import annotations

import sys
from typing import TextIO

from pvmon.errors import PvmonError


class NoTerminalError(PvmonError):
    """A TUI command was started without a terminal on stdin, stdout or stderr."""


def _is_tty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):   # closed or detached stream
        return False


def missing_terminals() -> list[str]:
    """The standard streams that are not terminals, of ``stdin``, ``stdout``,
    ``stderr`` (the process's own, :data:`sys.__stdin__` and so on, which
    Textual uses, not whatever a test harness put in :data:`sys.stdin`)."""
    streams = (("stdin", sys.__stdin__), ("stdout", sys.__stdout__), ("stderr", sys.__stderr__))
    return [name for name, s in streams if not _is_tty(s)]


def require_terminal(what: str, instead: str) -> None:
    """Raise :class:`NoTerminalError` unless stdin, stdout and stderr are
    terminals. ``what``: the command and what it shows (``"`pvmon view` plays
    a trace in the TUI"``); ``instead``: what to run without a terminal. The
    message is one line, e.g. ``no terminal (stdin is not one): `pvmon view`
    plays a trace in the TUI; use `pvmon trace cat` instead``."""
    missing = missing_terminals()
    if missing:
        which = (f"{missing[0]} is not one" if len(missing) == 1 else
                 f"{', '.join(missing[:-1])} and {missing[-1]} are not terminals")
        raise NoTerminalError(f"no terminal ({which}): {what}; {instead}")
