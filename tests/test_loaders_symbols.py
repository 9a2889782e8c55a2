"""Symbol tables from System.map, ELF .symtab and kallsyms."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from pvmon.engine.loaders.symbols import SymbolTable
from pvmon.errors import GuestImageError
from pvmon.guests.catalog import debian_guest

MAP = """\
0000000000000000 A __per_cpu_start
ffffffff81000000 T _text
ffffffff81000000 t startup_64
ffffffff81000100 T secondary_startup_64
ffffffff81001000 T hypercall_page
ffffffff81002000 t local_fn
ffffffff82000000 D some_data
ffffffff81000100 W secondary_alias
"""


def test_system_map(tmp_path):
    p = tmp_path / "System.map"
    p.write_text(MAP)
    st = SymbolTable.from_system_map(p)
    assert len(st) == 8
    assert st.address("hypercall_page") == 0xFFFFFFFF81001000
    assert st.address("nope") is None
    assert st.type_of("local_fn") == "t"
    assert st.lookup(0xFFFFFFFF81001010) == ("hypercall_page", 0x10)
    assert st.lookup(0xFFFFFFFF81000000) == ("_text", 0)  # global preferred at equal address
    assert st.lookup(0xFFFFFFFF810000FF) == ("_text", 0xFF)
    assert st.lookup(0x10) is None  # absolute symbols are not locations
    assert st.lookup(0xFFFFFFFF80FFFFFF) is None
    assert st.lookup(0xFFFFFFFF82000000 + 0x200000) is None  # beyond max_offset
    assert st.format(0xFFFFFFFF8100201A) == "local_fn+0x1a"
    assert st.format(0xFFFFFFFF81002000) == "local_fn"
    assert st.format(0x1234) == "0x1234"
    out = tmp_path / "again.map"
    st.write_system_map(out)
    assert SymbolTable.from_system_map(out).items() == st.items()


def test_debian_placeholder_map_rejected(tmp_path):
    p = tmp_path / "System.map"
    p.write_text("ffffffffffffffff B The real System.map is in the "
                 "linux-image-<version>-dbg package\n")
    with pytest.raises(GuestImageError, match="no symbols"):
        SymbolTable.from_system_map(p)
    with pytest.raises(GuestImageError, match="cannot read"):
        SymbolTable.from_system_map(tmp_path / "absent")


def test_elf_errors(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"not an elf at all" * 10)
    with pytest.raises(GuestImageError, match="not a readable ELF"):
        SymbolTable.from_elf(p)
    with pytest.raises(GuestImageError, match="no kallsyms"):
        SymbolTable.from_kallsyms(b"\0" * 100000)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_elf_symtab(tmp_path):
    src = tmp_path / "k.c"
    src.write_text(
        "char hypercall_page[4096] __attribute__((aligned(4096)));\n"
        "static int helper(int x) { return x * 3; }\n"
        "void startup_xen(void) { hypercall_page[0] = helper(1); for (;;) ; }\n"
    )
    elf = tmp_path / "k.elf"
    subprocess.run(["gcc", "-O1", "-nostdlib", "-static", "-no-pie", "-fno-inline",
                    "-Wl,-e,startup_xen", "-o", str(elf), str(src)], check=True)
    st = SymbolTable.from_elf(elf)
    with elf.open("rb") as fh:
        sym = ELFFile(fh).get_section_by_name(".symtab").get_symbol_by_name("startup_xen")[0]
    assert st.address("startup_xen") == sym["st_value"]
    assert st.type_of("startup_xen") == "T"
    assert st.type_of("helper") == "t"
    assert st.type_of("hypercall_page") == "D"
    assert st.format(sym["st_value"] + 2) == "startup_xen+0x2"
    stripped = tmp_path / "k.stripped"
    subprocess.run(["objcopy", "-S", str(elf), str(stripped)], check=True)
    with pytest.raises(GuestImageError, match="stripped"):
        SymbolTable.from_elf(stripped)


def _xen_entry_note(path) -> int:
    """XEN_ELFNOTE_ENTRY (type 1, xen/include/public/elfnote.h) = startup_xen, parsed by hand
    from the ``.notes`` section (Elf64_Nhdr: namesz, descsz, type; 4-byte padded)."""
    with open(path, "rb") as fh:
        data = ELFFile(fh).get_section_by_name(".notes").data()
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name = data[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        desc = pos + 12 + ((namesz + 3) & ~3)
        if name == b"Xen" and ntype == 1:
            return struct.unpack_from("<Q", data, desc)[0]
        pos = desc + ((descsz + 3) & ~3)
    raise AssertionError("no XEN_ELFNOTE_ENTRY")


@pytest.mark.debian
@pytest.mark.parametrize("name, min_syms", [("debian-6.1", 50000), ("debian-6.12", 100000)])
def test_debian_kallsyms(name, min_syms):
    g = debian_guest(name)
    st = SymbolTable.from_kallsyms(g.vmlinux)
    assert len(st) > min_syms
    entry = _xen_entry_note(g.vmlinux)
    assert st.address("startup_xen") == entry
    assert st.format(entry + 0x10) == "startup_xen+0x10"
    assert st.address("_text") == 0xFFFFFFFF81000000
    assert st.type_of("xen_start_kernel") == "T"
    # Both kernels carry the XSA-466 rework: no hypercall page, hypercalls go
    # through xen_hypercall_pv (a syscall stub) / xen_hypercall_hvm.
    assert st.address("hypercall_page") is None
    assert st.address("xen_hypercall_pv") is not None
    # the cached System.map-format file (what GuestImage.symbols() uses) agrees
    cached = g.symbols()
    assert cached.items() == st.items()
    assert cached.lookup(entry + 3) == ("startup_xen", 3)


def test_one_address_from_a_sorted_system_map_matches_the_loaded_table(tmp_path):
    import random

    from pvmon.engine.loaders.symbols import SymbolTable, format_from_system_map
    rng = random.Random(7)
    syms = sorted({(0xFFFFFFFF81000000 + rng.randrange(0, 1 << 24) * 16, rng.choice("TtDdbBr"),
                    f"sym{i}") for i in range(5000)})
    syms += [(syms[10][0], "T", "aaa_global"), (syms[20][0], "A", "absolute")]
    table = SymbolTable(syms)
    path = tmp_path / "System.map"
    table.write_system_map(path)
    for a in [s[0] for s in syms[::37]] + [rng.randrange(0xFFFFFFFF81000000, 0xFFFFFFFF82200000)
                                           for _ in range(200)] + [syms[-1][0] + 0x200000]:
        assert format_from_system_map(path, a) in (table.format(a), None)
        assert format_from_system_map(path, a) is not None or a < syms[0][0]
