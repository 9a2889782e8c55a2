"""VMI 3.0 calls as canonical paravirtual operations (:mod:`pvmon.pvops`),
per the facts sheet's mapping table (section 3.2, [VMIC]): the pv-op Linux's
VMI backend (arch/x86/kernel/vmi_32.c) issues each call for. ROM protocol
events (``vmi_init``, ``get_reloc``) are no operation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pvmon.pvops import PvOp, stateless_continue, stateless_state

#: VMI call name -> canonical operation
OPS: dict[str, str] = {
    "CPUID": "cpu.cpuid", "SetGDT": "cpu.load_gdt", "SetIDT": "cpu.set_trap",
    "WriteIDTEntry": "cpu.set_trap", "WriteGDTEntry": "cpu.write_descriptor",
    "WriteLDTEntry": "cpu.write_descriptor", "SetLDT": "cpu.set_ldt",
    "UpdateKernelStack": "cpu.set_stack", "CLTS": "cpu.fpu_trap",
    "SetDR": "cpu.set_debugreg", "GetDR": "cpu.get_debugreg", "SetIOPLMask": "cpu.set_iopl",
    "IRET": "cpu.iret", "SYSEXIT": "cpu.iret", "SetInitialAPState": "cpu.vcpu_init",
    "EnableInterrupts": "irq.unmask", "SetInterruptMask": "irq.unmask",
    "DisableInterrupts": "irq.mask",
    "SetCR3": "mmu.new_root", "SetPxE": "mmu.set_pte", "SetPxELong": "mmu.set_pte",
    "UpdatePxE": "mmu.set_pte", "UpdatePxELong": "mmu.set_pte", "AllocatePage": "mmu.pin",
    "ReleasePage": "mmu.unpin", "InvalPage": "mmu.invlpg", "FlushTLB": "mmu.flush_tlb",
    "WBINVD": "mmu.flush_cache", "SetLinearMapping": "memory.map",
    "GetCycleCounter": "time.read_clock", "RDTSC": "time.read_clock",
    "SetAlarm": "time.oneshot", "CancelAlarm": "time.stop", "Halt": "sched.block",
    "Shutdown": "power.shutdown", "Reboot": "power.shutdown", "SetLazyMode": "batch.submit",
    "GetCycleFrequency": "info.platform", "GetWallclockTime": "time.read_clock",
}


#: calls that are no canonical operation: the ROM protocol (``vmi_init``,
#: ``get_reloc``) and register reads and writes that are the native
#: instruction's equivalent (reading CR2, an MSR, the APIC), not a request of
#: the hypervisor
NO_OPERATION: frozenset[str] = frozenset({"vmi_init", "get_reloc",
    "GetInterruptMask", "GetCR0", "GetCR2", "GetCR3", "GetCR4", "GetGDT",
    "GetIDT", "GetLDT", "GetTR", "RDMSR", "WRMSR", "RDPMC",
    "WallclockUpdated", "APICRead", "APICWrite", "IODelay", "SetCR0", "SetCR2",
    "SetCR4", "SetTR", "MachineToPhysical", "PhysicalToMachine"})


# No state across events (pvmon/pvops/__init__.py).
new_state = resume_state = stateless_state
continue_state = stateless_continue


def translate(ev: dict[str, Any], state: tuple) -> Iterator[PvOp]:
    """Canonical operations of one trace event of a VMI run."""
    get = ev.get
    if get("k") != "hc":
        return
    name = get("name")
    if not isinstance(name, str) or name in NO_OPERATION:
        return
    seq, t = get("seq"), get("t")
    seq = seq if type(seq) is int else -1
    t = t if type(t) is int else 0
    op = OPS.get(name)
    opmap = get("op") if isinstance(get("op"), dict) else {}
    if op is None:
        op = "unmapped"
    args = dict(opmap)
    if name == "SetAlarm":
        flags = opmap.get("flags", 0) if isinstance(opmap.get("flags"), int) else 0
        if flags & 0x100:
            op = "time.periodic"
        args = {"deadline_cycles": opmap.get("expiry"), "period_cycles": opmap.get("period"),
                "absolute": True}
    elif name == "Reboot":
        args = {"reason": "reboot"}
    elif name == "Shutdown":
        args = {"reason": "poweroff"}
    ret = get("ret")
    yield PvOp(op, seq, t, name, args, ret if type(ret) is int else None)
