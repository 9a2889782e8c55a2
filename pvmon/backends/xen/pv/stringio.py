"""INS and OUTS of a 64-bit PV guest as Xen 4.17 emulates them.

Under Xen a PV kernel runs in ring 3 with the hardware IOPL 0, so every
INS/OUTS (kernel or user mode) raises #GP and Xen emulates it
(``pv_emulate_privileged_op``, ``rep_ins``/``rep_outs`` in
xen/arch/x86/pv/emul-priv-op.c; the decoding and the REP/RCX/RSI/RDI rules
in xen/arch/x86/x86_emulate/x86_emulate.c, cases 0x6c/0x6e, ``get_rep_prefix``,
``put_rep_prefix``, ``truncate_ea_and_reps``; all ``@stable-4.17``). pvmon's
engine makes INS/OUTS raise #GP(0) the same way (``pvmon_string_io_gp``,
patches/unicorn-2.1.4-pv-privops.patch) and :func:`emulate` carries them out:

* a REP with a count of 0 completes at once, no port checked (with 32-bit
  addressing RCX and RDI/RSI are zero-extended: get_rep_prefix);
* the port refused by the virtual IOPL and I/O bitmap (guest_io_okay): #GP(0)
  at the instruction, nothing changed;
* per element: the port access through the platform's port access (the one
  an allowed IN/OUT makes; INS reads the port before touching memory, as
  rep_ins does; the permission is not asked again, so an INS that rewrites
  the I/O bitmap under itself goes on, as in Xen), the address checked by
  pv_emul_virt_to_linear (``__addr_ok``: below
  2^47 or from HYPERVISOR_VIRT_END up, else #GP(0); an SS override is ignored), the
  memory copied byte by byte as Xen's copy_to/from_guest_ll does (a fault
  leaves the bytes before it written), through the current page tables with
  supervisor rights (write permission still needed);
* a #PF on the memory side: CR2 the first byte not copied, error code W for
  INS and 0 for OUTS (x86_emul_pagefault: never P, whatever the page), plus U
  in user mode (pv_inject_event);
* with REP the elements done before a fault are kept (RCX decreased, RDI/RSI
  advanced, RIP left at the instruction: put_rep_prefix); without, a fault
  changes nothing;
* at most :data:`REPS_PER_TRAP` elements per emulation, then RIP stays at the
  instruction and it traps again (Xen's hypercall_preempt_check, which the
  guest cannot tell apart);
* the I/O breakpoints are matched once, before the loop
  (``check_guest_io_breakpoint``): a match stops a REP after its first
  element; with RFLAGS.TF set a REP moves one element (``get_rep_prefix``:
  ``max_reps = 1``) and the emulation single-steps (``retire.singlestep``,
  %dr6 BS). Either way, once the emulation completed without a fault, Xen sets
  ``dr6 |= bpmatch | DR_STATUS_RESERVED_ONE`` and injects #DB, a trap whose
  frame holds the RIP after the emulation (the instruction itself while a
  REP has elements left): :func:`emulate` answers :class:`DebugTrap`.

Not done: 32-bit (compat) code segments (the decoding assumes 64-bit mode,
docs/xen-rules.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pvmon.backends.xen import abi as E
from pvmon.backends.xen.pv.debugreg import io_breakpoint_match
from pvmon.engine.machine import PFEC_USER, PFEC_WRITE, GuestPageFault

#: Elements moved per emulation before RIP is left at the instruction to
#: trap again (Xen stops at hypercall_preempt_check; the guest cannot tell).
REPS_PER_TRAP = 4096

_SEG_OVERRIDES = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}
_MASK64 = (1 << 64) - 1
RFLAGS_DF = 1 << 10

#: what :func:`emulate` answers when it carried the instruction out (or a part)
DONE = "done"
"""A fault is ``(vector, error code, cr2 or None)``."""

Fault = tuple[int, int, int | None]
RFLAGS_TF = 1 << 8
#: %dr6 BS (DR_STEP, xen/arch/x86/include/asm/debugreg.h): a single-step #DB
DR6_BS = 1 << 14


@dataclass(frozen=True)
class DebugTrap:
    """The emulation completed (registers and RIP updated, as for
    :data:`DONE`) and Xen now injects #DB: ``dr6`` holds the bits it ORs into
    the vCPU's %dr6 (B0-B3 of the I/O breakpoints matched, BS for a single
    step), to which it adds DR_STATUS_RESERVED_ONE (pv_emulate_privileged_op,
    pv/emul-priv-op.c@stable-4.17)."""

    dr6: int


def _addr_ok(addr: int) -> bool:
    """``__addr_ok`` (asm/x86_64/uaccess.h@stable-4.17)."""
    return addr < 1 << 47 or addr >= E.HYPERVISOR_VIRT_END


def decode(code: bytes) -> tuple[int, int, int, bool, str | None, int] | None:
    """The INS/OUTS at the start of ``code`` (64-bit mode): ``(opcode, element
    bytes, address bytes, rep, segment override, length)``, or None when it is
    not one (or carries LOCK). Operand size: 1 for 0x6c/0x6e, else 2 with a
    0x66 prefix, 4 otherwise (REX.W: op_bytes 8, which INS/OUTS take as 4)."""
    opsize = rep = lock = False
    addr32 = False
    seg = None
    rex = 0
    for i, b in enumerate(code[:15]):
        if b == 0x66:
            opsize = True
        elif b == 0x67:
            addr32 = True
        elif b in (0xF2, 0xF3):
            rep = True
        elif b == 0xF0:
            lock = True
        elif b in _SEG_OVERRIDES:
            seg = _SEG_OVERRIDES[b]
        elif 0x40 <= b <= 0x4F:
            rex = b
            continue
        elif 0x6C <= b <= 0x6F:
            if lock:
                return None
            size = 1 if not b & 1 else (4 if rex & 8 or not opsize else 2)
            return b, size, 4 if addr32 else 8, rep, seg, i + 1
        else:
            return None
        rex = 0             # a legacy prefix after REX cancels it
    return None


def _copy_out(m, addr: int, data: bytes) -> int | None:
    """Write ``data`` at ``addr`` (current page tables, supervisor, write
    permission needed) as copy_to_guest_ll does: None when all of it was
    written, else the address of the first byte not written (those before it
    are)."""
    try:
        m.write_virt(addr, data)
        return None
    except GuestPageFault:
        pass
    for i, byte in enumerate(data):
        try:
            m.write_virt((addr + i) & _MASK64, bytes((byte,)))
        except GuestPageFault:
            return (addr + i) & _MASK64
    return None


def _copy_in(m, addr: int, size: int) -> tuple[int, int | None]:
    """Read ``size`` bytes at ``addr`` as copy_from_guest_ll does: ``(value,
    None)``, or ``(0, first unreadable address)``."""
    try:
        return int.from_bytes(m.read_virt(addr, size), "little"), None
    except GuestPageFault:
        pass
    for i in range(size):
        try:
            m.read_virt((addr + i) & _MASK64, 1)
        except GuestPageFault:
            return 0, (addr + i) & _MASK64
    return 0, None          # pragma: no cover - the whole read failed, so one byte does


def emulate(vcpu, rip: int, port_in: Callable[[int, int], int],
            port_out: Callable[[int, int, int], None]) -> str | DebugTrap | Fault | None:
    """The #GP(0) the engine raised at ``rip`` for the PV ``vcpu``: if it is an
    INS/OUTS, carry it out as Xen does (module docstring) and answer
    :data:`DONE` (registers and RIP updated), a :class:`DebugTrap` (the same,
    then #DB) or the fault the guest receives ``(vector, error, cr2)``; None
    when it is not one. ``port_in(port,
    size) -> value`` and ``port_out(port, size, value)`` are the platform's
    port accesses an allowed IN/OUT makes, called once per element after the
    one permission check (guest_io_okay, before the loop)."""
    m = vcpu.m
    try:
        code = m.read_insn(rip, user=vcpu.user_mode)
    except GuestPageFault:
        return None
    insn = decode(code)
    if insn is None:
        return None
    op, size, ad, rep, seg, length = insn
    is_ins = op <= 0x6D
    idx_name = "rdi" if is_ins else "rsi"
    amask = (1 << (8 * ad)) - 1
    rcx, rdx, idx, rflags = m.regs("rcx", "rdx", idx_name, "rflags")
    port = rdx & 0xFFFF
    nxt = (rip + length) & _MASK64

    # get_rep_prefix: no repetitions -> skip (zero-extending with addr32)
    reps = 1
    if rep:
        reps = rcx & amask
        if reps == 0:
            if ad == 4:
                m.set_regs(rcx=0, **{idx_name: idx & amask})
            m.set_reg("rip", nxt)
            # x86_emulate single-steps every instruction it completes
            return DebugTrap(DR6_BS) if rflags & RFLAGS_TF else DONE
    # rep_ins/rep_outs: guest_io_okay first; refused, the hardware #GP(0) stands
    if not vcpu.io_allowed(port, size):
        return (13, 0, None)
    # truncate_ea_and_reps: the index register at most just wraps
    ea = idx & amask
    down = bool(rflags & RFLAGS_DF)
    if not down:
        todo = ((-ea) & amask) // size
    elif ((ea + size - 1) & amask) < ea:
        todo = 1
    else:
        todo = ea // size + 1
    if todo == 0:
        reps = 1
    elif todo < reps:
        reps = todo
    reps = min(reps, REPS_PER_TRAP)
    step_trap = bool(rflags & RFLAGS_TF)
    if step_trap:
        reps = 1                # get_rep_prefix: single-stepping, one repetition
    bpmatch = io_breakpoint_match(vcpu, port, size) if vcpu.dr7_emul else 0

    # x86_emulate's prefix decoding ignores CS/DS/ES/SS overrides in 64-bit
    # mode (x86_emulate.c@stable-4.17, "case 0x36: /* SS override / ignored in
    # 64-bit mode */"), so an address is never checked through SS: #GP(0), not
    # #SS(0). read_segment (64-bit): FS/GS have their bases, the others base 0.
    seg = "es" if is_ins else (seg if seg in ("fs", "gs") else "ds")
    base = m.reg(f"{seg}_base") if seg in ("fs", "gs") else 0
    user = vcpu.user_mode
    fault: Fault | None = None
    done = 0
    step = -size if down else size
    while done < reps:
        addr = (base + ea + done * step) & _MASK64
        if is_ins:
            data = port_in(port, size) & ((1 << (8 * size)) - 1)
            if not _addr_ok(addr):
                fault = (13, 0, None)
                break
            bad = _copy_out(m, addr, data.to_bytes(size, "little"))
            if bad is not None:
                fault = (14, PFEC_WRITE | (PFEC_USER if user else 0), bad)
                break
        else:
            if not _addr_ok(addr):
                fault = (13, 0, None)
                break
            data, bad = _copy_in(m, addr, size)
            if bad is not None:
                fault = (14, PFEC_USER if user else 0, bad)
                break
            port_out(port, size, data)
        done += 1
        if bpmatch:
            break               # rep_ins/rep_outs: "if ( poc->bpmatch || ... ) break;"

    if not rep:
        if fault is not None:
            return fault          # nothing committed
        m.set_regs(**{idx_name: _adjust(idx, step, ad), "rip": nxt})
    else:
        left = ((rcx & amask) - done) & amask
        # put_rep_prefix: the count less what was done (an ECX zero-extended)
        regs = {"rcx": left, idx_name: _adjust(idx, done * step, ad)}
        if left == 0:
            regs["rip"] = nxt
        m.set_regs(**regs)
        if fault is not None:
            return fault
    debug = bpmatch | (DR6_BS if step_trap else 0)
    return DebugTrap(debug) if debug else DONE


def _adjust(reg: int, inc: int, ad: int) -> int:
    """register_address_adjust in 64-bit mode: the register plus ``inc``,
    truncated to the address size (a 32-bit result is zero-extended)."""
    if ad == 8:
        return (reg + inc) & _MASK64
    return (reg + inc) & 0xFFFF_FFFF


__all__ = ["DONE", "REPS_PER_TRAP", "DebugTrap", "decode", "emulate"]
