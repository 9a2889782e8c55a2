"""How lguest (4.13, a non-PAE host) expresses each canonical operation
(cross-ABI replay, :mod:`pvmon.replay.crossabi`), per the calls Linux's
lguest guest made (arch/x86/lguest/boot.c [LGB], lguest_hcall.h; docs/lguest.md).

lguest is 32-bit and uniprocessor: a 64-bit entry, address or frame above
4 GiB loses its high bits, a level-3/4 entry has no place in its 2-level
tables, and SMP operations are inexpressible. Its clock event takes a
*relative* delta in ns (``LHCALL_SET_CLOCKEVENT``, 0 = stop), so an absolute
deadline becomes ``deadline - now``: exact in the recorded virtual time, but
the host adds the delta to *its* now, which is later by the call's own entry
cost, and a deadline already past cannot be given at all (0 would stop the
timer: it is sent as 1 ns). Batches go to the asynchronous ring in
``lguest_data`` and cost one ``LHCALL_FLUSH_ASYNC``. Every call before
``LHCALL_LGUEST_INIT`` kills the guest, so the target is set up with one.
"""

from __future__ import annotations

import struct

from pvmon.backends.lguest import abi
from pvmon.pvops import PvOp
from pvmon.replay.crossabi import (
    Call,
    Ctx,
    Expressed,
    Loss,
    Way,
    call,
    deadline_of,
    entry_index,
    every_op,
    frame_arg,
    native,
    never,
    pte32,
    pte_parts,
)

ABI = "lguest"
LABEL = "lguest 4.13"
REFERENCE_GUEST = "pvtest-lguest"
MODE = None
#: lguest calls return nothing; a refusal kills the guest (a stop)
RET_IS_STATUS = False
_NR = {v: k for k, v in abi.HYPERCALLS.items()}
_B = "arch/x86/lguest/boot.c"
_UP = "lguest guests are uniprocessor (no SMP in lguest)"
_NOEVT = "lguest's 32 interrupts are fixed lines the Launcher raises: nothing to bind"
_FIXED = "an lguest guest owns the fixed memory the Launcher gave it"
U32_MAX = 0xFFFFFFFF

