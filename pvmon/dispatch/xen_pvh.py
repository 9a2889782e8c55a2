"""The paravirt-op dispatch layer for Xen PVH guests.

A PVH guest reaches Xen with ``vmcall`` (``vmmcall`` on AMD): number in RAX,
arguments in RDI, RSI, RDX, R10, R8, result in RAX, pointers guest-virtual
(Linux ``arch/x86/xen/xen-head.S``; xen/arch/x86/hvm/hypercall.c@stable-4.17,
which answers -EPERM to a call from CPL > 0). Everything else is the HVM
platform's (:mod:`pvmon.dispatch.hvm`): this module adds Xen's CPUID leaves,
the hypercall-page MSR older kernels write (CPUID 0x40000002 EBX), and the
event upcall as an injected vector (HVM_PARAM_CALLBACK_IRQ).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pvmon.backends.base import Backend
from pvmon.backends.xen import abi
from pvmon.backends.xen.cpuid import xen_cpuid_policy
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.hvm import HvmDispatchCore
from pvmon.dispatch.xen import xen_shutdown_stop
from pvmon.engine.hvm import MSR_HANDLED
from pvmon.engine.machine import Machine

U64 = (1 << 64) - 1
#: The MSR CPUID leaf 0x40000002 names for the hypercall page (EBX).
XEN_HYPERCALL_MSR = 0x40000000
_SCHED_OP = abi.HYPERCALL_NUMBERS["sched_op"]


#: CPUID 0x40000004 EAX bits (xen/include/public/arch-x86/cpuid.h)
XEN_HVM_CPUID_VCPU_ID_PRESENT, XEN_HVM_CPUID_UPCALL_VECTOR = 1 << 3, 1 << 6


def xen_pvh_cpuid_policy(major: int, minor: int, upcall_vector: bool = True) -> dict:
    """The CPUID a PVH domU sees: pvmon's Xen policy with the local APIC
    (leaf 1 EDX bit 9) and the HVM feature leaf 0x40000004: EAX bit 3
    VCPU_ID_PRESENT (EBX = vCPU id 0), and, when ``upcall_vector`` (Xen 4.17
    on, xen.git e2d2b9fd7a), bit 6 UPCALL_VECTOR, on which Linux takes the
    per-vCPU HVMOP_set_evtchn_upcall_vector instead of the global
    HVM_PARAM_CALLBACK_IRQ vector (xen/arch/x86/cpuid.c cpuid_hypervisor_leaves,
    Linux drivers/xen/events/events_base.c xen_init_setup_upcall_vector)."""
    pol = dict(xen_cpuid_policy(major, minor))
    a, b, c, d = pol[(1, 0)]
    pol[(1, 0)] = (a, b, c, d | (1 << 9))
    pol[(0x40000004, 0)] = (XEN_HVM_CPUID_VCPU_ID_PRESENT
                            | (XEN_HVM_CPUID_UPCALL_VECTOR if upcall_vector else 0), 0, 0, 0)
    brand = b"pvmon virtual CPU (Xen PVH)".ljust(48, b"\0")
    for i in range(3):
        pol[(0x80000002 + i, 0)] = struct.unpack_from("<4I", brand, i * 16)
    return pol


def hypercall_page_bytes() -> bytes:
    """An HVM hypercall page: 32-byte stubs ``mov $nr,%eax; vmcall; ret``
    (xen/arch/x86/hvm/vmx/vmx.c vmx_init_hypercall_page@stable-4.17)."""
    page = bytearray(b"\xcc" * 4096)
    for nr in range(4096 // 32):
        stub = b"\xb8" + struct.pack("<I", nr) + b"\x0f\x01\xc1\xc3"
        page[nr * 32:nr * 32 + len(stub)] = stub
    return bytes(page)


class XenPvhDispatch(HvmDispatchCore):
    """TrapHandler for one Xen PVH domain."""

    shutdown_stop = staticmethod(xen_shutdown_stop)

    def __init__(self, machine: Machine, backend: Backend, guest: RecordingGuestAccess,
                 record: Callable[[dict], None] | None = None) -> None:
        super().__init__(machine, backend, guest, record)
        self.policy = xen_pvh_cpuid_policy(
            backend.ver.major, backend.ver.minor,
            upcall_vector="hvm_upcall_vector" in backend.ver.capabilities)
        self._hypercall_page: int | None = None

    def on_vmcall(self, rip: int, size: int) -> None:
        m = self.m
        g = m.gprs
        self._cur_rip = rip + size
        self._jump = None
        rax, rdi, rsi, rdx, r10, r8 = g[0], g[7], g[6], g[2], g[10], g[8]
        nr = rax & 0xFFFFFFFF
        inp = self.input
        if (inp.carry or inp.scheduled or inp.live_ready) and self._inject_due():
            m.set_reg("rip", rip + size)
            return
        if nr == _SCHED_OP and rdi == abi.SCHEDOP["block"] and self._idle_point():
            m.set_reg("rip", rip + size)
            return
        self.clock.advance(self.clock.costs.hypercall_ns)
        args = (rdi, rsi, rdx, r10, r8)
        self.guest.begin()
        pending = self.b.events.raised
        ev_before = len(pending)
        if m.cpl:
            ret = -abi.EPERM
            self.b.op = {}
        else:
            ret = self.b.call(nr, args)
        name = abi.hypercall_name(nr)
        self.hypercalls[name] += 1
        g[0] = ret & U64
        raised = pending[ev_before:] if pending else ()
        pending.clear()
        hp = self._hypercall_page
        self.record_call("xen", nr, name, args, ret, rip,
                         "page" if hp is not None and hp <= rip < hp + 4096 else "vmcall",
                         tuple(raised))
        m.set_reg("rip", self._jump if self._jump is not None else rip + size)
        self._jump = None
        if m.stop_reason is None:
            self.b.vcpu.fire_timers()
            self.update_irq()
        self._check_wall()

    def upcall_vector(self) -> int | None:
        vcpu = self.b.vcpu
        return vcpu.callback_vector if vcpu.can_upcall() else None

    def upcall_vector_number(self) -> int | None:
        vcpu = self.b.vcpu
        return vcpu.callback_vector if vcpu.upcall_vector_per_vcpu else None

    def msr(self, write: bool, msr: int, value: int) -> tuple[int, int] | None:
        if msr != XEN_HYPERCALL_MSR:
            return None
        if write:
            # the guest-physical page to fill with hypercall stubs
            # (xen/arch/x86/msr.c guest_wrmsr -> hvm_hypercall_page_initialise)
            pa = value & ~0xFFF
            if self.m.valid_phys(pa, 4096):
                self.m.write_phys(pa, hypercall_page_bytes())
                self._hypercall_page = None   # a guest-virtual address is not known
        return MSR_HANDLED, value if write else 0


__all__ = ["XenPvhDispatch", "hypercall_page_bytes", "xen_pvh_cpuid_policy"]
