"""How Xen expresses each canonical operation (cross-ABI replay,
:mod:`pvmon.replay.crossabi`): :data:`PV` for a PV domain, :data:`PVH` for
a PVH one (the HVM platform: the CPU does the MMU, descriptor tables, traps
and halts itself; events, timers, console, memory and information stay
hypercalls). Sources: the xen.git public headers named in
:mod:`pvmon.backends.xen.pvops` and Linux arch/x86/xen (enlighten_pv.c,
mmu_pv.c, time.c, enlighten_pvh.c).

Arguments: every call reads its structures through a guest-virtual pointer
into a scratch area; page-table entries land in a scratch table of the target
domain at the index the source entry's address implies (the source's table
frames are not the target's). Xen takes 64-bit entries and absolute ns
deadlines, so nothing a 32-bit ABI gives it loses precision; a relative
deadline (lguest) becomes absolute through the operation's own virtual time.
"""

from __future__ import annotations

import struct
from typing import Any

from pvmon.backends.xen import abi
from pvmon.platforms.hvm.native import HVM_NATIVE, HVM_NATIVE_WHY
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
    pte_parts,
)

_XEN_H = "xen/include/public/xen.h"
_VCPU_H = "xen/include/public/vcpu.h"
_EVT_H = "xen/include/public/event_channel.h"
#: Guest-virtual address of the argument area (served from each call's own bytes).
ARG_VA = 0xFFFF_C900_0000_0000
ARG2_VA = ARG_VA + 0x1000
_NR = abi.HYPERCALL_NUMBERS

