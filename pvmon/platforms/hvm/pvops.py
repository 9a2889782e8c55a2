"""Canonical operations (pvmon.pvops, docs/pvops.md) of the HVM platform's own
events: what an HVM guest does natively that a PV guest asks its hypervisor
for, with the evidence (``native``). Every ABI on the HVM platform (Xen PVH,
KVM) maps its hypercalls itself and hands these events here.

* ``halt`` with RFLAGS.IF set: ``sched.block`` (``hlt``); with it clear:
  ``power.shutdown`` (Linux's power-off without ACPI S5 halts with interrupts
  off, arch/x86/kernel/process.c stop_this_cpu);
* a local APIC write (SDM vol. 3 ch. 10): EOI (0xB0) ``irq.eoi``; ICR low
  (0x300) ``irq.send_ipi``; timer initial count (0x380) ``time.oneshot`` (or
  ``time.stop`` for 0), the count in bus ticks;
* WRMSR of IA32_TSC_DEADLINE (0x6E0) ``time.oneshot`` (TSC cycles); of
  FS_BASE/GS_BASE/KERNEL_GS_BASE (0xC0000100-2) ``cpu.set_segment_base``;
  RDMSR of the TSC (0x10) ``time.read_clock``.

Port I/O, other MSRs and injected interrupts map to no operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pvmon.pvops import PvOp

_LAPIC = 0xFEE00000
_SEGBASE = {0xC0000100: "fs", 0xC0000101: "gs_kernel_now", 0xC0000102: "gs_swapped"}


def translate(ev: dict[str, Any], seq: int, t: int) -> Iterator[PvOp]:
    """Canonical operations of one HVM platform event (kinds ``halt``,
    ``mmio``, ``msr``); nothing for any other kind."""
    k = ev.get("k")
    if k == "halt":
        if ev.get("if"):
            yield PvOp("sched.block", seq, t, "hlt", {"rip": ev.get("rip")}, native="hlt")
        else:
            yield PvOp("power.shutdown", seq, t, "hlt", {"reason": "halt with IF=0"},
                       native="hlt with interrupts disabled")
    elif k == "mmio" and ev.get("dir") == "wr":
        addr, val = ev.get("addr"), ev.get("val")
        if type(addr) is not int:
            return
        reg = addr - _LAPIC
        if reg == 0xB0:
            yield PvOp("irq.eoi", seq, t, "local APIC EOI", {}, native="LAPIC EOI write")
        elif reg == 0x300:
            yield PvOp("irq.send_ipi", seq, t, "local APIC ICR",
                       {"vector": val & 0xFF if type(val) is int else None},
                       native="LAPIC ICR write")
        elif reg == 0x380:
            if val:
                yield PvOp("time.oneshot", seq, t, "local APIC timer", {"ticks": val},
                           native="LAPIC timer initial count")
            else:
                yield PvOp("time.stop", seq, t, "local APIC timer", {},
                           native="LAPIC timer initial count 0")
    elif k == "msr":
        msr, val = ev.get("msr"), ev.get("val")
        if ev.get("dir") == "wr":
            if msr == 0x6E0:
                yield PvOp("time.oneshot", seq, t, "wrmsr IA32_TSC_DEADLINE",
                           {"deadline_tsc": val}, native="wrmsr")
            elif msr in _SEGBASE:
                yield PvOp("cpu.set_segment_base", seq, t, f"wrmsr {msr:#x}",
                           {"which": _SEGBASE[msr], "base": val}, native="wrmsr")
        elif msr == 0x10:
            yield PvOp("time.read_clock", seq, t, "rdmsr IA32_TSC", {"tsc": val},
                       native="rdmsr")


#: Event kinds :func:`translate` handles.
KINDS = frozenset({"halt", "mmio", "msr"})

#: The local APIC registers whose writes :func:`translate` maps (EOI, ICR low,
#: timer initial count), as offsets from the APIC base.
_LAPIC_REGS = frozenset({0xB0, 0x300, 0x380})


def mmio_has_no_op(ev: dict[str, Any]) -> bool:
    """Whether :func:`translate` yields nothing for ``ev``, an ``mmio`` event
    (a read, or a write to anything but the mapped local APIC registers): a
    quick test for counting."""
    if ev.get("dir") != "wr":
        return True
    addr = ev.get("addr")
    return type(addr) is not int or addr - _LAPIC not in _LAPIC_REGS
