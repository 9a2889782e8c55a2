"""The KVM backend: KVM's paravirtual interface at one release.

What it answers (every fact from the sources in :mod:`pvmon.backends.kvm.abi`):

* CPUID 0x40000000/0x40000001 (:func:`kvm_cpuid_policy`): "KVMKVMKVM" and
  the release's feature bits;
* the paravirtual MSRs (:meth:`KvmBackend.msr`): kvmclock (MSR_KVM_SYSTEM_TIME
  and _NEW write a ``pvclock_vcpu_time_info`` at the given address,
  MSR_KVM_WALL_CLOCK and _NEW a ``pvclock_wall_clock``), steal time (the
  record is kept at zero steal: a pvmon vCPU is never preempted), PV EOI
  (the word's address is kept in ``pv_eoi_gpa``; the dispatch layer sets
  and syncs its bit as KVM's ``arch/x86/kvm/lapic.c`` does), async page faults (accepted; pvmon
  never has a page the guest must wait for, so none is ever reported), poll
  control; the reserved-bit checks of ``kvm_set_msr_common`` raise #GP, and
  an MSR of a feature the release lacks raises #GP as an unknown MSR does;
* the ``KVM_HC_*`` hypercalls (:meth:`KvmBackend.call`): -KVM_ENOSYS for a
  number the release does not know.

Time is virtual: the guest TSC runs at the machine clock's ``tsc_khz`` and
is exactly linear in virtual time, so a kvmclock record written once stays
exact (KVM rewrites it on events a pvmon vCPU never has: migration to
another host CPU, a master-clock update). The wall clock is fixed at
:data:`WALLCLOCK_EPOCH` at system time 0, as for pvmon's Xen guests.
"""

from __future__ import annotations

import struct

from pvmon.backends.base import CAP_CONSOLE_INPUT, Backend, GuestFault
from pvmon.backends.kvm import abi
from pvmon.backends.kvm.pvclock import pack_time_info, pack_wall_clock, time_scale
from pvmon.backends.kvm.versions import KvmVersion
from pvmon.engine.hvm import MSR_GP, MSR_HANDLED

#: The guest's time of day at system time 0 (2026-01-01T00:00:00Z, as Xen's
#: WALLCLOCK_EPOCH in pvmon.backends.xen.backend: fixed, so runs repeat).
WALLCLOCK_EPOCH = 1_767_225_600
MSR_TSC_DEADLINE = 0x6E0
_STEAL_RESERVED = 0x3E          # KVM_STEAL_RESERVED_MASK: bits 5:1
_ASYNC_PF_RESERVED = 0x30       # kvm_pv_enable_async_pf: bits 5:4


def kvm_cpuid_policy(ver: KvmVersion) -> dict:
    """The CPUID a KVM guest sees on pvmon's PC: pvmon's fixed base CPU
    (:func:`pvmon.backends.xen.cpuid.xen_cpuid_policy`, never the host's),
    with the local APIC (1:EDX bit 9), TSC-deadline (1:ECX bit 24), ARAT
    (6:EAX bit 2), no invariant TSC (0x80000007 EDX bit 8: with it Linux
    would rate kvm-clock below the TSC), the KVM leaves instead of Xen's,
    and its own brand string."""
    from pvmon.backends.xen.cpuid import xen_cpuid_policy
    pol = {k: v for k, v in xen_cpuid_policy(4, 17).items() if not 0x40000000 <= k[0] < 0x40010000}
    a, b, c, d = pol[(1, 0)]
    pol[(1, 0)] = (a, b, c | (1 << 24), d | (1 << 9))
    pol[(6, 0)] = (1 << 2, 0, 0, 0)
    a, b, c, d = pol[(0x80000007, 0)]
    pol[(0x80000007, 0)] = (a, b, c, d & ~(1 << 8))
    brand = b"pvmon virtual CPU (KVM)".ljust(48, b"\0")
    for i in range(3):
        pol[(0x80000002 + i, 0)] = struct.unpack_from("<4I", brand, i * 16)
    pol[(abi.KVM_CPUID_SIGNATURE, 0)] = (ver.signature_eax, *abi.KVM_SIGNATURE_REGS)
    pol[(abi.KVM_CPUID_FEATURES, 0)] = (ver.feature_eax(), 0, 0, 0)
    return pol


