"""lguest's calls as canonical paravirtual operations (:mod:`pvmon.pvops`).

Each LHCALL maps to the pv-op Linux's lguest guest (arch/x86/lguest/boot.c
[LGB]) issues it for, per the facts sheet's mapping table (section 3.2):
LOAD_IDT_ENTRY is ``write_idt_entry``, SET_STACK ``load_sp0``, TS
``write_cr0``/``clts``, NEW_PGTABLE ``write_cr3``, SET_PTE ``set_pte_at`` (and,
with a zero PTE, ``flush_tlb_single``), SET_PGD/SET_PMD ``set_pmd``/``set_pud``,
FLUSH_TLB ``flush_tlb_user`` (0) / ``flush_tlb_kernel`` (1), LOAD_TLS
``load_tls``, LOAD_GDT_ENTRY ``write_gdt_entry``, SET_CLOCKEVENT the
clockevent's ``set_next_event`` (a **relative** ns delta; 0 = shutdown),
HALT ``safe_halt``, SEND_INTERRUPTS ``irq_enable``/``restore_fl`` with
``irq_pending``, FLUSH_ASYNC leaving lazy mode, SHUTDOWN power off/restart.
Calls the host ran from the asynchronous ring (``via`` "ring") carry a
:class:`~pvmon.pvops.BatchRef` naming the ring.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pvmon.backends.lguest import abi
from pvmon.pvops import BatchRef, PvOp, clock_reads

#: LHCALL name -> canonical operation
OPS: dict[str, str] = {
    "LHCALL_FLUSH_ASYNC": "batch.submit",
    "LHCALL_LGUEST_INIT": "memory.share_area",
    "LHCALL_SHUTDOWN": "power.shutdown",
    "LHCALL_NEW_PGTABLE": "mmu.new_root",
    "LHCALL_FLUSH_TLB": "mmu.flush_tlb",
    "LHCALL_LOAD_IDT_ENTRY": "cpu.set_trap",
    "LHCALL_SET_STACK": "cpu.set_stack",
    "LHCALL_TS": "cpu.fpu_trap",
    "LHCALL_SET_CLOCKEVENT": "time.oneshot",
    "LHCALL_HALT": "sched.block",
    "LHCALL_SET_PMD": "mmu.set_pte",
    "LHCALL_SET_PTE": "mmu.set_pte",
    "LHCALL_SET_PGD": "mmu.set_pte",
    "LHCALL_LOAD_TLS": "cpu.write_descriptor",
    "LHCALL_LOAD_GDT_ENTRY": "cpu.write_descriptor",
    "LHCALL_SEND_INTERRUPTS": "irq.unmask",
    # lguest 2.6.2x-4.0: the early console's string (and, with an lguest-bus
    # device, a virtqueue kick; pvmon's 4.0 Launcher offers none) [LGL]
    "LHCALL_NOTIFY": "console.write",
}


class LguestState:
    """Nothing needs carrying between lguest events (no pinning, no batches
    beyond the ring, which each event names)."""


def new_state(header: dict[str, Any] | None = None) -> LguestState:
    return LguestState()


def resume_state(header: dict[str, Any] | None = None) -> LguestState:
    return LguestState()


def continue_state(earlier: LguestState, later: LguestState) -> LguestState | None:
    return later


def _u(v: Any) -> int:
    return v if type(v) is int else 0


def translate(ev: dict[str, Any], state: LguestState) -> Iterator[PvOp]:
    """Canonical operations of one trace event of an lguest run."""
    get = ev.get
    k = get("k")
    seq, t = get("seq"), get("t")
    seq = seq if type(seq) is int else -1
    t = t if type(t) is int else 0
    if k == "hc":
        args = get("args")
        args = tuple(_u(a) for a in args) if isinstance(args, list) else ()
        args = args + (0,) * (4 - len(args))
        name = get("name")
        if not isinstance(name, str):
            name = abi.hypercall_name(_u(get("nr")))
        op = OPS.get(name, "unmapped")
        a: dict[str, Any] = {}
        a1, a2, a3, a4 = args[:4]
        if name == "LHCALL_SET_CLOCKEVENT":
            if a1 == 0:
                op = "time.stop"
            else:
                a = {"delta_ns": a1, "relative": True}
        elif name == "LHCALL_SET_PTE":
            if a3 == 0 and a4 == 0:
                op = "mmu.invlpg"
                a = {"va": a2}
            else:
                a = {"va": a2, "frame": a3 >> 12, "flags": a3 & 0xFFF, "level": 1}
        elif name in ("LHCALL_SET_PGD", "LHCALL_SET_PMD"):
            a = {"table": a1, "index": a2, "level": 2}      # non-PAE top level; PAE PMD
        elif name == "LHCALL_NEW_PGTABLE":
            a = {"frame": a1 >> 12}
        elif name == "LHCALL_FLUSH_TLB":
            a = {"scope": "all" if a1 else "user"}
        elif name == "LHCALL_LOAD_IDT_ENTRY":
            a = {"vector": a1, "handler": (a3 & 0xFFFF0000) | (a2 & 0xFFFF),
                 "type": abi.idt_type(a2, a3), "present": abi.idt_present(a2, a3)}
        elif name == "LHCALL_SET_STACK":
            a = {"ss": a1, "sp": a2, "pages": a3}
        elif name == "LHCALL_TS":
            a = {"ts": bool(a1 & 8)}
        elif name == "LHCALL_LOAD_GDT_ENTRY":
            a = {"index": a1, "desc": a2 | (a3 << 32)}
        elif name == "LHCALL_LOAD_TLS":
            a = {"table": a1, "index": abi.GDT_ENTRY_TLS_MIN, "count": 3}
        elif name == "LHCALL_LGUEST_INIT":
            a = {"area": "lguest_data", "addr": a1}
        elif name == "LHCALL_SHUTDOWN":
            a = {"reason": "reboot" if a2 == abi.LGUEST_SHUTDOWN_RESTART else "poweroff"}
        elif name == "LHCALL_FLUSH_ASYNC":
            a = {"ring": True}
        elif op == "unmapped":
            a = {"nr": _u(get("nr"))}
        batch = ()
        if get("via") == "ring":
            batch = (BatchRef("lguest async ring", seq, 0, 1),)
        ret = get("ret")
        yield PvOp(op, seq, t, name, a, ret if type(ret) is int else None, batch)
    elif k == "tsc_run":
        yield from clock_reads(ev, seq, t)
    elif k == "cpuid":
        yield PvOp("cpu.cpuid", seq, t, "cpuid (native, lguest's filtered leaves)",
                   {"leaf": get("leaf"), "sub": get("sub")}, native="cpuid")
