"""The dispatch layer for lguest guests (32-bit, ring 1) on pvmon's HVM
platform.

The CPU runs the guest natively in 32-bit protected mode with its own page
tables; the IDT, GDT and TSS it uses are the host's, in the Switcher pages
(:mod:`pvmon.backends.lguest.builder`). Each host IDT gate leads either
straight to a guest handler (lguest's direct traps) or to the vector's
Switcher stub ``vmcall; iret``, whose ``vmcall`` reaches
:meth:`LguestDispatch.on_vmcall` with the CPU's frame on the guest stack:

* vector 0x1F (``int $0x1f``, LGUEST_TRAP_ENTRY): a hypercall, EAX number,
  EBX/ECX/EDX/ESI arguments. The asynchronous ring runs first, each entry
  recorded as its own call (``via`` "ring"), then the call (``via``
  "int0x1f", ``rip`` at the ``int``); the stub's ``iret`` returns;
* vector 13 with error code 0 from ring 1 on an ``in``/``out`` (or a stray
  ``cli``): the Launcher's port emulation ([LGL] ``emulate_insn``), recorded
  as ``io`` events;
* any other vector: reflected to the guest's handler as lguest's host does
  ([LGI] ``deliver_trap``/``set_guest_interrupt``): ``lguest_data.cr2`` for
  #PF, the pushed EFLAGS.IF taken from ``irq_enabled``, ``irq_enabled`` = 0
  through an interrupt gate, a ``fault`` event; no handler kills the guest.

External interrupts (the clock event is IRQ 0, vector 32) are raised on the
CPU when lguest would deliver them (:meth:`LguestVcpu.due_vector`); the
guest's real EFLAGS.IF stays set (ring 1 cannot clear it) and every host
gate is a trap gate, so the guest's interrupt flag is ``irq_enabled`` alone.

Facts: pv-abi-facts.md section 2 and docs/lguest.md.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from unicorn import x86_const as x86

from pvmon.backends.lguest import abi
from pvmon.backends.lguest import builder as B
from pvmon.dispatch.hvm import HvmDispatchCore
from pvmon.engine.machine import Machine, Stop

U32 = 0xFFFFFFFF
STUBS_VA = B.SWITCHER_VA + B.STUBS_OFF
_IN_OUT = {0xE4: ("in", 1), 0xE5: ("in", 4), 0xEC: ("in", 1), 0xED: ("in", 4),
           0xE6: ("out", 1), 0xE7: ("out", 4), 0xEE: ("out", 1), 0xEF: ("out", 4)}


def lguest_cpuid_policy() -> dict:
    """What lguest's guest sees of CPUID ([LGB] ``lguest_cpuid``): max leaf
    5, family 5 (so no sysenter), PGE on, NX off, no hypervisor leaves."""
    return {
        (0, 0): (5, 0x756E6547, 0x6C65746E, 0x49656E69),          # GenuineIntel
        (1, 0): (0x00000543, 0x00000800, 0, 0x0780A1FF & ~(1 << 11) | (1 << 13)),
        (0x80000000, 0): (0x80000004, 0, 0, 0),
        (0x80000001, 0): (0, 0, 0, 0),
        **{(0x80000002 + i, 0): struct.unpack_from("<4I", b"pvmon virtual CPU (lguest)"
                                                   .ljust(48, b"\0"), 16 * i)
           for i in range(3)},
    }



def walk32(m: Machine, va: int) -> int | None:
    """Guest-virtual ``va`` -> guest-physical through the CPU's current
    32-bit non-PAE page directory (identity when CR0.PG is clear), or None
    when it is not mapped (or maps outside machine memory)."""
    if not m.uc.reg_read(x86.UC_X86_REG_CR0) & 0x80000000:
        return va if m.valid_phys(va, 1) else None
    if m.uc.reg_read(x86.UC_X86_REG_CR4) & 0x20:
        return _walk_pae(m, va)
    cr3 = m.internals.cr3 & 0xFFFFF000
    pde = int.from_bytes(m.read_phys(cr3 + 4 * (va >> 22), 4), "little")
    if not pde & 1:
        return None
    if pde & 0x80:
        return (pde & 0xFFC00000) | (va & 0x3FFFFF)
    pt = pde & 0xFFFFF000
    if not m.valid_phys(pt, 4096):
        return None
    pte = int.from_bytes(m.read_phys(pt + 4 * ((va >> 12) & 0x3FF), 4), "little")
    if not pte & 1:
        return None
    pa = (pte & 0xFFFFF000) | (va & 0xFFF)
    return pa if m.valid_phys(pa, 1) else None


_PAE_ADDR = 0x000FFFFFFFFFF000


def _walk_pae(m: Machine, va: int) -> int | None:
    """The PAE walk: PDPT (CR3 & ~0x1F), page directory (2 MiB pages), page table."""
    table = m.internals.cr3 & 0xFFFFFFE0
    for shift, width in ((30, 3), (21, 511), (12, 511)):
        ea = table + 8 * ((va >> shift) & width)
        if not m.valid_phys(ea, 8):
            return None
        e = int.from_bytes(m.read_phys(ea, 8), "little")
        if not e & 1:
            return None
        if shift == 21 and e & 0x80:
            pa = (e & _PAE_ADDR & ~0x1FFFFF) | (va & 0x1FFFFF)
            return pa if m.valid_phys(pa, 1) else None
        table = e & _PAE_ADDR
    pa = table | (va & 0xFFF)
    return pa if m.valid_phys(pa, 1) else None


class LguestDispatch(HvmDispatchCore):
    """TrapHandler for one lguest guest."""

    def __init__(self, machine: Machine, backend, guest,
                 record: Callable[[dict], None] | None = None) -> None:
        super().__init__(machine, backend, guest, record)
        self.policy = lguest_cpuid_policy()
        self._last_fault = (None, 0)

    # ------------------------------------------------------ platform services
    def end_run_shutdown(self, msg: str, reason: int) -> None:
        """LHCALL_SHUTDOWN(``msg``, ``reason``). The host only kills the
        guest with "CRASH: msg"; what it meant is in the message: Linux's
        ``lguest_power_off`` sends "Power down" (exit kind "shutdown", code 0),
        a restart is reason 2 (code 1, as a reboot), anything else is the
        panic notifier's message (exit kind "crash") [LGB]."""
        rip = self.cur_rip()
        if reason == abi.LGUEST_SHUTDOWN_RESTART:
            self.end_run(Stop("shutdown", f"LHCALL_SHUTDOWN restart: {msg}", rip, 1))
        elif msg == "Power down":
            self.end_run(Stop("shutdown", f"LHCALL_SHUTDOWN power off: {msg}", rip, 0))
        else:
            self.end_run(Stop("crash", f"LHCALL_SHUTDOWN (lguest: CRASH: {msg})", rip, 2))

    def set_ts(self, on: bool) -> None:
        uc = self.m.uc
        cr0 = uc.reg_read(x86.UC_X86_REG_CR0)
        uc.reg_write(x86.UC_X86_REG_CR0, cr0 | 8 if on else cr0 & ~8)

    # --------------------------------------------------------- guest memory
    def walk32(self, va: int) -> int | None:
        """Guest-virtual -> physical through the current non-PAE page
        directory, or None when not mapped."""
        return walk32(self.m, va)


    def _u32(self, va: int) -> int | None:
        pa = self.walk32(va)
        if pa is None or (va & 0xFFF) > 0xFFC:
            return None
        return int.from_bytes(self.m.read_phys(pa, 4), "little")

    def _put_u32(self, va: int, v: int) -> None:
        pa = self.walk32(va)
        if pa is not None:
            self.m.write_phys_data(pa, struct.pack("<I", v & U32))

    # ---------------------------------------------------------------- traps
    def on_invalid_opcode(self, rip: int) -> bool:
        off = rip - STUBS_VA
        if 0 <= off < 8 * 256 and off % 8 == 0:
            self.on_vmcall(rip, 3)
            return True
        return False             # the guest's #UD, through its (host) IDT

    def on_vmcall(self, rip: int, size: int) -> None:
        vec = (rip - STUBS_VA) // 8
        esp = self.m.reg("rsp") & U32
        if vec == abi.LGUEST_TRAP_ENTRY:
            self._hypercall(rip, esp)
        elif vec == 13 and self._emulate_insn(rip, esp):
            pass
        else:
            self._reflect(vec, esp)
        if self.m.stop_reason is None:
            self.b.vcpu.fire_timers()
            self.update_irq()
        self._check_wall()

    def _hypercall(self, stub: int, esp: int) -> None:
        m = self.m
        g = m.gprs
        ret_eip = self._u32(esp)
        int_rip = (ret_eip - 2) & U32 if ret_eip is not None else stub
        self._cur_rip = int_rip + 2
        self._jump = None
        self.clock.advance(self.clock.costs.hypercall_ns)
        b = self.b
        # the asynchronous ring first ([LGHC] do_async_hcalls)
        while m.stop_reason is None:
            self.guest.begin()
            item = b.take_async()
            if item is None:
                break
            nr, args = item
            ret = b.call(nr, args)
            if b.lguest_data is not None:
                b.async_done()
            self._record_call(nr, args, ret, int_rip, "ring")
        if m.stop_reason is not None:
            return
        nr = g[0] & U32
        args = (g[3] & U32, g[1] & U32, g[2] & U32, g[6] & U32)   # ebx, ecx, edx, esi
        ret = b.call(nr, args)
        self._record_call(nr, args, ret, int_rip, "int0x1f")
        if nr == 10 and m.stop_reason is None:
            self._halt_call(int_rip + 2)
        m.set_reg("rip", stub + 3)                 # the stub's iret

    def _record_call(self, nr: int, args, ret: int, rip: int, via: str) -> None:
        name = self.b.call_name(nr)
        self.hypercalls[name] += 1
        self.record_call("lguest", nr, name, args, ret, rip, via)

    def _halt_call(self, rip: int) -> None:
        """LHCALL_HALT: sleep until an interrupt can be delivered; virtual
        time jumps to the clock event."""
        v = self.b.vcpu
        self.halts += 1
        if v.deliverable_irq() is not None:
            return
        dl = v.next_deadline()
        if dl is None:
            self.end_run(Stop("stuck", "halted (LHCALL_HALT) with no clock event set and no "
                                       "interrupt pending", rip))
            return
        v.idle_until(dl)

    def _emulate_insn(self, stub: int, esp: int) -> bool:
        """#GP(0) from ring 1: the Launcher's ``emulate_insn`` for in/out
        (optional 0x66 prefix) and a stray ``cli``. False: not one of
        those (reflect it)."""
        err, eip, cs = self._u32(esp), self._u32(esp + 4), self._u32(esp + 8)
        if err != 0 or cs is None or cs & 3 != abi.GUEST_PL:
            return False
        pa = self.walk32(eip)
        if pa is None:
            return False
        code = self.m.read_phys(pa, min(3, 4096 - (pa & 0xFFF)))
        n = 0
        size_override = code[0] == 0x66
        if size_override:
            n = 1
        op = code[n] if n < len(code) else None
        m = self.m
        if op == 0xFA and not size_override:         # cli: skipped
            length = 1
        elif op in _IN_OUT:
            d, size = _IN_OUT[op]
            if size == 4 and size_override:
                size = 2
            length = n + (2 if op in (0xE4, 0xE5, 0xE6, 0xE7) else 1)
            port = code[n + 1] if length == n + 2 else m.reg("rdx") & 0xFFFF
            eax = m.reg("rax")
            if d == "in":
                v = self.on_io_in(port, size) & ((1 << (8 * size)) - 1)
                mask = (1 << (8 * size)) - 1
                m.set_reg("rax", (eax & ~mask & U32) | v)
            else:
                self.on_io_out(port, size, eax & ((1 << (8 * size)) - 1))
        else:
            return False
        self._put_u32(esp + 4, eip + length)
        m.set_reg("rsp", esp + 4)                  # drop the error code
        m.set_reg("rip", stub + 3)                 # iret
        return True

    def port_in(self, port: int, size: int) -> int | None:
        return self.b.port_in(port, size)

    def port_out(self, port: int, size: int, value: int) -> bool:
        self.b.port_out(port, size, value)
        return True

    def _reflect(self, vec: int, esp: int) -> None:
        """[LGI] deliver_trap / set_guest_interrupt for a frame the CPU
        pushed on the way to the stub."""
        m = self.m
        b = self.b
        v = b.vcpu
        has_err = vec in abi.ERROR_CODE_VECTORS and vec < 32
        err = self._u32(esp) if has_err else None
        fo = esp + (4 if has_err else 0)
        eip = self._u32(fo)
        gate = b.guest_gate(vec)
        is_irq = vec >= abi.FIRST_EXTERNAL_VECTOR and vec != b.syscall_vec
        if is_irq:
            v.irqs_pending &= ~(1 << (vec - abi.FIRST_EXTERNAL_VECTOR))
        cr2 = None
        if vec == 14:
            cr2 = m.uc.reg_read(x86.UC_X86_REG_CR2) & U32
            if b.lguest_data is not None:
                m.write_phys_data(b.lguest_data + abi.LD_CR2, struct.pack("<I", cr2))
        if not is_irq:
            self.faults[vec] += 1
            self.clock.advance(self.clock.costs.fault_ns)
            if self.record is not None:
                ev = {"k": "fault", "vec": vec, "err": err, "rip": eip, "cs": self._u32(fo + 4)}
                if cr2 is not None:
                    ev["cr2"] = cr2
                self._emit(ev)
            key = (vec, eip, cr2)
            last, n = self._last_fault
            self._last_fault = (key, n + 1 if key == last else 1)
            if self._last_fault[1] > 64:
                self.end_run(Stop("triple_fault", f"vector {vec} repeats at the same EIP "
                                                  "with no progress", eip or 0))
                return
        if gate is None:
            if is_irq:
                m.set_reg("rip", m.reg("rip") + 3)       # ignored: iret
                return
            extra = cr2 if vec == 14 else (err or 0)
            self.end_run(Stop("crash", f"lguest killed the guest: unhandled trap {vec} at "
                                       f"{(eip or 0):#x} ({extra:#x})", eip or 0))
            return
        handler, gtype = gate
        enabled = v._ld(abi.LD_IRQ_ENABLED) & abi.X86_EFLAGS_IF
        fl = self._u32(fo + 8)
        if fl is not None:
            self._put_u32(fo + 8, (fl & ~abi.X86_EFLAGS_IF) | enabled)
        if gtype == 0xE:
            v._ld_write(abi.LD_IRQ_ENABLED, 0)
        if is_irq:
            v.write_timestamp()
            if v.deliverable_irq() is None:
                v._ld_write(abi.LD_IRQ_PENDING, 0)
        m.set_reg("rip", handler)

    # ---------------------------------------------------------- interrupts
    def upcall_vector(self) -> int | None:
        return self.b.vcpu.due_vector()

    def upcall_vector_number(self) -> int | None:
        return None


__all__ = ["LguestDispatch", "lguest_cpuid_policy"]
