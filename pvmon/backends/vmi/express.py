"""How VMI 3.0 expresses each canonical operation (cross-ABI replay,
:mod:`pvmon.replay.crossabi`), per the ROM calls Linux's VMI backend made
(arch/x86/kernel/vmi_32.c, arch/x86/include/asm/vmi.h, vmi_time.h; docs/vmi.md).

VMI is a 32-bit, non-PAE ABI here (the reference guest's mode): a 64-bit
page-table entry, address or frame above 4 GiB loses its high bits (SetPxE
takes 32); time is in *cycles* of the counter whose frequency the guest reads
with GetCycleFrequency (pvmon's ROM answers 1 GHz; Ingo Molnar's 2007
objection), so a nanosecond deadline is rounded to a cycle. Memory arguments
go into a scratch area of the target domain, whose paging is off (virtual =
physical), and page-table entries into a scratch table there.
"""

from __future__ import annotations

import struct

from pvmon.backends.vmi import abi
from pvmon.pvops import PvOp
from pvmon.replay.crossabi import (
    Call,
    Ctx,
    Expressed,
    Loss,
    Way,
    call,
    cycles_to_ns,
    deadline_of,
    entry_index,
    every_op,
    frame_arg,
    native,
    never,
    ns_to_cycles,
    pte32,
    pte_parts,
)

ABI = "vmi"
LABEL = "VMI 3.0"
REFERENCE_GUEST = "pvtest-vmi"
MODE = None
#: VMI calls answer in EAX; they have no error status
RET_IS_STATUS = False
_NR = abi.HYPERCALL_NUMBERS
_SRC = "arch/x86/kernel/vmi_32.c"
_T = "arch/x86/kernel/vmiclock_32.c, vmi_time.h"
_NOEVT = ("VMI has no event channels: devices are emulated hardware behind the "
          "emulated PIC/IOAPIC")
#: VMI_LAZY_MMU, VMI_LAZY_MODE_OFF (arch/x86/include/asm/vmi.h)
LAZY_MMU, LAZY_OFF = 2, 0
_KERNEL_CS = 0x60

