"""The register set gdb sees for an x86-64 guest, and its target description.

gdb's amd64 support wants the features ``org.gnu.gdb.i386.core`` (general
registers, segment selectors, the x87 state), ``org.gnu.gdb.i386.sse``
(xmm0-15, mxcsr) and accepts ``org.gnu.gdb.i386.segments`` (fs_base,
gs_base): see the GDB manual, "i386 Features". The order below is the
register numbering of the ``g`` packet and of ``p``/``P``.

Values come from Unicorn through the :class:`~pvmon.engine.machine.Machine`
(general registers in one batched read); the x87 data registers are read
as Unicorn's ``(mantissa, exponent)`` pairs and packed as 10-byte extended
reals.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from unicorn import x86_const as x86

from pvmon.engine.machine import Machine


@dataclass(frozen=True)
class Reg:
    """One register: ``name`` (gdb's), ``size`` (bytes), ``type`` (a gdb
    target-description type), ``feature`` (which feature element it sits in),
    ``uc`` (the Unicorn register constant, or None for a register Unicorn
    lacks: it reads as zero and ignores writes)."""

    name: str
    size: int
    type: str
    feature: str
    uc: int | None


_CORE, _SSE, _SEG = "org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments"


def _core() -> list[Reg]:
    regs = []
    for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
        t = "data_ptr" if n in ("rbp", "rsp") else "int64"
        regs.append(Reg(n, 8, t, _CORE, getattr(x86, f"UC_X86_REG_{n.upper()}")))
    regs.append(Reg("rip", 8, "code_ptr", _CORE, x86.UC_X86_REG_RIP))
    regs.append(Reg("eflags", 4, "int32", _CORE, x86.UC_X86_REG_EFLAGS))
    for n in ("cs", "ss", "ds", "es", "fs", "gs"):
        regs.append(Reg(n, 4, "int32", _CORE, getattr(x86, f"UC_X86_REG_{n.upper()}")))
    for i in range(8):
        regs.append(Reg(f"st{i}", 10, "i387_ext", _CORE, getattr(x86, f"UC_X86_REG_FP{i}")))
    for n, uc in (("fctrl", x86.UC_X86_REG_FPCW), ("fstat", x86.UC_X86_REG_FPSW),
                  ("ftag", x86.UC_X86_REG_FPTAG), ("fiseg", x86.UC_X86_REG_FCS),
                  ("fioff", x86.UC_X86_REG_FIP), ("foseg", x86.UC_X86_REG_FDS),
                  ("fooff", x86.UC_X86_REG_FDP), ("fop", x86.UC_X86_REG_FOP)):
        regs.append(Reg(n, 4, "int", _CORE, uc))
    for i in range(16):
        regs.append(Reg(f"xmm{i}", 16, "vec128", _SSE, getattr(x86, f"UC_X86_REG_XMM{i}")))
    regs.append(Reg("mxcsr", 4, "int", _SSE, x86.UC_X86_REG_MXCSR))
    regs.append(Reg("fs_base", 8, "int", _SEG, x86.UC_X86_REG_FS_BASE))
    regs.append(Reg("gs_base", 8, "int", _SEG, x86.UC_X86_REG_GS_BASE))
    return regs


#: The registers, in gdb's numbering.
REGS: list[Reg] = _core()
REG_INDEX = {r.name: i for i, r in enumerate(REGS)}
#: Registers read in one batch (general, rip, eflags, selectors, bases).
_BATCH = [i for i in range(len(REGS)) if REGS[i].name in (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
    "r12", "r13", "r14", "r15", "rip", "cs", "ss", "ds", "es", "fs", "gs", "fs_base",
    "gs_base")]
#: Registers gdb may write (the rest: a write of the current value is accepted).
WRITABLE = frozenset(REGS[i].name for i in _BATCH) - {"cs", "ss", "ds", "es", "fs", "gs"} \
    | {"eflags", "mxcsr"} | {f"xmm{i}" for i in range(16)}


_X87_CONTROL = frozenset(("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"))


def target_xml() -> str:
    """The target description gdb reads with ``qXfer:features:read:target.xml``."""
    out = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
           "<target>", "<architecture>i386:x86-64</architecture>"]
    feature = None
    for num, r in enumerate(REGS):
        if r.feature != feature:
            if feature is not None:
                out.append("</feature>")
            feature = r.feature
            out.append(f'<feature name="{feature}">')
            if feature == _SSE:
                out += ['<vector id="v4f" type="ieee_single" count="4"/>',
                        '<vector id="v2d" type="ieee_double" count="2"/>',
                        '<vector id="v16i8" type="int8" count="16"/>',
                        '<vector id="v8i16" type="int16" count="8"/>',
                        '<vector id="v4i32" type="int32" count="4"/>',
                        '<vector id="v2i64" type="int64" count="2"/>',
                        ('<union id="vec128"><field name="v4_float" type="v4f"/>'
                         '<field name="v2_double" type="v2d"/>'
                         '<field name="v16_int8" type="v16i8"/>'
                         '<field name="v8_int16" type="v8i16"/>'
                         '<field name="v4_int32" type="v4i32"/>'
                         '<field name="v2_int64" type="v2i64"/>'
                         '<field name="uint128" type="uint128"/></union>')]
        group = ""
        if r.size == 10 or r.name in _X87_CONTROL:
            group = ' group="float"'
        elif r.size == 16:
            group = ' group="vector"'
        out.append(f'<reg name="{r.name}" bitsize="{r.size * 8}" type="{r.type}" '
                   f'regnum="{num}"{group}/>')
    out += ["</feature>", "</target>"]
    return "\n".join(out) + "\n"


def _ext80(value) -> bytes:
    """Unicorn's x87 register value (``(mantissa, exponent)``) as 10 bytes."""
    if isinstance(value, tuple):
        mant, exp = value
        return struct.pack("<QH", mant & 0xFFFF_FFFF_FFFF_FFFF, exp & 0xFFFF)
    return int(value).to_bytes(10, "little")


