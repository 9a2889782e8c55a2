"""The built-in reference guests (guests/ -> pvmon/guests/images/).

* the committed images are ELF64 x86-64 Xen PV kernels with the Xen notes the
  domain builder needs (v1 also names a hypercall page, v2 does not);
* they keep a symbol table;
* they rebuild byte-for-byte from guests/ with the toolchain recorded in
  BUILDINFO (skipped when gcc/ld/make are missing or are other versions).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "pvmon" / "guests" / "images"
BUILD_SH = ROOT / "guests" / "build.sh"
NAMES = ("pvtest-v1", "pvtest-v2", "pvtest-v2-fail", "pvtest-v2-rules", "pvtest-v2-poc",
         "pvtest-v2-smp")

VIRT_BASE = 0xFFFFFFFF80000000
PT_LOAD, PT_NOTE = 1, 4
SHT_SYMTAB = 2
# elfnote.h
XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_HYPERCALL_PAGE = 2
XEN_ELFNOTE_VIRT_BASE = 3
XEN_ELFNOTE_PADDR_OFFSET = 4
XEN_ELFNOTE_XEN_VERSION = 5
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_GUEST_VERSION = 7
XEN_ELFNOTE_LOADER = 8
XEN_ELFNOTE_FEATURES = 10


def _elf(name: str) -> dict:
    data = (IMAGES / f"{name}.elf").read_bytes()
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[4] == 2, "not ELF64"
    assert data[5] == 1, "not little-endian"
    (e_type, e_machine, _v, e_entry, e_phoff, e_shoff, _f, _eh, e_phentsize, e_phnum,
     e_shentsize, e_shnum, _e_shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", data, 16)
    phdrs = []
    for i in range(e_phnum):
        p_type, p_flags, p_off, p_vaddr, p_paddr, p_filesz, p_memsz, _p_align = \
            struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        phdrs.append({"type": p_type, "flags": p_flags, "offset": p_off, "vaddr": p_vaddr,
                          "paddr": p_paddr, "filesz": p_filesz, "memsz": p_memsz})
    shdrs = []
    for i in range(e_shnum):
        _sh_name, sh_type, _fl, _addr, sh_off, sh_size, sh_link, _inf, _al, sh_entsize = \
            struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
        shdrs.append({"type": sh_type, "offset": sh_off, "size": sh_size, "link": sh_link,
                          "entsize": sh_entsize})
    return {"data": data, "type": e_type, "machine": e_machine, "entry": e_entry,
                "phdrs": phdrs, "shdrs": shdrs}


def _xen_notes(elf: dict) -> dict[int, bytes]:
    notes: dict[int, bytes] = {}
    data = elf["data"]
    for ph in elf["phdrs"]:
        if ph["type"] != PT_NOTE:
            continue
        off, end = ph["offset"], ph["offset"] + ph["filesz"]
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            off += 12
            name = data[off:off + namesz]
            off += (namesz + 3) & ~3
            desc = data[off:off + descsz]
            off += (descsz + 3) & ~3
            if name == b"Xen\0":
                assert ntype not in notes, f"duplicate Xen note {ntype}"
                notes[ntype] = desc
    return notes


def _symbols(elf: dict) -> dict[str, int]:
    data = elf["data"]
    syms: dict[str, int] = {}
    for sh in elf["shdrs"]:
        if sh["type"] != SHT_SYMTAB:
            continue
        strtab = elf["shdrs"][sh["link"]]
        for i in range(sh["size"] // sh["entsize"]):
            st_name, _info, _other, _shndx, st_value, _size = struct.unpack_from(
                "<IBBHQQ", data, sh["offset"] + i * sh["entsize"])
            s = strtab["offset"] + st_name
            syms[data[s:data.index(b"\0", s)].decode()] = st_value
    return syms


def _u64(b: bytes) -> int:
    assert len(b) == 8
    return struct.unpack("<Q", b)[0]


@pytest.mark.parametrize("name", NAMES)
def test_elf64_xen_pv_kernel(name: str) -> None:
    elf = _elf(name)
    assert elf["type"] == 2  # ET_EXEC
    assert elf["machine"] == 0x3E  # x86-64
    loads = [p for p in elf["phdrs"] if p["type"] == PT_LOAD]
    assert loads
    for p in loads:
        assert p["vaddr"] >= VIRT_BASE
        assert p["paddr"] == p["vaddr"] - VIRT_BASE  # physical addresses from 0
    assert any(p["vaddr"] <= elf["entry"] < p["vaddr"] + p["filesz"] and p["flags"] & 1
               for p in loads)
    size = len(elf["data"])
    # the rules guest carries 660 checks, each message citing its xen.git source
    limit = 192 * 1024 if name == "pvtest-v2-rules" else 128 * 1024
    assert size < limit, f"{name} is {size} bytes: the guests should stay tiny"


@pytest.mark.parametrize("name", NAMES)
def test_xen_notes(name: str) -> None:
    elf = _elf(name)
    notes = _xen_notes(elf)
    assert notes[XEN_ELFNOTE_GUEST_OS] == b"pvtest\0"
    assert notes[XEN_ELFNOTE_XEN_VERSION] == b"xen-3.0\0"
    assert notes[XEN_ELFNOTE_LOADER] == b"generic\0"
    assert notes[XEN_ELFNOTE_FEATURES] == b"!writable_page_tables\0"
    assert _u64(notes[XEN_ELFNOTE_VIRT_BASE]) == VIRT_BASE
    assert _u64(notes[XEN_ELFNOTE_PADDR_OFFSET]) == 0
    assert _u64(notes[XEN_ELFNOTE_ENTRY]) == elf["entry"]
    version = b"1\0" if name == "pvtest-v1" else b"2\0"
    assert notes[XEN_ELFNOTE_GUEST_VERSION] == version


def test_v1_has_hypercall_page_note() -> None:
    elf = _elf("pvtest-v1")
    page = _u64(_xen_notes(elf)[XEN_ELFNOTE_HYPERCALL_PAGE])
    assert page % 4096 == 0
    assert any(p["type"] == PT_LOAD and p["vaddr"] <= page and page + 4096 <= p["vaddr"] + p["filesz"]
               for p in elf["phdrs"])
    assert _symbols(elf)["hypercall_page"] == page


@pytest.mark.parametrize("name", ["pvtest-v2", "pvtest-v2-fail", "pvtest-v2-rules", "pvtest-v2-poc"])
def test_v2_has_no_hypercall_page_note(name: str) -> None:
    elf = _elf(name)
    assert XEN_ELFNOTE_HYPERCALL_PAGE not in _xen_notes(elf)
    assert "hypercall_page" not in _symbols(elf)


@pytest.mark.parametrize("name", NAMES)
def test_symbol_table_kept(name: str) -> None:
    elf = _elf(name)
    syms = _symbols(elf)
    assert syms["_start"] == elf["entry"]
    for sym in ("pvtest_main", "trap_dispatch", "xen_event_callback", "HYPERVISOR_mmu_update"):
        assert sym in syms, sym


def _toolchain_line(cmd: str) -> str:
    out = subprocess.run([cmd, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


def test_images_rebuild_identically() -> None:
    for tool in ("gcc", "ld", "make", "sha256sum"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    info = (IMAGES / "BUILDINFO").read_text()
    want = {k: v.strip() for k, _, v in
            (line.partition(":") for line in info.splitlines() if line[:3] in ("cc:", "ld:"))}
    have = {"cc": _toolchain_line("gcc"), "ld": _toolchain_line("ld")}
    if have != want:
        pytest.skip(f"toolchain {have} differs from the one in BUILDINFO {want}")
    r = subprocess.run(["sh", str(BUILD_SH), "--check"], check=False, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