WAYS: dict[str, Way] = {
    "cpu.load_gdt": call("SetGDT", source=_SRC),
    "cpu.write_descriptor": call("WriteGDTEntry", source=_SRC),
    "cpu.set_ldt": call("SetLDT", source=_SRC),
    "cpu.set_trap": call("WriteIDTEntry", source=_SRC),
    "cpu.set_callback": never("VMI delivers interrupts through the guest's own IDT "
                              "(WriteIDTEntry): there is no callback entry point", _SRC),
    "cpu.set_stack": call("UpdateKernelStack", source=_SRC),
    "cpu.set_segment_base": call("WriteGDTEntry", source=_SRC + " (a TLS descriptor's base)"),
    "cpu.iret": call("IRET", source=_SRC, why="pops the frame from the guest stack: counted, "
                     "not fed"),
    "cpu.fpu_trap": call("CLTS", source=_SRC + " (SetCR0 to set TS)"),
    "cpu.set_debugreg": call("SetDR", source=_SRC),
    "cpu.get_debugreg": call("GetDR", source=_SRC),
    "cpu.set_iopl": call("SetIOPLMask", source=_SRC),
    "cpu.set_iobitmap": native("the TSS I/O bitmap", "the TSS is the guest's (SetTR)", _SRC),
    "cpu.cpuid": call("CPUID", source=_SRC),
    "cpu.vcpu_up": call("APICWrite", source=_SRC + " (INIT/SIPI through the APIC)"),
    "cpu.vcpu_down": never("VMI 3.0 has no call to take a vCPU offline"),
    "cpu.vcpu_init": call("SetInitialAPState", source=_SRC),
    "irq.mask": call("DisableInterrupts", source=_SRC),
    "irq.unmask": call("EnableInterrupts", source=_SRC),
    "irq.eoi": call("APICWrite", source=_SRC + " (APIC EOI register)"),
    "irq.send_ipi": call("APICWrite", source=_SRC + " (APIC ICR)"),
    "irq.notify": never(_NOEVT),
    "irq.send_nmi": call("APICWrite", source=_SRC + " (APIC ICR, NMI delivery)"),
    "irq.bind": native("the emulated IOAPIC's redirection entry", _NOEVT),
    "irq.unbind": native("the emulated IOAPIC's redirection entry", _NOEVT),
    "irq.set_affinity": native("the emulated IOAPIC's destination field", _NOEVT),
    "irq.set_priority": never(_NOEVT + "; priorities are the APIC's TPR"),
    "irq.query": native("the emulated IOAPIC/PIC registers", _NOEVT),
    "irq.setup": native("the emulated PIC/IOAPIC", _NOEVT),
    "mmu.set_pte": call("SetPxE", source=_SRC + " vmi_set_pte"),
    "mmu.new_root": call("SetCR3", source=_SRC),
    "mmu.flush_tlb": call("FlushTLB", source=_SRC),
    "mmu.invlpg": call("InvalPage", source=_SRC),
    "mmu.pin": call("AllocatePage", source=_SRC + " vmi_allocate_pte"),
    "mmu.unpin": call("ReleasePage", source=_SRC + " vmi_release_pte"),
    "mmu.flush_cache": call("WBINVD", source=_SRC),
    "mmu.clear_page": native("the guest zeroes the frame"),
    "mmu.copy_page": native("the guest copies the frame"),
    "mmu.superpage": native("a PSE entry in the guest's table (SetPxE)"),
    "time.oneshot": call("SetAlarm", source=_T),
    "time.periodic": call("SetAlarm", source=_T + " (VMI_ALARM_IS_PERIODIC)"),
    "time.stop": call("CancelAlarm", source=_T),
    "time.read_clock": call("GetCycleCounter", source=_T + " vmi_read_real_cycles"),
    "time.runstate": call("GetCycleCounter", source=_T + " (VMI_CYCLES_STOLEN)"),
    "lock.wait": never("VMI 3.0 has no paravirtual spinlock calls"),
    "lock.kick": never("VMI 3.0 has no paravirtual spinlock calls"),
    "sched.yield": never("VMI 3.0 has no yield: a vCPU gives up the CPU only by Halt"),
    "sched.block": call("Halt", source=_SRC + " vmi_safe_halt"),
    "sched.watchdog": never("VMI 3.0 has no watchdog call"),
    "sched.pin_override": never("VMI 3.0 has no vCPU pinning call"),
    "power.shutdown": call("Shutdown", source=_SRC + " (Reboot for a restart)"),
    "power.set_reason": never("VMI 3.0 has no shutdown-reason call"),
    "console.write": native("the emulated UART (port 0x3F8)", "VMI has no console call"),
    "console.read": native("the emulated UART (port 0x3F8)", "VMI has no console call"),
    "info.version": native("the ROM header's API version", "read from the option ROM"),
    "info.features": native("cpuid", "VMI has no feature query"),
    "info.platform": call("GetCycleFrequency", source=_T),
    "info.assist": never("VMI 3.0 has no optional hypervisor behaviours to switch"),
    "info.vcpu": native("the APIC ID / MP table"),
    "memory.populate": never("a VMI guest owns fixed physical memory: no reservation calls"),
    "memory.release": never("a VMI guest owns fixed physical memory: no reservation calls"),
    "memory.exchange": never("a VMI guest owns fixed physical memory: no reservation calls"),
    "memory.query": native("the e820 map in boot_params"),
    "memory.map": native("the e820 map in boot_params"),
    "memory.physmap": never("VMI places no hypervisor frames in the guest's physical map"),
    "memory.set_m2p": never("Linux's VMI guests run with physical = machine (no M2P updates)"),
    "memory.share_area": never("VMI shares no memory areas with the guest: time comes from "
                               "GetCycleCounter"),
    "memory.grant_map": never("VMI has no grant tables"),
    "memory.grant_unmap": never("VMI has no grant tables"),
    "memory.grant_copy": never("VMI has no grant tables"),
    "memory.grant_transfer": never("VMI has no grant tables"),
    "memory.grant_setup": never("VMI has no grant tables"),
    "memory.cache_flush": never("VMI has no grant tables (and this is ARM only)"),
    "batch.submit": call("SetLazyMode", source=_SRC + " vmi_enter_lazy_mmu, vmi_leave_lazy"),
}
assert set(WAYS) == set(every_op()), set(every_op()) ^ set(WAYS)


def cycle_hz(target) -> int:
    """The cycle frequency the target's guest is told: the ROM's
    GetCycleFrequency answer (EDX:EAX), asked of the real backend."""
    b = target.backend
    b.call(_NR["GetCycleFrequency"], (0, 0, 0, 0, 0))
    out = b.out
    hz = (out.get("edx", 0) << 32) | out.get("eax", 0)
    return hz or 1_000_000_000


def setup(ctx: Ctx) -> list[Call]:
    """Nothing: the ROM answers from its first call."""
    return []


def batch_calls(n: int) -> int:
    """A batch of ``n`` entry calls: SetLazyMode(MMU), the ``n`` calls, SetLazyMode(off)
    (vmi_32.c: lazy mode queues nothing, it only lets the ROM defer the flush)."""
    return n + 2


def _hc(name: str, *args: int, mem: tuple = (), fed: bool = True) -> Call:
    a = (*[v & 0xFFFFFFFF for v in args], 0, 0, 0, 0, 0)
    return Call(name, _NR[name], a[:5], mem, "hc", fed)


