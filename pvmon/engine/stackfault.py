"""Which exception a non-canonical memory access raises: #SS(0) or #GP(0).

In 64-bit mode an access to a non-canonical address raises #SS(0) when it is
made through the stack segment (an implicit stack access of PUSH, POP, CALL,
RET, ENTER, LEAVE, IRET..., or a memory operand whose base is RSP or RBP, or
that names SS), and #GP(0) otherwise (Intel SDM vol. 3, 6.15 "Interrupt 12" and
"Interrupt 13"; vol. 1, 3.3.7.1 "Canonical Addressing"). QEMU's TCG, and so
Unicorn, raises #GP(0) for both (``target/i386`` page walk: a non-canonical
address is ``EXCP0D_GPF`` whatever the segment).

:func:`is_stack_fault` tells them apart after the fact, from the faulting
instruction's bytes and the registers, so the platform can deliver #SS where
the engine reported #GP. It runs only on a #GP(0), so it costs nothing on the
path of guests that never take one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import capstone

U64 = (1 << 64) - 1
#: mnemonics with an implicit stack access, and where it starts relative to RSP
#: (``-size``: a push; ``0``: a pop); LEAVE pops from RBP.
_PUSHES = frozenset({"push", "pushf", "pushfq", "call", "lcall", "enter"})
_POPS = frozenset({"pop", "popf", "popfq", "ret", "retf", "retfq", "lret", "iret", "iretd",
                   "iretq"})

#: Opcodes of instructions without a memory operand or stack access: RDMSR, WRMSR.
_NO_MEMORY = (b"\x0f\x32", b"\x0f\x30")


@cache
def _cs() -> capstone.Cs:
    import capstone  # here, not at import: it runs only on a #GP(0)

    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.detail = True
    return cs


def canonical(addr: int) -> bool:
    """48-bit canonical: bits 63..47 all equal."""
    top = (addr & U64) >> 47
    return top in (0, 0x1FFFF)


def _span_ok(addr: int, size: int) -> bool:
    return canonical(addr) and canonical(addr + max(size, 1) - 1)


def is_stack_fault(code: bytes, rip: int, reg: Callable[[str], int]) -> bool:
    """True when the instruction in ``code`` (its bytes, at guest-virtual
    ``rip``) makes a stack-segment access to a non-canonical address and no
    other non-canonical access that would fault first; ``reg(name)`` reads a
    64-bit register by lower-case name (``rsp``, ``rbp``, ``rax``...). False
    for anything it cannot decode. RDMSR and WRMSR (no prefix), the #GP(0)
    every Linux boot takes in its ``rdmsr_safe`` probes, touch no memory and
    no stack: False without capstone (imported on first use, about 25 ms)."""
    if code[:2] in _NO_MEMORY:
        return False
    try:
        insn = next(_cs().disasm(code, rip, 1))
    except StopIteration:
        return False
    from capstone.x86 import X86_OP_MEM
    mn = insn.mnemonic
    ss_bad = other_bad = False
    for op in insn.operands:
        if op.type != X86_OP_MEM:
            continue
        mem = op.mem
        base = insn.reg_name(mem.base) if mem.base else ""
        if base in ("rip", "eip"):
            continue                                  # RIP-relative: CS, checked at fetch
        if base.startswith("e") or (mem.index and insn.reg_name(mem.index).startswith("e")):
            continue                                  # 32-bit addressing: always canonical
        addr = mem.disp
        if base:
            addr += reg(base)
        if mem.index:
            addr += reg(insn.reg_name(mem.index)) * mem.scale
        addr &= U64
        seg = insn.reg_name(mem.segment) if mem.segment else ""
        if seg in ("fs", "gs"):
            continue                                  # a segment base is added: not ours
        stack = seg == "ss" or (not seg and base in ("rsp", "rbp"))
        if not _span_ok(addr, op.size):
            if stack:
                ss_bad = True
            else:
                other_bad = True
    bare = mn.split()[-1]
    if bare == "leave":
        ss_bad = ss_bad or not _span_ok(reg("rbp"), 8)
    elif bare in _PUSHES:
        ss_bad = ss_bad or not _span_ok((reg("rsp") - 8) & U64, 8)
    elif bare in _POPS:
        ss_bad = ss_bad or not _span_ok(reg("rsp"), 8)
    return ss_bad and not other_bad


__all__ = ["canonical", "is_stack_fault"]
