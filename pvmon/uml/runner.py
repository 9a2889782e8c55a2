"""``pvmon run uml-6.1``: boot a fetched UML kernel under the tracer, stream its
console, type script lines at its shell prompt, and record the run.

The UML command line pvmon builds (:func:`uml_argv`): ``mem=<--memory>``,
``initrd=<the initramfs>`` when one is given, ``con0=fd:0,fd:1 con=null``
(console 0 on UML's stdin/stdout, the other consoles off), ``ssl=null`` (no
serial lines), ``uml_dir=<run dir>`` (UML's mconsole socket folder) and the
words of ``--cmdline`` after them. UML's memory file goes in a private
temporary folder (``TMPDIR``), removed after the run. A UML binary kept with
its suite's C library (:mod:`pvmon.uml.guest`: trixie's on a bookworm host)
starts with that folder as its working folder, holding a ``lib64`` link to the
suite's loader (the binary's ``PT_INTERP`` is the relative
``lib64/ld-linux-x86-64.so.2``), and ``LD_LIBRARY_PATH`` on the suite's
libraries.

The run's end (:class:`UmlResult`): ``shutdown`` (UML exited with status 0:
``poweroff``/``halt`` in the guest), ``crash`` (another status, or killed by a
signal: a guest panic), ``interrupted`` (SIGINT/SIGTERM to pvmon, or Ctrl-]),
``limit`` (``--timeout``), ``idle`` (no console output for ``--idle-exit``
wall seconds with no input left), ``error`` (the trace could not be written).
pvmon stops UML with SIGTERM (UML's own clean-up kills its guest processes),
SIGKILL a few seconds later if it is still there.
"""

from __future__ import annotations

import datetime
import os
import platform
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pvmon.errors import PvmonError
from pvmon.uml.guest import UmlGuest
from pvmon.uml.tracer import StartError, TraceStats, UmlTracer

ABI = "uml"
#: ``machine.platform`` and ``backend.name`` of a UML trace.
PLATFORM = "uml"
#: What ``pvmon replay`` says about a UML trace (exit 2).
NO_REPLAY = "UML traces are recorded natively; replay against another host is out of scope"

_PROMPT = re.compile(rb"[#$>] $")
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")
_DETACH = b"\x1d"


@dataclass
class UmlResult:
    """A finished UML run: ``exit_kind``/``detail`` (the trace's ``exit``
    record), ``signal`` (the signal that stopped pvmon, or None),
    ``trace_error`` (why the trace is incomplete, or None), ``events`` written,
    ``wall_s`` seconds, ``stats`` of the tracer."""

    exit_kind: str
    detail: str
    signal: int | None = None
    trace_error: str | None = None
    events: int = 0
    wall_s: float = 0.0
    stats: TraceStats = field(default_factory=TraceStats)

    @property
    def clean(self) -> bool:
        return self.exit_kind == "shutdown"


def script_lines(text: str | bytes) -> list[bytes]:
    """Script text as the lines to type, each ending in a newline: the rule of
    :func:`pvmon.dispatch.console_input.script_lines`, kept here because that
    module brings the emulator with it, which a UML run does not use."""
    if isinstance(text, str):
        text = text.encode()
    text = text.removesuffix(b"\n")
    return [ln + b"\n" for ln in text.split(b"\n")] if text else []


def uml_argv(guest: UmlGuest, memory: int, initrd: Path | None, run_dir: Path,
             cmdline: str | None) -> list[str]:
    """The UML kernel's argv (see the module docstring). ``memory`` in bytes."""
    argv = [str(guest.binary), f"mem={memory // (1 << 20)}M"]
    if initrd is not None:
        argv.append(f"initrd={initrd}")
    argv += ["con0=fd:0,fd:1", "con=null", "ssl=null", f"uml_dir={run_dir}"]
    if cmdline:
        argv += cmdline.split()
    return argv


