"""The single step over a trapped write decides an instruction's length as
capstone does: the page-table stores decoded without capstone give the same
answer for every ModRM and SIB byte, with and without REX, and everything
else is still capstone's."""

from __future__ import annotations

import random

import pytest

from pvmon.engine import disasm
from pvmon.engine.disasm import _cs, _store_length, straight_line_length

OPCODES = [0x86, 0x87, 0x88, 0x89, 0xC6, 0xC7]
ADDRESS = 0xFFFFFFFF81000000


def _capstone(code: bytes) -> int | None:
    """straight_line_length as it was: capstone alone."""
    for _a, size, mn, _ops in _cs().disasm_lite(code, ADDRESS, 1):
        bare = mn.split()[-1] if mn.startswith(("rep", "lock", "bnd", "notrack")) else mn
        return None if bare.startswith(disasm._TRANSFERS) else size
    return None


def _cases(rng: random.Random, prefixes: list[bytes]):
    for prefix in prefixes:
        for op in OPCODES:
            for modrm in range(256):
                sibs = range(256) if modrm >> 6 != 3 and modrm & 7 == 4 else [rng.randrange(256)]
                for sib in sibs:
                    tail = bytes(rng.randrange(256) for _ in range(13))
                    yield prefix + bytes([op, modrm, sib]) + tail


@pytest.mark.parametrize("prefixes", [[b"", b"\x48"], [b"\x40", b"\x4c", b"\x4f"]],
                         ids=["none-and-REX.W", "other-REX"])
def test_page_table_stores_decode_to_capstones_length_for_every_modrm_and_sib(prefixes):
    rng = random.Random(17)
    checked = 0
    for code in _cases(rng, prefixes):
        fast = _store_length(code)
        if fast is not None:
            assert fast == _capstone(code), code.hex()
            checked += 1
        assert straight_line_length(code, ADDRESS) == _capstone(code), code.hex()
    assert checked > 10_000


def test_a_store_cut_short_by_the_end_of_the_bytes_is_left_to_capstone():
    code = bytes.fromhex("48c7042500100000")        # mov qword [0x1000], imm32: 12 bytes
    for n in range(len(code) + 1):
        assert _store_length(code[:n]) is None
        assert straight_line_length(code[:n], ADDRESS) == _capstone(code[:n])


@pytest.mark.parametrize("code,size", [
    ("48871048f7c29fffffff740af7c201", 3),    # xchg [rax], rdx: Debian 6.1/6.12 set_pte
    ("488937c3662e0f1f8400000000008b", 3),    # mov [rdi], rsi
    ("ee4c8b057a460500488b0d7b460500", 1),    # out dx, al (capstone)
    ("e6804889c3cd210f0b0000facd210f", 2),    # out 0x80, al (capstone)
    ("c3", None),                             # ret
    ("eb fe".replace(" ", ""), None),         # jmp $
    ("c7f800000000", None),                   # xbegin: C7 with ModRM.reg 7
    ("f3ab", 2),                              # rep stosd
])
def test_instructions_the_guests_step_over(code, size):
    assert straight_line_length(bytes.fromhex(code), ADDRESS) == size


@pytest.mark.parametrize("code", ["0f3231c941890c24669048c1e22048",    # Debian 6.1 rdmsr_safe
                                  "0f3048c7059f250500000000004c8b"])   # wrmsr
def test_a_gp_on_rdmsr_or_wrmsr_is_no_stack_fault_as_capstone_decodes_it(code):
    from pvmon.engine import stackfault
    code = bytes.fromhex(code)
    insn = next(stackfault._cs().disasm(code, ADDRESS, 1))
    assert insn.mnemonic in ("rdmsr", "wrmsr") and not insn.operands and insn.size == 2
    bad = 1 << 63                                   # non-canonical RSP and RBP
    assert stackfault.is_stack_fault(code, ADDRESS, lambda r: bad) is False
