"""SIGINT and SIGTERM end a run at a safe point instead of inside a hook.

Python runs a signal handler in the main thread between two bytecodes, which
while the engine runs is almost always inside one of its hooks (a hypercall, a
TSC read): Python's default SIGINT handler raises KeyboardInterrupt there, the
hook is abandoned half done (a hypercall silently dropped, a TSC read with no
value) and the guest goes on from a state no run reaches; SIGTERM's default
action kills the process before the trace gets its exit record.

:class:`StopOnSignals` replaces both for the length of a ``with`` block:

* the Python handler only calls :meth:`Machine.request_stop
  <pvmon.engine.machine.Machine.request_stop>` (set a field, ask Unicorn to
  leave ``emu_start``), so the hook it interrupted runs to its end and the run
  loop ends between two slices, with the stop kind ``interrupted``;
* a guest can run a long time without any hook (no hypercall, no TSC read, no
  fault), and then no Python code runs in the main thread, so the Python
  handler cannot either. Python's C-level handler still writes the signal
  number to the wakeup fd (:func:`signal.set_wakeup_fd`) at once; a watcher
  thread reading it asks for the stop too, and repeats the request every
  :data:`RETRY_S` until the run loop has ended (a request that lands just
  before ``emu_start`` begins is lost by Unicorn).

Both end the run at a point where every recorded event is complete: the
recording up to there is a prefix of the uninterrupted run's event stream.
Outside the main thread (the TUI's engine worker) the block does nothing.
"""

from __future__ import annotations

import signal
import socket
import threading
from types import TracebackType
from typing import Self

from pvmon.engine.machine import Machine, Stop

#: Seconds between repeated stop requests from the watcher thread.
RETRY_S = 0.02


def exit_status(signum: int) -> int:
    """The exit status the shell gives a process ended by ``signum``: 128 + its
    number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def signal_name(signum: int) -> str:
    """``SIGINT`` for 2, ``SIGTERM`` for 15; ``signal N`` for an unnamed number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopOnSignals:
    """Within the block, ``signals`` (default SIGINT and SIGTERM) ask
    ``machine`` to stop at its next safe point with
    ``Stop("interrupted", "interrupted by SIGINT", signal=2)`` (first signal
    wins; later ones repeat the request). On leaving, the previous handlers
    and wakeup fd are restored. :attr:`signum` is the first signal received
    (None if none). A no-op outside the main thread."""

    def __init__(self, machine: Machine,
                 signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.machine = machine
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._old: dict[int, object] = {}
        self._old_wakeup = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            return self
        r, w = socket.socketpair()
        r.settimeout(None)
        w.setblocking(False)
        self._pair = (r, w)
        self._old_wakeup = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        for sig in self.signals:
            self._old[sig] = signal.signal(sig, self._on_signal)
        self._thread = threading.Thread(target=self._watch, name="pvmon-signals", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pair is None:
            return
        for sig, old in self._old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_wakeup)
        self._done.set()
        r, w = self._pair
        try:
            w.send(b"\0")          # wake the watcher so it ends
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(1.0)
        r.close()
        w.close()
        self._pair = None

    def _request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.machine.request_stop(Stop("interrupted", f"interrupted by {signal_name(signum)}",
                                       signal=signum))

    def _on_signal(self, signum: int, frame: object) -> None:
        # Runs in the main thread between two bytecodes, usually inside a hook:
        # it must not raise, and only asks for the stop.
        self._request(signum)

    def _watch(self) -> None:
        assert self._pair is not None
        r = self._pair[0]
        while not self._done.is_set():
            try:
                data = r.recv(64)
            except OSError:
                return
            if self._done.is_set() or not data:
                return
            sigs = [s for s in data if s in self.signals]
            if not sigs:
                continue
            self._request(sigs[0])
            # Repeat until the run loop has seen it (or the block ends).
            while not self._done.wait(RETRY_S) and self.machine.running:
                self.machine.request_stop(self.machine.stop_request)
