"""A guest boot that the TUI watches: a :class:`~pvmon.session.Session` run on a
worker thread and published through thread-safe buffers.

Threads. :meth:`LiveSession.run` is the only code that runs on the engine
thread (a Textual thread worker calls it). Everything else is called from the
UI thread and only sets flags or appends to queues; the engine thread acts on
them at the next **event boundary**: right after a hypercall returned (the
dispatch's call listener), or, while the UI wants to stop the guest, right
after any other guest exit is recorded (the event tap below).

The event tap. Pausing and stepping stop at the next event of any kind the
dispatch records for a guest exit: a hypercall, an MSR access, port I/O,
MMIO, an interrupt taken, a halt, CPUID, a fault, an upcall, a system call
(:data:`STEP_KINDS`; TSC reads and console data are not exits of their own).
Only hypercalls reach call listeners, so while a pause is asked for (or a
breakpoint names an event kind, ``b msr``) the live session wraps the
dispatch's ``record`` (the trace writer's append, or nothing when not
recording) and sees every event. The tap is installed by the UI thread (one
attribute store) and removed by the engine thread at the pause: when the
guest runs without a pause pending, the engine's paths are exactly those of
an unwatched run. Without a recording, events other than hypercalls are not
numbered (the tap undoes the dispatch's numbering), so hypercalls keep the
numbers an unwatched run gives them; the stream shows those events with seq
``-``.

Determinism. Pausing, stepping, breakpoints, register samples and the end of
recording all happen at event boundaries, after the event was recorded and
before the guest runs on. They only read guest state (registers, memory);
they never change slice boundaries or virtual time, so the event stream does
not depend on when the UI asked for anything. Console input typed in the UI
is a live source for :mod:`pvmon.dispatch.console_input`: injected at the
next hypercall boundary and recorded there, like any other input.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvmon.dispatch.console_input import DEFAULT_IDLE_LIMIT_NS
from pvmon.dispatch.console_output import GuestConsole
from pvmon.engine.machine import GuestPageFault, Stop
from pvmon.errors import TraceError
from pvmon.guests.catalog import GuestImage
from pvmon.session import DEFAULT_CMDLINE, RunResult, Session
from pvmon.ui.gdb_status import GdbStatus

# Bytes of code read around RIP for the disassembly pane: before and after it.
CODE_BEFORE = 96
CODE_AFTER = 64

#: Event kinds (docs/trace-format.md) that pausing and stepping stop after:
#: every guest exit the dispatch records. Not ``tsc``/``tsc_run``/``io_run``
#: (a run of TSC or port reads is recorded when the next event comes, and so
#: is an ``io`` read since format version 4: a step stops there late, at
#: that next event), ``con`` (console data,
#: recorded with the call or port write that carried it) or ``exit``.
STEP_KINDS = frozenset({"hc", "msr", "io", "mmio", "irq", "halt", "cpuid", "fault", "upcall",
                        "syscall"})


@dataclass(frozen=True)
class BootSpec:
    """What to boot: a resolved guest and its machine, as :class:`Session` takes
    them (``memory`` in bytes; ``record``: a .pvt path or None; ``initrd``
    bytes and ``initrd_info``; ``script``: console input lines;
    ``idle_limit_ns``: idle exit, virtual ns), plus ``timeout`` (wall seconds
    or None), ``paused`` (stop after the first hypercall), ``gdb``
    (``HOST:PORT`` for the gdb stub, :mod:`pvmon.gdb`: the guest waits for gdb
    before its first instruction; None: no stub) and ``vcpus`` (the guest's
    vCPUs: more than one only for a Xen PV guest, docs/smp.md)."""

    guest: GuestImage
    memory: int = 256 << 20
    cmdline: str = DEFAULT_CMDLINE
    backend: str = "xen-4.17"
    record: Path | None = None
    initrd: bytes | None = None
    initrd_info: dict | None = None
    script: list[bytes] | None = None
    idle_limit_ns: int | None = DEFAULT_IDLE_LIMIT_NS
    timeout: float | None = None
    paused: bool = False
    mode: str | None = None
    gdb: str | None = None
    vcpus: int = 1


@dataclass(frozen=True)
class Sample:
    """Guest state captured at a hypercall boundary (on the engine thread).

    ``seq``: the hypercall event's seq; ``regs``: register name -> value (the
    names of :data:`pvmon.engine.machine.GPR`); ``code``: guest bytes at
    guest-virtual ``code_base`` (RIP lies inside; may be empty if unmapped);
    ``vtime_ns``: virtual time (ns); ``cpu``: the vCPU on the engine, whose
    registers ``regs`` are; ``others``: vCPU id -> the saved registers of
    each other vCPU that is up (an SMP run; empty for one vCPU)."""

    seq: int
    rip: int
    regs: dict[str, int]
    code: bytes
    code_base: int
    vtime_ns: int
    cpu: int = 0
    others: dict[int, dict[str, int]] = field(default_factory=dict)


class LiveSession:
    """Runs one :class:`Session` for the TUI.

    Build it with :meth:`create` on any thread (it raises
    :class:`~pvmon.errors.PvmonError` for a bad guest or backend), then call
    :meth:`run` on a worker thread. The UI drains :attr:`events` (hypercall
    event dicts, docs/trace-format.md) and :attr:`console` (output bytes) at
    its own pace; both are :class:`collections.deque`, whose ``append`` and
    ``popleft`` are thread-safe.
    """

    def __init__(self, session: Session, spec: BootSpec, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.clock = clock
        self.spec = spec
        self.events: deque[dict[str, Any]] = deque()
        self.console: deque[bytes] = deque()
        self.sample: Sample | None = None
        self.result: RunResult | None = None
        self.error: str | None = None
        self.phase = "running"
        self.paused_at: dict[str, Any] | None = None
        self.breakpoints: frozenset[str] = frozenset()
        self.recording: Path | None = session.trace_path
        self._cv = threading.Condition()
        self._gen = 0
        self._pause_next = spec.paused
        self._kind_breaks: frozenset[str] = frozenset()   # breakpoints naming event kinds
        self._tap: Callable[[dict[str, Any]], None] | None = None
        self._tap_orig: Callable[[dict[str, Any]], None] | None = None
        self._tap_orig_ev: Callable[..., bool] | None = None
        self._tap_lock = threading.Lock()
        self._want_sample = True
        self._stop = False
        self._stop_recording = False
        self._attention = True
        self._calls = 0
        self.wall_start: float | None = None
        self.wall_end: float | None = None
        self.wall_paused = 0.0
        self._pause_started: float | None = None
        session.dispatch.call_listeners.append(self._on_call)
        #: The guest's vCPUs (docs/smp.md); the one on the engine is ``session.dispatch.cpu``.
        self.vcpus: int = session.vcpus
        smp = getattr(session.backend, "smp", None)
        if smp is not None:
            self._watch_switches(smp)
        if spec.paused:
            self._arm_tap()
        # The guest console once, as `pvmon run` prints it: console_io until the
        # guest first writes to hvc0, then hvc0 with the hand-over repeats dropped.
        self._guest_console = GuestConsole(self.console.append)
        session.on_console(self._guest_console)
        #: The gdb stub (:class:`pvmon.gdb.attach.GdbAttachment`) and what the
        #: view shows of it (:class:`pvmon.ui.gdb_status.GdbStatus`); None without --gdb.
        self.gdb = None
        self.gdb_status: GdbStatus | None = None
        if spec.gdb is not None:
            from pvmon.gdb.attach import GdbAttachment
            # binds now: a port in use is one line before the screen opens
            self.gdb = GdbAttachment(session, spec.gdb, say=lambda text: None)
            self.gdb_status = GdbStatus(self.gdb.server.address)

    @classmethod
    def create(cls, spec: BootSpec, *, clock: Callable[[], float] = time.monotonic
               ) -> LiveSession:
        """Build the session (parses the kernel, builds the domain: about 0.2 s
        for a Debian kernel). Raises PvmonError on bad input. ``clock``: the
        wall clock (seconds) behind the speed and rate figures shown; tests
        pass a fixed one so that screenshots do not vary."""
        # A guest with a userland reads its console: the console pane is a live
        # source, so the run waits for the user instead of idling out. The idle
        # exit then never applies, and the trace header must say so (None), or a
        # replay would stop where this run went on.
        live = spec.initrd is not None and spec.script is None
        sess = Session(spec.guest, memory=spec.memory, cmdline=spec.cmdline,
                       backend=spec.backend, record=spec.record, initrd=spec.initrd,
                       initrd_info=spec.initrd_info, script=spec.script,
                       idle_limit_ns=None if live else spec.idle_limit_ns, mode=spec.mode,
                       vcpus=spec.vcpus)
        if live:
            sess.dispatch.input.live_open = True
        return cls(sess, spec, clock=clock)

    # ------------------------------------------------------------ engine thread
    def run(self) -> RunResult:
        """Run the guest to its end (blocking; call on a worker thread)."""
        self.session.guest.symbols()  # load here, not on the UI thread (0.3-0.8 s for Debian)
        if self.gdb is not None:
            self._wait_for_gdb()
        self.wall_start = self.clock()
        try:
            self.result = self.session.run(timeout=self.spec.timeout)
            last = {"seq": self.session.dispatch.seq - 1,
                    "rip": self.session.machine.reg("rip")}
            self.sample = self._capture(last)  # the machine is stopped: final state
        except Exception as exc:  # shown in the UI; the TUI must not die with the guest
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if self.gdb is not None:     # a continuing gdb learns how the run ended
                self.gdb.finish(self.result)
            self._guest_console.close()   # ring output held back as a possible repeat
            self.wall_end = self.clock()
            self.phase = "finished"
            self.paused_at = None
        return self.result

    def _wait_for_gdb(self) -> None:
        """Wait for gdb (:meth:`stop` gives up by closing the listener), then
        follow its stub: the guest stops before its first instruction."""
        att = self.gdb
        if not att.wait():
            return
        d = self.session.dispatch
        symbols = self.session.guest.symbols()

        def at_stop() -> None:   # the panes show the guest where gdb stopped it
            m = self.session.machine
            self.sample = self._capture({"seq": d.seq - 1, "rip": m.reg("rip")})
            if self._pause_started is None:
                self._pause_started = self.clock()

        def at_run() -> None:    # time stopped in gdb is not running time (as a pause)
            t0 = self._pause_started
            if t0 is None:
                return
            self._pause_started = None
            dt = self.clock() - max(t0, self.wall_start if self.wall_start is not None else t0)
            self.wall_paused += dt
            if d.deadline_wall is not None:
                d.deadline_wall += dt
        self.gdb_status.follow(att, symbols.format, at_stop, at_run)

    def _on_call(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)
        self._calls += 1
        if self._attention:
            self._attend(ev)

    def _watch_switches(self, smp: Any) -> None:
        """Show the SMP scheduler's switches (``vcpu_switch``,
        docs/trace-format.md) in the stream. The dispatch records a switch
        only when something records; the stream gets its own copy, numbered
        when the dispatch numbered it (seq None otherwise, as for other exits
        of a run that records nothing). Engine thread; reads guest state only."""
        orig = smp.on_switch
        d = self.session.dispatch
        m = self.session.machine

        def switched(old: int, new: int, why: str) -> None:
            before = d.seq
            if orig is not None:
                orig(old, new, why)
            self.events.append({"k": "vcpu_switch", "from": old, "to": new, "why": why,
                                "rip": m.reg("rip"),
                                "seq": before if d.seq > before else None,
                                "t": m.clock.now_ns, "cpu": new})
        smp.on_switch = switched

    # -------------------------------------------------------------- event tap
    def _arm_tap(self) -> None:
        """Any thread: see every recorded event until the engine thread removes
        the tap (:meth:`_disarm_tap`). Installing is one attribute store, which
        the dispatch reads before each use."""
        with self._tap_lock:
            if self._tap is not None or self.phase == "finished":
                return
            d = self.session.dispatch
            orig = d.record
            numbered = orig is not None

            def tap(ev: dict[str, Any]) -> None:
                if numbered:
                    orig(ev)
                k = ev.get("k")
                if k == "hc":
                    return                  # the call listener has it
                if not numbered:            # a run that records nothing numbers only calls
                    d.seq -= 1
                    ev["seq"] = None
                if k in STEP_KINDS:
                    self._on_exit(ev)
            self._tap, self._tap_orig = tap, orig
            # the recorder's fast path for port I/O, MMIO and TSC runs
            # (DispatchCore.record_ev) would pass the tap by: off while it is in
            self._tap_orig_ev, d.record_ev = d.record_ev, None
            d.record = tap

    def _disarm_tap(self) -> None:
        """Engine thread: remove the tap unless a pause or a kind breakpoint
        still needs it."""
        if self._tap is None or self._tap_wanted():
            return
        with self._tap_lock:
            if self._tap_wanted():      # asked for again meanwhile (the UI saw the tap armed)
                return
            d = self.session.dispatch
            if d.record is not self._tap:
                return     # wrapped since (gdb's monitor goto-event): it stays in the chain
            if self._tap_orig is None:
                d.flush_runs()              # open runs of reads: unnumbered by the tap
            d.record = self._tap_orig
            d.record_ev = self._tap_orig_ev
            self._tap = self._tap_orig = self._tap_orig_ev = None

    def _tap_wanted(self) -> bool:
        return bool(self._pause_next or self._kind_breaks or self._stop_recording)

    def _on_exit(self, ev: dict[str, Any]) -> None:
        """A guest exit other than a hypercall was recorded (engine thread, in
        the tap): show it, and pause here if a pause or a kind breakpoint asks."""
        self.events.append(ev)
        self._attend(ev)

    def _attend(self, ev: dict[str, Any]) -> None:
        sess = self.session
        if self._stop:
            sess.machine.stop(Stop("interrupted", "stopped from the TUI", ev.get("rip") or 0))
            self._update_attention()
            return
        if self._stop_recording:
            self._stop_recording = False
            try:   # the trace ends with an exit record "recording stopped ..."
                with self._tap_lock:
                    if self._tap is not None and self._tap_orig is not None:
                        # the tap wraps the writer, which is closing: drop it
                        self.session.dispatch.record = self._tap_orig
                        self._tap = self._tap_orig = self._tap_orig_ev = None
                    sess.stop_recording("recording stopped from the TUI; the guest ran on")
            except TraceError as exc:   # never raise inside the engine's hook
                self.error = str(exc)
            self.recording = None
            if self._pause_next or self._kind_breaks:
                self._arm_tap()             # go on watching, now without a writer
        hit = self._pause_next or self._breaks(ev)
        if self._want_sample or hit:
            self._want_sample = False
            self.sample = self._capture(ev)
        if hit:
            self._pause_next = False
            self._wait(ev)
        self._update_attention()

    def _breaks(self, ev: dict[str, Any]) -> bool:
        if not self.breakpoints:
            return False
        if ev.get("k") in self._kind_breaks:
            return True
        if ev.get("name") in self.breakpoints:
            return True
        op = ev.get("op")
        return isinstance(op, dict) and op.get("cmd", op.get("op")) in self.breakpoints

    def _capture(self, ev: dict[str, Any]) -> Sample:
        m = self.session.machine
        regs = m.snapshot_regs()
        rip = ev.get("rip", regs["rip"])
        base, code = rip, b""
        for before in (CODE_BEFORE, rip & 0xFFF, 0):
            try:
                code = m.read_virt(rip - before, before + CODE_AFTER)
                base = rip - before
                break
            except GuestPageFault:
                continue
        seq = ev.get("seq")
        others: dict[int, dict[str, int]] = {}
        if self.vcpus > 1:
            for i, v in enumerate(self.session.backend.vcpus):
                saved = v.saved
                if saved is not None and v.up:
                    others[i] = {**saved["regs"], "cr3": saved["cr3"]}
        return Sample(seq if isinstance(seq, int) else -1, rip, regs, code, base,
                      m.clock.now_ns, self.session.dispatch.cpu, others)

    def _wait(self, ev: dict[str, Any]) -> None:
        self.paused_at = ev
        self.phase = "paused"
        t0 = self._pause_started = self.clock()
        with self._cv:
            gen = self._gen
            while self._gen == gen and not self._stop:
                self._cv.wait(0.1)
        dt = self.clock() - t0
        self.wall_paused += dt
        self._pause_started = None
        d = self.session.dispatch
        if d.deadline_wall is not None:
            d.deadline_wall += dt  # a wall-clock timeout counts running time only
        self.paused_at = None
        if self.phase == "paused":
            self.phase = "running"

    def _release(self) -> None:
        with self._cv:
            self._gen += 1
            self._cv.notify_all()

    def _update_attention(self) -> None:
        """Engine thread only. The UI thread sets a flag, then ``_attention``;
        clearing ``_attention`` before reading the flags means a request made
        while this runs is never lost."""
        self._attention = False
        self._attention = bool(self._pause_next or self.breakpoints or self._want_sample
                               or self._stop or self._stop_recording)
        self._disarm_tap()

    # ---------------------------------------------------------------- UI thread
    def request_sample(self) -> None:
        """Capture registers and code at the next hypercall."""
        self._want_sample = True
        self._attention = True

    def pause(self) -> None:
        """Stop the guest right after its next guest exit (:data:`STEP_KINDS`)."""
        if self.phase == "running":
            self.phase = "pausing"
            self._pause_next = True
            self._attention = True
            self._arm_tap()

    def resume(self) -> None:
        """Let a paused (or pausing) guest run on."""
        self._pause_next = False
        if self.phase in ("paused", "pausing"):
            self.phase = "running"
        self._release()

    def step(self) -> None:
        """Run to the end of the next guest exit of any kind (a hypercall, an
        MSR access, port I/O, MMIO, an interrupt, a halt, ...: :data:`STEP_KINDS`),
        then pause again."""
        if self.phase == "finished":
            return
        self._pause_next = True
        self._attention = True
        self.phase = "pausing"
        self._arm_tap()
        self._release()

    def set_breakpoints(self, names: frozenset[str] | set[str]) -> None:
        """Pause after any hypercall whose name (or sub-op ``cmd``) is in
        ``names``, and after any event whose kind is (``msr``, ``io``, ``irq``,
        ``halt``, ...: :data:`STEP_KINDS`)."""
        self.breakpoints = frozenset(names)
        self._kind_breaks = frozenset(n for n in self.breakpoints
                                      if n in STEP_KINDS and n != "hc")
        self._attention = True
        if self._kind_breaks:
            self._arm_tap()

    def send_console(self, data: bytes) -> None:
        """Type ``data`` into the guest's console: injected and recorded at the
        next hypercall boundary (:mod:`pvmon.dispatch.console_input`)."""
        if data:
            self.session.dispatch.post_input(bytes(data))

    def stop_recording(self) -> None:
        """Close the trace at the next event boundary (the file stays a readable trace)."""
        if self.recording is not None:
            self._stop_recording = True
            self._attention = True
            self._arm_tap()

    def stop(self) -> None:
        """End the run: at the next hypercall, or at the engine's next safe point
        (:meth:`Machine.request_stop <pvmon.engine.machine.Machine.request_stop>`:
        right after the trap being handled, or while an idle guest waits for
        input) if that comes first."""
        self._stop = True
        self._attention = True
        self.session.machine.request_stop(Stop("interrupted", "stopped from the TUI"))
        if self.gdb is not None:
            # gdb may hold the guest stopped (or nobody attached yet): closing
            # the listener and the client detaches it, and the stop is honoured
            self.gdb.server.close()
        self._release()

    def force_stop(self) -> None:
        """Last resort when :meth:`stop` was not honoured in time (the request
        reached Unicorn just before it entered the guest): ask again."""
        self.session.machine.request_stop(Stop("interrupted", "stopped from the TUI"))

    #: Runs on the engine (a UML run, :mod:`pvmon.ui.uml_live`, does not).
    native = False

    @property
    def abi(self) -> str:
        """The run's ABI (its backend's: ``xen``, ``kvm``, ...)."""
        return self.session.backend.abi

    def header(self) -> dict[str, Any]:
        """The header a recording of this run has (or would have)."""
        return self.session.header()

    @property
    def hypercalls(self) -> int:
        """Hypercalls so far (engine-thread counter; exact when paused or finished)."""
        return self._calls

    @property
    def vtime_ns(self) -> int:
        return self.session.machine.clock.now_ns

    def wall_running_s(self) -> float:
        """Wall seconds the guest has run so far (by :attr:`clock`), paused time excluded."""
        if self.wall_start is None:
            return 0.0
        end = self.wall_end if self.wall_end is not None else self.clock()
        pausing = self._pause_started
        if pausing is not None and self.wall_end is None:
            end = min(end, pausing)   # paused now: the clock stopped when the pause began
        return max(0.0, end - self.wall_start - self.wall_paused)
