"""Kernel symbol tables: address -> ``name+0xoff`` and name -> address.

Three sources, in the order a caller should prefer them:

* ``System.map`` (``nm -n vmlinux`` output: ``<hex addr> <type char> <name>`` per
  line). Debian's ``linux-image-*`` packages ship only a one-line placeholder
  ("The real System.map is in the linux-image-<version>-dbg package");
  :meth:`SymbolTable.from_system_map` rejects it with GuestImageError.
* The ELF ``.symtab`` (pyelftools). The vmlinux inside a bzImage is stripped
  (``objcopy -S``), so this only helps for unstripped builds and our own guests.
* The kernel's own kallsyms tables inside the ``.rodata`` of a CONFIG_KALLSYMS
  vmlinux, found by content (:meth:`SymbolTable.from_kallsyms`).

kallsyms format facts (Linux ``scripts/kallsyms.c`` write_src(), ``kernel/kallsyms.c``):

* ``kallsyms_token_table``: 256 NUL-terminated strings; a byte ``b`` in a
  compressed name expands to token ``b``. Bytes that occur literally in symbol
  names are their own token, so tokens 0x30..0x39 are ``"0"``..``"9"``.
* ``kallsyms_token_index``: 256 u16 offsets of each token within the table.
* ``kallsyms_names``: per symbol, a length (one byte; if bit 7 is set, two bytes,
  ``(b0 & 0x7f) | b1 << 7``, since 6.1) then that many token bytes. The first
  expanded character is the ``nm`` type char.
* ``kallsyms_markers``: u32 offset into ``kallsyms_names`` of every 256th symbol.
* ``kallsyms_num_syms``: the symbol count, an aligned integer just before the names.
* ``kallsyms_offsets`` (s32 per symbol) and ``kallsyms_relative_base`` (u64):
  with CONFIG_KALLSYMS_ABSOLUTE_PERCPU an offset >= 0 is an absolute value and a
  negative one means ``relative_base - 1 - offset``; without it the address is
  ``relative_base + (u32)offset``.
* From Linux 7.0 (seen in Debian's 7.2.13) there is no ``relative_base`` and no
  absolute-percpu encoding: each offset is place-relative, the address being
  ``&kallsyms_offsets[i] + kallsyms_offsets[i]`` (kernel/kallsyms.c
  ``kallsyms_sym_address``), so decoding needs the table's own virtual address
  (from the ELF program headers). ``kallsyms_offsets`` follows
  ``kallsyms_token_index`` directly (4-byte aligned); Debian's 7.2.13 confirms
  it: ``startup_xen`` decodes to the Xen ENTRY note's address.
* Order: before 6.4 offsets, relative_base, num_syms, names, markers,
  [seqs_of_names,] token_table, token_index; from 6.4 (commit "scripts/kallsyms:
  change the output order") num_syms, names, markers, token_table, token_index,
  offsets, relative_base, seqs_of_names. Debian's 6.1.y has seqs_of_names
  (3 bytes per symbol) between markers and token_table. We therefore locate each
  table by its content instead of assuming one order.

Addresses are guest virtual addresses (ints); offsets are bytes.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterable
from pathlib import Path

from pvmon.errors import GuestImageError

_KERNEL_MIN = 0xFFFF_8000_0000_0000
_DIGIT_TOKENS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")


class SymbolTable:
    """Sorted symbols of one kernel image.

    ``symbols`` are ``(address, type_char, name)``; several names may share an
    address (``lookup`` then prefers a global, i.e. upper-case type, name)."""

    def __init__(self, symbols: Iterable[tuple[int, str, str]], source: str = "") -> None:
        syms = sorted(symbols, key=lambda s: (s[0], not s[1].isupper(), s[2]))
        self.source = source
        # The by-name index is built on first use: most users only turn addresses
        # into names, and indexing a Debian kernel's 148,000 names is a third of
        # loading its table.
        self._sorted: list[tuple[int, str, str]] | None = syms
        self._by_name_index: dict[str, int] | None = None
        self._types_index: dict[str, str] | None = None
        self._addrs: list[int] = []
        self._names: list[str] = []
        for addr, typ, name in syms:
            if typ in "aAuUwWvV" or name.startswith("$"):
                continue  # absolute values and undefined symbols are not locations
            if self._addrs and self._addrs[-1] == addr:
                continue
            self._addrs.append(addr)
            self._names.append(name)

    @property
    def _by_name(self) -> dict[str, int]:
        if self._by_name_index is None:
            self._build_index()
        return self._by_name_index

    @property
    def _types(self) -> dict[str, str]:
        if self._types_index is None:
            self._build_index()
        return self._types_index

    def _build_index(self) -> None:
        by_name: dict[str, int] = {}
        types: dict[str, str] = {}
        for addr, typ, name in self._sorted or ():
            by_name.setdefault(name, addr)
            types.setdefault(name, typ)
        self._by_name_index, self._types_index = by_name, types
        self._sorted = None

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __repr__(self) -> str:
        return f"SymbolTable({len(self)} symbols from {self.source or '?'})"

    # ---------------------------------------------------------------- queries

    def address(self, name: str) -> int | None:
        """Address of ``name`` (the lowest, if duplicated), or None."""
        return self._by_name.get(name)

    def type_of(self, name: str) -> str | None:
        """``nm`` type character of ``name`` ('T', 't', 'D', ...), or None."""
        return self._types.get(name)

    def lookup(self, addr: int, max_offset: int = 0x100000) -> tuple[str, int] | None:
        """The symbol at or below ``addr`` and the offset from it, as ``(name, offset)``.

        None if ``addr`` is below every symbol or more than ``max_offset`` bytes
        past the nearest one."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        off = addr - self._addrs[i]
        if off > max_offset:
            return None
        return self._names[i], off

    def format(self, addr: int) -> str:
        """``"name+0x1a"`` (``"name"`` at offset 0), or ``"0xffffffff81000000"`` if unknown."""
        hit = self.lookup(addr)
        if hit is None:
            return f"{addr:#x}"
        name, off = hit
        return f"{name}+{off:#x}" if off else name

    def items(self) -> list[tuple[int, str, str]]:
        """All ``(address, type, name)`` sorted by address."""
        return sorted(((a, self._types[n], n) for n, a in self._by_name.items()))

    def write_system_map(self, path: str | Path) -> None:
        """Write the table in System.map format (``%016x %c %s``)."""
        lines = [f"{a:016x} {t} {n}\n" for a, t, n in self.items()]
        Path(path).write_text("".join(lines), encoding="utf-8")

    # ---------------------------------------------------------------- sources

    @classmethod
    def from_system_map(cls, path: str | Path) -> SymbolTable:
        """Parse ``nm -n`` / System.map text: ``<hex addr> <type> <name> [\\[module\\]]``.

        Raises GuestImageError if unreadable or if it holds no symbols (e.g.
        Debian's placeholder System.map)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise GuestImageError(f"cannot read symbol map {p}: {exc.strerror}") from None
        syms: list[tuple[int, str, str]] = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) not in (3, 4) or len(parts[1]) != 1:
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            syms.append((addr, parts[1], parts[2]))
        if not syms:
            first = text.strip().splitlines()[0][:80] if text.strip() else "empty file"
            raise GuestImageError(f"{p} holds no symbols ({first!r})")
        return cls(syms, source=str(p))

    @classmethod
    def from_elf(cls, path: str | Path) -> SymbolTable:
        """Read ``.symtab`` of an ELF file with pyelftools.

        Raises GuestImageError if the file is not ELF or has no symbol table
        (e.g. the stripped vmlinux inside a bzImage)."""
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        p = Path(path)
        syms: list[tuple[int, str, str]] = []
        try:
            with p.open("rb") as fh:
                elf = ELFFile(fh)
                sec = elf.get_section_by_name(".symtab")
                if not isinstance(sec, SymbolTableSection):
                    raise GuestImageError(f"{p} has no .symtab (stripped)")
                for sym in sec.iter_symbols():
                    if not sym.name or sym["st_info"]["type"] in ("STT_FILE", "STT_SECTION"):
                        continue
                    syms.append((sym["st_value"], _elf_type_char(sym), sym.name))
        except OSError as exc:
            raise GuestImageError(f"cannot read {p}: {exc.strerror}") from None
        except ELFError as exc:
            raise GuestImageError(f"{p} is not a readable ELF file: {exc}") from None
        return cls(syms, source=f"{p} (.symtab)")

    @classmethod
    def from_kallsyms(cls, vmlinux: str | Path | bytes) -> SymbolTable:
        """Decode the kallsyms tables embedded in an x86-64 vmlinux (path or bytes).

        Raises GuestImageError if no consistent kallsyms tables are found."""
        if isinstance(vmlinux, (str, Path)):
            try:
                data = Path(vmlinux).read_bytes()
            except OSError as exc:
                raise GuestImageError(f"cannot read {vmlinux}: {exc.strerror}") from None
            source = f"{vmlinux} (kallsyms)"
        else:
            data, source = bytes(vmlinux), "kallsyms"
        return cls(_decode_kallsyms(data), source=source)


def format_from_system_map(path: str | Path, addr: int,
                           max_offset: int = 0x100000) -> str | None:
    """``name+0xoff`` of ``addr`` from an address-sorted System.map (``nm -n``,
    and what :meth:`SymbolTable.write_system_map` writes), found by bisecting
    the file's lines instead of loading the table: what :meth:`SymbolTable.format`
    answers, for one address, in microseconds instead of the 0.2-0.5 s a Debian
    kernel's 148,000-line map takes to load. Returns ``f"{addr:#x}"`` when no
    symbol covers it, None when the file cannot be read this way (unreadable,
    or not sorted where the search looked): the caller then loads the table."""
    import mmap

    try:
        with open(path, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None

    def parse(start: int) -> tuple[int, str, str, int] | None:
        end = mm.find(b"\n", start)
        end = len(mm) if end < 0 else end
        parts = mm[start:end].split()
        if len(parts) not in (3, 4) or len(parts[1]) != 1:
            return None
        try:
            return int(parts[0], 16), parts[1].decode("latin-1"), \
                parts[2].decode("utf-8", "replace"), end + 1
        except ValueError:
            return None

    def next_line(off: int) -> int:
        if off == 0:
            return 0
        nl = mm.find(b"\n", off - 1)
        return len(mm) if nl < 0 else nl + 1

    with mm:
        lo, hi = 0, len(mm)          # invariant: lines starting before lo have address <= addr
        while hi - lo > 256:
            mid = next_line((lo + hi) // 2)
            if mid >= hi:
                break
            row = parse(mid)
            if row is None:
                return None
            if row[0] <= addr:
                lo = mid
            else:
                hi = mid
        # the lines from a little before lo to hi, parsed, hold the answer
        start = next_line(max(0, lo - 8192))
        rows = []
        off = start
        while off < len(mm) and off <= hi:
            row = parse(off)
            if row is None:
                off = next_line(off + 1)
                continue
            rows.append(row[:3])
            off = row[3]
    prev = -1
    for a, _t, _n in rows:
        if a < prev:
            return None              # not sorted: load the whole table instead
        prev = a
    cands = [(a, t, n) for a, t, n in rows
             if a <= addr and t not in "aAuUwWvV" and not n.startswith("$")]
    if not cands:
        return None if start > 0 else f"{addr:#x}"
    best = max(a for a, _t, _n in cands)
    name = min((not t.isupper(), n) for a, t, n in cands if a == best)[1]
    off = addr - best
    if off > max_offset:
        return f"{addr:#x}"
    return f"{name}+{off:#x}" if off else name


def _elf_type_char(sym) -> str:
    shndx = sym["st_shndx"]
    bind = sym["st_info"]["bind"]
    if shndx == "SHN_UNDEF":
        c = "u"
    elif shndx == "SHN_ABS":
        c = "a"
    elif sym["st_info"]["type"] == "STT_FUNC":
        c = "t"
    else:
        c = "d"
    if bind == "STB_WEAK":
        return "W" if c != "u" else "w"
    return c.upper() if bind == "STB_GLOBAL" else c


# ------------------------------------------------------------------ kallsyms


def _decode_kallsyms(d: bytes) -> list[tuple[int, str, str]]:
    for table_start, tokens, index_end in _token_tables(d):
        found = _names_and_markers(d, table_start, tokens)
        if found is None:
            continue
        num_pos, _names_start, n, names = found
        addrs = _addresses(d, n, num_pos, index_end)
        if addrs is None:
            continue
        out = []
        for addr, raw in zip(addrs, names):
            s = raw.decode("latin-1")
            out.append((addr, s[:1], s[1:]))
        return out
    raise GuestImageError("no kallsyms tables found in the kernel image (CONFIG_KALLSYMS off?)")


def _token_tables(d: bytes):
    """Yield ``(table_start, tokens, token_index_end)`` for each plausible token table."""
    hit = d.find(_DIGIT_TOKENS)
    while hit >= 0:
        start = hit
        ok = True
        for _ in range(0x30):  # walk back to token 0
            prev = d.rfind(b"\0", 0, start - 1)
            if prev < 0 or start - prev > 64:
                ok = False
                break
            start = prev + 1
        if ok:
            tokens, offs, q = [], [], start
            for _ in range(256):
                e = d.find(b"\0", q, q + 64)
                if e < 0:
                    ok = False
                    break
                offs.append(q - start)
                tokens.append(d[q:e])
                q = e + 1
            if ok and max(offs) < 0x10000:
                index = struct.pack("<256H", *offs)
                ti = d.find(index, q, q + 16 + len(index))
                if ti >= 0:
                    yield start, tokens, ti + len(index)
        hit = d.find(_DIGIT_TOKENS, hit + 1)


def _walk(d: bytes, pos: int, count: int, limit: int) -> int | None:
    """Skip ``count`` compressed names from ``pos``; None if that runs past ``limit``."""
    for _ in range(count):
        if pos >= limit:
            return None
        n = d[pos]
        if n & 0x80:
            n = (n & 0x7F) | (d[pos + 1] << 7)
            pos += 2
        else:
            pos += 1
        if n == 0:
            return None
        pos += n
    return pos


def _names_and_markers(d: bytes, table_start: int, tokens: list[bytes]):
    """Find kallsyms_markers (u32, increasing from 0) below the token table, then the
    names and num_syms before it. Returns ``(num_pos, names_start, n, names)`` or None."""
    lo = max(0, table_start - 64 * 1024 * 1024)
    # Markers end within a few MB below the table (seqs_of_names may sit between).
    p = table_start & ~3
    for _ in range((table_start - lo) // 4):
        p -= 4
        if d[p:p + 4] != b"\0\0\0\0":
            continue
        markers = [0]
        q = p + 4
        while q + 4 <= table_start:
            (v,) = struct.unpack_from("<I", d, q)
            step = v - markers[-1]
            if not 256 * 2 <= step <= 256 * 600:
                break
            markers.append(v)
            q += 4
        if len(markers) < 4:
            continue
        res = _find_names(d, p, markers, tokens)
        if res is not None:
            return res
    return None


def _find_names(d: bytes, markers_pos: int, markers: list[int], tokens: list[bytes]):
    m = len(markers)
    lo_n, hi_n = 256 * (m - 1) + 1, 256 * m
    # names end at markers_pos (minus alignment padding); names_start + markers[-1] < that.
    top = markers_pos - markers[-1]
    for s in range(top & ~3, max(0, top - 256 * 600), -4):
        (n,) = struct.unpack_from("<I", d, s)
        if not lo_n <= n <= hi_n:
            continue
        for names_start in (s + 4, s + 8):
            if _walk(d, names_start, 256, markers_pos) != names_start + markers[1]:
                continue
            last = _walk(d, names_start + markers[-1], n - 256 * (m - 1), markers_pos + 1)
            if last is None or not 0 <= markers_pos - last < 8:
                continue
            names = []
            pos = names_start
            for _ in range(n):
                ln = d[pos]
                if ln & 0x80:
                    ln = (ln & 0x7F) | (d[pos + 1] << 7)
                    pos += 2
                else:
                    pos += 1
                names.append(b"".join(tokens[b] for b in d[pos:pos + ln]))
                pos += ln
            return s, names_start, n, names
    return None


def _file_to_vaddr(d: bytes, off: int) -> int | None:
    """The virtual address file offset ``off`` of ELF64 image ``d`` is loaded
    at (through its PT_LOAD program headers), or None."""
    if d[:4] != b"\x7fELF" or len(d) < 64:
        return None
    (phoff,) = struct.unpack_from("<Q", d, 32)
    phentsize, phnum = struct.unpack_from("<HH", d, 54)
    for i in range(phnum):
        p = phoff + i * phentsize
        if p + 56 > len(d):
            return None
        p_type, _flags, p_offset, p_vaddr = struct.unpack_from("<IIQQ", d, p)
        (p_filesz,) = struct.unpack_from("<Q", d, p + 32)
        if p_type == 1 and p_offset <= off < p_offset + p_filesz:
            return p_vaddr + off - p_offset
    return None


def _plausible(addrs: list[int], n: int) -> bool:
    kernel = [a for a in addrs if a >= _KERNEL_MIN]
    return len(kernel) > n // 2 and all(x <= y for x, y in itertools.pairwise(kernel))


def _addresses(d: bytes, n: int, num_pos: int, index_end: int) -> list[int] | None:
    """Decode kallsyms_offsets/relative_base in any layout (see module docstring)."""
    candidates = []
    # Old order: offsets, relative_base, num_syms.
    rb_pos = num_pos - 8
    candidates.append(((rb_pos - 4 * n) & ~7, rb_pos))
    # New order: token_index, offsets, relative_base.
    for align in (8, 4):
        o = (index_end + align - 1) & ~(align - 1)
        candidates.append((o, (o + 4 * n + 7) & ~7))
    for off_pos, rb_pos in candidates:
        if off_pos < 0 or rb_pos + 8 > len(d):
            continue
        (base,) = struct.unpack_from("<Q", d, rb_pos)
        if base < _KERNEL_MIN:
            continue
        offs = struct.unpack_from(f"<{n}i", d, off_pos)
        negative = sum(1 for o in offs if o < 0)
        if negative > n // 2:  # CONFIG_KALLSYMS_ABSOLUTE_PERCPU
            addrs = [o if o >= 0 else base - 1 - o for o in offs]
        else:
            addrs = [base + (o & 0xFFFFFFFF) for o in offs]
        if _plausible(addrs, n):
            return addrs
    # Linux 7.0+: place-relative offsets right after token_index.
    off_pos = (index_end + 3) & ~3
    base = _file_to_vaddr(d, off_pos)
    if base is not None and off_pos + 4 * n <= len(d):
        offs = struct.unpack_from(f"<{n}i", d, off_pos)
        addrs = [(base + 4 * i + o) & 0xFFFF_FFFF_FFFF_FFFF for i, o in enumerate(offs)]
        if _plausible(addrs, n):
            return addrs
    return None
