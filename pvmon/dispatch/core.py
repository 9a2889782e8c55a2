"""The ABI-neutral core of the dispatch layer.

What every ABI's dispatch module shares, whatever its hypercall convention
and platform: event numbering and recording (:meth:`DispatchCore._emit`,
virtual time and vCPU on every record), TSC reads grouped into ``tsc_run``
events and port reads into ``io_run`` events, console output to listeners and the trace, console input and its
injection points (pvmon/dispatch/console_input.py), stops from inside the run
(the :class:`~pvmon.backends.base.PlatformServices` a backend calls back:
:class:`RunServices`) and from outside it (signals, a full disk, Ctrl-] at
the next safe point; the wall-clock deadline; the exit hook).

An ABI module (pvmon/dispatch/xen.py for Xen PV) subclasses
:class:`DispatchCore` and implements the engine's
:class:`~pvmon.engine.machine.TrapHandler` traps: it decodes a trap into a
call, hands it to the backend, records it (numbered from ``seq``) and calls
:meth:`DispatchCore._inject_due`, :meth:`DispatchCore._idle_point` and
:meth:`DispatchCore._check_wall` at its boundaries. The core uses only the
written backend contract (pvmon/backends/base.py): ``console_out``,
``console_input``, ``console.input_consumed``, and the ``vcpu`` timer and
upcall-mask members.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable

from pvmon.backends.base import Backend, GuestAccess
from pvmon.dispatch.console_input import ConsoleInput
from pvmon.engine.machine import Machine, Stop
from pvmon.platforms.cpuid import lookup


def _discard(ev: dict) -> None:
    """A recorder that keeps nothing (events are still numbered)."""


#: Keys of a ``tsc_run`` event in their order in the trace (``record_ev``).
_TSC_RUN_KEYS = ("k", "rip", "val", "seq", "t", "cpu")
#: The most TSC reads one ``tsc_run`` event holds (trace format version 2,
#: docs/trace-format.md). Consecutive reads with no other event between them
#: share one event, so a calibration loop's thousands of reads cost a list
#: append each instead of an event each.
TSC_RUN_MAX = 1024
#: Keys of an ``io_run`` event, and of the ``io`` event a run of one port read
#: is written as, in their order in the trace.
_IO_RUN_KEYS = ("k", "port", "size", "val", "seq", "t", "cpu")
_IO_KEYS = ("k", "dir", "port", "size", "val", "seq", "t", "cpu")
#: The most port reads one ``io_run`` event holds (trace format version 4).
#: Port reads with no event but TSC reads between them share one event, and TSC
#: reads with no event but port reads between them share one ``tsc_run``, so
#: the PIT calibration loop of a PVH boot (100,000 ``inb $0x42`` and 50,000
#: ``rdtsc``, interleaved) is about 100 events instead of 150,000.
IO_RUN_MAX = 1024

#: The detail of the stop (exit kind "limit") when ``deadline_wall`` passes.
WALL_TIMEOUT = "wall-clock timeout"

#: Wall seconds between looks at a stop request while an idle guest waits for input.
POLL_S = 0.1


def plain_shutdown(reason: int, rip: int) -> Stop:
    """The stop for a guest shutdown with ``reason`` when the ABI names none."""
    return Stop("shutdown", f"shutdown({reason})", rip, reason)


class RunServices:
    """:class:`~pvmon.backends.base.PlatformServices`, written once.

    Subclasses say how a run ends (:meth:`end_run`) and may name shutdown
    reasons (``shutdown_stop``: ``(reason, rip) -> Stop``, a static function
    of the ABI module). ``_cur_rip`` is where the current call returns to;
    ``_jump`` a target set by the backend during it (None: none); whoever
    enters a call sets both (:meth:`enter`)."""

    shutdown_stop = staticmethod(plain_shutdown)

    def __init__(self) -> None:
        # instance attributes only, as before the split: no class-level default
        # shadows them, so the hot path's attribute access is what it was
        self._cur_rip = 0
        self._jump: int | None = None

    def enter(self, rip: int) -> None:
        """A call or delivery begins; it returns to ``rip`` unless the backend jumps."""
        self._cur_rip = rip
        self._jump = None

    def end_run(self, stop: Stop) -> None:
        """End the run with ``stop`` (after the current call returns)."""
        raise NotImplementedError

    def cur_rip(self) -> int:
        return self._jump if self._jump is not None else self._cur_rip

    def jump(self, rip: int) -> None:
        self._jump = rip

    def crash_stop(self, detail: str, rip: int) -> None:
        self.end_run(Stop("crash", detail, rip))

    def stuck(self, detail: str) -> None:
        self.end_run(Stop("stuck", detail, self.cur_rip()))

    def guest_shutdown(self, reason: int) -> None:
        self.end_run(self.shutdown_stop(reason, self.cur_rip()))


class DispatchCore(RunServices):
    """The ABI-neutral half of a TrapHandler for one domain.

    ``machine``: the engine; ``backend``: the attached :class:`Backend`;
    ``guest``: its recording :class:`GuestAccess`; ``record``: a callable
    taking an event dict (docs/trace-format.md), or None to record nothing.

    Public state: ``seq`` (the next event number), ``hypercalls`` (calls by
    name), ``faults`` (by vector), ``upcalls`` (event deliveries),
    ``console_listeners`` (called with ``(channel, bytes)`` for console
    output), ``call_listeners`` (called with each call event dict),
    ``deadline_wall`` (a ``time.monotonic()`` after which the run stops with
    exit kind "limit"), ``exit_hook`` (asked every 256 traps for a
    :class:`Stop`), ``input`` (:class:`ConsoleInput`), ``tsc_run_max``,
    ``io_run_max``."""

    def __init__(self, machine: Machine, backend: Backend, guest: GuestAccess,
                 record: Callable[[dict], None] | None = None) -> None:
        super().__init__()
        self.m = machine
        self.b = backend
        self.guest = guest
        self.record = record
        #: Optional fast path for call events, taken while no call listener is
        #: attached: called with :func:`pvmon.trace.format.hc_event`'s arguments
        #: instead of ``record`` with the dict (e.g. ``TraceWriter.append_hc``).
        self.record_hc: Callable[..., None] | None = None
        #: Optional fast path for small fixed-shape events (port I/O, MMIO):
        #: called as ``record_ev(keys, *values, seq, t, cpu) -> bool`` instead of
        #: ``record`` with ``dict(zip(keys, values))`` (``TraceWriter.append_ev``);
        #: False sends the event the dict way. Whoever replaces ``record`` sets
        #: this to None (or wraps it too), as for ``record_hc``.
        self.record_ev: Callable[..., bool] | None = None
        self._eip = machine.internals.eip         # env->eip, read at each TSC read
        self.clock = machine.clock
        self.seq = 0
        self.hypercalls: Counter = Counter()
        self.faults: Counter = Counter()
        self.upcalls = 0
        self.console_listeners: list[Callable[[str, bytes], None]] = []
        self.call_listeners: list[Callable[[dict], None]] = []
        self._preempt = False
        #: The id of the vCPU on the engine, which every event records (``cpu``).
        self.cpu = 0
        self.deadline_wall: float | None = None
        self._traps = 0
        self.exit_hook: Callable[[], Stop | None] | None = None
        #: Console input waiting for its injection point (see console_input.py).
        self.input = ConsoleInput()
        self._last_console_ns = 0
        #: TSC reads per ``tsc_run`` event; 0 records one ``tsc`` event per read,
        #: as trace format version 1 did (replaying such a trace sets it).
        self.tsc_run_max = TSC_RUN_MAX
        self._tsc_rips: list[int] | None = None   # the open run's RIPs, values
        self._tsc_vals: list[int] = []
        self._tsc_head = (0, 0)                   # its seq and virtual time
        #: Port reads per ``io_run`` event; 0 records one ``io`` event per read,
        #: which also ends a run of TSC reads, as trace format version 3 did
        #: (replaying such a trace sets it).
        self.io_run_max = IO_RUN_MAX
        self._io_ports: list[int] | None = None   # the open run's ports, sizes, values
        self._io_sizes: list[int] = []
        self._io_vals: list[int] = []
        self._io_head = (0, 0)
        #: Replay to a recording's external end: the lengths of the runs it
        #: ended inside (tsc, io; None: no such run), set by :meth:`cut_runs`.
        self._cut: tuple[int | None, int | None] | None = None
        backend.console_out = self._console

    # ---------------------------------------------------- platform services
    # cur_rip, jump, crash_stop, stuck, guest_shutdown: RunServices (core.py).
    def end_run(self, stop: Stop) -> None:
        self.m.stop(stop)

    def _emit(self, ev: dict) -> None:
        if self._tsc_rips is not None or self._io_ports is not None:
            self.flush_runs()
        ev["seq"] = self.seq
        ev["t"] = self.clock.now_ns
        ev["cpu"] = self.cpu
        self.seq += 1
        if self.record is not None:
            self.record(ev)

    def _emit_fields(self, keys: tuple[str, ...], *values) -> None:
        """:meth:`_emit` of the event ``dict(zip(keys, values))`` whose last
        keys are ``seq``, ``t``, ``cpu`` (not among ``values``), through
        ``record_ev`` when set: the same bytes in the trace without the dict."""
        if self._tsc_rips is not None or self._io_ports is not None:
            self.flush_runs()
        seq = self.seq
        self.seq = seq + 1
        t = self.clock.now_ns
        fast = self.record_ev
        cpu = self.cpu
        if fast is None or not fast(keys, *values, seq, t, cpu):
            self.record(dict(zip(keys, (*values, seq, t, cpu))))

    def record_call(self, abi: str, nr: int, name: str, args: tuple, ret: int, rip: int,
                    via: str, raised: tuple = (), op: dict | None = None) -> None:
        """Number and record one hypercall event (docs/trace-format.md ``hc``:
        the backend's decoded ``op``, the guest memory it read and wrote, the
        ports it raised) and hand it to the call listeners. Only when
        something records or listens; the Xen PV dispatch has its own faster
        path (``record_hc``). ``op``: the decoded call (default: the backend's
        ``op`` after the call)."""
        if self.record is None and not self.call_listeners:
            return
        if self._tsc_rips is not None or self._io_ports is not None:
            self.flush_runs()
        seq = self.seq
        self.seq = seq + 1
        guest = self.guest
        rd, wr = (guest.reads, guest.writes) if guest.record else ((), ())
        from pvmon.trace.format import hc_event
        ev = hc_event(abi, nr, name, args, self.b.op if op is None else op, ret, rip, via,
                      rd, wr, raised, seq,
                      self.clock.now_ns, self.cpu)
        if self.record is not None:
            self.record(ev)
        for fn in self.call_listeners:
            fn(ev)

    def _cpuid(self, rip: int) -> None:
        """Answer the guest's CPUID at ``rip`` from the ABI's ``policy`` (set by
        the subclass: ``{(leaf, subleaf): (eax, ebx, ecx, edx)}``,
        pvmon/platforms/cpuid.py), charge its cost and record a ``cpuid`` event."""
        m = self.m
        eax, ecx = m.regs("rax", "rcx")
        leaf, sub = eax & 0xFFFFFFFF, ecx & 0xFFFFFFFF
        out = lookup(self.policy, leaf, sub)
        m.set_regs(rax=out[0], rbx=out[1], rcx=out[2], rdx=out[3])
        self.clock.advance(self.clock.costs.cpuid_ns)
        if self.record is not None:
            self._emit({"k": "cpuid", "rip": rip, "leaf": leaf, "sub": sub, "out": list(out)})

    def flush_runs(self) -> None:
        """Record the open run of TSC reads and the open run of port reads, if
        any, as one ``tsc_run`` and one ``io_run`` event (each with the seq and
        time of its first read), in seq order. Called before any other event
        is recorded and before recording stops."""
        if self._io_ports is not None and (self._tsc_rips is None
                                           or self._io_head[0] < self._tsc_head[0]):
            self._flush_io()
        if self._tsc_rips is not None:
            self._flush_tsc()
        if self._io_ports is not None:
            self._flush_io()

    def _flush_tsc(self) -> None:
        rips = self._tsc_rips
        self._tsc_rips = None
        seq, t = self._tsc_head
        if self.record is not None:
            fast = self.record_ev
            if fast is None or not fast(_TSC_RUN_KEYS, "tsc_run", rips, self._tsc_vals,
                                        seq, t, self.cpu):
                self.record({"k": "tsc_run", "rip": rips, "val": self._tsc_vals,
                             "seq": seq, "t": t, "cpu": self.cpu})

    def _flush_io(self) -> None:
        """The open run of port reads: an ``io_run`` event, or the ``io`` event
        of its one read."""
        ports = self._io_ports
        self._io_ports = None
        seq, t = self._io_head
        if self.record is None:
            return
        if len(ports) == 1:
            keys, values = _IO_KEYS, ("io", "in", ports[0], self._io_sizes[0], self._io_vals[0])
        else:
            keys, values = _IO_RUN_KEYS, ("io_run", ports, self._io_sizes, self._io_vals)
        fast = self.record_ev
        if fast is None or not fast(keys, *values, seq, t, self.cpu):
            self.record(dict(zip(keys, (*values, seq, t, self.cpu))))

    def _run_full(self) -> None:
        """A run reached its most reads: record the open runs, unless a replay
        cut (:meth:`cut_runs`) still waits for the other open run's last read
        (a cut run not open yet is not waited for: it opens after this one
        is recorded, as in the recording)."""
        cut = self._cut
        if cut is not None:
            tsc, io = cut
            if tsc and self._tsc_rips is not None and len(self._tsc_rips) < tsc:
                return
            if io and self._io_ports is not None and len(self._io_ports) < io:
                return
        self.flush_runs()

    def cut_runs(self, tsc: int | None, io: int | None) -> None:
        """Verify up to a recording's external end: the recording was stopped
        inside a run of ``tsc`` TSC reads and/or a run of ``io`` port reads
        (None: not inside one), so the replay records those runs once they
        reach exactly those lengths."""
        self._cut = (tsc, io)
        if tsc:
            self.tsc_run_max = tsc
        if io:
            self.io_run_max = io

    def record_port_read(self, port: int, size: int, val: int) -> None:
        """Record a port read of ``size`` bytes from ``port`` that returned
        ``val``: into the open ``io_run`` (``io_run_max`` 0: an ``io`` event of
        its own). Only while recording."""
        ports = self._io_ports
        if ports is not None:
            ports.append(port)
            self._io_sizes.append(size)
            self._io_vals.append(val)
            if len(ports) >= self.io_run_max:
                self._run_full()
        elif self.io_run_max:
            seq = self.seq
            self.seq = seq + 1
            self._io_head = (seq, self.clock.now_ns)
            self._io_ports = [port]
            self._io_sizes = [size]
            self._io_vals = [val]
            if self.io_run_max == 1:
                self._run_full()
        else:
            self._emit_fields(_IO_KEYS, "io", "in", port, size, val)

    def _console(self, channel: str, data: bytes) -> None:
        self._last_console_ns = self.clock.now_ns
        self.input.saw_output(data)
        for fn in self.console_listeners:
            fn(channel, data)
        if self.record is not None:
            self._emit({"k": "con", "dir": "out", "ch": channel, "data": bytes(data)})

    # ---------------------------------------------------------- console input
    # Input enters the guest only at a kernel-mode hypercall boundary, before the
    # backend handles the call; the recorded ``con``/``in`` event carries the seq
    # of that point (pvmon/dispatch/console_input.py has the whole rule).

    def schedule_input(self, at_seq: int, data: bytes, at: str | None = None) -> None:
        """Verify: inject ``data`` at the first hypercall boundary where
        ``self.seq >= at_seq`` (the seq of the recorded ``con``/``in`` event),
        recorded with the recorded ``at`` (None: none), so the event comes out
        byte for byte as recorded. Events are numbered only while something
        records them, so without a recorder this installs one that discards
        (the numbering must match the recorded run's)."""
        if self.record is None:
            self.record = _discard
        self.input.schedule(at_seq, data, at)

    def replay_input(self, data: bytes, rule: str = "idle") -> None:
        """Closed loop on another backend: inject ``data`` at an idle point
        chosen by what the guest is doing, after every input given before it
        (``rule`` "prompt": where the script rule holds; "idle": the first idle
        point with earlier input consumed; console_input.py). The injection is
        recorded with ``at`` = ``rule``."""
        self.input.replay(data, rule)

    def post_input(self, data: bytes) -> None:
        """Live input (terminal, TUI console pane); safe from any thread.
        Injected at the next hypercall boundary."""
        self.input.post(data)

    def console_input(self, data: bytes) -> None:
        """Queue keyboard input for hvc0 (same as :meth:`post_input`)."""
        self.input.post(data)

    def _inject(self, data: bytes, at: str | None = None) -> None:
        """Put ``data`` into the console ring now and record it, with ``at``
        if given (``"prompt"``: placed by the script rule; ``"idle"``: typed
        while the guest waited at an idle point); what does not fit waits for
        the next boundary (recorded then without ``at``)."""
        n = self.b.console_input(data)
        self.input.carry = bytes(data[n:])
        if n:
            self._last_console_ns = self.clock.now_ns
            if self.record is not None:
                ev = {"k": "con", "dir": "in", "ch": "ring", "data": bytes(data[:n])}
                if at is not None:
                    ev["at"] = at
                self._emit(ev)

    def _detach(self) -> None:
        self.m.stop(Stop("interrupted", "detached by the user (Ctrl-])", self.cur_rip()))

    def _inject_due(self) -> bool:
        """Inject whatever is due at this boundary. True if the run must stop."""
        inp = self.input
        if inp.detach:
            self._detach()
            return True
        if inp.carry:
            self._inject(inp.carry)
            if inp.carry:
                return False
        while inp.scheduled and inp.scheduled[0][0] <= self.seq and not inp.carry:
            _, data, at = inp.scheduled.popleft()
            self._inject(data, at)
        if inp.live_ready and not inp.carry:
            data = inp.take_live()
            if data:
                self._inject(data)
        return False

    def _idle_point(self) -> bool:
        """The guest is about to block (SCHEDOP_block). Feed live, script or
        replayed input if due; stop the run when it idles with no input left.
        True if stopped."""
        vcpu = self.b.vcpu
        if vcpu.upcall_pending():
            return False          # an event is waiting: block returns at once
        inp = self.input
        now = self.clock.now_ns
        if inp.live_open:
            dl = vcpu.next_deadline()
            wait = 30.0 if dl is None else min(max(dl - now, 0) / 1e9, 30.0)
            data = self._take_live(wait)
            if self._stop_requested():
                return True
            if inp.detach:
                self._detach()
                return True
            if data:
                self._inject(data, "idle")
                return False
        consumed = self.b.console.input_consumed()
        quiet = now - self._last_console_ns
        if inp.has_script():
            if inp.script_due(consumed, quiet):
                chunk = self._next_script_chunk()
                if self._stop_requested():
                    return True
                if chunk is not None:
                    inp.forget_output()
                    self._inject(chunk, "prompt")
                    return False
            if inp.has_script():
                return False
        if inp.replayed:
            if inp.replay_due(consumed, quiet):
                data, at = inp.replayed.popleft()
                inp.forget_output()
                self._inject(data, at)
            return False
        limit = inp.idle_limit_ns
        if limit is not None and inp.exhausted() and now - self._last_console_ns >= limit:
            detail = ("idle: waiting for console input, no input left" if consumed else
                      "idle: the guest stopped reading console input")
            self.m.stop(Stop("idle", detail, self.cur_rip()))
            return True
        return False

    # Waits for input in wall time happen inside the hypercall hook, where the
    # engine cannot end the run: they look for a stop request (a signal, a full
    # disk; Machine.request_stop) every POLL_S and end the run at this boundary.

    def _take_live(self, wait: float) -> bytes:
        """Live input, waiting up to ``wait`` wall seconds for the first bytes."""
        inp = self.input
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            data = inp.take_live(min(left, POLL_S)) if left > 0 else inp.take_live()
            if data or inp.detach or left <= POLL_S or self.m.stop_request is not None:
                return data

    def _next_script_chunk(self) -> bytes | None:
        """The next script chunk, waiting (wall time) while the source is open."""
        inp = self.input
        while True:
            chunk = inp.next_script_chunk(POLL_S)
            if chunk is not None or not inp.has_script() or self.m.stop_request is not None:
                return chunk

    def _stop_requested(self) -> bool:
        """End the run here if a stop was requested from outside. True if so."""
        req = self.m.stop_request
        if req is None:
            return False
        self.m.stop(dataclasses.replace(req, rip=self.cur_rip()))
        return True

    def _check_wall(self) -> None:
        traps = self._traps = self._traps + 1
        if not traps & 255:
            self._check_wall_now(traps)

    def _check_wall_now(self, traps: int) -> None:
        """Every 256th trap: the exit hook; every 1024th: the wall-time limit."""
        if (self.deadline_wall is not None and not traps & 1023
                and time.monotonic() > self.deadline_wall):
            self.m.stop(Stop("limit", WALL_TIMEOUT, self.m.reg("rip")))
        if self.exit_hook is not None:
            st = self.exit_hook()
            if st is not None:
                self.m.stop(st)

    # ----------------------------------------------------------------- time
    def on_tsc(self, _uc: object = None) -> int:
        """A guest RDTSC/RDTSCP: the virtual clock's reading (TSC cycles),
        recorded in the open run of TSC reads. Called by the engine's hook
        with the Uc (ignored), about 120,000 times in a Debian boot."""
        clock = self.clock
        v = clock.read_tsc()
        if self.record is not None:
            rips = self._tsc_rips
            if rips is not None:                # the hottest path: extend the open run
                rips.append(self._eip.value)
                self._tsc_vals.append(v)
                if len(rips) >= self.tsc_run_max:
                    self._run_full()
            elif self.tsc_run_max:
                seq = self.seq
                self.seq = seq + 1
                self._tsc_head = (seq, clock.now_ns)
                self._tsc_rips = [self._eip.value]
                self._tsc_vals = [v]
                if self.tsc_run_max == 1:       # a replay cutting a run after one read
                    self._run_full()
            else:                               # format version 1: an event per read
                seq = self.seq
                self.seq = seq + 1
                self.record({"k": "tsc", "rip": self.m.internals.eip.value, "val": v,
                             "seq": seq, "t": clock.now_ns, "cpu": self.cpu})
        vcpu = self.b.vcpu
        dl = vcpu.deadline
        if dl is not None and dl <= clock.now_ns and not vcpu.upcall_mask():
            self._preempt = True
            self.m.pause()
        traps = self._traps = self._traps + 1      # _check_wall, inline
        if not traps & 255:
            self._check_wall_now(traps)
        return v
