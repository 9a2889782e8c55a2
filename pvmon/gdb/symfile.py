"""A symbol file gdb can load for a kernel whose vmlinux is stripped.

Debian's vmlinuz carries a stripped vmlinux (no ``.symtab``); pvmon decodes
the kernel's own kallsyms into a System.map-format file instead. gdb reads
neither, so :func:`write_symbol_elf` writes a small ELF64 file holding the
vmlinux's section layout (as ``SHT_NOBITS``: no contents, so gdb reads code
and data from the target) and a ``.symtab`` built from the System.map
lines: ``break start_kernel``, ``bt`` and ``p (long)jiffies`` then work.
There are no types or line numbers: Debian's ``linux-image-*-dbg`` package
has the full debug info (see docs/gdb.md). ELF layout: the System V gABI,
"Sections" and "Symbol Table".
"""

from __future__ import annotations

import bisect
import struct
from pathlib import Path

from pvmon.errors import GuestImageError

_SHT_NOBITS, _SHT_SYMTAB, _SHT_STRTAB = 8, 2, 3
_STB_LOCAL, _STB_GLOBAL = 0, 1
_STT_OBJECT, _STT_FUNC = 1, 2
_SHN_ABS = 0xFFF1


def _sections(vmlinux: Path) -> list[tuple[str, int, int, int]]:
    """(name, address, size, flags) of the vmlinux's allocated sections."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    out = []
    try:
        with vmlinux.open("rb") as fh:
            for sec in ELFFile(fh).iter_sections():
                h = sec.header
                if h["sh_flags"] & 2 and h["sh_addr"] and h["sh_size"]:     # SHF_ALLOC
                    out.append((sec.name, h["sh_addr"], h["sh_size"], h["sh_flags"]))
    except OSError as exc:
        raise GuestImageError(f"cannot read {vmlinux}: {exc.strerror}") from None
    except ELFError as exc:
        raise GuestImageError(f"{vmlinux} is not a readable ELF file: {exc}") from None
    return out


def _map_lines(system_map: Path) -> list[tuple[int, str, str]]:
    syms = []
    try:
        text = system_map.read_text(errors="replace")
    except OSError as exc:
        raise GuestImageError(f"cannot read {system_map}: {exc.strerror}") from None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        if parts[1] in "aAuUwWvVnN" or not addr:
            continue
        syms.append((addr, parts[1], parts[2]))
    if not syms:
        raise GuestImageError(f"{system_map} holds no symbols")
    syms.sort()
    return syms


def write_symbol_elf(vmlinux: Path, system_map: Path, out: Path) -> Path:
    """Write ``out``: an ELF64 x86-64 file with ``vmlinux``'s section layout and
    the symbols of ``system_map``. Returns ``out``. Raises GuestImageError."""
    secs = _sections(vmlinux)
    syms = _map_lines(system_map)
    starts = [s[1] for s in secs]
    shstr = bytearray(b"\0")

    def name_off(table: bytearray, name: str) -> int:
        off = len(table)
        table += name.encode() + b"\0"
        return off

    sec_names = [name_off(shstr, s[0]) for s in secs]
    n_secs = len(secs)
    strtab_idx, shstr_idx = n_secs + 2, n_secs + 3     # .symtab is n_secs + 1
    sym_names = [name_off(shstr, x) for x in (".symtab", ".strtab", ".shstrtab")]

    strtab = bytearray(b"\0")
    local, glob = [], []
    addrs = [a for a, _, _ in syms]
    for i, (addr, kind, name) in enumerate(syms):
        j = bisect.bisect_right(starts, addr) - 1
        shndx = _SHN_ABS
        if j >= 0 and addr < secs[j][1] + secs[j][2]:
            shndx = j + 1
        nxt = bisect.bisect_right(addrs, addr, lo=i)
        size = addrs[nxt] - addr if nxt < len(addrs) else 0
        stt = _STT_FUNC if kind in "tT" else _STT_OBJECT
        bind = _STB_GLOBAL if kind.isupper() else _STB_LOCAL
        entry = (name_off(strtab, name), (bind << 4) | stt, 0, shndx, addr, size)
        (glob if bind == _STB_GLOBAL else local).append(entry)
    symtab = bytearray(bytes(24))                       # symbol 0: the null symbol
    for e in local + glob:
        symtab += struct.pack("<IBBHQQ", *e)

    body_off = 64
    symtab_off = body_off
    strtab_off = symtab_off + len(symtab)
    shstr_off = strtab_off + len(strtab)
    sh_off = (shstr_off + len(shstr) + 7) & ~7
    headers = bytearray(bytes(64))                      # section 0: null
    for (_, addr, size, flags), nm in zip(secs, sec_names):
        headers += struct.pack("<IIQQQQIIQQ", nm, _SHT_NOBITS, flags, addr, sh_off, size,
                               0, 0, 16, 0)
    headers += struct.pack("<IIQQQQIIQQ", sym_names[0], _SHT_SYMTAB, 0, 0, symtab_off,
                           len(symtab), strtab_idx, 1 + len(local), 8, 24)
    headers += struct.pack("<IIQQQQIIQQ", sym_names[1], _SHT_STRTAB, 0, 0, strtab_off,
                           len(strtab), 0, 0, 1, 0)
    headers += struct.pack("<IIQQQQIIQQ", sym_names[2], _SHT_STRTAB, 0, 0, shstr_off,
                           len(shstr), 0, 0, 1, 0)
    ident = b"\x7fELF" + bytes((2, 1, 1, 0)) + bytes(8)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64,
                               n_secs + 4, shstr_idx)
    data = ehdr + symtab + strtab + shstr
    data += bytes(sh_off - len(data)) + headers
    tmp = out.with_suffix(out.suffix + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as exc:
        raise GuestImageError(f"cannot write {out}: {exc.strerror}") from None
    return out


def symbol_file_for(image) -> Path:
    """The file gdb should load symbols from for ``image`` (a
    :class:`~pvmon.guests.catalog.GuestImage`): its vmlinux when that has a
    ``.symtab``, else ``symbols.elf`` written next to its System.map (once;
    rewritten when older than either input). Raises GuestImageError."""
    from pvmon.engine.loaders.symbols import SymbolTable
    vmlinux = Path(image.vmlinux)
    try:
        SymbolTable.from_elf(vmlinux)
        return vmlinux
    except GuestImageError:
        pass
    smap = image.system_map
    if smap is None:
        raise GuestImageError(f"{vmlinux} has no symbols and no System.map beside it")
    out = Path(smap).with_name("symbols.elf")
    try:
        fresh = out.stat().st_mtime >= max(Path(smap).stat().st_mtime, vmlinux.stat().st_mtime)
    except OSError:
        fresh = False
    if not fresh:
        write_symbol_elf(vmlinux, Path(smap), out)
    return out
