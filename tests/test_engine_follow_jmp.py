"""Translation blocks that go on past a direct JMP (the ninth engine patch,
pvmon/engine/patches/unicorn-2.1.4-tb-follow-jmp.patch) or a conditional jump
(the eleventh, unicorn-2.1.4-tb-follow-jcc.patch): the code after it in one
block still behaves as the CPU defines it, and both sides of a Jcc run. A store to it is
seen by its next execution, a fault in it reports its own RIP, an exit address
at a JMP's target stops there, and with a block hook installed blocks end at
every JMP as before (the SMP slicer counts them). All of it holds on the stock
library too, where every JMP ends its block."""

from __future__ import annotations

import struct

import pytest
import unicorn
from unicorn import x86_const as x86

# CODE: the program; RW: stack and data; FUNC: a function with a forward JMP in
# it, in its own frame; ALIAS: a second, writable mapping of FUNC's frame
from tests.test_engine_smc import ALIAS, CODE, FUNC, engine

UNMAPPED = 0x1F000      # mapped in the engine, not in the guest page tables


# FUNC: jmp +5 (over five int3); mov eax, imm32; ret. The MOV sits at TARGET.
JMP_OVER = bytes.fromhex("eb05") + b"\xcc" * 5
TARGET = FUNC + len(JMP_OVER)


def func(imm: int) -> bytes:
    return JMP_OVER + b"\xb8" + struct.pack("<I", imm) + b"\xc3"


def call_func(at: int) -> bytes:
    return b"\xe8" + struct.pack("<i", FUNC - (at + 5))


def store_imm32(addr: int, value: int) -> bytes:
    return bytes.fromhex("c70425") + struct.pack("<Ii", addr, value)


def program(parts) -> bytes:
    code = b""
    for p in parts:
        code += p(CODE + len(code)) if callable(p) else p
    return code


def run(uc: unicorn.Uc, parts) -> None:
    """Run the program to its end with no count (a count hook would turn the patch off)."""
    code = program(parts)
    uc.mem_write(CODE, code)
    uc.emu_start(CODE, CODE + len(code))


MOV_EBX_EAX, MOV_ECX_EAX = bytes.fromhex("89c3"), bytes.fromhex("89c1")


def test_a_store_to_the_code_after_a_jmp_is_seen_by_its_next_execution():
    uc = engine()
    uc.mem_write(FUNC, func(1))
    run(uc, [call_func, MOV_EBX_EAX, store_imm32(TARGET + 1, 2), call_func, MOV_ECX_EAX,
             store_imm32(ALIAS + len(JMP_OVER) + 1, 3), call_func])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX),
            uc.reg_read(x86.UC_X86_REG_EAX)) == (1, 2, 3)


def test_a_fault_after_a_jmp_reports_the_faulting_instructions_rip():
    uc = engine()
    # jmp +5; (five int3); mov rax, [UNMAPPED]  -- a #PF the engine cannot deliver
    uc.mem_write(FUNC, JMP_OVER + bytes.fromhex("488b0425") + struct.pack("<I", UNMAPPED))
    with pytest.raises(unicorn.UcError):
        run(uc, [bytes.fromhex("bb07000000"), call_func])    # mov ebx, 7; call FUNC
    assert uc.reg_read(x86.UC_X86_REG_RIP) == TARGET
    assert uc.reg_read(x86.UC_X86_REG_EBX) == 7


def test_an_exit_address_at_a_jmp_target_stops_there():
    uc = engine()
    uc.mem_write(FUNC, func(5))
    uc.reg_write(x86.UC_X86_REG_EAX, 0)
    uc.emu_start(FUNC, TARGET)
    assert uc.reg_read(x86.UC_X86_REG_RIP) == TARGET
    assert uc.reg_read(x86.UC_X86_REG_EAX) == 0


def test_with_a_block_hook_every_jmp_still_ends_a_block():
    uc = engine()
    uc.mem_write(FUNC, func(9))
    starts: list[int] = []
    uc.hook_add(unicorn.UC_HOOK_BLOCK, lambda _uc, addr, _size, _d: starts.append(addr))
    run(uc, [call_func])
    assert starts == [CODE, FUNC, TARGET]
    assert uc.reg_read(x86.UC_X86_REG_EAX) == 9


def test_on_the_patched_library_one_block_runs_through_the_jmp():
    from pvmon.engine import uclib
    if "unicorn-2.1.4-tb-follow-jmp.patch" not in uclib.describe()["patches"]:
        pytest.skip("needs pvmon's patched Unicorn (pvmon engine build)")
    uc = engine()
    uc.mem_write(FUNC, func(1))
    run(uc, [call_func])
    tb = uc.ctl_request_cache(FUNC)
    # jmp, then the mov and ret at its target; the int3s jumped over are inside the span
    assert tuple(tb) == (FUNC, 3, len(func(1)))   # (pc, icount, size)


# cmp edi, 0; jne +6 (to `mov eax, 7; ret`); mov eax, imm32; ret. With the
# eleventh engine patch one block runs on past the JNE at its fall-through;
# the taken side leaves by the block's third exit.
def guarded(imm: int) -> bytes:
    return (bytes.fromhex("83ff00") + bytes.fromhex("7506") + b"\xb8" + struct.pack("<I", imm)
            + b"\xc3" + bytes.fromhex("b807000000c3"))


FALL = FUNC + 5           # the MOV on the JNE's fall-through


def test_after_a_jcc_both_sides_run_and_a_store_to_the_fall_through_is_seen():
    uc = engine()
    uc.mem_write(FUNC, guarded(1))
    mov_edi = bytes.fromhex("bf00000000"), bytes.fromhex("bf01000000")   # mov edi, 0 / 1
    run(uc, [mov_edi[0], call_func, MOV_EBX_EAX, mov_edi[1], call_func, MOV_ECX_EAX,
             mov_edi[0], store_imm32(ALIAS + 6, 2), call_func])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX),
            uc.reg_read(x86.UC_X86_REG_EAX)) == (1, 7, 2)


def test_a_fault_after_a_followed_jcc_reports_the_faulting_instructions_rip():
    uc = engine()
    # cmp edi, 0; jne +8; mov rax, [UNMAPPED]; ret
    uc.mem_write(FUNC, bytes.fromhex("83ff00") + bytes.fromhex("7508")
                 + bytes.fromhex("488b0425") + struct.pack("<I", UNMAPPED) + b"\xc3")
    with pytest.raises(unicorn.UcError):
        run(uc, [bytes.fromhex("bf00000000"), call_func])
    assert uc.reg_read(x86.UC_X86_REG_RIP) == FALL


def test_on_the_patched_library_one_block_runs_on_past_a_jcc():
    from pvmon.engine import uclib
    if "unicorn-2.1.4-tb-follow-jcc.patch" not in uclib.describe()["patches"]:
        pytest.skip("needs pvmon's patched Unicorn (pvmon engine build)")
    uc = engine()
    uc.mem_write(FUNC, guarded(1))
    run(uc, [bytes.fromhex("bf00000000"), call_func])
    # cmp, jne, then the mov and ret of the fall-through, in one block
    assert tuple(uc.ctl_request_cache(FUNC)) == (FUNC, 4, 11)
