"""A User-Mode Linux run that the TUI watches (docs/uml.md, "The live view").

A UML kernel runs natively under pvmon's ptrace tracer
(:func:`pvmon.uml.runner.run_uml`), not on the engine, so this is the live
view's other source beside :class:`~pvmon.ui.live_session.LiveSession`, with
the attributes and methods :class:`~pvmon.ui.screens.live.LiveScreen` uses.

Threads. :meth:`UmlLiveSession.run` runs on the Textual worker thread that
forks UML and runs the tracer's ``waitpid`` loop: ptrace binds a tracee to
the thread that traced it, so both must be that one thread. Every event the
tracer makes (``hc`` events of ABI ``uml``: UML's host system calls;
``syscall``/``sysret``: its guest processes' own calls; ``con``: console
data) reaches :meth:`UmlLiveSession._on_event` on that thread, which
publishes it to :attr:`events` and, for a pause, step or breakpoint, waits
there: UML's threads stay stopped in the tracer until it returns (pausing is
"stop resuming the tracee"; the console reader and UML's timers are host
time and go on). The console pane is fed from UML's console pipe; typed
input is written to the tracer's ``stdin_fd``. There are no registers or
code to show: the guest's registers are the recovered ``syscall`` events'.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Event kinds pausing and stepping stop after: UML's host system calls and
#: the recovered system calls of its guest processes.
UML_STEP_KINDS = frozenset({"hc", "syscall"})


@dataclass(frozen=True)
class UmlBootSpec:
    """What to boot: ``args`` (:class:`pvmon.uml.cli.UmlArgs`, the checked
    options), ``idle_s``/``timeout`` wall seconds (None: none), ``paused``
    (stop after the first host system call)."""

    args: Any
    idle_s: float | None = None
    timeout: float | None = None
    paused: bool = False
    #: The status line's backend column.
    backend: str = "uml (ptrace)"

    @property
    def guest(self) -> Any:
        return self.args.guest

    @property
    def record(self) -> Path | None:
        return self.args.record


class UmlLiveSession:
    """One UML run for the live view. Build it on any thread, call :meth:`run`
    on a worker thread; the UI drains :attr:`events` and :attr:`console`."""

    #: Not on the engine: no registers, code, gdb or vCPUs (the screen asks).
    native = True
    vcpus = 1
    sample = None
    gdb = None
    gdb_status = None
    abi = "uml"

    def __init__(self, spec: UmlBootSpec, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.events: deque[dict[str, Any]] = deque()
        self.console: deque[bytes] = deque()
        self.result: Any = None        # pvmon.uml.runner.UmlResult once the run ended
        self.error: str | None = None
        self.phase = "running"
        self.paused_at: dict[str, Any] | None = None
        self.breakpoints: frozenset[str] = frozenset()
        self.recording: Path | None = spec.record
        self.tracer: Any = None
        self._cv = threading.Condition()
        self._gen = 0
        self._pause_next = spec.paused
        self._kind_breaks: frozenset[str] = frozenset()
        self._stop = False
        self._calls = 0
        self._t = 0
        self.wall_start: float | None = None
        self.wall_end: float | None = None
        self.wall_paused = 0.0
        self._pause_started: float | None = None

    @classmethod
    def create(cls, spec: UmlBootSpec, *, clock: Callable[[], float] = time.monotonic
               ) -> UmlLiveSession:
        return cls(spec, clock=clock)

    def header(self) -> dict[str, Any]:
        """The header a recording of this run has (for the canonical operations)."""
        from pvmon.uml.runner import header, uml_argv
        a = self.spec.args
        argv = uml_argv(a.guest, a.memory, a.initrd, Path("/tmp"), a.cmdline)
        return header(a.guest, argv, a.memory, a.initrd_info, None)

    # ------------------------------------------------------------ tracer thread
    def run(self) -> Any:
        """Boot UML and trace it to its end (blocking; on the worker thread that
        is to trace it). Returns the :class:`~pvmon.uml.runner.UmlResult`."""
        from pvmon.uml.runner import run_uml
        a = self.spec.args
        self.wall_start = self.clock()
        try:
            self.result = run_uml(a.guest, memory=a.memory, cmdline=a.cmdline,
                                  initrd=a.initrd, initrd_info=a.initrd_info, record=a.record,
                                  lines=a.lines, idle_s=self.spec.idle_s,
                                  timeout=self.spec.timeout, show=self.console.append,
                                  watch=self._on_event, on_start=self._started)
        except Exception as exc:   # shown in the UI; the TUI must not die with the guest
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.wall_end = self.clock()
            self.phase = "finished"
            self.paused_at = None
        return self.result

    def _started(self, tracer: Any) -> None:
        self.tracer = tracer
        if self._stop:
            tracer.stop("interrupted", "stopped from the TUI")

    def _on_event(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        k = ev.get("k")
        if k == "hc":
            self._calls += 1
        t = ev.get("t")
        if isinstance(t, int):
            self._t = t
        if self._stop or k not in UML_STEP_KINDS:
            return
        if self._pause_next or self._breaks(ev):
            self._pause_next = False
            self._wait(ev)

    def _breaks(self, ev: dict[str, Any]) -> bool:
        if not self.breakpoints:
            return False
        if ev.get("k") in self._kind_breaks or ev.get("name") in self.breakpoints:
            return True
        op = ev.get("op")
        return isinstance(op, dict) and op.get("cmd") in self.breakpoints

    def _wait(self, ev: dict[str, Any]) -> None:
        self.paused_at = ev
        self.phase = "paused"
        t0 = self._pause_started = self.clock()
        with self._cv:
            gen = self._gen
            while self._gen == gen and not self._stop:
                self._cv.wait(0.1)
        self.wall_paused += self.clock() - t0
        self._pause_started = None
        self.paused_at = None
        if self.phase == "paused":
            self.phase = "running"

    def _release(self) -> None:
        with self._cv:
            self._gen += 1
            self._cv.notify_all()

    # ---------------------------------------------------------------- UI thread
    def request_sample(self) -> None:
        """Nothing to sample: a UML run has no register or code pane."""

    def pause(self) -> None:
        """Stop UML after its next host system call (or guest system call)."""
        if self.phase == "running":
            self.phase = "pausing"
            self._pause_next = True

    def resume(self) -> None:
        self._pause_next = False
        if self.phase in ("paused", "pausing"):
            self.phase = "running"
        self._release()

    def step(self) -> None:
        """Run to the next host system call (or recovered guest system call)."""
        if self.phase == "finished":
            return
        self._pause_next = True
        self.phase = "pausing"
        self._release()

    def set_breakpoints(self, names: frozenset[str] | set[str]) -> None:
        """Pause after host system calls named (``wait4``), ptrace requests
        (``sysemu``), guest system calls (``uname``) or the kind ``syscall``."""
        self.breakpoints = frozenset(names)
        self._kind_breaks = frozenset(n for n in self.breakpoints if n == "syscall")

    def send_console(self, data: bytes) -> None:
        """Type ``data`` into UML's console (its stdin pipe)."""
        tracer = self.tracer
        if data and tracer is not None and tracer.stdin_fd >= 0:
            try:
                os.write(tracer.stdin_fd, bytes(data))
            except OSError:
                pass

    def stop(self) -> None:
        """End the run: UML gets SIGTERM (SIGKILL a few seconds later)."""
        self._stop = True
        tracer = self.tracer
        if tracer is not None:
            tracer.stop("interrupted", "stopped from the TUI")
        self._release()

    def force_stop(self) -> None:
        """Last resort: SIGKILL to UML when it did not end on SIGTERM in time."""
        tracer = self.tracer
        if tracer is not None and tracer.pid:
            try:
                os.kill(tracer.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @property
    def hypercalls(self) -> int:
        """UML's host system calls so far."""
        return self._calls

    @property
    def vtime_ns(self) -> int:
        """Host ns since UML started, at the last event (a UML trace's clock)."""
        return self._t

    def wall_running_s(self) -> float:
        """Wall seconds the guest has run so far, paused time excluded."""
        if self.wall_start is None:
            return 0.0
        end = self.wall_end if self.wall_end is not None else self.clock()
        pausing = self._pause_started
        if pausing is not None and self.wall_end is None:
            end = min(end, pausing)
        return max(0.0, end - self.wall_start - self.wall_paused)