WAYS: dict[str, Way] = {
    "cpu.load_gdt": call("LHCALL_LOAD_GDT_ENTRY", source=_B + " lguest_load_gdt (one call "
                         "per entry)"),
    "cpu.write_descriptor": call("LHCALL_LOAD_GDT_ENTRY", source=_B + " lguest_write_gdt_entry"),
    "cpu.set_ldt": never("lguest has no LDT call (lguest_hcall.h); the Switcher's GDT has no "
                         "LDT descriptor"),
    "cpu.set_trap": call("LHCALL_LOAD_IDT_ENTRY", source=_B + " lguest_write_idt_entry"),
    "cpu.set_callback": never("lguest delivers interrupts through the guest's IDT "
                              "(LOAD_IDT_ENTRY): there is no callback entry point"),
    "cpu.set_stack": call("LHCALL_SET_STACK", source=_B + " lguest_load_sp0"),
    "cpu.set_segment_base": call("LHCALL_LOAD_GDT_ENTRY", source=_B + " (a TLS descriptor's "
                                 "base; lguest_load_tls)"),
    "cpu.iret": native("iret", "the guest returns itself (lguest_iret restores irq_enabled)",
                       "arch/x86/lguest/head_32.S lguest_iret"),
    "cpu.fpu_trap": call("LHCALL_TS", source=_B + " lguest_write_cr0, lguest_clts"),
    "cpu.set_debugreg": never("lguest has no debug-register call (lguest_hcall.h)"),
    "cpu.get_debugreg": never("lguest has no debug-register call (lguest_hcall.h)"),
    "cpu.set_iopl": never("lguest has no I/O-privilege call (lguest_hcall.h)"),
    "cpu.set_iobitmap": never("lguest has no I/O-bitmap call (lguest_hcall.h)"),
    "cpu.cpuid": native("cpuid", "executed natively and filtered by the guest", _B + " lguest_cpuid"),
    "cpu.vcpu_up": never(_UP), "cpu.vcpu_down": never(_UP), "cpu.vcpu_init": never(_UP),
    "irq.mask": native("lguest_data.irq_enabled = 0", "a word in shared memory", _B),
    "irq.unmask": native("lguest_data.irq_enabled / blocked_interrupts",
                         "a word in shared memory; LHCALL_SEND_INTERRUPTS only when "
                         "irq_pending was set meanwhile", _B + " lguest_irq_enable"),
    "irq.eoi": native("nothing", "the host clears the interrupt as it delivers it"),
    "irq.send_ipi": never(_UP), "irq.send_nmi": never(_UP),
    "irq.notify": native("a virtio-PCI notify write the Launcher traps",
                         "devices are the Launcher's virtio-PCI devices (4.1 on)"),
    "irq.bind": never(_NOEVT), "irq.unbind": never(_NOEVT), "irq.set_affinity": never(_UP),
    "irq.set_priority": never(_NOEVT), "irq.query": never(_NOEVT),
    "irq.setup": native("lguest_data.blocked_interrupts", "registered once by LGUEST_INIT"),
    "mmu.set_pte": call("LHCALL_SET_PTE", source=_B + " lguest_set_pte_at (SET_PGD for a "
                        "page-directory entry)"),
    "mmu.new_root": call("LHCALL_NEW_PGTABLE", source=_B + " lguest_write_cr3"),
    "mmu.flush_tlb": call("LHCALL_FLUSH_TLB", source=_B + " lguest_flush_tlb_user/kernel"),
    "mmu.invlpg": call("LHCALL_SET_PTE", source=_B + " lguest_flush_tlb_single (a zero PTE "
                       "drops the shadow)"),
    "mmu.pin": native("nothing", "the host shadows whatever the guest's tables say: no pinning"),
    "mmu.unpin": native("nothing", "the host shadows whatever the guest's tables say"),
    "mmu.flush_cache": never("wbinvd is privileged and lguest has no call for it"),
    "mmu.clear_page": native("the guest zeroes the frame"),
    "mmu.copy_page": native("the guest copies the frame"),
    "mmu.superpage": never("lguest refuses large pages (check_gpte kills a PSE entry)"),
    "time.oneshot": call("LHCALL_SET_CLOCKEVENT", source=_B + " lguest_clockevent_set_next_event"),
    "time.periodic": call("LHCALL_SET_CLOCKEVENT", source=_B + " (one-shot only: re-armed "
                          "every tick)"),
    "time.stop": call("LHCALL_SET_CLOCKEVENT", source=_B + " lguest_clockevent_shutdown (0)"),
    "time.read_clock": native("rdtsc / lguest_data.time", "the TSC is not trapped", _B),
    "time.runstate": never("lguest exposes no steal time"),
    "lock.wait": never(_UP), "lock.kick": never(_UP),
    "sched.yield": never("lguest has no yield call: the host preempts a spinning guest"),
    "sched.block": call("LHCALL_HALT", source=_B + " lguest_safe_halt"),
    "sched.watchdog": never("lguest has no watchdog call"),
    "sched.pin_override": never(_UP),
    "power.shutdown": call("LHCALL_SHUTDOWN", source=_B + " lguest_power_off, lguest_restart"),
    "power.set_reason": never("LHCALL_SHUTDOWN stops at once: no reason without stopping"),
    "console.write": native("the virtio console's emerg_wr through the PCI config window",
                            "a device register the Launcher traps", "tools/lguest/lguest.c"),
    "console.read": native("the virtio console's receive queue", "a device"),
    "info.version": never("lguest has no version query (host and guest are one kernel tree)"),
    "info.features": native("cpuid", "lguest has no feature query"),
    "info.platform": native("lguest_data.tsc_khz, reserve_mem", "fields the host fills at INIT"),
    "info.assist": never("lguest has no optional hypervisor behaviours to switch"),
    "info.vcpu": never(_UP),
    "memory.populate": never(_FIXED), "memory.release": never(_FIXED),
    "memory.exchange": never(_FIXED),
    "memory.query": native("the e820 map in boot_params", _FIXED),
    "memory.map": native("the e820 map in boot_params", _FIXED),
    "memory.physmap": never(_FIXED), "memory.set_m2p": never("lguest guests run physical = "
                                                             "machine: there is no M2P"),
    "memory.share_area": native("lguest_data (registered once by LGUEST_INIT)",
                                "one shared area, fixed at INIT"),
    "memory.grant_map": never("lguest has no grant tables (the Launcher maps all guest memory)"),
    "memory.grant_unmap": never("lguest has no grant tables"),
    "memory.grant_copy": never("lguest has no grant tables"),
    "memory.grant_transfer": never("lguest has no grant tables"),
    "memory.grant_setup": never("lguest has no grant tables"),
    "memory.cache_flush": never("lguest has no grant tables (and this is ARM only)"),
    "batch.submit": call("LHCALL_FLUSH_ASYNC", source=_B + " lazy_hcall*, "
                         "drivers/lguest/hypercalls.c do_async_hcalls"),
}
assert set(WAYS) == set(every_op()), set(every_op()) ^ set(WAYS)


