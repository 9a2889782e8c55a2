"""The HVM platform's half of the dispatch layer, whatever the hypervisor ABI.

A guest on the HVM platform owns its CPU: its IDT, GDT, page tables, CPL
changes and exceptions run natively (pvmon's HVM engine patch,
:mod:`pvmon.engine.hvm`). What reaches the platform, and is recorded:

* ``vmcall``/``vmmcall`` (0f 01 c1 / 0f 01 d9): the ABI's hypercall, handed
  to :meth:`HvmDispatchCore.on_vmcall` (an ABI module implements it); any
  other invalid opcode is the guest's #UD, delivered through its IDT;
* CPUID: the ABI's policy (:attr:`HvmDispatchCore.policy`), event ``cpuid``;
* RDMSR/WRMSR at CPL 0: event ``msr``; the architectural MSRs QEMU keeps run
  natively, IA32_APIC_BASE and the TSC are the platform's, an ABI may add its
  own (:meth:`HvmDispatchCore.msr`), every other MSR raises #GP(0) as on
  hardware without it;
* port I/O: event ``io``, or ``io_run`` for consecutive reads (with only TSC
  reads between them); there are no emulated devices on a PVH platform, so
  reads float high and writes are dropped unless the ABI claims the port;
* the local APIC page at 0xFEE00000 (``uc.mmio_map``): event ``mmio``,
  served by :class:`pvmon.platforms.hvm.lapic.LocalApic`;
* ``hlt``: event ``halt``; virtual time jumps to the next timer, or, with
  RFLAGS.IF clear, the vCPU is off (Linux's power-off without ACPI S5);
* interrupts the platform injects (the ABI's upcall vector, the LAPIC's):
  event ``irq`` when the CPU takes one;
* ``syscall`` from guest user mode: emulated as the CPU does it (Unicorn
  2.1.4 makes it a no-op without a hook), event ``syscall``.

Facts: Intel SDM vol. 2 (SYSCALL, RDMSR, WRMSR), vol. 3 chapter 10 (APIC),
chapter 6 (interrupt delivery); docs/trace-format.md for the events.
"""

from __future__ import annotations

from collections.abc import Callable

from pvmon.backends.base import Backend, GuestAccess
from pvmon.dispatch.core import DispatchCore
from pvmon.engine.hvm import MSR_GP, MSR_HANDLED, MSR_NATIVE, HvmCpu
from pvmon.engine.machine import GuestPageFault, Machine, Stop
from pvmon.platforms.hvm.lapic import LAPIC_BASE, LocalApic

U64 = (1 << 64) - 1
VMCALL, VMMCALL = b"\x0f\x01\xc1", b"\x0f\x01\xd9"
RFLAGS_IF = 1 << 9
#: Keys of the ``io`` and ``mmio`` events, in their order in the trace
#: (docs/trace-format.md), for :meth:`DispatchCore._emit_fields`.
_IO_KEYS = ("k", "dir", "port", "size", "val", "seq", "t", "cpu")
_MMIO_KEYS = ("k", "dir", "addr", "size", "val", "seq", "t", "cpu")
#: an ``msr`` event: refused (#GP), with the value written or answered, or a
#: native read (no value)
_MSR_GP_KEYS = ("k", "dir", "msr", "rip", "gp", "seq", "t", "cpu")
_MSR_VAL_KEYS = ("k", "dir", "msr", "rip", "val", "seq", "t", "cpu")
_MSR_KEYS = ("k", "dir", "msr", "rip", "seq", "t", "cpu")
MSR_TSC, MSR_APIC_BASE = 0x10, 0x1B
MSR_STAR, MSR_LSTAR, MSR_FMASK = 0xC0000081, 0xC0000082, 0xC0000084
#: APIC_BASE: 0xFEE00000 | BSP (bit 8) | global enable (bit 11) (SDM vol. 3 10.4.4)
APIC_BASE_VALUE = LAPIC_BASE | (1 << 8) | (1 << 11)
#: MSRs QEMU's TCG keeps itself (target/i386/misc_helper.c helper_rdmsr in
#: Unicorn 2.1.4): they run natively, recorded.
NATIVE_MSRS = frozenset({
    0x8B, 0x34, 0xFE, 0x174, 0x175, 0x176, 0x179, 0x17A, 0x17B, 0x1A0, 0x277, 0x2FF,
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
    0xC0000080, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000100, 0xC0000101,
    0xC0000102, 0xC0000103, 0xC0010117, 0xD90,
    *range(0x200, 0x210), *range(0x400, 0x400 + 4 * 10)})