class KvmConsole:
    """``Backend.console`` for a KVM guest: the UART's receive side."""

    def __init__(self, backend: KvmBackend) -> None:
        self.b = backend

    def input_consumed(self) -> bool:
        uart = self.b.uart
        return uart is None or uart.input_consumed()


class KvmEvents:
    """KVM raises no Xen-style events: the list stays empty."""

    def __init__(self) -> None:
        self.raised: list[int] = []


class KvmVcpu:
    """vCPU 0's timers as the dispatch layer drives them
    (:class:`~pvmon.backends.base.Vcpu`): the local APIC's TSC-deadline timer
    (MSR IA32_TSC_DEADLINE, SDM vol. 3 11.5.4.1) and the LAPIC countdown timer.
    ``deadline``: the earliest of both (virtual ns) or None, read on every TSC
    read to preempt a busy guest when an interrupt is due."""

    user_mode = False

    def __init__(self, backend: KvmBackend, machine) -> None:
        self.b = backend
        self.m = machine
        self.clock = machine.clock
        self.tsc_deadline = 0              # the MSR value (TSC ticks), 0 = disarmed
        self.deadline: int | None = None
        self.blocked_ns = 0

    # -- TSC <-> virtual ns
    def tsc_to_ns(self, tsc: int) -> int:
        khz = self.clock.tsc_khz
        return -(-tsc * 1_000_000 // khz)

    def _deadline_mode(self) -> bool:
        from pvmon.platforms.hvm.lapic import (
            LVT_MASKED,
            LVT_TIMER,
            TIMER_MODE_MASK,
            TIMER_TSC_DEADLINE,
        )
        lapic = self.b.lapic
        lvt = lapic.lvt[LVT_TIMER] if lapic is not None else LVT_MASKED
        return lvt & TIMER_MODE_MASK == TIMER_TSC_DEADLINE

    def tsc_deadline_ns(self) -> int | None:
        if not self.tsc_deadline or not self._deadline_mode():
            return None
        return self.tsc_to_ns(self.tsc_deadline)

    def refresh(self) -> None:
        """Recompute :attr:`deadline` (after any timer register changed)."""
        lapic = self.b.lapic
        ds = [d for d in (self.tsc_deadline_ns(),
                          lapic.next_deadline_ns() if lapic is not None else None)
              if d is not None]
        self.deadline = min(ds) if ds else None

    # -- the Vcpu protocol
    def upcall_mask(self) -> int:
        return 0          # interrupts are masked by RFLAGS.IF, checked by the CPU

    def upcall_pending(self) -> bool:
        return False      # no ABI upcall: interrupts come through the local APIC

    def can_upcall(self) -> bool:
        return False

    def deliver_upcall(self) -> bool:
        return False

    def deliver_trap(self, vector, error_code, cr2, rip) -> bool:
        return False      # the CPU delivers through the guest IDT (HVM platform)

    def software_interrupt(self, vector: int, next_rip: int):
        return vector, None, next_rip

    def syscall_from_user(self, ret_rip: int) -> bool:
        return False

    def next_deadline(self) -> int | None:
        """The armed TSC deadline (virtual ns), or None (the LAPIC countdown
        timer is asked separately, by the dispatch layer)."""
        return self.tsc_deadline_ns()

    def fire_timers(self) -> bool:
        """Fire the TSC-deadline timer if due: the LVT timer vector becomes
        pending in the local APIC (unless masked) and the MSR reads 0 again."""
        if not self.tsc_deadline:
            return False
        if not self._deadline_mode():
            return False
        if self.tsc_to_ns(self.tsc_deadline) > self.clock.now_ns:
            return False
        from pvmon.platforms.hvm.lapic import LVT_MASKED, LVT_TIMER
        self.tsc_deadline = 0
        lvt = self.b.lapic.lvt[LVT_TIMER]
        fired = not lvt & LVT_MASKED
        if fired:
            self.b.lapic.raise_vector(lvt & 0xFF)
        self.refresh()
        return fired

    def idle_until(self, deadline: int) -> None:
        """``hlt`` until virtual time ``deadline`` (ns): time jumps there."""
        now = self.clock.now_ns
        if deadline > now:
            self.blocked_ns += deadline - now
            self.clock.advance_to(deadline)
        self.fire_timers()


class KvmBackend(Backend):
    """KVM at one release (:class:`~pvmon.backends.kvm.versions.KvmVersion`).
    The dispatch layer (:class:`pvmon.dispatch.kvm.KvmDispatch`) gives it the
    platform's local APIC and UART (:attr:`lapic`, :attr:`uart`) before
    :meth:`attach`."""

    abi = "kvm"
    CAPABILITIES = frozenset({CAP_CONSOLE_INPUT})

    def __init__(self, ver: KvmVersion) -> None:
        self.ver = ver
        self.name = ver.name
        self.version = ver.linux
        self.hypercall_page = None
        self.op: dict = {}
        self.unsupported: dict[str, int] = {}
        self.console_out = lambda ch, data: None
        self.events = KvmEvents()
        self.console = KvmConsole(self)
        self.lapic = None
        self.uart = None
        self.guest = None
        self.machine = None
        self.vcpu: KvmVcpu | None = None
        mul, shift = time_scale(1_000_000_000)
        self._scale = (mul, shift)
        #: stored MSR values (what RDMSR returns)
        self.msrs: dict[int, int] = {abi.MSR_KVM_POLL_CONTROL: 1}
        #: Guest-physical address of the PV EOI word (MSR_KVM_PV_EOI_EN), or None.
        self.pv_eoi_gpa: int | None = None
        self.clock_writes = 0

    def describe(self) -> dict:
        v = self.ver
        return {"name": v.name, "abi": "kvm", "version": v.linux, "base": v.base,
                "differences": [c.as_dict() for c in v.changes]}

    def attach(self, machine, layout, guest, platform, memory_bytes: int, name: str) -> None:
        self.machine = machine
        self.guest = guest
        self.platform = platform
        self.vcpu = KvmVcpu(self, machine)
        self._scale = time_scale(machine.clock.tsc_khz * 1000)

    def console_input(self, data: bytes) -> int:
        """Bytes typed on the serial line: as many as the UART FIFO takes."""
        if self.uart is None:
            return 0
        return self.uart.receive(data)

    # ------------------------------------------------------------- MSRs
    def has_msr(self, msr: int) -> bool:
        feature = abi.MSR_FEATURE.get(msr)
        return feature is not None and self.ver.offers(feature)

    def msr(self, write: bool, msr: int, value: int) -> tuple[int, int] | None:
        """KVM's answer for a paravirtual MSR: ``(MSR_HANDLED, value read)``
        or ``(MSR_GP, 0)``; None for an MSR that is not KVM's."""
        if msr not in abi.MSR_FEATURE:
            return None
        if not self.has_msr(msr):
            return MSR_GP, 0
        if not write:
            return MSR_HANDLED, self.msrs.get(msr, 0)
        ok = self._write(msr, value)
        if not ok:
            return MSR_GP, 0
        self.msrs[msr] = value
        return MSR_HANDLED, value

    def _write(self, msr: int, value: int) -> bool:
        if msr in (abi.MSR_KVM_SYSTEM_TIME, abi.MSR_KVM_SYSTEM_TIME_NEW):
            if value & abi.KVM_MSR_ENABLED:
                self.write_time_info(value & ~1)
            return True
        if msr in (abi.MSR_KVM_WALL_CLOCK, abi.MSR_KVM_WALL_CLOCK_NEW):
            self.write_wall_clock(value)
            return True
        if msr == abi.MSR_KVM_STEAL_TIME:
            if value & _STEAL_RESERVED:
                return False
            if value & abi.KVM_MSR_ENABLED:
                self._bump_record(value & ~0x3F, 8, lambda ver: struct.pack(
                    "<QII B3x 44x", 0, ver, 0, 0))
            return True
        if msr == abi.MSR_KVM_PV_EOI_EN:
            if value & 2:                   # the address must be 4-byte aligned
                return False
            self.pv_eoi_gpa = value & ~3 if value & abi.KVM_MSR_ENABLED else None
            return True
        if msr == abi.MSR_KVM_ASYNC_PF_EN:
            return not value & _ASYNC_PF_RESERVED
        if msr == abi.MSR_KVM_ASYNC_PF_INT:
            return not value >> 8
        if msr == abi.MSR_KVM_ASYNC_PF_ACK:
            return True
        if msr == abi.MSR_KVM_POLL_CONTROL:
            return not value >> 1
        if msr == abi.MSR_KVM_MIGRATION_CONTROL:
            return not value >> 1
        return True

    def _bump_record(self, pa: int, version_at: int, make) -> bool:
        """Write a versioned record at guest-physical ``pa`` as KVM does: the
        version after the update is ``((old + 1) | 1) + 1`` (even)."""
        try:
            (old,) = struct.unpack("<I", self.guest.read_machine(pa + version_at, 4))
            ver = (((old + 1) | 1) + 1) & 0xFFFFFFFF
            self.guest.write_machine(pa, make(ver))
        except GuestFault:
            return False       # KVM leaves a bad address alone (the MSR write succeeds)
        self.clock_writes += 1
        return True

    def time_info(self, version: int) -> bytes:
        """The current ``pvclock_vcpu_time_info`` with ``version``."""
        clock = self.machine.clock
        now = clock.now_ns
        mul, shift = self._scale
        flags = abi.PVCLOCK_TSC_STABLE_BIT if self.ver.offers("CLOCKSOURCE_STABLE_BIT") else 0
        return pack_time_info(version, clock.tsc_at(now), now, mul, shift, flags)

    def write_time_info(self, pa: int) -> bool:
        """Write the kvmclock record at guest-physical ``pa``."""
        return self._bump_record(pa, 0, self.time_info)

    def write_wall_clock(self, pa: int) -> bool:
        """Write ``pvclock_wall_clock`` (boot time of day) at ``pa``."""
        return self._bump_record(pa, 0, lambda ver: pack_wall_clock(ver, WALLCLOCK_EPOCH, 0))

    # ------------------------------------------------------------- hypercalls
    def call(self, nr: int, args: tuple[int, ...]) -> int:
        """``KVM_HC_*`` ``nr`` with ``args`` = (RBX, RCX, RDX, RSI)."""
        name = abi.HYPERCALLS.get(nr)
        a0, a1, a2, a3 = (tuple(args) + (0, 0, 0, 0))[:4]
        self.op = {}
        if name is None or name not in self.ver.hypercalls:
            key = name or f"kvm_hc_{nr}"
            self.unsupported[key] = self.unsupported.get(key, 0) + 1
            return -abi.KVM_ENOSYS
        if name == "vapic_poll_irq":
            return 0
        if name == "kick_cpu":
            self.op = {"flags": a0, "apic_id": a1}
            return 0              # no other vCPU to wake
        if name == "sched_yield":
            self.op = {"apic_id": a0}
            return 0
        if name == "send_ipi":
            self.op = {"bitmap_low": a0, "bitmap_high": a1, "min": a2, "icr": a3}
            return self._send_ipi(a0, a1, a2, a3)
        if name == "clock_pairing":
            self.op = {"gpa": a0, "clock_type": a1}
            if a1 != 0:
                return -abi.KVM_EOPNOTSUPP
            clock = self.machine.clock
            now = clock.now_ns
            wall = WALLCLOCK_EPOCH * 1_000_000_000 + now
            data = struct.pack("<qqQI36x", wall // 1_000_000_000, wall % 1_000_000_000,
                               clock.tsc_at(now), 0)
            try:
                self.guest.write_machine(a0, data)
            except GuestFault:
                return -abi.KVM_EFAULT
            return 0
        if name == "map_gpa_range":
            self.op = {"gpa": a0, "npages": a1, "attrs": a2}
            return -abi.KVM_ENOSYS     # no VMM exit enabled (KVM_CAP_EXIT_HYPERCALL)
        return -abi.KVM_ENOSYS

    def _send_ipi(self, low: int, high: int, minid: int, icr: int) -> int:
        """KVM_HC_SEND_IPI: deliver ``icr``'s vector to every APIC id
        ``minid + bit`` set in the 128-bit bitmap; only id 0 exists. Returns
        how many vCPUs got it (hypercalls.rst)."""
        if minid > 0xFFFFFFFF:
            return -abi.KVM_EINVAL
        bitmap = (low & (2**64 - 1)) | ((high & (2**64 - 1)) << 64)
        if minid == 0 and bitmap & 1:
            if self.lapic is not None:      # (open loop has no platform: the count only)
                self.lapic.raise_vector(icr & 0xFF)
            return 1
        return 0


__all__ = ["WALLCLOCK_EPOCH", "KvmBackend", "KvmVcpu", "kvm_cpuid_policy"]