def setup(ctx: Ctx) -> list[Call]:
    """LHCALL_LGUEST_INIT with a ``lguest_data`` in the scratch area (every
    other call before it kills the guest): its syscall vector, an empty ring."""
    ld = ctx.target.scratch + 0x4000
    ctx.state["lguest_data"] = ld
    ctx.state["pgdir"] = ctx.target.scratch
    ring = struct.pack("<64B", *([0xFF] * abi.RING_SIZE))
    tail = struct.pack("<3I", 0, 0xC0000000, abi.SYSCALL_VECTOR)
    return [Call("LHCALL_LGUEST_INIT", _NR["LHCALL_LGUEST_INIT"], (ld, 0, 0, 0),
                 (("p", ld + abi.LD_HCALL_STATUS, ring), ("p", ld + abi.LD_NOIRQ_IRET, tail)))]


def batch_calls(n: int) -> int:
    """A batch's ``n`` entries go to the ring in lguest_data; one
    LHCALL_FLUSH_ASYNC has the host run them."""
    return 1 if n else 0


def _hc(name: str, *args: int, mem: tuple = (), fed: bool = True) -> Call:
    a = tuple(v & U32_MAX for v in args) + (0,) * (4 - len(args))
    return Call(name, _NR[name], a[:4], mem, "hc", fed)


def _u(v) -> int:
    return v if type(v) is int else 0


def _narrow(v: int, what: str, losses: list[Loss]) -> int:
    if v >> 32:
        losses.append(Loss("64-bit value into a 32-bit ABI",
                           f"{what} {v:#x} keeps its low 32 bits: {v & U32_MAX:#x}"))
    return v & U32_MAX


