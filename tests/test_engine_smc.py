"""Self-modifying code on pvmon's Unicorn: a guest store to a page that holds
translated code is seen by the next execution of that code, whether the store goes
through the code's own address or through a second mapping of the same frame, and
whether or not the store's page was written before (the notdirty patch,
pvmon/engine/patches/unicorn-2.1.4-notdirty-only-code-pages.patch, must keep this)."""

from __future__ import annotations

import struct

import unicorn
from unicorn import x86_const as x86

import pvmon.engine  # noqa: F401  (selects pvmon's patched Unicorn before the import below)

CODE = 0x10000          # the program
RW = 0x11000            # stack and scratch data
FUNC = 0x17000          # a function `mov eax, imm32; ret` in its own frame
ALIAS = 0x18000         # a second, writable mapping of FUNC's frame


def paged_engine(pages: list[tuple[int, int]], memory: int, rsp: int) -> unicorn.Uc:
    """A paged x86-64 engine at CPL 0 with ``memory`` bytes of RAM, page
    tables at 0x1000-0x4fff mapping each ``(va, pa)`` 4 KiB page of ``pages``
    (va below 2 MiB) and RSP at ``rsp``."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, memory)
    for table, nxt in ((0x1000, 0x2000), (0x2000, 0x3000), (0x3000, 0x4000)):
        uc.mem_write(table, struct.pack("<Q", nxt | 7))
    for va, pa in pages:
        uc.mem_write(0x4000 + (va >> 12) * 8, struct.pack("<Q", pa | 3))
    uc.reg_write(x86.UC_X86_REG_CR3, 0x1000)
    uc.reg_write(x86.UC_X86_REG_CR4, 0x20)
    uc.msr_write(0xC0000080, 0x500)
    uc.reg_write(x86.UC_X86_REG_CR0, 0x80010001)
    uc.reg_write(x86.UC_X86_REG_RSP, rsp)
    return uc


def engine() -> unicorn.Uc:
    """A paged x86-64 engine at CPL 0: CODE, RW and FUNC identity-mapped, ALIAS -> FUNC's frame."""
    uc = paged_engine([(CODE, CODE), (RW, RW), (FUNC, FUNC), (ALIAS, FUNC)], 0x20000, RW + 0x800)
    uc.mem_write(FUNC, bytes.fromhex("b801000000c3"))          # mov eax, 1; ret
    return uc


def call_func(at: int) -> bytes:
    return b"\xe8" + struct.pack("<i", FUNC - (at + 5))


def store_imm32(addr: int, value: int) -> bytes:
    return bytes.fromhex("c70425") + struct.pack("<Ii", addr, value)


def run(uc: unicorn.Uc, parts: list[bytes]) -> None:
    code = b""
    for p in parts:
        code += p(CODE + len(code)) if callable(p) else p
    uc.mem_write(CODE, code)
    uc.emu_start(CODE, CODE + len(code), count=1000)


MOV_EBX_EAX, MOV_ECX_EAX = bytes.fromhex("89c3"), bytes.fromhex("89c1")


def test_a_store_through_the_codes_own_address_retranslates_it():
    uc = engine()
    run(uc, [call_func, MOV_EBX_EAX, store_imm32(FUNC + 1, 2), call_func, MOV_ECX_EAX])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX)) == (1, 2)


def test_a_store_through_a_second_mapping_retranslates_the_code():
    uc = engine()
    run(uc, [call_func, MOV_EBX_EAX, store_imm32(ALIAS + 1, 2), call_func, MOV_ECX_EAX,
             store_imm32(ALIAS + 1, 3), call_func])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX),
            uc.reg_read(x86.UC_X86_REG_EAX)) == (1, 2, 3)


def test_a_page_written_before_its_code_was_translated_still_retranslates():
    uc = engine()
    run(uc, [store_imm32(FUNC + 0x800, 0), call_func, MOV_EBX_EAX,
             store_imm32(FUNC + 1, 2), call_func, MOV_ECX_EAX])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX)) == (1, 2)


def test_a_store_through_an_alias_cached_before_the_code_existed_retranslates_it():
    """The alias's TLB entry is filled by a store while FUNC's frame holds no
    code (so it skips the notdirty path); the frame then gets its first
    translation block through FUNC's own address, and the next store through
    the same cached alias entry must still reach the code (tlb_protect_code)."""
    uc = engine()
    run(uc, [store_imm32(ALIAS + 0x800, 0), call_func, MOV_EBX_EAX,
             store_imm32(ALIAS + 1, 2), call_func, MOV_ECX_EAX])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX)) == (1, 2)


def test_a_store_through_an_alias_after_part_of_the_pages_code_was_replaced_retranslates():
    """A second function keeps a translation block on the page while the
    first is rewritten through the alias and translated again; the alias's
    entry must stay on the notdirty path for the next rewrite (notdirty_write
    cleans an entry only once the page holds no code)."""
    uc = engine()
    uc.msr_write(0xC0000080, 0xD00)                              # EFER: LME, LMA, NXE
    # the alias no-execute, as a kernel's direct map is (an executable entry is
    # never cleaned: Unicorn keeps it for code fetches)
    uc.mem_write(0x4000 + (ALIAS >> 12) * 8, struct.pack("<Q", FUNC | 3 | 1 << 63))
    uc.mem_write(FUNC + 0x100, bytes.fromhex("b805000000c3"))      # mov eax, 5; ret
    call_f2 = lambda at: b"\xe8" + struct.pack("<i", FUNC + 0x100 - (at + 5))
    run(uc, [call_f2, call_func, store_imm32(ALIAS + 1, 2), call_func, MOV_EBX_EAX,
             store_imm32(ALIAS + 1, 3), call_func, MOV_ECX_EAX])
    assert (uc.reg_read(x86.UC_X86_REG_EBX), uc.reg_read(x86.UC_X86_REG_ECX)) == (2, 3)


def test_a_data_page_without_code_is_written_and_read_back():
    uc = engine()
    run(uc, [store_imm32(RW + 0x100, 7), bytes.fromhex("8b1c25") + struct.pack("<I", RW + 0x100)])
    assert uc.reg_read(x86.UC_X86_REG_EBX) == 7
