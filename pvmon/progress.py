"""Progress on long work (replays, exports, fetches, the open-loop matrix).

One helper for every command: :func:`progress` shows Rich's progress display on
stderr while the work runs, only when stderr is a terminal (and ``TERM`` is not
``dumb``). Piped or redirected, it prints nothing, so scripts and ``--json``
output see exactly what they saw before. The display is transient: it is gone
when the work ends, leaving the command's own output.

Work reports how far it got either by calling :meth:`Task.update` or, for work
running inside code that takes no callback (a replayed guest), through a
``poll`` function the display calls a few times a second from its own thread.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

POLL_INTERVAL_S = 0.25
REFRESH_PER_S = 4


def enabled() -> bool:
    """True when progress is shown: stderr is a terminal and ``TERM`` is not dumb."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        return False


class Task:
    """One line of progress. Methods do nothing when progress is not shown."""

    def __init__(self, bar: Any = None, task_id: Any = None) -> None:
        self._bar = bar
        self._id = task_id

    def update(self, completed: float | None = None, *, advance: float | None = None,
               total: float | None = None, description: str | None = None) -> None:
        """Set how far the work is (``completed``, in the task's unit) or move it
        on by ``advance``; ``total`` and ``description`` may change on the way."""
        if self._bar is None:
            return
        kw: dict[str, Any] = {}
        if completed is not None:
            kw["completed"] = completed
        if advance is not None:
            kw["advance"] = advance
        if total is not None:
            kw["total"] = total
        if description is not None:
            kw["description"] = description
        self._bar.update(self._id, **kw)


@contextmanager
def progress(description: str, total: float | None = None, *, unit: str = "events",
             poll: Callable[[], float] | None = None) -> Iterator[Task]:
    """Show ``description`` with a bar over ``total`` (in ``unit``; None: a
    spinner with the count so far, none when ``unit`` is empty, and the time
    taken) while the ``with`` block runs. ``poll``:
    called from a helper thread every :data:`POLL_INTERVAL_S` seconds for the
    completed amount (it must be safe to call from another thread; reading an
    int attribute is). Yields a :class:`Task`; when stderr is not a terminal,
    nothing is shown and the task ignores updates."""
    if not enabled():
        yield Task()
        return
    from rich import progress as rp
    from rich.console import Console

    columns: list[Any] = [rp.SpinnerColumn(), rp.TextColumn("{task.description}", markup=False)]
    if total is not None:
        columns += [rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn(unit, markup=False),
                    rp.TimeRemainingColumn()]
    else:
        if unit:
            columns.append(rp.TextColumn("{task.completed:,.0f} " + unit, markup=False))
        columns.append(rp.TimeElapsedColumn())
    # A few redraws a second: each holds the GIL for a couple of milliseconds (2.3 ms
    # measured on a busy 2-core host), which the work (a replayed guest's hooks)
    # would otherwise have: about 1 % at 4 a second.
    bar = rp.Progress(*columns, console=Console(stderr=True), transient=True,
                      redirect_stdout=False, redirect_stderr=False,
                      refresh_per_second=REFRESH_PER_S)
    task = Task(bar, bar.add_task(description, total=total))
    stop = threading.Event()
    poller = None
    if poll is not None:
        def run_poll() -> None:
            while not stop.wait(POLL_INTERVAL_S):
                try:
                    task.update(poll())
                except Exception:  # noqa: BLE001 - a display must never break the work
                    return
        poller = threading.Thread(target=run_poll, name="pvmon-progress", daemon=True)
    with bar:
        if poller is not None:
            poller.start()
        try:
            yield task
        finally:
            stop.set()
            if poller is not None:
                poller.join()
