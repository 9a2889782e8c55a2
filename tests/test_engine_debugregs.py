"""The seventh engine patch (pvmon/engine/patches/unicorn-2.1.4-debug-registers.patch)
on a bare engine: writing %dr7 through uc_reg_write inserts the breakpoints it
enables, an instruction breakpoint raises #DB before the instruction, a data
breakpoint (QEMU's restored watchpoints) raises #DB after the access, and a
write through uc_mem_write (how pvmon touches guest memory for a hypercall)
raises none. Intel SDM vol. 3, 18.2-18.3 for what the hardware does."""

from __future__ import annotations

import pytest
import unicorn
from unicorn import x86_const as x86

from pvmon.engine import debugregs
from tests.test_engine_smc import CODE, RW, engine

pytestmark = pytest.mark.skipif(not debugregs.available(),
                                reason="needs pvmon's patched Unicorn (pvmon engine build)")

STORE = bytes.fromhex("48c70425") + (RW + 0x100).to_bytes(4, "little") + (7).to_bytes(4, "little")
NOP, HLT = b"\x90", b"\xf4"


def _run(uc, code: bytes) -> list[tuple[int, int, int]]:
    """Run ``code`` at CODE; the #DBs it raised: (vector, rip, dr6), stopping at the first."""
    seen = []

    def on_intr(uc, vector, _data):
        seen.append((vector, uc.reg_read(x86.UC_X86_REG_RIP), uc.reg_read(x86.UC_X86_REG_DR6)))
        uc.emu_stop()

    h = uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.mem_write(CODE, code)
    try:
        uc.emu_start(CODE, CODE + len(code), count=100)
    finally:
        uc.hook_del(h)
    return seen


def test_an_instruction_breakpoint_written_with_reg_write_raises_db_before_the_instruction():
    uc = engine()
    uc.reg_write(x86.UC_X86_REG_DR0, CODE + 2)
    uc.reg_write(x86.UC_X86_REG_DR7, 0x401)                 # L0, R/W 00b
    assert _run(uc, NOP * 4) == [(1, CODE + 2, 0xFFFF0FF1)]


def test_a_write_breakpoint_raises_db_after_the_store_which_is_done():
    uc = engine()
    uc.reg_write(x86.UC_X86_REG_DR1, RW + 0x100)
    uc.reg_write(x86.UC_X86_REG_DR7, 0x400 | 4 | (1 << 20) | (2 << 22))   # L1, write, 8 bytes
    seen = _run(uc, NOP + STORE + NOP * 3)
    assert seen == [(1, CODE + 1 + len(STORE), 0xFFFF0FF2)]
    assert uc.mem_read(RW + 0x100, 8) == (7).to_bytes(8, "little")


def test_a_disabled_breakpoint_and_a_uc_mem_write_raise_nothing():
    uc = engine()
    uc.reg_write(x86.UC_X86_REG_DR1, RW + 0x100)
    uc.reg_write(x86.UC_X86_REG_DR7, 0x400 | (1 << 20) | (2 << 22))       # not enabled
    assert _run(uc, STORE + NOP) == []
    uc.reg_write(x86.UC_X86_REG_DR7, 0x400 | 4 | (1 << 20) | (2 << 22))
    uc.mem_write(RW + 0x100, b"\x01" * 8)                   # not through the TLB
    assert _run(uc, NOP * 3) == []


def test_removing_the_breakpoint_through_dr7_stops_it_firing():
    uc = engine()
    uc.reg_write(x86.UC_X86_REG_DR0, CODE + 1)
    uc.reg_write(x86.UC_X86_REG_DR7, 0x401)
    assert _run(uc, NOP * 3)
    uc.reg_write(x86.UC_X86_REG_DR7, 0x400)
    assert _run(uc, NOP * 3) == []