class HvmDispatchCore(DispatchCore):
    """TrapHandler for one guest on the HVM platform, over
    :class:`~pvmon.dispatch.core.DispatchCore`. Subclasses (one per ABI)
    implement :meth:`on_vmcall`, set :attr:`policy` (CPUID) and may claim
    MSRs (:meth:`msr`) and ports (:meth:`port_in`/:meth:`port_out`); they say
    which vector is due (:meth:`upcall_vector`)."""

    #: CPUID policy ``{(leaf, subleaf): (eax, ebx, ecx, edx)}`` (set by the subclass).
    policy: dict

    def __init__(self, machine: Machine, backend: Backend, guest: GuestAccess,
                 record: Callable[[dict], None] | None = None) -> None:
        super().__init__(machine, backend, guest, record)
        self.hvm = HvmCpu(machine.uc, self._on_msr, self._on_irq_taken)
        machine.hvm = self.hvm
        self.lapic = LocalApic(0, clock=lambda: self.clock.now_ns)
        machine.uc.mmio_map(LAPIC_BASE, 0x1000, self._lapic_read, None,
                            self._lapic_write, None)
        self.policy = {}
        self._triples = self.hvm.triple_faults
        self._irq_source: str | None = None
        self.halts = 0

    # ------------------------------------------------------------- to subclasses
    def on_vmcall(self, rip: int, size: int) -> None:
        """A hypercall instruction of ``size`` bytes at ``rip`` (CPL 0):
        handle it and leave RIP after it."""
        raise NotImplementedError

    def upcall_vector(self) -> int | None:
        """The ABI's interrupt due now (e.g. Xen's event upcall), or None."""
        return None

    def upcall_vector_number(self) -> int | None:
        """The vector the ABI delivers events on through the local APIC (counted
        as upcalls), or None."""
        return None

    def msr(self, write: bool, msr: int, value: int) -> tuple[int, int] | None:
        """The ABI's answer for an MSR it owns, as ``(MSR_HANDLED, value)``
        or ``(MSR_GP, 0)``; None: not the ABI's."""
        return None

    def port_in(self, port: int, size: int) -> int | None:
        return None

    def port_out(self, port: int, size: int, value: int) -> bool:
        return False

    # ---------------------------------------------------------------- traps
    def on_invalid_opcode(self, rip: int) -> bool:
        try:
            code = self.m.read_virt(rip, 3)
        except GuestPageFault:
            return False
        if code not in (VMCALL, VMMCALL):
            return False              # the guest's #UD, through its IDT
        self.on_vmcall(rip, 3)
        return True

    def on_syscall(self) -> None:
        """SYSCALL (SDM vol. 2): RCX = next RIP, R11 = RFLAGS, RFLAGS &= ~FMASK,
        CS = STAR[47:32], SS = CS + 8, CPL 0, RIP = LSTAR."""
        m = self.m
        uc = m.uc
        rip = m.internals.eip.value
        g = m.gprs
        if self.record is not None:
            self._emit({"k": "syscall", "nr": g[0], "rip": rip})
        star, lstar, fmask = (uc.msr_read(MSR_STAR), uc.msr_read(MSR_LSTAR),
                              uc.msr_read(MSR_FMASK))
        rflags = m.reg("rflags")
        cs = (star >> 32) & 0xFFFC
        m.set_regs(rcx=rip + 2, r11=rflags, rflags=rflags & ~fmask & ~(1 << 16))
        m.set_segment("ss", cs + 8)
        m.set_segment("cs", cs)
        m.set_cpl(0)
        # Unicorn adds 2 to RIP after a SYSCALL hook returns (DESIGN.md)
        m.set_reg("rip", (lstar - 2) & U64)

    def on_interrupt(self, vector: int, rip: int) -> None:
        """Not reached on the HVM platform (the CPU delivers through the guest
        IDT); kept for the TrapHandler protocol."""
        self.m.stop(Stop("crash", f"unexpected exception {vector} on the HVM platform", rip))

    def on_cpuid(self) -> None:
        self._cpuid(self.m.reg("rip"))

    def on_io_in(self, port: int, size: int) -> int:
        v = self.port_in(port, size)
        if v is None:
            v = (1 << (8 * size)) - 1
        if self.record is not None:
            self.record_port_read(port, size, v)
        return v

    def on_io_out(self, port: int, size: int, value: int) -> None:
        if self.record is not None:
            self._emit_fields(_IO_KEYS, "io", "out", port, size, value)
        self.port_out(port, size, value)

    def _on_msr(self, write: int, msr: int, value: int) -> tuple[int, int]:
        own = self.msr(bool(write), msr, value)
        if own is not None:
            answer, value = own
        elif msr == MSR_APIC_BASE:
            answer, value = MSR_HANDLED, (value if write else APIC_BASE_VALUE)
        elif msr == MSR_TSC:
            answer, value = MSR_HANDLED, (value if write else self.clock.read_tsc())
        elif msr in NATIVE_MSRS:
            answer = MSR_NATIVE
        else:
            answer, value = MSR_GP, 0
        if self.record is not None:
            d, rip = "wr" if write else "rd", self.m.internals.eip.value
            if answer == MSR_GP:
                self._emit_fields(_MSR_GP_KEYS, "msr", d, msr, rip, True)
            elif write or answer == MSR_HANDLED:
                self._emit_fields(_MSR_VAL_KEYS, "msr", d, msr, rip, value)
            else:
                self._emit_fields(_MSR_KEYS, "msr", d, msr, rip)
        return answer, value

    # ------------------------------------------------------------ local APIC
    def _lapic_read(self, uc, offset: int, size: int, _data) -> int:
        v = self.lapic.read(offset, size)
        if self.record is not None:
            self._emit_fields(_MMIO_KEYS, "mmio", "rd", LAPIC_BASE + offset, size, v)
        return v

    def _lapic_write(self, uc, offset: int, size: int, value: int, _data) -> None:
        if self.record is not None:
            self._emit_fields(_MMIO_KEYS, "mmio", "wr", LAPIC_BASE + offset, size, value)
        self.lapic.write(offset, size, value)
        self.update_irq()

    # ----------------------------------------------------------- interrupts
    def assert_interrupt(self, vector: int) -> None:
        """A platform service for backends: raise fixed interrupt ``vector``
        (edge) in the local APIC; it is injected when the APIC and RFLAGS.IF
        allow, at the next point the platform looks (after the current call)."""
        self.lapic.raise_vector(vector)

    def update_irq(self) -> None:
        """Raise the highest interrupt due (the ABI's upcall first, then the
        LAPIC's), or withdraw one no longer due."""
        want = self.upcall_vector()
        source = "upcall"
        if want is None:
            want = self.lapic.highest_deliverable()
            source = "lapic"
        hvm = self.hvm
        if want is None:
            if hvm.pending is not None:
                hvm.clear_irq()
            self._irq_source = None
        elif hvm.pending != want:
            hvm.raise_irq(want)
            self._irq_source = source

    def _irq_due(self) -> bool:
        return self.upcall_vector() is not None or self.lapic.highest_deliverable() is not None

    def _on_irq_taken(self, vector: int, rip: int) -> None:
        if self._irq_source == "lapic":
            self.lapic.accept(vector)
        if self._irq_source != "lapic" or vector == self.upcall_vector_number():
            self.upcalls += 1
        self._irq_source = None
        if self.record is not None:
            self._emit({"k": "irq", "vec": vector, "rip": rip})

    # ------------------------------------------------------------- run loop
    def on_resume(self) -> None:
        """Between engine slices: a timer preemption (the core's TSC hook
        paused the engine: ``_preempt``), a triple fault, or ``hlt``."""
        m = self.m
        self.hvm.take_error()
        if self._preempt:
            pass
        elif self.hvm.triple_faults != self._triples:
            self._triples = self.hvm.triple_faults
            m.stop(Stop("triple_fault", "triple fault", m.reg("rip")))
            return
        else:
            self._halt()
            if m.stop_reason is not None:
                return
        self._preempt = False
        vcpu = self.b.vcpu
        vcpu.fire_timers()
        self.lapic.fire_due(self.clock.now_ns)
        self.update_irq()

    def _halt(self) -> None:
        """The guest executed ``hlt`` (RIP is after it)."""
        m = self.m
        rip, rflags = m.regs("rip", "rflags")
        self.halts += 1
        if self.record is not None:
            self._emit({"k": "halt", "rip": rip, "if": bool(rflags & RFLAGS_IF)})
        if not rflags & RFLAGS_IF:
            m.stop(Stop("shutdown", "halted with interrupts disabled (powered off)", rip, 0))
            return
        self._cur_rip, self._jump = rip, None
        inp = self.input
        if (inp.carry or inp.scheduled or inp.live_ready) and self._inject_due():
            return       # (input a replay injects where the recording typed it: here)
        if self._irq_due():
            return
        if self._idle_point() or self._irq_due():
            return        # stopped, or input typed at this idle point woke the guest
        vcpu = self.b.vcpu
        wake = getattr(vcpu, "wake_deadline", vcpu.next_deadline)
        deadlines = [d for d in (wake(), self.lapic.next_deadline_ns()) if d is not None]
        if not deadlines:
            m.stop(Stop("stuck", "halted with no timer armed and no interrupt pending", rip))
            return
        vcpu.idle_until(min(deadlines))
        self._check_wall()


__all__ = ["NATIVE_MSRS", "HvmDispatchCore"]
