"""Disassembly around a guest RIP (capstone), for reports and the TUI.

Code bytes come either from guest memory (a live run) or from the kernel's
ELF image (a trace: kernel text does not change after boot, apart from
alternatives patching, which the report states).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import capstone

_CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def disassemble(code: bytes, address: int, count: int = 8,
                symbolize=None) -> list[tuple[int, str, str]]:
    """Up to ``count`` instructions of ``code`` placed at ``address``:
    ``[(address, "bytes in hex", "mnemonic operands")]``. ``symbolize``:
    optional ``fn(address) -> str`` used to annotate branch targets."""
    out = []
    for insn in _CS.disasm(code, address):
        text = f"{insn.mnemonic} {insn.op_str}".strip()
        if symbolize is not None and (insn.mnemonic[0] == "j" or insn.mnemonic == "call"):
            try:
                target = int(insn.op_str, 16)
                text += f"  <{symbolize(target)}>"
            except ValueError:
                pass
        out.append((insn.address, insn.bytes.hex(), text))
        if len(out) >= count:
            break
    return out


@lru_cache(maxsize=8)
def _segments(path: str) -> list[tuple[int, bytes]]:
    from elftools.elf.elffile import ELFFile
    segs = []
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                segs.append((seg["p_vaddr"], seg.data()))
    return segs


def elf_code(vmlinux: str | Path, va: int, size: int) -> bytes:
    """``size`` bytes of the ELF image at virtual address ``va`` (b"" when
    ``va`` is outside every PT_LOAD segment or the file is unreadable)."""
    try:
        segs = _segments(str(vmlinux))
    except (OSError, ValueError, Exception):  # noqa: BLE001 - a report must not fail on this
        return b""
    for base, data in segs:
        if base <= va < base + len(data):
            off = va - base
            return data[off:off + size]
    return b""


def around(vmlinux: str | Path, rip: int, symbols=None, before: int = 3,
           after: int = 3) -> list[tuple[int, str, str]]:
    """Instructions around ``rip`` from the ELF image: up to ``before``
    instructions ending at ``rip`` (decoded forward from the enclosing
    symbol's start, since x86 cannot be decoded backwards), the one at
    ``rip``, and ``after`` more. ``symbols``: a SymbolTable or None."""
    start = rip
    fmt = None
    if symbols is not None:
        fmt = symbols.format
        hit = symbols.lookup(rip)
        if hit is not None and 0 < hit[1] <= 4096:
            start = rip - hit[1]
    code = elf_code(vmlinux, start, rip - start + 16 * (after + 1))
    insns = disassemble(code, start, 1 << 12, fmt)
    idx = next((i for i, ins in enumerate(insns) if ins[0] == rip), None)
    if idx is None:   # rip is not on an instruction boundary from the symbol start
        return disassemble(elf_code(vmlinux, rip, 16 * (after + 1)), rip, after + 1, fmt)
    return insns[max(0, idx - before):idx + after + 1]