_PV_WAYS: dict[str, Way] = {
    "cpu.load_gdt": call("set_gdt", source=_XEN_H),
    "cpu.write_descriptor": call("update_descriptor", source=_XEN_H),
    "cpu.set_ldt": call("mmuext_op", source=_XEN_H + " MMUEXT_SET_LDT"),
    "cpu.set_trap": call("set_trap_table", source=_XEN_H),
    "cpu.set_callback": call("callback_op", source="xen/include/public/callback.h"),
    "cpu.set_stack": call("stack_switch", source=_XEN_H),
    "cpu.set_segment_base": call("set_segment_base",
                                 source="xen/include/public/arch-x86/xen-x86_64.h"),
    "cpu.iret": call("iret", source="xen/include/public/arch-x86/xen-x86_64.h",
                     why="restores vCPU registers from the guest stack: counted, not fed"),
    "cpu.fpu_trap": call("fpu_taskswitch", source=_XEN_H),
    "cpu.set_debugreg": call("set_debugreg", source=_XEN_H),
    "cpu.get_debugreg": call("get_debugreg", source=_XEN_H),
    "cpu.set_iopl": call("physdev_op", source="xen/include/public/physdev.h PHYSDEVOP_set_iopl"),
    "cpu.set_iobitmap": call("physdev_op",
                             source="xen/include/public/physdev.h PHYSDEVOP_set_iobitmap"),
    "cpu.cpuid": native("cpuid (forced-emulation prefix, trapped by Xen)",
                        "a trap Xen emulates, not a hypercall", "arch/x86/xen/enlighten_pv.c"),
    "cpu.vcpu_up": call("vcpu_op", source=_VCPU_H),
    "cpu.vcpu_down": call("vcpu_op", source=_VCPU_H),
    "cpu.vcpu_init": call("vcpu_op", source=_VCPU_H),
    "irq.mask": native("evtchn_upcall_mask / evtchn_mask bit in shared memory",
                       "Xen PV masks by a bit in shared_info or vcpu_info, no call",
                       "arch/x86/xen/irq.c xen_irq_disable"),
    "irq.unmask": call("event_channel_op", source=_EVT_H + " EVTCHNOP_unmask",
                       why="a port's unmask is a call; the global interrupt flag is "
                           "vcpu_info.evtchn_upcall_mask (native)"),
    "irq.eoi": call("physdev_op", source="xen/include/public/physdev.h PHYSDEVOP_eoi"),
    "irq.send_ipi": call("event_channel_op", source=_EVT_H + " EVTCHNOP_send"),
    "irq.notify": call("event_channel_op", source=_EVT_H + " EVTCHNOP_send"),
    "irq.send_nmi": call("vcpu_op", source=_VCPU_H + " VCPUOP_send_nmi"),
    "irq.bind": call("event_channel_op", source=_EVT_H),
    "irq.unbind": call("event_channel_op", source=_EVT_H + " EVTCHNOP_close"),
    "irq.set_affinity": call("event_channel_op", source=_EVT_H + " EVTCHNOP_bind_vcpu"),
    "irq.set_priority": call("event_channel_op", source=_EVT_H + " EVTCHNOP_set_priority"),
    "irq.query": call("event_channel_op", source=_EVT_H + " EVTCHNOP_status"),
    "irq.setup": call("event_channel_op", source=_EVT_H + " EVTCHNOP_init_control"),
    "mmu.set_pte": call("mmu_update", source=_XEN_H),
    "mmu.new_root": call("mmuext_op", source=_XEN_H + " MMUEXT_NEW_BASEPTR"),
    "mmu.flush_tlb": call("mmuext_op", source=_XEN_H + " MMUEXT_TLB_FLUSH_LOCAL"),
    "mmu.invlpg": call("mmuext_op", source=_XEN_H + " MMUEXT_INVLPG_LOCAL"),
    "mmu.pin": call("mmuext_op", source=_XEN_H + " MMUEXT_PIN_Ln_TABLE"),
    "mmu.unpin": call("mmuext_op", source=_XEN_H + " MMUEXT_UNPIN_TABLE"),
    "mmu.flush_cache": call("mmuext_op", source=_XEN_H + " MMUEXT_FLUSH_CACHE"),
    "mmu.clear_page": call("mmuext_op", source=_XEN_H + " MMUEXT_CLEAR_PAGE"),
    "mmu.copy_page": call("mmuext_op", source=_XEN_H + " MMUEXT_COPY_PAGE"),
    "mmu.superpage": call("mmuext_op", source=_XEN_H + " MMUEXT_MARK_SUPER"),
    "time.oneshot": call("vcpu_op", source=_VCPU_H + " VCPUOP_set_singleshot_timer"),
    "time.periodic": call("vcpu_op", source=_VCPU_H + " VCPUOP_set_periodic_timer"),
    "time.stop": call("vcpu_op", source=_VCPU_H + " VCPUOP_stop_singleshot_timer"),
    "time.read_clock": native("rdtsc + pvclock in vcpu_info", "the TSC is not trapped",
                              "arch/x86/xen/time.c xen_clocksource_read"),
    "time.runstate": call("vcpu_op", source=_VCPU_H + " VCPUOP_get_runstate_info"),
    "lock.wait": call("sched_op", source="xen/include/public/sched.h SCHEDOP_poll"),
    "lock.kick": call("event_channel_op", source=_EVT_H + " EVTCHNOP_send"),
    "sched.yield": call("sched_op", source="xen/include/public/sched.h SCHEDOP_yield"),
    "sched.block": call("sched_op", source="xen/include/public/sched.h SCHEDOP_block"),
    "sched.watchdog": call("sched_op", source="xen/include/public/sched.h SCHEDOP_watchdog"),
    "sched.pin_override": call("sched_op",
                               source="xen/include/public/sched.h SCHEDOP_pin_override"),
    "power.shutdown": call("sched_op", source="xen/include/public/sched.h SCHEDOP_shutdown"),
    "power.set_reason": call("sched_op",
                             source="xen/include/public/sched.h SCHEDOP_shutdown_code"),
    "console.write": call("console_io", source=_XEN_H + " CONSOLEIO_write"),
    "console.read": call("console_io", source=_XEN_H + " CONSOLEIO_read"),
    "info.version": call("xen_version", source="xen/include/public/version.h"),
    "info.features": call("xen_version", source="xen/include/public/version.h XENVER_get_features"),
    "info.platform": call("xen_version", source="xen/include/public/version.h"),
    "info.assist": call("vm_assist", source=_XEN_H),
    "info.vcpu": call("vcpu_op", source=_VCPU_H + " VCPUOP_is_up"),
    "memory.populate": call("memory_op", source="xen/include/public/memory.h"),
    "memory.release": call("memory_op", source="xen/include/public/memory.h"),
    "memory.exchange": call("memory_op", source="xen/include/public/memory.h"),
    "memory.query": call("memory_op", source="xen/include/public/memory.h"),
    "memory.map": call("memory_op", source="xen/include/public/memory.h XENMEM_memory_map"),
    "memory.physmap": call("memory_op", source="xen/include/public/memory.h"),
    "memory.set_m2p": call("mmu_update", source=_XEN_H + " MMU_MACHPHYS_UPDATE"),
    "memory.share_area": call("vcpu_op", source=_VCPU_H + " VCPUOP_register_*"),
    "memory.grant_map": call("grant_table_op", source="xen/include/public/grant_table.h"),
    "memory.grant_unmap": call("grant_table_op", source="xen/include/public/grant_table.h"),
    "memory.grant_copy": call("grant_table_op", source="xen/include/public/grant_table.h"),
    "memory.grant_transfer": call("grant_table_op", source="xen/include/public/grant_table.h"),
    "memory.grant_setup": call("grant_table_op", source="xen/include/public/grant_table.h"),
    "memory.cache_flush": never("GNTTABOP_cache_flush is ARM only"),
    "batch.submit": call("multicall", source=_XEN_H),
}
assert set(_PV_WAYS) == set(every_op()), set(every_op()) ^ set(_PV_WAYS)

