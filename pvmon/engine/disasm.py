"""x86-64 disassembly around an instruction pointer (capstone).

x86 cannot be decoded backwards, so :func:`disassemble_around` decodes
forward from the start of the enclosing function when it lies inside the
bytes given, else from the first offset before RIP whose decoding lands
exactly on RIP, else from RIP itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import capstone


@dataclass(frozen=True)
class Insn:
    """One decoded instruction: guest-virtual ``address``, raw ``size`` bytes,
    ``text`` (``mnemonic operands``), ``at_rip`` if it is the one at RIP."""

    address: int
    size: int
    text: str
    at_rip: bool


@cache
def _cs() -> capstone.Cs:
    import capstone  # here, not at import: a run that never disassembles skips its 20 ms

    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.skipdata = False
    return cs


def _decode(code: bytes, base: int, start: int) -> list[tuple[int, int, str]]:
    out = []
    for a, size, mn, ops in _cs().disasm_lite(code[start - base:], start):
        out.append((a, size, f"{mn} {ops}".rstrip()))
    return out


def _annotate(text: str, symbolize: Callable[[int], str]) -> str:
    """``jmp 0x...`` / ``call 0x...`` / ``jcc 0x...`` with ``  <symbol>`` of the target."""
    mn, _, ops = text.partition(" ")
    if not (mn.startswith("j") or mn == "call") or not ops.startswith("0x"):
        return text
    try:
        target = int(ops, 16)
        name = symbolize(target)
    except Exception:  # noqa: BLE001 - symbols are a nicety; never fail the listing on them
        return text
    return text if not name or name.startswith("0x") else f"{text}  <{name}>"


def disassemble_around(code: bytes, base: int, rip: int, *, before: int = 4, after: int = 8,
                       func_start: int | None = None,
                       symbolize: Callable[[int], str] | None = None) -> list[Insn]:
    """Up to ``before`` instructions before RIP, the one at RIP and ``after``
    after it, from ``code`` (bytes at guest-virtual ``base``). Empty if RIP
    is outside ``code``. With ``symbolize`` (address -> ``sym+0xoff``), direct
    jump and call targets are followed by ``<symbol>``."""
    if not base <= rip < base + len(code):
        return []
    starts: list[int] = []
    if func_start is not None and base <= func_start <= rip:
        starts.append(func_start)
    starts += range(max(base, rip - 64), rip)
    chosen = _decode(code, base, rip)
    for s in starts:
        insns = _decode(code, base, s)
        if any(a == rip for a, _, _ in insns):
            chosen = insns
            break
    idx = next((i for i, (a, _, _) in enumerate(chosen) if a == rip), 0)
    window = chosen[max(0, idx - before): idx + after + 1]
    if symbolize is not None:
        window = [(a, n, _annotate(t, symbolize)) for a, n, t in window]
    return [Insn(a, n, t, a == rip) for a, n, t in window]


#: Mnemonics after which execution may not continue at the next instruction.
_TRANSFERS = ("j", "call", "ret", "iret", "int", "syscall", "sysret", "sysexit", "sysenter",
              "loop", "hlt", "ud", "lret", "ljmp", "lcall", "xbegin")


def _store_length(code: bytes) -> int | None:
    """Length of the instruction at the start of ``code`` when it is one of the
    stores a guest kernel writes its page tables with (an optional REX prefix,
    then ``mov r/m, r`` 88/89, ``xchg r/m, r`` 86/87 or ``mov r/m, imm`` C6/C7
    with ModRM.reg 0) and lies whole in ``code``; None for anything else.
    These always decode, to a MOV or XCHG, so execution continues right after
    them: :func:`straight_line_length` answers them without capstone (the
    writable-page-table step of every Linux ``set_pte``; tests/test_disasm.py
    holds this to capstone's decoding)."""
    n = len(code)
    i = 1 if n and 0x40 <= code[0] <= 0x4F else 0        # REX
    if i + 1 >= n:
        return None
    op, modrm = code[i], code[i + 1]
    if op in (0x86, 0x87, 0x88, 0x89):
        imm = 0
    elif op in (0xC6, 0xC7) and not modrm & 0x38:
        imm = 1 if op == 0xC6 else 4      # imm32 with REX.W too (sign-extended)
    else:
        return None
    i += 2
    mod, rm = modrm >> 6, modrm & 7
    if mod != 3:
        if rm == 4:                         # SIB byte
            if i >= n:
                return None
            if mod == 0 and code[i] & 7 == 5:
                i += 4                      # no base: disp32
            i += 1
        elif mod == 0 and rm == 5:
            i += 4                          # RIP-relative disp32
        i += (0, 1, 4)[mod]
    i += imm
    return i if i <= n else None


def straight_line_length(code: bytes, address: int) -> int | None:
    """Length in bytes of the instruction at the start of ``code`` (guest-virtual
    ``address``) if execution always continues right after it; None if it does
    not decode or may transfer control (jumps, calls, returns, interrupts, loops,
    HLT, UD). Page-table stores are decoded here (:func:`_store_length`), the
    rest by capstone (imported on first use)."""
    size = _store_length(code)
    if size is not None:
        return size
    for _a, size, mn, _ops in _cs().disasm_lite(code, address, 1):
        bare = mn.split()[-1] if mn.startswith(("rep", "lock", "bnd", "notrack")) else mn
        return None if bare.startswith(_TRANSFERS) else size
    return None


def label(rip: int, symbolize: Callable[[int], str] | None) -> str:
    """``sym+0xoff`` for the pane's title, or the address if no symbols."""
    if symbolize is None:
        return f"{rip:#x}"
    try:
        return symbolize(rip)
    except Exception:  # noqa: BLE001 - symbols are a nicety; never fail the pane on them
        return f"{rip:#x}"
