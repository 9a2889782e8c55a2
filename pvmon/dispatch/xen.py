"""The paravirt-op dispatch layer for Xen PV guests.

Turns what the engine reports into Xen PV operations: a ``syscall`` in guest
kernel mode is a hypercall (number in RAX, arguments in RDI, RSI, RDX, R10, R8:
xen/include/public/arch-x86/xen-x86_64.h), in user mode a system call bounced
to the guest kernel; ``ud2; .ascii "xen"; cpuid`` is the forced-emulation
CPUID prefix (xen/include/public/arch-x86/xen.h XEN_CPUID); faults go through
the guest's trap table, and a kernel-mode write to a pinned page table is
carried out for the guest (writable page tables). Numbering, recording,
console, input injection and stops are the ABI-neutral core's
(:mod:`pvmon.dispatch.core`).
"""

from __future__ import annotations

from collections.abc import Callable

from pvmon.backends.base import CAP_CONSOLE_INPUT, CAP_EVENT_UPCALLS, CAP_PV_MMU, Backend
from pvmon.backends.xen import abi
from pvmon.backends.xen.cpuid import xen_cpuid_policy
from pvmon.backends.xen.pv import ldt
from pvmon.backends.xen.pv.debugreg import IoBreakpoints
from pvmon.backends.xen.pv.ptwr import WritablePageTables
from pvmon.backends.xen.pv.stringio import DONE as STRING_IO_DONE
from pvmon.backends.xen.pv.stringio import DR6_BS, RFLAGS_TF
from pvmon.backends.xen.pv.stringio import DebugTrap as StringIoDebugTrap
from pvmon.backends.xen.pv.stringio import emulate as emulate_string_io
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.core import (  # noqa: F401 - TSC_RUN_MAX, WALL_TIMEOUT: their old home
    TSC_RUN_MAX,
    WALL_TIMEOUT,
    DispatchCore,
)
from pvmon.engine import debugregs, hvm
from pvmon.engine.machine import VECTORS_WITH_ERROR_CODE, GuestPageFault, Machine, Stop
from pvmon.engine.stackfault import is_stack_fault
from pvmon.errors import BackendError
from pvmon.trace.format import hc_event

XEN_CPUID_PREFIX = b"\x0f\x0bxen\x0f\xa2"
# SCHEDOP_block (xen/include/public/sched.h) through sched_op (29) or sched_op_compat (6)
_SCHED_OPS = (abi.HYPERCALL_NUMBERS["sched_op"], abi.HYPERCALL_NUMBERS["sched_op_compat"])
_SCHEDOP_block = abi.SCHEDOP["block"]
_HYPERVISOR_iret = abi.HYPERVISOR_iret
_HYPERCALLS = abi.HYPERCALLS        # number -> name, for the hot path (abi.hypercall_name)
U64 = (1 << 64) - 1


def xen_shutdown_stop(reason: int, rip: int) -> Stop:
    """The stop for SCHEDOP_shutdown(``reason``) (xen/include/public/sched.h):
    kind "crash" for SHUTDOWN_crash, else "shutdown"."""
    name = abi.SHUTDOWN_REASONS.get(reason, str(reason))
    kind = "crash" if reason == abi.SHUTDOWN_crash else "shutdown"
    return Stop(kind, f"SCHEDOP_shutdown({name})", rip, reason)


