"""The HVM engine patch (pvmon/engine/hvm.py): exceptions go through the
guest's own IDT, an injected interrupt waits for RFLAGS.IF, RDMSR/WRMSR ask
pvmon first (#GP for an unknown MSR), a triple fault is counted, and the PVH
32-bit entry state is reached. A tiny hand-assembled long-mode guest on the
real engine; a Xen PV engine in the same process is unaffected."""

from __future__ import annotations

import struct

import pytest
from unicorn import UcError

from pvmon.engine import hvm
from pvmon.engine.machine import Machine

pytestmark = pytest.mark.skipif(not hvm.available(), reason="needs pvmon's patched Unicorn")

PML4, PDPT, PD, GDT, IDT, STACK = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x8000
CODE, HANDLERS, MARKS = 0x10000, 0x11000, 0x9000
MSR_UNKNOWN = 0x12345


def mark(offset: int) -> bytes:
    """mov byte ptr [MARKS + offset], 1"""
    return b"\xc6\x04\x25" + struct.pack("<I", MARKS + offset) + b"\x01"


IRETQ = b"\x48\xcf"
SKIP2 = b"\x48\x83\x04\x24\x02"              # add qword [rsp], 2
POP_ERR = b"\x48\x83\xc4\x08"                # add rsp, 8
HANDLER = {6: mark(6) + SKIP2 + IRETQ,        # #UD: skip the ud2
           13: mark(13) + POP_ERR + SKIP2 + IRETQ,   # #GP(0) from rdmsr: skip it
           0x40: mark(0x40) + IRETQ}


def gate(handler: int) -> bytes:
    lo = (handler & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | (((handler >> 16) & 0xFFFF) << 48)
    return struct.pack("<QQ", lo, handler >> 32)


def guest(code: bytes) -> tuple[Machine, hvm.HvmCpu, list]:
    m = Machine(16 << 20)
    m.write_phys(PML4, struct.pack("<Q", PDPT | 3))
    m.write_phys(PDPT, struct.pack("<Q", PD | 3))
    m.write_phys(PD, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(8)))
    m.write_phys(GDT, struct.pack("<3Q", 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF))
    idt = bytearray(256 * 16)
    for i, (vec, body) in enumerate(sorted(HANDLER.items())):
        addr = HANDLERS + 0x100 * i
        m.write_phys(addr, body)
        idt[vec * 16:vec * 16 + 16] = gate(addr)
    m.write_phys(IDT, bytes(idt))
    m.setup_long_mode(PML4, GDT, 23)
    m.uc.reg_write(hvm.x86.UC_X86_REG_IDTR, (0, IDT, 256 * 16 - 1, 0))
    m.write_phys(CODE, code)
    taken: list = []
    cpu = hvm.HvmCpu(m.uc, lambda w, msr, v: (hvm.MSR_GP, 0) if msr == MSR_UNKNOWN
                     else (hvm.MSR_HANDLED, 0x42), lambda v, rip: taken.append((v, rip)))
    m.set_regs(rsp=STACK, rip=CODE)
    m.set_segment("ss", 0x10)
    m.set_segment("cs", 0x08)
    return m, cpu, taken


def run(m: Machine, cpu: hvm.HvmCpu, start: int) -> None:
    cpu.activate()
    try:
        m.uc.emu_start(start, 0)      # ends at the hlt
    finally:
        cpu.deactivate()
    cpu.take_error()


def marks(m: Machine) -> set[int]:
    return {i for i, b in enumerate(m.read_phys(MARKS, 256)) if b}


def test_exceptions_and_msrs_go_through_the_guests_idt():
    # ud2; mov ecx, UNKNOWN; rdmsr; mov ecx, 0x1b; rdmsr; hlt
    code = (b"\x0f\x0b" + b"\xb9" + struct.pack("<I", MSR_UNKNOWN) + b"\x0f\x32"
            + b"\xb9\x1b\x00\x00\x00\x0f\x32" + b"\xf4")
    m, cpu, _ = guest(code)
    run(m, cpu, CODE)
    assert marks(m) == {6, 13}                     # #UD and #GP(0) delivered, both skipped
    assert m.reg("rax") & 0xFFFFFFFF == 0x42       # the handled RDMSR's value
    assert m.reg("rip") == CODE + len(code)        # stopped after the hlt


def test_an_injected_interrupt_waits_for_if_and_is_reported():
    # cli; hlt; nop; sti; nop; hlt
    code = b"\xfa\xf4\x90\xfb\x90\xf4"
    m, cpu, taken = guest(code)
    run(m, cpu, CODE)                              # to the first hlt, IF=0
    cpu.raise_irq(0x40)
    run(m, cpu, m.reg("rip"))                      # sti opens the window: taken there
    assert marks(m) == {0x40}
    assert taken and taken[0][0] == 0x40
    assert taken[0][1] in (CODE + 4, CODE + 5)     # after the sti (its shadow respected)
    assert cpu.pending is None


def test_a_pv_engine_in_the_same_process_still_gets_its_exceptions_as_hooks():
    m, _cpu, _ = guest(b"\x0f\x0b\xf4")
    seen = []
    m.uc.hook_add(hvm_const().UC_HOOK_INSN_INVALID, lambda uc, d: seen.append("ud") or False)
    with pytest.raises(UcError):
        m.uc.emu_start(CODE, 0)                    # not activated: Unicorn's own behaviour
    assert seen == ["ud"] and not marks(m)


def test_the_pvh_entry_state_is_32_bit_protected_mode_with_paging_off():
    m = Machine(16 << 20)
    m.write_phys(0x100000, b"\xb8\x34\x12\x00\x00\x89\xd9\xf4")   # mov eax,0x1234; mov ecx,ebx
    hvm.enter_protected32(m, 0x100000, 0x6000)
    assert m.reg("cs") == 0x08 and not m.reg("cr0") & (1 << 31)
    m.uc.emu_start(0x100000, 0)
    assert (m.reg("rax"), m.reg("rcx")) == (0x1234, 0x6000)


def hvm_const():
    from unicorn import unicorn_const
    return unicorn_const