def express(op: PvOp, ctx: Ctx) -> Expressed | None:
    """``op`` as lguest hypercall(s); None for a native way."""
    name, a = op.op, op.args
    if WAYS[name].how != "call":
        return None
    losses: list[Loss] = []
    st = ctx.state
    pgdir = st.get("pgdir", ctx.target.scratch)
    if name == "mmu.set_pte":
        level = a.get("level")
        if level in (3, 4):
            return Expressed("inexpressible", why=f"a level-{level} entry: lguest's non-PAE "
                             "tables have two levels")
        pte = pte32(*pte_parts(a), losses)
        va = a.get("va")
        va = _narrow(va, "address", losses) if type(va) is int else entry_index(a, 1024) << 12
        if level == 2:
            return Expressed("call", [_hc("LHCALL_SET_PGD", pgdir, (va >> 22) & 1023)], losses)
        return Expressed("call", [_hc("LHCALL_SET_PTE", pgdir, va, pte, 0)], losses)
    if name == "mmu.invlpg":
        return Expressed("call", [_hc("LHCALL_SET_PTE", pgdir,
                                      _narrow(_u(a.get("va")), "address", losses), 0, 0)], losses)
    if name == "mmu.new_root":
        if a.get("user"):
            return Expressed("native", why="a 32-bit guest has one page-table root for kernel "
                             "and user mode: nothing to switch")
        pa = _narrow(frame_arg(a) << 12, "page-table root", losses)
        st["pgdir"] = pa
        return Expressed("call", [_hc("LHCALL_NEW_PGTABLE", pa)], losses)
    if name == "mmu.flush_tlb":
        return Expressed("call", [_hc("LHCALL_FLUSH_TLB", 1 if a.get("scope") != "user" else 0)])
    if name in ("time.oneshot", "time.periodic"):
        dl = deadline_of(op, ctx.src_hz)
        if dl is None:
            return Expressed("inexpressible", why=f"the source's timer ({op.call}) gives no "
                             "deadline pvmon can convert (a local APIC count)")
        delta = dl.rel_ns
        if name == "time.periodic":
            losses.append(Loss("periodic into one-shot",
                               f"a {delta:,} ns period becomes one {delta:,} ns delta: the "
                               "guest re-arms it every tick (one call per tick)"))
        elif op.args.get("relative") is not True:
            cost = ctx.target.clock.costs.hypercall_ns
            losses.append(Loss("deadline made relative",
                               f"absolute {dl.abs_ns:,} ns sent as delta {delta:,} ns from the "
                               f"guest's now; the host adds it to its own now, {cost:,} ns later "
                               "(the call's entry cost)", cost))
        if delta <= 0:
            losses.append(Loss("deadline already past",
                               f"deadline {-delta:,} ns in the past: a delta of 0 would stop "
                               "the timer, so 1 ns", 1 - delta))
            delta = 1
        elif delta > U32_MAX:
            losses.append(Loss("deadline beyond a 32-bit delta",
                               f"delta {delta:,} ns clamped to {U32_MAX:,} ns", U32_MAX - delta))
            delta = U32_MAX
        return Expressed("call", [_hc("LHCALL_SET_CLOCKEVENT", delta)], losses)
    if name == "time.stop":
        return Expressed("call", [_hc("LHCALL_SET_CLOCKEVENT", 0)])
    if name == "cpu.set_trap":
        vec = _u(a.get("vector", a.get("index"))) & 0xFF
        handler = _u(a.get("handler"))
        if "handler" not in a and type(a.get("desc")) is int:
            d = a["desc"]
            handler = (d & 0xFFFF) | ((d >> 32) & 0xFFFF0000)
        handler = _narrow(handler, "handler", losses)
        lo = (abi.KERNEL_CS << 16) | (handler & 0xFFFF)
        hi = (handler & 0xFFFF0000) | 0x8E00
        return Expressed("call", [_hc("LHCALL_LOAD_IDT_ENTRY", vec, lo, hi)], losses)
    if name in ("cpu.write_descriptor", "cpu.set_segment_base"):
        if name == "cpu.set_segment_base":
            base = _narrow(_u(a.get("base")), "segment base", losses)
            lo = ((base & 0xFFFF) << 16) | 0xFFFF
            hi = (base & 0xFF000000) | ((base >> 16) & 0xFF) | 0x00CFB300
            index = abi.GDT_ENTRY_TLS_MIN
        else:
            d = _u(a.get("desc"))
            lo, hi, index = d & U32_MAX, d >> 32 & U32_MAX, _u(a.get("index"))
        return Expressed("call", [_hc("LHCALL_LOAD_GDT_ENTRY", index, lo, hi)], losses)
    if name == "cpu.load_gdt":
        n = _u(a.get("entries")) or ((_u(a.get("limit")) + 1) // 8) or abi.GDT_ENTRIES
        n = min(n, abi.GDT_ENTRIES)
        return Expressed("call", [_hc("LHCALL_LOAD_GDT_ENTRY", i, fed=False) for i in range(n)],
                         [Loss("arguments not derivable",
                               "the descriptors live in guest memory the canonical operation "
                               f"does not carry: {n} LOAD_GDT_ENTRY calls counted, not fed")])
    if name == "cpu.set_stack":
        sp = _narrow(_u(a.get("sp", a.get("esp0"))), "stack pointer", losses)
        # selectors are per ABI: the target's own kernel data segment
        return Expressed("call", [_hc("LHCALL_SET_STACK", abi.KERNEL_DS, sp, 2)], losses)
    if name == "cpu.fpu_trap":
        return Expressed("call", [_hc("LHCALL_TS", 8 if a.get("ts") else 0)])
    if name == "sched.block":
        return Expressed("call", [_hc("LHCALL_HALT")])
    if name == "power.shutdown":
        msg_pa = ctx.target.scratch + 0x5000
        reason = abi.LGUEST_SHUTDOWN_RESTART if a.get("reason") in ("reboot", "reset") \
            else abi.LGUEST_SHUTDOWN_POWEROFF
        return Expressed("call", [_hc("LHCALL_SHUTDOWN", msg_pa, reason,
                                      mem=(("p", msg_pa, b"Power down\0"),))])
    if name == "batch.submit":
        return Expressed("call", [_hc("LHCALL_FLUSH_ASYNC")])
    return Expressed("inexpressible", why=f"{name}: no translation written")
