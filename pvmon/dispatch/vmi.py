"""The dispatch layer for VMI guests (32-bit, ring 0) on pvmon's HVM platform.

The guest runs natively with its own IDT, GDT and page tables; what reaches
the platform is a ``vmcall`` in the VMI option ROM (:mod:`pvmon.backends.vmi.builder`):
``vmi_init`` (+0x80: answers 0, success), ``get_reloc`` (+0x88: EAX = call
number -> EAX = the call entry's address, computed from the address the ROM
runs at, EDX = relocation type: CALL_REL, JUMP_REL for IRET, NONE for a number
with no entry or SYSEXIT) and the call entries (+0x100 + 16 n: regparm(3)
arguments EAX, EDX, ECX, [ESP+4], [ESP+8]; results in EAX or EDX:EAX), each
recorded as an ``hc`` event with ``via`` "rom" and ``rip`` at the guest's call
(the return address on the stack less 5, a ``call rel32``; for IRET the ROM
entry). The virtual IF is the ROM's: the alarm's IRQ0 (vector 0x20) is
injected only while it is set, and an interrupt gate clears it as the CPU
clears IF. Port I/O (the COM1 console) is recorded as ``io`` events.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from unicorn import x86_const as x86

from pvmon.backends.base import GuestFault
from pvmon.backends.vmi import abi
from pvmon.backends.vmi import builder as B
from pvmon.dispatch.hvm import HvmDispatchCore
from pvmon.dispatch.lguest import walk32
from pvmon.engine.machine import Machine, Stop

U32 = 0xFFFFFFFF


def vmi_cpuid_policy() -> dict:
    """A plain family-6 CPU with no hypervisor leaves (VMI guests find the
    hypervisor by its ROM)."""
    return {
        (0, 0): (1, 0x756E6547, 0x6C65746E, 0x49656E69),
        (1, 0): (0x00000663, 0x00000800, 0, 0x0781A3FF),
        (0x80000000, 0): (0x80000004, 0, 0, 0),
        **{(0x80000002 + i, 0): struct.unpack_from("<4I", b"pvmon virtual CPU (VMI)"
                                                   .ljust(48, b"\0"), 16 * i)
           for i in range(3)},
    }


class VmiDispatch(HvmDispatchCore):
    """TrapHandler for one VMI guest."""

    def __init__(self, machine: Machine, backend, guest,
                 record: Callable[[dict], None] | None = None) -> None:
        super().__init__(machine, backend, guest, record)
        self.policy = vmi_cpuid_policy()

    # ------------------------------------------------------ platform services
    def end_run_shutdown(self, what: str, code: int) -> None:
        self.end_run(Stop("shutdown", f"VMI {what}", self.cur_rip(), code))

    def read_virt(self, va: int, size: int) -> bytes:
        out = b""
        while size > 0:
            pa = walk32(self.m, va)
            n = min(size, 4096 - (va & 0xFFF))
            if pa is None:
                raise GuestFault(va)
            out += self.guest.read_machine(pa, n)
            va, size = va + n, size - n
        return out

    def write_virt(self, va: int, data: bytes) -> None:
        off = 0
        while off < len(data):
            pa = walk32(self.m, va + off)
            n = min(len(data) - off, 4096 - ((va + off) & 0xFFF))
            if pa is None:
                raise GuestFault(va + off, True)
            self.guest.write_machine(pa, bytes(data[off:off + n]))
            off += n

    # ---------------------------------------------------------------- traps
    def on_invalid_opcode(self, rip: int) -> bool:
        pa = walk32(self.m, rip)
        if pa is None or not B.ROM_PA <= pa < B.ROM_PA + B.ROM_SIZE:
            return False               # the guest's #UD, through its IDT
        self.on_vmcall(rip, 3)
        return True

    def sync_if(self) -> None:
        """The CPU's IF stays set under VMI: an interrupt or trap gate the CPU
        went through with IF clear (an exception through an interrupt gate)
        shows as the virtual IF clear, and the CPU's IF is set again."""
        fl = self.m.reg("rflags")
        if not fl & abi.X86_EFLAGS_IF:
            self.b.vcpu.vif = 0
            self.m.set_reg("rflags", fl | abi.X86_EFLAGS_IF)

    def on_vmcall(self, rip: int, size: int) -> None:
        m = self.m
        g = m.gprs
        self.sync_if()
        off = walk32(m, rip) - B.ROM_PA
        rom_va = rip - off
        esp = g[4] & U32
        ret_addr = self._u32(esp)
        self.clock.advance(self.clock.costs.hypercall_ns)
        self.guest.begin()
        self._jump = None
        if off == abi.OFF_VMI_INIT:
            self._cur_rip = ret_addr or 0
            self._record(-1, "vmi_init", (), 0, rip, {})
            g[0] = 0
        elif off == abi.OFF_GET_RELOC:
            self._cur_rip = ret_addr or 0
            nr = g[0] & U32
            if nr < abi.NUM_CALLS and nr in abi.HYPERCALLS and nr != 34:
                eip = rom_va + B.CALLS_OFF + B.CALL_SLOT * nr
                typ = abi.RELOC_JUMP_REL if nr in abi.JUMP_CALLS else abi.RELOC_CALL_REL
            else:
                eip, typ = 0, abi.RELOC_NONE
            self._record(-2, "get_reloc", (nr,), eip, rip, {"call": nr, "eip": eip,
                                                             "type": typ})
            g[0], g[2] = eip, typ
        elif off >= B.CALLS_OFF and (off - B.CALLS_OFF) % B.CALL_SLOT == 0:
            nr = (off - B.CALLS_OFF) // B.CALL_SLOT
            if nr == 33:                      # IRET: reached by jmp, the frame at ESP
                call_rip = rip
                self._cur_rip = rip + 3
            else:
                call_rip = ((ret_addr or 0) - 5) & U32
                self._cur_rip = ret_addr or 0
            a3 = self._u32(esp + 4) or 0
            a4 = self._u32(esp + 8) or 0
            args = (g[0] & U32, g[2] & U32, g[1] & U32, a3, a4)
            b = self.b
            ret = b.call(nr, args)
            for reg, idx in (("eax", 0), ("ecx", 1), ("edx", 2), ("ebx", 3)):
                if reg in b.out:
                    g[idx] = b.out[reg] & U32
            self._record(nr, b.call_name(nr), args, ret, call_rip, b.op)
        else:
            self.end_run(Stop("crash", f"call into the VMI ROM at +{off:#x}, where no entry "
                                       "is", rip))
            return
        m.set_reg("rip", rip + size)           # the entry's ret / iret
        if m.stop_reason is None:
            self.b.vcpu.fire_timers()
            self.update_irq()
        self._check_wall()

    def _u32(self, va: int) -> int | None:
        pa = walk32(self.m, va)
        if pa is None or (va & 0xFFF) > 0xFFC:
            return None
        return int.from_bytes(self.m.read_phys(pa, 4), "little")

    def _record(self, nr: int, name: str, args, ret: int, rip: int, op: dict) -> None:
        self.hypercalls[name] += 1
        self.record_call("vmi", nr, name, args, ret, rip, "rom", op=op)

    def port_in(self, port: int, size: int) -> int | None:
        return self.b.port_in(port, size)

    def port_out(self, port: int, size: int, value: int) -> bool:
        return self.b.port_out(port, size, value)

    # ---------------------------------------------------------- interrupts
    def upcall_vector(self) -> int | None:
        self.sync_if()
        return self.b.vcpu.due_vector()

    def _on_irq_taken(self, vector: int, rip: int) -> None:
        v = self.b.vcpu
        if v.alarm_pending and vector == v.alarm_vector():
            v.alarm_pending = False
            _s, base, _l, _f = self.m.uc.reg_read(x86.UC_X86_REG_IDTR)
            pa = walk32(self.m, base + 8 * vector)
            if pa is not None:
                hi = int.from_bytes(self.m.read_phys(pa + 4, 4), "little")
                if (hi >> 8) & 0xF == 0xE:
                    v.vif = 0                 # an interrupt gate clears the virtual IF
        super()._on_irq_taken(vector, rip)


__all__ = ["VmiDispatch", "vmi_cpuid_policy"]