_HVM = HVM_NATIVE_WHY
_PVH_WAYS: dict[str, Way] = {
    **_PV_WAYS,
    **{op: native(ev, _HVM, "arch/x86/xen/enlighten_pvh.c") for op, ev in HVM_NATIVE.items()},
    **{op: native(ev, _HVM, "arch/x86/xen/enlighten_pvh.c") for op, ev in (
        ("cpu.set_callback", "the event vector via HVM_PARAM_CALLBACK_IRQ (irq.setup)"),
        ("cpu.cpuid", "cpuid (a VM exit Xen answers)"),
        ("irq.mask", "cli / LAPIC mask"), ("irq.eoi", "LAPIC EOI write"),
        ("irq.send_nmi", "LAPIC ICR write"),
        ("mmu.pin", "nothing: HAP page tables are ordinary memory"),
        ("mmu.unpin", "nothing: HAP page tables are ordinary memory"),
        ("sched.block", "hlt (a VM exit)"),
        ("time.read_clock", "rdtsc + pvclock"))},
    "memory.set_m2p": never("a PVH domain has no machine-to-physical table of its own "
                            "(translated paging)"),
    "batch.submit": native("nothing to batch: the MMU operations are the CPU's",
                           "Linux's PVH lazy MMU mode issues no multicall"),
}
assert set(_PVH_WAYS) == set(_PV_WAYS)


def _u32(v: Any) -> int:
    return v & 0xFFFFFFFF if type(v) is int else 0


def _u64(v: Any) -> int:
    return v & 0xFFFF_FFFF_FFFF_FFFF if type(v) is int else 0