def header(guest: UmlGuest, argv: list[str], memory: int, initrd_info: dict | None,
           idle_limit_ns: int | None) -> dict:
    """The trace header of a UML recording (docs/trace-format.md, "UML")."""
    from pvmon import __version__
    return {
        "pvmon": __version__,
        "guest": {"kind": "uml", "name": guest.name, "package": guest.package,
                  "version": guest.version, "release": guest.release, "sha256": guest.sha256,
                  **({"libc": {k: guest.libc_meta.get(k) for k in
                               ("package", "version", "suite", "interp")}}
                     if guest.libc_meta else {})},
        "backend": {"name": PLATFORM, "abi": ABI, "version": platform.release(),
                    "version_string": f"host Linux {platform.release()} (ptrace)"},
        "machine": {"platform": PLATFORM, "memory": memory, "vcpus": 1,
                    "cmdline": " ".join(argv[1:]), "argv": argv[1:],
                    "initrd": initrd_info or None, "idle_limit_ns": idle_limit_ns,
                    "deterministic": False,
                    "clock": "host CLOCK_MONOTONIC ns since the UML process started"},
        "vtime_base_ns": 0,
        "host": platform.node(),
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(),
    }


class _Console:
    """Reads UML's console (its stdout and stderr, one pipe), shows it, and
    types script lines at prompts: a line goes in when the output since the
    previous line ends in a shell prompt (``#``, ``$`` or ``>`` then a space,
    terminal escapes ignored). With no line left and the source closed, no
    output for ``idle_s`` seconds ends the run as ``idle``."""

    def __init__(self, tracer: UmlTracer, show: Callable[[bytes], None] | None,
                 lines: list[bytes] | None, idle_s: float | None) -> None:
        self.tracer = tracer
        self.show = show
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.script_open = lines is None
        for ln in lines or []:
            self.lines.put(ln)
        if lines is not None:
            self.lines.put(None)
        self.idle_s = idle_s
        self._since = bytearray()
        self._last_out = time.monotonic()
        self._pending: bytes | None = None
        self._ended = False
        self._eof = False
        self._lock = threading.Lock()       # _maybe_type runs on both threads
        self._threads = [threading.Thread(target=self._read, name="pvmon-uml-console",
                                          daemon=True),
                         threading.Thread(target=self._idle, name="pvmon-uml-idle",
                                          daemon=True)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def add_line(self, line: bytes | None) -> None:
        """Queue a script line (None: no more lines)."""
        self.lines.put(line)

    def type_live(self, data: bytes) -> None:
        """Send terminal input to UML as it comes."""
        try:
            os.write(self.tracer.stdin_fd, data)
        except OSError:
            pass

    def _next_line(self) -> bytes | None:
        if self._pending is None and not self._ended:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                return None
            if item is None:
                self._ended = True
                return None
            self._pending = item
        return self._pending

    def _maybe_type(self, data: bytes = b"") -> None:
        with self._lock:
            self._since += data
            del self._since[:-4096]
            line = self._next_line()
            if line is None:
                return
            tail = _ESCAPES.sub(b"", bytes(self._since[-64:]))
            if _PROMPT.search(tail):
                self._pending = None
                self._since.clear()
                try:
                    os.write(self.tracer.stdin_fd, line)
                except OSError:
                    pass

    def _read(self) -> None:
        fd = self.tracer.stdout_fd
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                self._eof = True
                return
            self._last_out = time.monotonic()
            if self.show is not None:
                self.show(data)
            self._maybe_type(data)

    def _idle(self) -> None:
        while not self._eof:
            time.sleep(0.1)
            self._maybe_type()        # a line queued (piped stdin) while UML sat at a prompt
            quiet = time.monotonic() - self._last_out
            if self.idle_s and self._ended and self._pending is None and quiet >= self.idle_s:
                self.tracer.stop("idle", "waiting for console input, no input left")
                return


def run_uml(guest: UmlGuest, *, memory: int, cmdline: str | None = None,
            initrd: Path | None = None, initrd_info: dict | None = None,
            record: Path | None = None, lines: list[bytes] | None = None,
            idle_s: float | None = 10.0, timeout: float | None = None,
            show: Callable[[bytes], None] | None = None,
            stdin_fd: int | None = None,
            watch: Callable[[dict], None] | None = None,
            on_start: Callable[[UmlTracer], None] | None = None) -> UmlResult:
    """Boot ``guest`` under the tracer and return how the run ended.

    ``lines``: script lines typed at prompts (None: none, or read from
    ``stdin_fd``: a terminal is forwarded raw, Ctrl-] leaves; anything else
    is read as script lines). ``record``: write a ``.pvt`` trace there.
    ``idle_s``/``timeout``: wall seconds (None or 0: none). ``show``: where the
    console goes (None: nowhere). SIGINT and SIGTERM end the run as
    ``interrupted`` (in the main thread). ``watch`` (the TUI's live view):
    called on the tracing thread with every event as a dict, after it was
    recorded; UML's threads stay stopped while it runs, so blocking in it
    pauses the guest. ``on_start``: called with the tracer once UML runs (its
    ``stdin_fd`` takes typed console input). Call this on the thread that is
    to trace: ptrace binds a tracee to the thread that forked it. Raises
    PvmonError when UML cannot be started or the trace cannot be created."""
    from pvmon.trace.writer import TraceWriter

    run_dir = Path(tempfile.mkdtemp(prefix="pvmon-uml-"))
    argv = uml_argv(guest, memory, initrd, run_dir, cmdline)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(run_dir),
           "HOME": str(run_dir), "LANG": "C"}
    cwd = None
    if guest.libc is not None:      # the suite's loader and C library (pvmon.uml.guest)
        env["LD_LIBRARY_PATH"] = str(guest.library_path)
        (run_dir / "lib64").symlink_to(guest.libc / "lib64")
        cwd = str(run_dir)          # where the binary's relative PT_INTERP is found
    idle_limit_ns = int(idle_s * 1e9) if idle_s else None
    writer = None
    trace_error: list[str] = []
    tracer: UmlTracer

    def on_write_error(exc: BaseException) -> None:
        trace_error.append(f"writing the trace failed: {exc}; it is kept, truncated")
        tracer.stop("error", "writing the trace failed")

    tracer = UmlTracer(argv, env, lambda ev: None, lambda *values: None, cwd=cwd)
    got_signal: list[int] = []

    def on_signal(signum: int, frame) -> None:
        if not got_signal:
            got_signal.append(signum)
        tracer.stop("interrupted", f"interrupted by {signal.Signals(signum).name}")

    old = {}
    in_main = threading.current_thread() is threading.main_thread()
    restore_tty = None
    t0 = time.monotonic()
    try:
        if in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, on_signal)
        try:
            tracer.start()
        except StartError as exc:
            why = os.strerror(exc.errno)
            if exc.what == "ptrace":
                raise PvmonError(f"cannot trace the UML kernel: PTRACE_TRACEME failed ({why}); "
                                 "ptrace must be permitted here (a container's seccomp "
                                 "profile or kernel.yama.ptrace_scope 3 forbid it)") from None
            raise PvmonError(f"cannot execute the UML kernel {guest.binary} ({why}); "
                             f"fetch it again: `pvmon guests fetch {guest.name} --force` "
                             f"(Debian package {guest.package})") from None
        except OSError as exc:
            raise PvmonError(f"cannot start the UML kernel {guest.binary}: {exc.strerror}") \
                from None
        if record is not None:     # created once UML runs: a failed start leaves no trace
            try:
                writer = TraceWriter(record, header(guest, argv, memory, initrd_info,
                                                    idle_limit_ns), on_error=on_write_error)
            except BaseException:
                tracer.abort()
                raise
            tracer.set_sinks(writer.append, writer.append_hc)
        if watch is not None:
            recorder = writer.append if writer is not None else None

            def emit(ev: dict) -> None:     # hc events as dicts (format.hc_event's keys)
                if recorder is not None:
                    recorder(ev)
                watch(ev)
            tracer.set_sinks(emit)
        if on_start is not None:
            on_start(tracer)
        console = _Console(tracer, show, lines, idle_s)
        if lines is None and stdin_fd is not None:
            restore_tty = _stdin_source(console, tracer, stdin_fd)
        elif lines is None:
            console.add_line(None)
        console.start()
        timer = None
        if timeout:
            timer = threading.Timer(timeout, tracer.stop, ("limit", "wall-clock timeout"))
            timer.daemon = True
            timer.start()
        outcome = tracer.run()
        if timer is not None:
            timer.cancel()
    finally:
        if restore_tty is not None:
            restore_tty()
        for sig, h in old.items():
            signal.signal(sig, h)
        for fd in (tracer.stdin_fd, tracer.stdout_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(run_dir, ignore_errors=True)
        if writer is not None and sys.exc_info()[0] is not None:
            writer.close()
    events = tracer.seq
    if writer is not None:
        if not writer.failed:
            writer.append({"k": "exit", "reason": outcome.reason, "rip": 0,
                           "detail": outcome.detail, "status": outcome.status,
                           "seq": tracer.seq, "t": time.monotonic_ns() - tracer._t0,
                           "cpu": 0})
            events += 1
        try:
            writer.close()
        except PvmonError as exc:
            if not trace_error:
                trace_error.append(str(exc))
    return UmlResult(exit_kind=outcome.reason, detail=outcome.detail,
                     signal=got_signal[0] if got_signal else None,
                     trace_error=trace_error[0] if trace_error else None, events=events,
                     wall_s=time.monotonic() - t0, stats=tracer.stats)


def _stdin_source(console: _Console, tracer: UmlTracer, fd: int):
    """Console input from ``fd``: a terminal raw (Ctrl-] ends the run), returning
    the function that restores it; anything else line by line as script lines."""
    if os.isatty(fd):
        from pvmon.tty import raw_input_mode
        restore = raw_input_mode(fd)
        print("pvmon: console input from this terminal; Ctrl-] leaves", file=sys.stderr)
        console.add_line(None)

        def pump() -> None:
            while True:
                try:
                    data = os.read(fd, 1024)
                except OSError:
                    data = b""
                if not data or _DETACH in data:
                    tracer.stop("interrupted", "detached by the user (Ctrl-])")
                    return
                console.type_live(data)
        threading.Thread(target=pump, name="pvmon-uml-tty", daemon=True).start()
        return restore

    def pump_lines() -> None:
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
            pending = b""
            while True:
                try:
                    data = fh.read(4096)
                except OSError:
                    data = b""
                if not data:
                    break
                pending += data
                *done, pending = pending.split(b"\n")
                for ln in done:
                    console.add_line(ln + b"\n")
            if pending:
                console.add_line(pending + b"\n")
        console.add_line(None)
    threading.Thread(target=pump_lines, name="pvmon-uml-stdin", daemon=True).start()
    return None


def summary(res: UmlResult, guest: UmlGuest, record: Path | None) -> str:
    """The lines ``pvmon run`` prints on stderr after a UML run."""
    st = res.stats
    out = [(f"pvmon: {guest.name} ({guest.package} {guest.version}) under ptrace: "
           f"{res.exit_kind}: {res.detail}"),
           (f"pvmon: {st.host_syscalls:,} host system calls, {st.guest_syscalls:,} guest "
           f"system calls recovered, {st.threads} traced thread(s), {st.signals:,} signals "
           f"passed on, {res.wall_s:.2f} s")]
    if record is not None:
        kept = "; every event before the stop is kept" if res.exit_kind == "interrupted" else ""
        out.append(f"pvmon: trace {record}: {res.events:,} events{kept}")
    return "\n".join(out)

