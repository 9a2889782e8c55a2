"""REP MOVS and REP STOS on pvmon's Unicorn, whose tenth patch
(pvmon/engine/patches/unicorn-2.1.4-rep-string-bulk.patch) does many iterations
at once where it can: what the guest sees must be what the architecture
defines, element by element. Memory ends as the element-wise loop leaves it, a
page fault part-way leaves RCX/RDI/RSI at the faulting element, overlapping
MOVS keeps its forward element order, a segment override applies to the
source, DF=1 runs backwards, and a REP STOS over translated code makes the
code be translated again. Every run is without a count or hooks (either would
turn the bulk path off). All of it holds on the stock library too."""

from __future__ import annotations

import struct

import pytest
import unicorn
from unicorn import x86_const as x86

from tests.test_engine_smc import paged_engine

CODE = 0x10000           # the program (one page)
DATA = 0x20000           # eight identity-mapped data pages
HOLE = DATA + 8 * 0x1000  # not mapped in the guest page tables: #PF


def engine() -> unicorn.Uc:
    """A paged x86-64 engine at CPL 0: CODE and DATA..DATA+8 pages identity-mapped."""
    pages = [(va, va) for va in [CODE] + [DATA + i * 0x1000 for i in range(8)]]
    return paged_engine(pages, 0x40000, DATA + 0x7F00)


def run(uc: unicorn.Uc, code: bytes, **regs: int) -> None:
    for name, value in regs.items():
        uc.reg_write(getattr(x86, f"UC_X86_REG_{name.upper()}"), value)
    uc.mem_write(CODE, code)
    uc.emu_start(CODE, CODE + len(code))


def reg(uc: unicorn.Uc, name: str) -> int:
    return uc.reg_read(getattr(x86, f"UC_X86_REG_{name.upper()}"))


REP_STOSB, REP_STOSW, REP_STOSD, REP_STOSQ = (bytes.fromhex(h) for h in ("f3aa", "66f3ab", "f3ab", "f348ab"))
REP_MOVSB, REP_MOVSQ = bytes.fromhex("f3a4"), bytes.fromhex("f348a5")
STD, CLD = b"\xfd", b"\xfc"


@pytest.mark.parametrize("insn, size", [(REP_STOSB, 1), (REP_STOSW, 2), (REP_STOSD, 4), (REP_STOSQ, 8)])
def test_rep_stos_over_several_pages_fills_exactly_its_elements(insn, size):
    uc = engine()
    uc.mem_write(DATA, b"\x55" * 0x8000)
    start, count = DATA + 0x7F3, (0x2400 // size) + 3          # unaligned, three pages
    run(uc, insn, rax=0x1122334455667788, rdi=start, rcx=count)
    pattern = (0x1122334455667788).to_bytes(8, "little")[:size]
    got = uc.mem_read(DATA, 0x8000)
    want = b"\x55" * 0x7F3 + pattern * count
    want += b"\x55" * (0x8000 - len(want))
    assert got == want
    assert (reg(uc, "rcx"), reg(uc, "rdi")) == (0, start + count * size)


def test_rep_stosb_into_an_unmapped_page_faults_at_that_element():
    uc = engine()
    start = HOLE - 0x1800
    with pytest.raises(unicorn.UcError):
        run(uc, REP_STOSB, rax=0xAB, rdi=start, rcx=0x2000)
    assert (reg(uc, "rdi"), reg(uc, "rcx")) == (HOLE, 0x2000 - 0x1800)
    assert reg(uc, "rip") == CODE
    assert uc.mem_read(start, 0x1800) == b"\xab" * 0x1800


def test_rep_movsq_from_an_unmapped_page_faults_at_that_element():
    uc = engine()
    src, dst = HOLE - 0x1000, DATA
    uc.mem_write(src, bytes(range(256)) * 16)
    with pytest.raises(unicorn.UcError):
        run(uc, REP_MOVSQ, rsi=src, rdi=dst, rcx=0x400)
    assert (reg(uc, "rsi"), reg(uc, "rdi"), reg(uc, "rcx")) == (HOLE, dst + 0x1000, 0x200)
    assert uc.mem_read(dst, 0x1000) == bytes(range(256)) * 16


def test_rep_movsb_over_an_overlap_repeats_as_the_forward_loop_does():
    uc = engine()
    uc.mem_write(DATA, b"xyz" + b"\0" * 0x2000)
    run(uc, REP_MOVSB, rsi=DATA, rdi=DATA + 3, rcx=0x1800)
    assert uc.mem_read(DATA, 0x1803) == b"xyz" * 0x801


def test_rep_movsq_with_an_fs_override_copies_from_the_fs_base():
    uc = engine()
    uc.mem_write(DATA + 0x3000, bytes(range(256)) * 32)
    uc.msr_write(0xC0000100, DATA + 0x3000)                   # FS base
    run(uc, b"\x64" + REP_MOVSQ, rsi=0, rdi=DATA, rcx=0x300)  # fs: rep movsq
    assert uc.mem_read(DATA, 0x1800) == (bytes(range(256)) * 32)[:0x1800]


def test_rep_movsb_with_df_set_copies_backwards():
    uc = engine()
    uc.mem_write(DATA, bytes(range(256)) * 24)
    run(uc, STD + REP_MOVSB + CLD, rsi=DATA + 0x17FF, rdi=DATA + 0x3FFF, rcx=0x1800)
    assert uc.mem_read(DATA + 0x2800, 0x1800) == bytes(range(256)) * 24
    assert (reg(uc, "rsi"), reg(uc, "rdi"), reg(uc, "rcx")) == (DATA - 1, DATA + 0x27FF, 0)


def test_rep_stos_over_translated_code_has_it_translated_again():
    """A function at DATA+0x4000 (mov eax, 1; ret) is called, overwritten by a REP
    STOSB with its own page's TLB entry on the slow path, and called again."""
    uc = engine()
    func = DATA + 0x4000
    uc.mem_write(func, bytes.fromhex("b801000000c3"))
    new = bytes.fromhex("b802000000c3")
    call = b"\xe8" + struct.pack("<i", func - (CODE + 5))
    # call func; mov ebx, eax; rep stosb (6 bytes of 0x90 over the function's
    # first bytes, then patch); call func
    code = call + bytes.fromhex("89c3")
    code += bytes.fromhex("48bf") + struct.pack("<Q", func)           # mov rdi, func
    code += bytes.fromhex("b9") + struct.pack("<I", 0x800)            # mov ecx, 0x800
    code += bytes.fromhex("b090") + REP_STOSB                         # mov al, 0x90; rep stosb
    code += bytes.fromhex("48bf") + struct.pack("<Q", func + 0x800 - 6)
    code += bytes.fromhex("48be") + struct.pack("<Q", DATA + 0x100)   # mov rsi, DATA+0x100
    code += bytes.fromhex("b906000000") + REP_MOVSB                   # mov ecx, 6; rep movsb
    code += b"\xe8" + struct.pack("<i", func - (CODE + len(code) + 5))
    uc.mem_write(DATA + 0x100, new)
    run(uc, code)
    # the NOP slide now runs into `mov eax, 2; ret`
    assert (reg(uc, "ebx"), reg(uc, "eax")) == (1, 2)