class XenExpress:
    """Xen's expression of canonical operations, for a PV (``pvh`` False) or
    PVH domain: the express protocol of :mod:`pvmon.replay.crossabi`."""

    #: a target's status comes back in RAX (negative errno)
    RET_IS_STATUS = True
    #: Xen's calls read their structures through guest-virtual pointers: the
    #: replay serves each call's ``v`` memory as open loop serves recorded reads
    VIRTUAL_ARGS = True

    def __init__(self, pvh: bool) -> None:
        self.pvh = pvh
        self.ABI = "xen-pvh" if pvh else "xen"
        self.LABEL = "Xen PVH" if pvh else "Xen PV"
        self.REFERENCE_GUEST = "pvtest-v2-pvh" if pvh else "pvtest-v2"
        self.MODE = "pvh" if pvh else None
        self.WAYS = _PVH_WAYS if pvh else _PV_WAYS

    def setup(self, ctx: Ctx) -> list[Call]:
        """Nothing: a Xen domain takes calls from its first instruction."""
        return []

    def batch_calls(self, n: int) -> int:
        """A batch of ``n`` entry calls: one multicall (PV; an mmu_update array
        would do as well); PVH has nothing to batch (the entries are native)."""
        if self.pvh:
            return n
        return 1 if n else 0

    @staticmethod
    def _hc(name: str, *args: int, mem: tuple = (), fed: bool = True) -> Call:
        a = tuple(args) + (0,) * (5 - len(args))
        return Call(name, _NR[name], a[:5], mem, "hc", fed)

    def express(self, op: PvOp, ctx: Ctx) -> Expressed | None:
        """``op`` as Xen call(s) with their arguments; None for a native way."""
        name, a = op.op, op.args
        if self.WAYS[name].how != "call":
            return None
        hc = self._hc
        losses: list[Loss] = []
        if name == "mmu.set_pte":
            frame, flags = pte_parts(a)
            ptr = ctx.target.scratch + 8 * entry_index(a, 512)
            val = ((_u64(frame) << 12) & 0x000F_FFFF_FFFF_F000) | (_u64(flags) & ~0x000F_FFFF_FFFF_F000)
            req = struct.pack("<QQ", ptr | abi.MMU_NORMAL_PT_UPDATE, val)
            return Expressed("call", [hc("mmu_update", ARG_VA, 1, 0, abi.DOMID_SELF,
                                         mem=(("v", ARG_VA, req),))])
        if name in ("mmu.new_root", "mmu.flush_tlb", "mmu.invlpg", "mmu.pin", "mmu.unpin",
                    "mmu.flush_cache", "mmu.clear_page", "mmu.copy_page", "mmu.superpage",
                    "cpu.set_ldt"):
            frame = frame_arg(a)
            level = a.get("level") if type(a.get("level")) is int else None
            cmd, arg1, arg2 = {
                "mmu.new_root": ("NEW_BASEPTR", frame, 0),
                "mmu.flush_tlb": ("TLB_FLUSH_LOCAL", 0, 0),
                "mmu.invlpg": ("INVLPG_LOCAL", _u64(a.get("va")), 0),
                "mmu.pin": (f"PIN_L{level if level in (1, 2, 3, 4) else 1}_TABLE", frame, 0),
                "mmu.unpin": ("UNPIN_TABLE", frame, 0),
                "mmu.flush_cache": ("FLUSH_CACHE", 0, 0),
                "mmu.clear_page": ("CLEAR_PAGE", frame, 0),
                "mmu.copy_page": ("COPY_PAGE", frame, _u64(a.get("src_frame"))),
                "mmu.superpage": ("MARK_SUPER", frame, 0),
                "cpu.set_ldt": ("SET_LDT", _u64(a.get("va")), _u32(a.get("entries"))),
            }[name]
            if name == "mmu.pin" and level not in (1, 2, 3, 4):
                losses.append(Loss("page-table level not given",
                                   "the source ABI does not say a pinned table's level: "
                                   "pinned as L1"))
            raw = struct.pack("<I4xQQ", abi.MMUEXT[cmd], arg1, arg2)
            return Expressed("call", [hc("mmuext_op", ARG_VA, 1, 0, abi.DOMID_SELF,
                                         mem=(("v", ARG_VA, raw),))], losses)
        if name in ("time.oneshot", "time.periodic", "time.stop"):
            vcpu = 0
            if name == "time.stop":
                sub = "stop_periodic_timer" if a.get("timer") == "periodic" \
                    else "stop_singleshot_timer"
                return Expressed("call", [hc("vcpu_op", abi.VCPUOP[sub], vcpu, 0)])
            dl = deadline_of(op, ctx.src_hz)
            if dl is None:
                return Expressed("inexpressible",
                                 why=f"the source's timer ({op.call}) gives no deadline pvmon "
                                     "can convert to ns (a local APIC count)")
            if name == "time.periodic":
                raw = struct.pack("<Q", _u64(max(0, dl.rel_ns)))
                return Expressed("call", [hc("vcpu_op", abi.VCPUOP["set_periodic_timer"], vcpu,
                                             ARG_VA, mem=(("v", ARG_VA, raw),))])
            raw = struct.pack("<QI4x", _u64(max(0, dl.abs_ns)), 0)
            return Expressed("call", [hc("vcpu_op", abi.VCPUOP["set_singleshot_timer"], vcpu,
                                         ARG_VA, mem=(("v", ARG_VA, raw),))])
        if name == "cpu.set_trap":
            vec = _u32(a.get("vector", a.get("index", 0))) & 0xFF
            handler = _u64(a.get("handler", a.get("desc", 0)))
            if "handler" not in a and type(a.get("desc")) is int:
                d = a["desc"]                      # a 32-bit gate: offset 0-15 and 48-63
                handler = (d & 0xFFFF) | ((d >> 32) & 0xFFFF0000)
            raw = struct.pack("<BBH4xQ", vec, 0, 0xE033, handler) + bytes(16)
            return Expressed("call", [hc("set_trap_table", ARG_VA,
                                         mem=(("v", ARG_VA, raw),))])
        if name == "cpu.set_stack":
            return Expressed("call", [hc("stack_switch", _u32(a.get("ss", 0xE02B)),
                                         _u64(a.get("sp", a.get("esp0", a.get("esp")))))])
        if name == "cpu.fpu_trap":
            return Expressed("call", [hc("fpu_taskswitch", int(bool(a.get("ts"))))])
        if name == "cpu.set_segment_base":
            which = {"FS": 0, "GS_USER": 1, "GS_KERNEL": 2, "GS_USER_SEL": 3, "fs": 0,
                     "gs_kernel_now": 2, "gs_swapped": 1}.get(a.get("which"), 0)
            return Expressed("call", [hc("set_segment_base", which, _u64(a.get("base")))])
        if name == "cpu.write_descriptor":
            ma = ctx.target.scratch + 0x2000 + 8 * (_u32(a.get("index")) & 511)
            return Expressed("call", [hc("update_descriptor", ma, _u64(a.get("desc")))])
        if name == "cpu.load_gdt":
            raw = struct.pack("<Q", (ctx.target.scratch + 0x2000) >> 12)
            n = _u32(a.get("entries", (_u32(a.get("limit")) + 1) // 8)) or 1
            return Expressed("call", [hc("set_gdt", ARG_VA, n, mem=(("v", ARG_VA, raw),))])
        if name == "cpu.iret":
            return Expressed("call", [hc("iret", fed=False)])
        if name in ("cpu.set_debugreg", "cpu.get_debugreg"):
            reg = _u32(a.get("reg", a.get("dr", 0))) & 7
            if name == "cpu.get_debugreg":
                return Expressed("call", [hc("get_debugreg", reg)])
            return Expressed("call", [hc("set_debugreg", reg,
                                         _u64(a.get("value", a.get("val"))))])
        if name == "cpu.set_callback":
            raw = struct.pack("<HH4xQ", _u32(a.get("type")) & 0xFFFF, 0, _u64(a.get("address")))
            return Expressed("call", [hc("callback_op", 0, ARG_VA, mem=(("v", ARG_VA, raw),))])
        if name in ("irq.notify", "irq.send_ipi", "lock.kick", "irq.unbind", "irq.query",
                    "irq.set_affinity", "irq.set_priority"):
            sub = {"irq.unbind": "close", "irq.query": "status", "irq.set_affinity": "bind_vcpu",
                   "irq.set_priority": "set_priority"}.get(name, "send")
            raw = struct.pack("<I12x", _u32(a.get("port", 1)))
            return Expressed("call", [hc("event_channel_op", abi.EVTCHNOP[sub], ARG_VA,
                                         mem=(("v", ARG_VA, raw),))])
        if name == "irq.unmask":
            if "port" not in a:
                return Expressed("native", why="the global interrupt flag is "
                                 "vcpu_info.evtchn_upcall_mask, a byte in shared memory")
            raw = struct.pack("<I", _u32(a.get("port")))
            return Expressed("call", [hc("event_channel_op", abi.EVTCHNOP["unmask"], ARG_VA,
                                         mem=(("v", ARG_VA, raw),))])
        if name == "irq.bind":
            raw = struct.pack("<III", _u32(a.get("virq", abi.VIRQ_TIMER)), 0, 0)
            return Expressed("call", [hc("event_channel_op", abi.EVTCHNOP["bind_virq"], ARG_VA,
                                         mem=(("v", ARG_VA, raw),))])
        if name == "irq.setup":
            return Expressed("call", [hc("event_channel_op", abi.EVTCHNOP["reset"], ARG_VA,
                                         mem=(("v", ARG_VA, struct.pack("<H2x",
                                                                        abi.DOMID_SELF)),))])
        if name == "irq.eoi":
            raw = struct.pack("<I", _u32(a.get("irq")))
            return Expressed("call", [hc("physdev_op", 12, ARG_VA, mem=(("v", ARG_VA, raw),))])
        if name in ("sched.yield", "sched.block"):
            return Expressed("call", [hc("sched_op", abi.SCHEDOP[name.split(".")[1]], 0)])
        if name == "power.shutdown":
            reason = {"poweroff": 0, "reboot": 1, "reset": 1, "crash": 3}.get(
                a.get("reason") if isinstance(a.get("reason"), str) else "", 0)
            raw = struct.pack("<I", reason)
            return Expressed("call", [hc("sched_op", abi.SCHEDOP["shutdown"], ARG_VA,
                                         mem=(("v", ARG_VA, raw),))])
        if name in ("console.write", "console.read"):
            n = _u32(a.get("bytes", 1)) or 1
            if name == "console.read":
                return Expressed("call", [hc("console_io", 1, n, ARG_VA)])
            return Expressed("call", [hc("console_io", 0, n, ARG_VA,
                                         mem=(("v", ARG_VA, b"?" * n),))])
        if name in ("info.version", "info.features", "info.platform"):
            cmd = {"info.version": "version", "info.features": "get_features",
                   "info.platform": "pagesize"}[name]
            mem = (("v", ARG_VA, bytes(8)),) if cmd == "get_features" else ()
            return Expressed("call", [hc("xen_version", abi.XENVER[cmd],
                                         ARG_VA if mem else 0, mem=mem)])
        if name == "info.vcpu":
            return Expressed("call", [hc("vcpu_op", abi.VCPUOP["is_up"], 0, 0)])
        if name == "info.assist":
            return Expressed("call", [hc("vm_assist", 0, 2)])
        if name == "memory.share_area":
            raw = struct.pack("<Q", ctx.target.scratch + 0x3000)
            return Expressed("call", [hc("vcpu_op",
                                         abi.VCPUOP["register_vcpu_time_memory_area"], 0,
                                         ARG_VA, mem=(("v", ARG_VA, raw),))])
        if name in ("memory.query", "memory.map"):
            if name == "memory.query":
                raw = struct.pack("<H", abi.DOMID_SELF)
                return Expressed("call", [hc("memory_op", abi.XENMEM["current_reservation"],
                                             ARG_VA, mem=(("v", ARG_VA, raw),))])
            raw = struct.pack("<I4xQ", 8, ARG2_VA)
            return Expressed("call", [hc("memory_op", abi.XENMEM["memory_map"], ARG_VA,
                                         mem=(("v", ARG_VA, raw),))])
        if name == "batch.submit":
            return Expressed("call", [hc("multicall", fed=False)])
        # the rest (memory reservations, grants, vCPU bring-up, watchdog, ...): the
        # canonical operation does not carry the structures Xen's call reads
        way = self.WAYS[name]
        return Expressed("call", [hc(way.calls[0], fed=False)],
                         [Loss("arguments not derivable",
                               f"{name} from {op.call}: the canonical operation does not carry "
                               f"the structure {way.calls[0]} reads (counted, not fed)")])


#: Xen PV (``--backend xen-4.17``).
PV = XenExpress(False)
#: Xen PVH (``--backend xen-4.17:pvh``).
PVH = XenExpress(True)