def read_all(m: Machine) -> bytes:
    """Every register, packed as the ``g`` packet wants (little-endian)."""
    batch = m.internals.reg_read_batch([REGS[i].uc for i in _BATCH])
    vals = dict(zip(_BATCH, batch))
    rflags = m.reg("rflags")
    out = bytearray()
    for i, r in enumerate(REGS):
        if i in vals:
            out += (vals[i] & ((1 << (8 * r.size)) - 1)).to_bytes(r.size, "little")
        elif r.name == "eflags":
            out += (rflags & 0xFFFF_FFFF).to_bytes(4, "little")
        else:
            out += read_one(m, i)
    return bytes(out)


def read_one(m: Machine, num: int) -> bytes:
    """Register ``num`` packed (``p`` packet). Raises IndexError for a bad number."""
    r = REGS[num]
    if r.name == "eflags":
        return (m.reg("rflags") & 0xFFFF_FFFF).to_bytes(4, "little")
    try:
        v = m.uc.reg_read(r.uc)
    except Exception:  # noqa: BLE001 - a register Unicorn cannot read reads as zero
        return bytes(r.size)
    if r.size == 10:
        return _ext80(v)
    return (int(v) & ((1 << (8 * r.size)) - 1)).to_bytes(r.size, "little")


def write_one(m: Machine, num: int, data: bytes) -> bool:
    """Write register ``num`` from its packed bytes. False if gdb may not
    change it (segment selectors, x87 state): a write of its current value
    is accepted as a no-op."""
    r = REGS[num]
    if len(data) != r.size:
        return False
    value = int.from_bytes(data, "little")
    if r.name not in WRITABLE:
        return read_one(m, num) == data
    if r.name == "eflags":
        m.set_reg("rflags", value)
    elif r.name in ("fs_base", "gs_base") or r.size == 8:
        m.set_reg(r.name, value)
    else:
        m.uc.reg_write(r.uc, value)
    return True


def write_all(m: Machine, data: bytes) -> bool:
    """The ``G`` packet: every register from packed bytes. False if the
    length is wrong or a read-only register would change."""
    if len(data) != sum(r.size for r in REGS):
        return False
    ok = True
    off = 0
    for i, r in enumerate(REGS):
        chunk = data[off:off + r.size]
        off += r.size
        ok = write_one(m, i, chunk) and ok
    return ok
