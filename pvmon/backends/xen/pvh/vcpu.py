"""The PVH vCPU: what Xen does to a PVH guest's CPU beyond what every Xen vCPU
shares (:class:`pvmon.backends.xen.vcpu.XenVcpu`: vcpu_info, pvclock, timers).

A PVH guest owns its IDT, GDT, page tables and privilege levels; the CPU
delivers its exceptions through its own IDT (pvmon's HVM platform,
:mod:`pvmon.engine.hvm`). What Xen adds is the event upcall: with
``HVM_PARAM_CALLBACK_IRQ`` of type vector (params.h, bits 63:56 = 2), Xen
injects that vector whenever ``vcpu_info.evtchn_upcall_pending`` is set and
the guest's RFLAGS.IF allows, with no local APIC EOI
(``hvm_vcpu_has_pending_irq``, xen/arch/x86/hvm/irq.c@stable-4.17). The PV
``evtchn_upcall_mask`` plays no part (masking is RFLAGS.IF), and idling is a
native ``hlt``, not SCHEDOP_block.
"""

from __future__ import annotations

from pvmon.backends.xen.vcpu import XenVcpu
from pvmon.engine.machine import Machine


class PvhVcpu(XenVcpu):
    """vCPU 0 of a PVH domain. ``callback_vector``: the IDT vector of the
    event upcall (None until the guest sets HVM_PARAM_CALLBACK_IRQ or
    HVMOP_set_evtchn_upcall_vector)."""

    user_mode = False     # the PV notion; an HVM guest's mode is its CPL

    def __init__(self, backend, machine: Machine, layout) -> None:
        super().__init__(backend, machine, layout)
        self.callback_vector: int | None = None
        self.upcall_vector_per_vcpu = False

    def upcall_mask(self) -> int:
        """Events are masked by the guest's RFLAGS.IF, which the CPU checks
        when it takes the interrupt: never by vcpu_info for Xen."""
        return 0

    def can_upcall(self) -> bool:
        """The global callback vector is due: an event pending and
        HVM_PARAM_CALLBACK_IRQ set to a vector (not the per-vCPU vector, which
        goes through the local APIC)."""
        return (self.callback_vector is not None and not self.upcall_vector_per_vcpu
                and self.upcall_pending())

    def set_upcall_vector(self, vector: int) -> None:
        """HVMOP_set_evtchn_upcall_vector: events arrive as ``vector`` in the
        local APIC (IRR, then ISR until the guest's EOI), raised whenever
        evtchn_upcall_pending goes 0 -> 1, and once now if it is set
        (hvm_assert_evtchn_irq, xen/arch/x86/hvm/irq.c@stable-4.17)."""
        self.callback_vector = vector
        self.upcall_vector_per_vcpu = True
        if self.upcall_pending():
            self.upcall_asserted()

    def upcall_asserted(self) -> None:
        """evtchn_upcall_pending went 0 -> 1 (EventChannels.on_upcall)."""
        if self.upcall_vector_per_vcpu and self.callback_vector is not None:
            self.b.p.assert_interrupt(self.callback_vector)

    def block(self) -> int:
        """SCHEDOP_block from a PVH guest: as PV (sleep until an event), with
        the IF-based mask left alone."""
        return self.sleep_until_event()


__all__ = ["PvhVcpu"]
