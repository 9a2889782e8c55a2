"""The paravirt-op dispatch layer for Xen PV guests.

Turns what the engine reports into Xen PV operations: a ``syscall`` in guest
kernel mode is a hypercall (number in RAX, arguments in RDI, RSI, RDX, R10, R8:
xen/include/public/arch-x86/xen-x86_64.h), in user mode a system call bounced
to the guest kernel; ``ud2; .ascii "xen"; cpuid`` is the forced-emulation
CPUID prefix (xen/include/public/arch-x86/xen.h XEN_CPUID); faults go through
the guest's trap table. Every call, delivery, console byte and
nondeterministic value is handed to the recorder.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable

from pvmon.backends.xen import abi
from pvmon.backends.xen.cpuid import lookup, xen_cpuid_policy
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.console_input import ConsoleInput
from pvmon.engine.machine import VECTORS_WITH_ERROR_CODE, GuestPageFault, Machine, Stop
from pvmon.trace.format import hc_event

XEN_CPUID_PREFIX = b"\x0f\x0bxen\x0f\xa2"
# SCHEDOP_block (xen/include/public/sched.h) through sched_op (29) or sched_op_compat (6)
_SCHED_OPS = (abi.HYPERCALL_NUMBERS["sched_op"], abi.HYPERCALL_NUMBERS["sched_op_compat"])
_SCHEDOP_block = abi.SCHEDOP["block"]
def _discard(ev: dict) -> None:
    """A recorder that keeps nothing (events are still numbered)."""


#: The most TSC reads one ``tsc_run`` event holds (trace format version 2,
#: docs/trace-format.md). Consecutive reads with no other event between them
#: share one event, so a calibration loop's thousands of reads cost a list
#: append each instead of an event each.
TSC_RUN_MAX = 1024

#: The detail of the stop (exit kind "limit") when ``deadline_wall`` passes.
WALL_TIMEOUT = "wall-clock timeout"

#: Wall seconds between looks at a stop request while an idle guest waits for input.
POLL_S = 0.1

SIGNED = lambda v: v - (1 << 64) if v & (1 << 63) else v
U64 = (1 << 64) - 1


class XenPvDispatch:
    """TrapHandler for one Xen PV domain. ``record``: a callable taking an
    event dict (see docs/trace-format.md), or None."""

    def __init__(self, machine: Machine, backend, guest: RecordingGuestAccess,
                 record: Callable[[dict], None] | None = None) -> None:
        self.m = machine
        self.b = backend
        self.guest = guest
        self.record = record
        #: Optional fast path for hypercall events, taken while no call listener is
        #: attached: called with :func:`pvmon.trace.format.hc_event`'s arguments
        #: instead of ``record`` with the dict (e.g. ``TraceWriter.append_hc``).
        self.record_hc: Callable[..., None] | None = None
        #: The guest's hypercall page (a call from inside it is recorded with
        #: ``via`` "page"), set on the backend by the domain builder before this.
        self._hypercall_page: int | None = getattr(backend, "hypercall_page", None)
        self._eip = machine.internals.eip         # env->eip, read at each TSC read
        self.policy = xen_cpuid_policy(backend.ver.major, backend.ver.minor)
        self.clock = machine.clock
        self.seq = 0
        self.hypercalls: Counter = Counter()
        self.faults: Counter = Counter()
        self.upcalls = 0
        self.ptwr_emulations = 0
        self._ptwr_restore = (0, 0)
        self.console_listeners: list[Callable[[str, bytes], None]] = []
        self.call_listeners: list[Callable[[dict], None]] = []
        self._cur_rip = 0
        self._jump: int | None = None
        self._preempt = False
        self._fault_streak = (None, 0)
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
        backend.console_out = self._console

    # ---------------------------------------------------- platform services
    def cur_rip(self) -> int:
        return self._jump if self._jump is not None else self._cur_rip

    def jump(self, rip: int) -> None:
        self._jump = rip

    def crash_stop(self, detail: str, rip: int) -> None:
        self.m.stop(Stop("crash", detail, rip))

    def stuck(self, detail: str) -> None:
        self.m.stop(Stop("stuck", detail, self.cur_rip()))

    def guest_shutdown(self, reason: int) -> None:
        name = abi.SHUTDOWN_REASONS.get(reason, str(reason))
        kind = "crash" if reason == abi.SHUTDOWN_crash else "shutdown"
        self.m.stop(Stop(kind, f"SCHEDOP_shutdown({name})", self.cur_rip(), reason))

    def _emit(self, ev: dict) -> None:
        if self._tsc_rips is not None:
            self.flush_tsc()
        ev["seq"] = self.seq
        ev["t"] = self.clock.now_ns
        ev["cpu"] = 0
        self.seq += 1
        if self.record is not None:
            self.record(ev)

    def flush_tsc(self) -> None:
        """Record the open run of TSC reads, if any, as one ``tsc_run`` event
        (its seq and time are those of its first read). Called before any other
        event is recorded and before recording stops."""
        rips = self._tsc_rips
        if rips is None:
            return
        self._tsc_rips = None
        seq, t = self._tsc_head
        if self.record is not None:
            self.record({"k": "tsc_run", "rip": rips, "val": self._tsc_vals,
                         "seq": seq, "t": t, "cpu": 0})

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
        self._traps += 1
        if (self.deadline_wall is not None and not self._traps & 1023
                and time.monotonic() > self.deadline_wall):
            self.m.stop(Stop("limit", WALL_TIMEOUT, self.m.reg("rip")))
        if self.exit_hook is not None and not self._traps & 255:
            st = self.exit_hook()
            if st is not None:
                self.m.stop(st)

    # ---------------------------------------------------------------- traps
    def on_syscall(self) -> None:
        m = self.m
        g = m.gprs          # live env->regs: 0 rax, 2 rdx, 6 rsi, 7 rdi, 8 r8, 10 r10
        rip = m.internals.eip.value
        self._cur_rip = rip + 2
        self._jump = None
        vcpu = self.b.vcpu
        if vcpu.user_mode:
            # A system call of a guest process: Xen bounces it to the guest
            # kernel's syscall callback. Recorded so a trace shows which system
            # call led to the hypercalls that follow.
            if self.record is not None:
                self._emit({"k": "syscall", "nr": g[0], "rip": rip})
            vcpu.syscall_from_user(rip + 2)
            self._finish_syscall()
            return
        rax, rdi, rsi, rdx, r10, r8 = g[0], g[7], g[6], g[2], g[10], g[8]
        nr = rax & 0xFFFFFFFF if rax < (1 << 32) else rax
        inp = self.input
        if (inp.carry or inp.scheduled or inp.live_ready) and self._inject_due():
            return
        if nr in _SCHED_OPS and rdi == _SCHEDOP_block and self._idle_point():
            return
        self.clock.advance(self.clock.costs.hypercall_ns)
        args = (rdi, rsi, rdx, r10, r8)
        self.guest.begin()
        pending = self.b.events.raised
        ev_before = len(pending)
        ret = self.b.call(nr, args)
        name = abi.hypercall_name(nr) if nr < 1 << 32 else f"hypercall_{nr:#x}"
        self.hypercalls[name] += 1
        if m.stop_reason is None or nr != abi.HYPERVISOR_iret:
            g[0] = ret & U64
        if pending:
            raised = pending[ev_before:]
            pending.clear()
        else:
            raised = ()
        if self.record is not None or self.call_listeners:
            if self._tsc_rips is not None:
                self.flush_tsc()
            seq = self.seq
            self.seq = seq + 1
            guest = self.guest
            # Tuples, not lists, where the recorder does not need lists (msgpack packs
            # both alike): a listener (the TUI) may keep 50,000 of these events, and
            # every list among them is one more object for each full GC pass to scan.
            rd, wr = (guest.reads, guest.writes) if guest.record else ((), ())
            hp = self._hypercall_page
            via = "page" if hp is not None and hp <= rip < hp + 4096 else "syscall"
            if self.record_hc is not None and not self.call_listeners:
                # The recorder's fast path: no dict (format.hc_event's bytes, packed
                # from the values).
                self.record_hc("xen", nr, name, args, self.b.op, ret, rip, via,
                               rd, wr, raised, seq, self.clock.now_ns, 0)
            else:
                ev = hc_event("xen", nr, name, args, self.b.op, ret, rip, via,
                              rd, wr, raised, seq, self.clock.now_ns, 0)
                if self.record is not None:
                    self.record(ev)
                for fn in self.call_listeners:
                    fn(ev)
        if m.stop_reason is None:
            vcpu.fire_timers()
            if vcpu.can_upcall():
                self._upcall()
        self._check_wall()
        self._finish_syscall()

    def _finish_syscall(self) -> None:
        if self._jump is not None:
            # Unicorn adds 2 to RIP after a SYSCALL hook returns (DESIGN.md).
            self.m.set_reg("rip", self._jump - 2)
            self._jump = None

    def _upcall(self) -> None:
        rip = self.cur_rip()
        if self.b.vcpu.deliver_upcall():
            self.upcalls += 1
            if self.record is not None:
                self._emit({"k": "upcall", "rip": rip, "ports": []})

    def on_interrupt(self, vector: int, rip: int, software: bool | None = None) -> None:
        """An exception or software interrupt reported by the engine; ``software``
        None: ask the engine whether an ``int`` instruction raised it (valid only
        inside its interrupt hook)."""
        m = self.m
        ints = m.internals
        if software is None:
            software = ints.pending_is_software_int()
        if software:
            # int $n / int3 (RIP past it): the backend says what Xen makes of it,
            # the vector itself or a #GP at the instruction (vcpu.software_interrupt).
            vector, err, rip = self.b.vcpu.software_interrupt(vector, rip)
            cr2 = None
        else:
            err = ints.pending_error_code() if vector in VECTORS_WITH_ERROR_CODE else None
            cr2 = m.reg("cr2") if vector == 14 else None
        ints.clear_exception_state()
        self.clock.advance(self.clock.costs.fault_ns)
        self.faults[vector] += 1
        last, n = self._fault_streak
        key = (vector, rip, cr2)
        self._fault_streak = (key, n + 1 if key == last else 1)
        if self._fault_streak[1] > 64:
            self.m.stop(Stop("triple_fault", f"vector {vector} repeats at the same RIP "
                             f"with no progress", rip))
            return
        if self.record is not None:
            ev = {"k": "fault", "vec": vector, "err": err, "rip": rip, "cs": 0}
            if cr2 is not None:
                ev["cr2"] = cr2
            self._emit(ev)
        if vector == 8:
            self.m.stop(Stop("triple_fault", "double fault", rip))
            return
        if vector == 14 and err is not None and err & 7 == 3 and self._ptwr(cr2):
            return
        self._cur_rip = rip
        self._jump = None
        self.b.vcpu.deliver_trap(vector, err, cr2, rip)
        if self._jump is not None:
            m.set_reg("rip", self._jump)
            self._jump = None
        self._check_wall()

    def _ptwr(self, va: int) -> bool:
        """Writable page tables: a kernel-mode write to a read-only mapping of a
        page-table frame is carried out on the guest's behalf, as Xen's ptwr
        emulation does (xen/arch/x86/pv/ro-page-fault.c). The mapping is made
        writable for exactly one instruction, then read-only again."""
        m = self.m
        try:
            pa, pte_ma = m.walk(va)
        except GuestPageFault:
            return False
        if (pa >> 12) not in self.b.pinned:
            return False
        pte = m.read_u64_phys(pte_ma)
        m.write_u64_phys(pte_ma, pte | 2)
        m.flush_tlb()
        self._ptwr_restore = (pte_ma, pte)
        self.ptwr_emulations += 1
        m.request_step()
        return True

    def after_step(self) -> None:
        pte_ma, pte = self._ptwr_restore
        self.m.write_u64_phys(pte_ma, pte)
        self.m.flush_tlb()

    def on_invalid_opcode(self, rip: int) -> bool:
        m = self.m
        try:
            code = m.read_virt(rip, 7, user=self.b.vcpu.user_mode)
        except GuestPageFault:
            code = b""
        if code == XEN_CPUID_PREFIX:
            self._cpuid(rip)
            m.set_reg("rip", rip + len(XEN_CPUID_PREFIX))
            return True
        self.on_interrupt(6, rip, software=False)
        return self.m.stop_reason is None

    def _cpuid(self, rip: int) -> None:
        m = self.m
        eax, ecx = m.regs("rax", "rcx")
        leaf, sub = eax & 0xFFFFFFFF, ecx & 0xFFFFFFFF
        out = lookup(self.policy, leaf, sub)
        m.set_regs(rax=out[0], rbx=out[1], rcx=out[2], rdx=out[3])
        self.clock.advance(self.clock.costs.cpuid_ns)
        if self.record is not None:
            self._emit({"k": "cpuid", "rip": rip, "leaf": leaf, "sub": sub, "out": list(out)})

    def on_cpuid(self) -> None:
        self._cpuid(self.m.reg("rip"))

    def on_tsc(self) -> int:
        clock = self.clock
        v = clock.read_tsc()
        if self.record is not None:
            rips = self._tsc_rips
            if rips is not None:                # the hottest path: extend the open run
                rips.append(self._eip.value)
                self._tsc_vals.append(v)
                if len(rips) >= self.tsc_run_max:
                    self.flush_tsc()
            elif self.tsc_run_max:
                seq = self.seq
                self.seq = seq + 1
                self._tsc_head = (seq, clock.now_ns)
                self._tsc_rips = [self._eip.value]
                self._tsc_vals = [v]
                if self.tsc_run_max == 1:       # a replay cutting a run after one read
                    self.flush_tsc()
            else:                               # format version 1: an event per read
                seq = self.seq
                self.seq = seq + 1
                self.record({"k": "tsc", "rip": self.m.internals.eip.value, "val": v,
                             "seq": seq, "t": clock.now_ns, "cpu": 0})
        vcpu = self.b.vcpu
        dl = vcpu.deadline
        if dl is not None and dl <= clock.now_ns and not vcpu.upcall_mask():
            self._preempt = True
            self.m.pause()
        self._check_wall()
        return v

    def on_io_in(self, port: int, size: int) -> int:
        # A domU has no I/O port access: reads float high (Xen's guest_io_read).
        return (1 << (8 * size)) - 1

    def on_io_out(self, port: int, size: int, value: int) -> None:
        return None

    def on_resume(self) -> None:
        """Between engine slices: fire due timers and deliver pending events."""
        self._preempt = False
        vcpu = self.b.vcpu
        vcpu.fire_timers()
        if vcpu.can_upcall():
            self._cur_rip = self.m.reg("rip")
            self._jump = None
            self._upcall()
            if self._jump is not None:
                self.m.set_reg("rip", self._jump)
                self._jump = None