#: The commonest expression (a clock read: GetCycleCounter(REAL)), made once;
#: the replay never changes what it is handed.
_READ_CLOCK = Expressed("call", [_hc("GetCycleCounter", abi.COUNTER_REAL)])


def _u(v) -> int:
    return v if type(v) is int else 0


def _narrow(v: int, what: str, losses: list[Loss]) -> int:
    if v >> 32:
        losses.append(Loss("64-bit value into a 32-bit ABI",
                           f"{what} {v:#x} keeps its low 32 bits: {v & 0xFFFFFFFF:#x}"))
    return v & 0xFFFFFFFF


def _gate(handler: int) -> tuple[int, int]:
    """A 32-bit interrupt gate (kernel CS, DPL 0, present) to ``handler``."""
    return (_KERNEL_CS << 16) | (handler & 0xFFFF), (handler & 0xFFFF0000) | 0x8E00


def express(op: PvOp, ctx: Ctx) -> Expressed | None:
    """``op`` as VMI ROM call(s); None for a native way."""
    name, a = op.op, op.args
    if name == "time.read_clock":
        return _READ_CLOCK
    if WAYS[name].how != "call":
        return None
    losses: list[Loss] = []
    scratch = ctx.target.scratch
    if name == "mmu.set_pte":
        pte = pte32(*pte_parts(a), losses)
        return Expressed("call", [_hc("SetPxE", pte, scratch + 4 * entry_index(a, 1024), 0)],
                         losses)
    if name == "mmu.new_root":
        if a.get("user"):
            return Expressed("native", why="a 32-bit guest has one page-table root for kernel "
                             "and user mode: nothing to switch")
        frame = frame_arg(a)
        return Expressed("call", [_hc("SetCR3", _narrow(frame << 12, "page-table root", losses))],
                         losses)
    if name == "mmu.flush_tlb":
        return Expressed("call", [_hc("FlushTLB", 1 if a.get("scope") in ("all", "multi")
                                      else 0)])
    if name == "mmu.invlpg":
        return Expressed("call", [_hc("InvalPage", _narrow(_u(a.get("va")), "address", losses))],
                         losses)
    if name in ("mmu.pin", "mmu.unpin"):
        frame = frame_arg(a)
        level = a.get("level")
        if name == "mmu.pin":
            if level in (3, 4):
                return Expressed("inexpressible", why=f"a level-{level} table: VMI's non-PAE "
                                 "paging has two levels")
            return Expressed("call", [_hc("AllocatePage", frame & 0xFFFFF,
                                          level if type(level) is int else 1, 0, 0, 0)])
        return Expressed("call", [_hc("ReleasePage", frame & 0xFFFFF, 0)])
    if name == "mmu.flush_cache":
        return Expressed("call", [_hc("WBINVD")])
    if name in ("time.oneshot", "time.periodic"):
        dl = deadline_of(op, ctx.src_hz)
        if dl is None:
            return Expressed("inexpressible", why=f"the source's timer ({op.call}) gives no "
                             "deadline pvmon can convert (a local APIC count)")
        hz = ctx.hz
        flags = abi.COUNTER_REAL
        if name == "time.periodic":
            flags |= abi.ALARM_IS_PERIODIC
            period = ns_to_cycles(max(0, dl.rel_ns), hz)
            err = cycles_to_ns(period, hz) - dl.rel_ns
            if err:
                losses.append(Loss("period rounded to cycles",
                                   f"{dl.rel_ns:,} ns at {hz:,} Hz: {period:,} cycles = "
                                   f"{cycles_to_ns(period, hz):,} ns", err))
            expiry = ns_to_cycles(op.t, hz) + period
        else:
            period = 0
            expiry = ns_to_cycles(max(0, dl.abs_ns), hz)
            err = cycles_to_ns(expiry, hz) - dl.abs_ns
            if err:
                losses.append(Loss("deadline rounded to cycles",
                                   f"{dl.abs_ns:,} ns at {hz:,} Hz: {expiry:,} cycles = "
                                   f"{cycles_to_ns(expiry, hz):,} ns", err))
        return Expressed("call", [_hc("SetAlarm", flags, expiry & 0xFFFFFFFF, expiry >> 32,
                                      period & 0xFFFFFFFF, period >> 32)], losses)
    if name == "time.stop":
        return Expressed("call", [_hc("CancelAlarm", abi.COUNTER_REAL)])
    if name == "time.read_clock":
        return _READ_CLOCK
    if name == "time.runstate":
        return Expressed("call", [_hc("GetCycleCounter", abi.COUNTER_STOLEN)])
    if name == "info.platform":
        return Expressed("call", [_hc("GetCycleFrequency")])
    if name == "cpu.set_trap":
        handler = _u(a.get("handler"))
        if "handler" not in a and type(a.get("desc")) is int:
            d = a["desc"]
            handler = (d & 0xFFFF) | ((d >> 32) & 0xFFFF0000)
        lo, hi = _gate(_narrow(handler, "handler", losses))
        vec = _u(a.get("vector", a.get("index"))) & 0xFF
        return Expressed("call", [_hc("WriteIDTEntry", scratch + 0x1000, vec, lo, hi)], losses)
    if name in ("cpu.write_descriptor", "cpu.set_segment_base"):
        if name == "cpu.set_segment_base":
            base = _narrow(_u(a.get("base")), "segment base", losses)
            lo = ((base & 0xFFFF) << 16) | 0xFFFF
            hi = (base & 0xFF000000) | ((base >> 16) & 0xFF) | 0x00CF9300
            index = 6
        else:
            d = _u(a.get("desc"))
            lo, hi, index = d & 0xFFFFFFFF, d >> 32 & 0xFFFFFFFF, _u(a.get("index")) & 511
        return Expressed("call", [_hc("WriteGDTEntry", scratch + 0x2000, index, lo, hi)],
                         losses)
    if name == "cpu.load_gdt":
        limit = _u(a.get("limit")) or (8 * (_u(a.get("entries")) or 32) - 1)
        raw = struct.pack("<HI", limit & 0xFFFF, scratch + 0x2000)
        return Expressed("call", [_hc("SetGDT", scratch + 0x3000,
                                      mem=(("p", scratch + 0x3000, raw),))])
    if name == "cpu.set_ldt":
        return Expressed("call", [_hc("SetLDT", _u(a.get("sel")))])
    if name == "cpu.set_stack":
        sp = _narrow(_u(a.get("sp", a.get("esp0"))), "stack pointer", losses)
        return Expressed("call", [_hc("UpdateKernelStack", 0x68, sp)], losses)
    if name == "cpu.iret":
        return Expressed("call", [_hc("IRET", fed=False)])
    if name == "cpu.fpu_trap":
        if a.get("ts"):
            from unicorn import x86_const as x86
            cr0 = ctx.target.machine.uc.reg_read(x86.UC_X86_REG_CR0)
            return Expressed("call", [_hc("SetCR0", cr0 | 8)])
        return Expressed("call", [_hc("CLTS")])
    if name in ("cpu.set_debugreg", "cpu.get_debugreg"):
        reg = _u(a.get("reg", a.get("dr"))) & 7
        if name == "cpu.get_debugreg":
            return Expressed("call", [_hc("GetDR", reg)])
        return Expressed("call", [_hc("SetDR", reg, _narrow(_u(a.get("value", a.get("val"))),
                                                            "debug register", losses))], losses)
    if name == "cpu.set_iopl":
        return Expressed("call", [_hc("SetIOPLMask", _u(a.get("mask", a.get("iopl", 0)) << 12)
                                      if "iopl" in a else _u(a.get("mask")))])
    if name == "cpu.cpuid":
        return Expressed("call", [_hc("CPUID", _u(a.get("leaf")), 0, _u(a.get("sub")))])
    if name in ("cpu.vcpu_up", "cpu.vcpu_init"):
        nm = "APICWrite" if name == "cpu.vcpu_up" else "SetInitialAPState"
        return Expressed("call", [_hc(nm, fed=False)],
                         [Loss("arguments not derivable",
                               f"{name}: the vCPU's register state is not in the canonical "
                               "operation (counted, not fed)")])
    if name in ("irq.mask", "irq.unmask"):
        if "port" in a or "irq" in a:
            return Expressed("native", why="a device line: the emulated IOAPIC/PIC mask")
        return Expressed("call", [_hc("DisableInterrupts" if name == "irq.mask"
                                      else "EnableInterrupts")])
    if name in ("irq.eoi", "irq.send_ipi", "irq.send_nmi"):
        reg, val = {"irq.eoi": (0xB0, 0), "irq.send_ipi": (0x300, _u(a.get("vector")) | 0x4000),
                    "irq.send_nmi": (0x300, 0x4400)}[name]
        return Expressed("call", [_hc("APICWrite", reg, val)])
    if name == "sched.block":
        return Expressed("call", [_hc("Halt")])
    if name == "power.shutdown":
        if a.get("reason") in ("reboot", "reset"):
            return Expressed("call", [_hc("Reboot", 1)])
        return Expressed("call", [_hc("Shutdown")])
    if name == "batch.submit":
        return Expressed("call", [_hc("SetLazyMode", LAZY_MMU), _hc("SetLazyMode", LAZY_OFF)])
    return Expressed("inexpressible", why=f"{name}: no translation written")