class XenPvDispatch(DispatchCore):
    """TrapHandler for one Xen PV domain: the Xen PV traps over
    :class:`~pvmon.dispatch.core.DispatchCore`. ``record``: a callable taking an
    event dict (see docs/trace-format.md), or None."""

    shutdown_stop = staticmethod(xen_shutdown_stop)
    #: What a backend must offer to run a Xen PV guest (pvmon/backends/base.py):
    #: pinned page tables for writable-page-table emulation, event upcalls, hvc0.
    REQUIRES = frozenset({CAP_PV_MMU, CAP_EVENT_UPCALLS, CAP_CONSOLE_INPUT})

    def __init__(self, machine: Machine, backend: Backend, guest: RecordingGuestAccess,
                 record: Callable[[dict], None] | None = None) -> None:
        """Raises BackendError if ``backend`` lacks a capability in :attr:`REQUIRES`."""
        missing = self.REQUIRES - backend.capabilities
        if missing:
            raise BackendError(f"backend {backend.name!r} cannot run a Xen PV guest: it does "
                               f"not implement {', '.join(sorted(missing))}")
        super().__init__(machine, backend, guest, record)
        #: The guest's hypercall page (a call from inside it is recorded with
        #: ``via`` "page"), set on the backend by the domain builder before this.
        self._hypercall_page: int | None = getattr(backend, "hypercall_page", None)
        self.policy = xen_cpuid_policy(backend.ver.major, backend.ver.minor)
        #: The PV platform's writable page tables (pvmon/backends/xen/pv/ptwr.py).
        self.ptwr = WritablePageTables(machine, backend)
        self._fault_streak = (None, 0)
        #: LDT pages mapped on a fault in the LDT area (pv/ldt.py), not delivered.
        self.ldt_maps = 0
        # RDMSR/WRMSR as Xen emulates them (pvmon/backends/xen/pv/msr.py), through the
        # patched engine's MSR hook; without it the engine's own MSRs answer.
        # CLI/STI, MOV to/from CRn and the IOPL check of IN/OUT need the fifth
        # engine patch (hvm.PvHooks); without it those run natively as before.
        self._hooks: hvm.PvHooks | None = None
        if hvm.available() and machine.hvm is None:
            self._hooks = machine.hvm = hvm.PvHooks(self._on_msr, self._on_privop)
            # a new vCPU: virtual IOPL 0, so a CLI in the kernel (CPL 1) is #GP
            self._hooks.set_cli_sti(hvm.CLI_GP)
            if self._hooks.traps_rings and self._hooks.traps_io:
                # The kernel sees Xen's FLAT_KERNEL_CS64/SS64; its own IRETQ and far
                # RET to them are same-privilege returns (pvmon/backends/xen/pv/segments.py)
                self._hooks.set_ring3(True)
                backend.xen_kernel_selectors = True
                vcpu = getattr(backend, "vcpu", None)    # else loaded as vCPU 0 is made
                if vcpu is not None and not vcpu.user_mode:
                    vcpu.segs.to_kernel()
        #: I/O breakpoints (check_guest_io_breakpoint; pvmon/backends/xen/pv/debugreg.py).
        self.iobp = IoBreakpoints(self)
        if self._hooks is not None and debugregs.available():
            # MOV to/from %drN in the kernel as Xen emulates it (the seventh patch)
            machine.hvm = debugregs.WithDrHook(self._hooks, debugregs.DrHook(self._on_dr))

    def _on_msr(self, write: int, msr: int, value: int) -> tuple[int, int]:
        """RDMSR/WRMSR at CPL 0: the PV vCPU's answer (not recorded; a refusal
        is recorded as the #GP it raises)."""
        msrs = self.b.vcpu.msrs
        if write:
            return msrs.wrmsr(msr, value), 0
        return msrs.rdmsr(msr)

    def _on_dr(self, write: int, reg: int, value: int) -> tuple[int, int]:
        """MOV to or from %drN at CPL 0: the PV vCPU's answer (not recorded; a
        refusal is recorded as the #GP or #UD it raises)."""
        return self.b.vcpu.mov_dr(write, reg, value)

    def set_cli_mode(self, mode: int) -> None:
        """What CLI/STI in the guest kernel do from now on (1 nothing, 2 #GP(0);
        :meth:`pvmon.backends.xen.pv.vcpu.PvVcpu.iopl_changed`)."""
        if self._hooks is not None:
            self._hooks.set_cli_sti(mode)

    def _on_privop(self, op: int, reg: int, value: int) -> tuple[int, int]:
        """CLI/STI/MOV to or from CRn at CPL 0: the PV vCPU's answer (not
        recorded; a refusal is recorded as the #GP it raises)."""
        return self.b.vcpu.privop(op, reg, value)

    def vcpu_switched(self, old: int, new: int, why: str) -> None:
        """The SMP scheduler put vCPU ``new`` on the engine: later events carry
        its id; recorded as a ``vcpu_switch`` event (docs/trace-format.md)."""
        if self._tsc_rips is not None or self._io_ports is not None:
            self.flush_runs()           # the open runs of reads were the old vCPU's
        self.cpu = new
        if self._hooks is not None:     # CLI/STI follow the IOPL of the vCPU now on
            self.b.vcpu.iopl_changed()
        if self.record is not None:
            self._emit({"k": "vcpu_switch", "from": old, "to": new, "why": why,
                        "rip": self.m.reg("rip")})

    # ---------------------------------------------------------------- traps
    def on_syscall(self) -> None:
        m = self.m
        g = m.gprs          # live env->regs: 0 rax, 2 rdx, 6 rsi, 7 rdi, 8 r8, 10 r10
        rip = m.internals.eip.value
        self._cur_rip = rip + 2
        self._jump = None
        b = self.b
        vcpu = b.vcpu
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
        if nr in _SCHED_OPS and rdi == _SCHEDOP_block and (
                b.smp is None or b.smp.others_idle()) and self._idle_point():
            return
        clock = self.clock
        clock.advance(clock.costs.hypercall_ns)
        args = (rdi, rsi, rdx, r10, r8)
        guest = self.guest
        guest.begin()
        pending = b.events.raised
        ev_before = len(pending)
        ret = b.call(nr, args)
        name = _HYPERCALLS.get(nr)
        if name is None:
            name = abi.hypercall_name(nr) if nr < 1 << 32 else f"hypercall_{nr:#x}"
        self.hypercalls[name] += 1
        if m.stop_reason is None or nr != _HYPERVISOR_iret:
            g[0] = ret & U64
        if pending:
            raised = pending[ev_before:]
            pending.clear()
        else:
            raised = ()
        listeners = self.call_listeners
        if self.record is not None or listeners:
            if self._tsc_rips is not None or self._io_ports is not None:
                self.flush_runs()
            seq = self.seq
            self.seq = seq + 1
            # Tuples, not lists, where the recorder does not need lists (msgpack packs
            # both alike): a listener (the TUI) may keep 50,000 of these events, and
            # every list among them is one more object for each full GC pass to scan.
            rd, wr = (guest.reads, guest.writes) if guest.record else ((), ())
            hp = self._hypercall_page
            via = "page" if hp is not None and hp <= rip < hp + 4096 else "syscall"
            record_hc = self.record_hc
            if record_hc is not None and not listeners:
                # The recorder's fast path: no dict (format.hc_event's bytes, packed
                # from the values).
                record_hc("xen", nr, name, args, b.op, ret, rip, via,
                          rd, wr, raised, seq, clock.now_ns, self.cpu)
            else:
                ev = hc_event("xen", nr, name, args, b.op, ret, rip, via,
                              rd, wr, raised, seq, clock.now_ns, self.cpu)
                if self.record is not None:
                    self.record(ev)
                for fn in listeners:
                    fn(ev)
        if m.stop_reason is None:
            dl = vcpu.deadline          # vcpu.fire_timers() when a timer is due
            if dl is not None and dl <= clock.now_ns:
                vcpu.fire_timers()
            if vcpu.can_upcall():
                self._upcall()
        traps = self._traps = self._traps + 1      # _check_wall, inline
        if not traps & 255:
            self._check_wall_now(traps)
        if self._jump is not None:
            self._finish_syscall()

    def on_sysenter(self) -> None:
        """A ``sysenter`` (the engine's SYSENTER hook, in 64-bit and compatibility
        mode alike: its CPU model is Intel's; Unicorn then steps past it): what
        Xen makes of it (:meth:`pvmon.backends.xen.pv.vcpu.PvVcpu.sysenter`).
        One from user mode is recorded as a ``syscall`` event, as a ``syscall``
        is."""
        rip = self.m.reg("rip")
        self._cur_rip = rip
        self._jump = None
        vcpu = self.b.vcpu
        if vcpu.user_mode and self.record is not None:
            self._emit({"k": "syscall", "nr": self.m.gprs[0], "rip": rip})
        self.clock.advance(self.clock.costs.fault_ns)
        vcpu.sysenter(rip)
        if self._jump is not None:
            # Unicorn adds the SYSENTER's 2 bytes to RIP after its hook returns
            self.m.set_reg("rip", self._jump - 2)
            self._jump = None

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
            if vector == 1:
                self.b.vcpu.debug_exception()   # do_debug: the engine's %dr6 merged
            err = ints.pending_error_code() if vector in VECTORS_WITH_ERROR_CODE else None
            cr2 = m.reg("cr2") if vector == 14 else None
            if self.iobp.stepping:
                self.iobp.on_exception()            # the redo faulted: no #DB (Xen: not OKAY)
            if vector == 13 and err == 0:
                if self.iobp.on_gp():
                    ints.clear_exception_state()    # an I/O breakpoint's: redone, then #DB
                    return
                # INS/OUTS, which the engine traps for Xen's emulation (pv/stringio.py)
                hooks = self._hooks
                sio = emulate_string_io(self.b.vcpu, rip, self.port_read, self.port_write) \
                    if hooks is not None and hooks.traps_string_io else None
                if sio is not None:
                    if sio == STRING_IO_DONE:
                        ints.clear_exception_state()
                        self.clock.advance(self.clock.costs.fault_ns)
                        return
                    if isinstance(sio, StringIoDebugTrap):   # done, then Xen's #DB
                        ints.clear_exception_state()
                        self.clock.advance(self.clock.costs.fault_ns)
                        self.deliver_debug_trap(m.reg("rip"), sio.dr6)
                        return
                    vector, err, cr2 = sio
                elif self.b.vcpu.emulate_gp(rip):
                    # CLI/STI Xen emulates in user mode (virtual IOPL 3): no fault
                    ints.clear_exception_state()
                    self.clock.advance(self.clock.costs.fault_ns)
                    if m.reg("rflags") & RFLAGS_TF:     # x86_emulate's singlestep
                        self.deliver_debug_trap(m.reg("rip"), DR6_BS)
                    return
                elif self._stack_fault(rip):
                    vector = 12     # #SS(0), which the engine reports as #GP(0)
        ints.clear_exception_state()
        self.clock.advance(self.clock.costs.fault_ns)
        if vector == 14 and cr2 is not None and ldt.fixable(cr2, err or 0):
            # a descriptor load through the LDT met an unmapped LDT page: Xen maps
            # it and retries, or gives the guest its #PF/#GP (pv/ldt.py)
            fault = ldt.mapping_fault(self.b, cr2, err)
            if fault is None:
                self.ldt_maps += 1
                return
            vector, err, cr2 = fault
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
        if vector == 14 and err is not None and err & 7 == 3 and self.ptwr.on_write_fault(cr2):
            return
        self._cur_rip = rip
        self._jump = None
        self.b.vcpu.deliver_trap(vector, err, cr2, rip)
        if self._jump is not None:
            m.set_reg("rip", self._jump)
            self._jump = None
        self._check_wall()

    def _stack_fault(self, rip: int) -> bool:
        """The #GP(0) at ``rip`` is a non-canonical stack-segment access, which
        hardware (and so Xen) reports as #SS(0) (:mod:`pvmon.engine.stackfault`)."""
        try:
            code = self.m.read_insn(rip, user=self.b.vcpu.user_mode)
        except GuestPageFault:
            return False
        return is_stack_fault(code, rip, self.m.reg)

    @property
    def ptwr_emulations(self) -> int:
        """Page-table writes carried out for the guest (writable page tables)."""
        return self.ptwr.emulations

    def after_step(self) -> None:
        self.ptwr.after_step()
        if self.iobp.stepping:
            self.iobp.after_step()

    def deliver_debug_trap(self, rip: int, dr6: int = 0) -> None:
        """#DB (vector 1, no error code) through the guest's trap table with
        ``rip`` in the frame, from outside the engine's interrupt hook, after an
        emulated instruction: Xen's ``dr6 |= bpmatch | DR_STATUS_RESERVED_ONE``
        with ``dr6`` (B0-B3, BS), then pv_inject_hw_exception(TRAP_debug)
        (pv_emulate_privileged_op, pv/emul-priv-op.c@stable-4.17); recorded as a
        ``fault`` event as every delivered exception is."""
        if dr6:
            self.b.vcpu.dr6 |= dr6 | abi.X86_DR6_DEFAULT
        self.clock.advance(self.clock.costs.fault_ns)
        self.faults[1] += 1
        if self.record is not None:
            self._emit({"k": "fault", "vec": 1, "err": None, "rip": rip, "cs": 0})
        self._cur_rip = rip
        self._jump = None
        self.b.vcpu.deliver_trap(1, None, None, rip)
        if self._jump is not None:
            self.m.set_reg("rip", self._jump)
            self._jump = None

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

    def on_cpuid(self) -> None:
        self._cpuid(self.m.reg("rip"))

    def on_io_in(self, port: int, size: int) -> int:
        # A port the virtual IOPL and I/O bitmap refuse: #GP(0) at the IN
        # (guest_io_okay); else a domU has no port access and reads float high
        # (Xen's guest_io_read).
        hooks = self._hooks
        if hooks is not None and hooks.traps_io and not self.b.vcpu.io_allowed(port, size):
            hooks.io_fault()
            return 0
        if self.b.vcpu.dr7_emul and self.iobp.check(port, size):
            return 0        # an I/O breakpoint: redone by a step, then #DB
        return self.port_read(port, size)

    def on_io_out(self, port: int, size: int, value: int) -> None:
        hooks = self._hooks
        if hooks is not None and hooks.traps_io and not self.b.vcpu.io_allowed(port, size):
            hooks.io_fault()
            return
        if self.b.vcpu.dr7_emul and self.iobp.check(port, size):
            return          # an I/O breakpoint: redone by a step, then #DB
        self.port_write(port, size, value)

    def port_read(self, port: int, size: int) -> int:
        """One allowed port read of ``size`` bytes (IN, and each element of an
        INS): guest_io_read for a domU with no port access, all ones."""
        return (1 << (8 * size)) - 1

    def port_write(self, port: int, size: int, value: int) -> None:
        """One allowed port write (OUT, each element of an OUTS): guest_io_write
        for a domU with no port access drops it."""

    def on_resume(self) -> None:
        """Between engine slices: fire due timers and deliver pending events."""
        self._preempt = False
        if self.iobp.pending:
            return              # the I/O-breakpoint step comes first (IoBreakpoints)
        smp = self.b.smp
        if smp is not None:
            if self.m.step_pending:
                return          # a trapped write is redone first, on this vCPU
            smp.reschedule(self.m.quantum_expired)
            if self.m.stop_reason is not None:
                return
        vcpu = self.b.vcpu
        vcpu.fire_timers()
        if vcpu.can_upcall():
            self._cur_rip = self.m.reg("rip")
            self._jump = None
            self._upcall()
            if self._jump is not None:
                self.m.set_reg("rip", self._jump)
                self._jump = None
