"""#DB from the guest's breakpoints, as Xen 4.17 raises it for a 64-bit PV vCPU.

The vCPU keeps the debug registers as Xen does (:class:`~pvmon.backends.xen.pv.vcpu.PvVcpu`
``dr``, ``dr6``, ``dr7``, ``dr7_emul``; set_debugreg/get_debugreg validate them).
This module makes the breakpoints fire:

* **I/O breakpoints** (%dr7 R/W = 10b, CR4.DE): Xen never loads them into the
  hardware; its port-I/O emulation matches each IN/OUT against them
  (``check_guest_io_breakpoint``) and, after the emulated instruction, sets
  the matching B0-B3 bits in %dr6 and injects #DB
  (``pv_emulate_privileged_op``, xen/arch/x86/pv/emul-priv-op.c@stable-4.17).
  :class:`IoBreakpoints` does the same from pvmon's port hook.

Sources: xen.git stable-4.17, as named at each function.
"""

from __future__ import annotations

from pvmon.backends.xen import abi as E

#: %dr7 LEN field (bits 18+4i, after the R/W field) -> breakpoint width in bytes
#: (DR_LEN_1/2/8/4 = 00b, 01b, 10b, 11b: xen/arch/x86/include/asm/debugreg.h)
_LEN_WIDTH = (1, 2, 8, 4)


def engine_addresses(dr: list[int], dr7: int) -> list[int]:
    """%dr0-3 as the engine takes them: a data breakpoint's (R/W 01b, 11b)
    address aligned down to its LEN, as the hardware ignores the low bits
    (Intel SDM vol. 3, 18.2.5); QEMU's watchpoints match the range as given.
    The vCPU keeps (and get_debugreg reads) the value as written."""
    out = []
    for i, addr in enumerate(dr):
        field = (dr7 >> (E.DR_CONTROL_SHIFT + i * E.DR_CONTROL_SIZE)) & 0xF
        if field & 1:                   # R/W 01b or 11b
            addr &= ~(_LEN_WIDTH[field >> 2] - 1)
        out.append(addr)
    return out


def io_breakpoint_match(vcpu, port: int, size: int) -> int:
    """check_guest_io_breakpoint (pv/emul-priv-op.c@stable-4.17): the B0-B3
    bits of the I/O breakpoints an access of ``size`` bytes (1, 2, 4) at
    ``port`` matches, 0 for none. Only breakpoints enabled in ``dr7_emul``
    count, and none without CR4.DE; each covers its LEN's width from its
    address aligned down to that width."""
    emul = vcpu.dr7_emul
    if not emul or not vcpu.cr4_de():
        return 0
    match = 0
    dr7 = vcpu.dr7
    for i in range(4):
        if not emul & (3 << (2 * i)):
            continue
        width = _LEN_WIDTH[(dr7 >> (E.DR_CONTROL_SHIFT + i * E.DR_CONTROL_SIZE + 2)) & 3]
        start = vcpu.dr[i] & ~(width - 1)
        if start < port + size and start + width > port:
            match |= 1 << i
    return match


class IoBreakpoints:
    """The I/O breakpoints of a Xen PV dispatch (:class:`pvmon.dispatch.xen.XenPvDispatch`).

    Xen emulates the IN/OUT and then injects #DB, a trap: the frame's RIP is
    the next instruction, the IN's destination written. pvmon's engine runs
    the instruction itself and calls the port hook in its middle, so a match
    makes the instruction raise #GP(0) instead (the PV engine patch's
    ``io_fault``: nothing of it done), the #GP is not delivered but turned
    into a single step of the same instruction with the breakpoint check
    off, and after that step the #DB is delivered (:meth:`after_step`). A
    REP INS/OUTS that matches so runs one iteration, as Xen's rep_ins/rep_outs
    stop after one on a match. Nothing here runs while ``dr7_emul`` is 0 (a
    Linux boot): the port hook tests it first."""

    def __init__(self, dispatch) -> None:
        self.p = dispatch
        #: B0-B3 of the instruction being redone by a single step, else 0.
        self.pending = 0
        #: The single step is under way (the #GP that asked for it was taken).
        self.stepping = False

    def check(self, port: int, size: int) -> bool:
        """From the port hook, after the access was found allowed: True when
        the access hits an I/O breakpoint (the instruction then raises #GP(0),
        which :meth:`on_gp` takes). The redo of a matched instruction is let
        through."""
        hooks = self.p._hooks
        if self.pending or hooks is None or not hooks.traps_io:
            return False
        hit = io_breakpoint_match(self.p.b.vcpu, port, size)
        if not hit:
            return False
        self.pending = hit
        hooks.io_fault()
        return True

    def on_gp(self) -> bool:
        """The engine reported #GP(0): True if it is the one :meth:`check`
        provoked (the instruction is redone by a single step, no fault
        delivered)."""
        if not self.pending or self.stepping:
            return False
        self.stepping = True
        self.p.m.request_step()
        return True

    def on_exception(self) -> None:
        """The redone instruction raised an exception of its own (a #PF of an
        INS destination, say): that is delivered and the #DB dropped, as Xen
        injects it only when the emulation completed (X86EMUL_OKAY)."""
        if self.stepping:
            self.pending = 0

    def after_step(self) -> None:
        """The matched instruction ran: Xen's ``dr6 |= bpmatch |
        DR_STATUS_RESERVED_ONE`` and #DB through the trap table, RIP after
        the instruction (pv_emulate_privileged_op, pv/emul-priv-op.c@stable-4.17)."""
        hit, self.pending, self.stepping = self.pending, 0, False
        if not hit or self.p.m.stop_reason is not None:
            return
        self.p.deliver_debug_trap(self.p.m.reg("rip"), hit)


__all__ = ["IoBreakpoints", "engine_addresses", "io_breakpoint_match"]
