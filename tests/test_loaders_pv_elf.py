"""The PV kernel loader (pvmon/backends/xen/builder.py) maps and starts what Xen's
would: a kernel whose entry point sits in a segment without PF_X runs (Linux 7.x
links its Xen entry into such a segment), segments without R, W or X are not
loaded, and an entry outside the image is refused. Each ELF here is built by
the test itself, byte by byte (System V gABI ELF64; Xen notes as elfnote.h)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.backends.xen.builder import PF_R, PF_W, PF_X, SHF_ALLOC, SHF_EXECINSTR, parse_kernel
from pvmon.engine.machine import PTE_NX
from pvmon.errors import GuestImageError
from pvmon.guests.catalog import resolve
from pvmon.session import Session

REPO = Path(__file__).resolve().parent.parent
VIRT_BASE = 0xFFFF_FFFF_8000_0000
TEXT_PA, DATA_PA = 0x200000, 0x204000
#: The guest's only work: SCHEDOP_shutdown(poweroff) through `syscall`, the
#: 64-bit PV hypercall instruction (no HYPERCALL_PAGE note).
POWEROFF = bytes.fromhex(
    "6a00"            # push $0               struct sched_shutdown { reason = poweroff }
    "4889e6"          # mov %rsp, %rsi
    "bf02000000"      # mov $2, %edi          SCHEDOP_shutdown
    "b81d000000"      # mov $29, %eax         __HYPERVISOR_sched_op
    "0f05"            # syscall
    "ebfe"            # jmp .
)


def _note(typ: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("<III", 4, len(desc), typ) + pad(b"Xen\0") + pad(desc)


def make_pv_elf(segments: list[tuple[int, int, bytes, int]], entry: int,
                sections: list[tuple[str, int, int, int]] = ()) -> bytes:
    """An x86-64 Xen PV kernel ELF. ``segments``: (p_paddr, p_flags, bytes,
    p_memsz) PT_LOADs at vaddr VIRT_BASE + p_paddr; ``sections``: (name,
    sh_flags, sh_addr, sh_size) PROGBITS section headers (none: no table)."""
    notes = b"".join((_note(6, b"linux\0"), _note(7, b"2.6\0"), _note(5, b"xen-3.0\0"),
                      _note(8, b"generic\0"), _note(3, struct.pack("<Q", VIRT_BASE)),
                      _note(1, struct.pack("<Q", entry)),
                      _note(10, b"!writable_page_tables\0")))
    nph = len(segments) + 1
    off = 64 + 56 * nph
    body, phdrs = bytearray(), []
    for paddr, flags, data, memsz in segments:
        off_seg = -(-(off + len(body)) // 4096) * 4096
        body += b"\0" * (off_seg - off - len(body)) + data
        phdrs.append(struct.pack("<IIQQQQQQ", 1, flags, off_seg, VIRT_BASE + paddr, paddr,
                                 len(data), memsz, 4096))
    note_off = off + len(body)
    body += notes
    phdrs.append(struct.pack("<IIQQQQQQ", 4, PF_R, note_off, 0, 0, len(notes), len(notes), 4))
    shoff, shnum, shstrndx = 0, 0, 0
    if sections:
        names = b"\0" + b"".join(n.encode() + b"\0" for n, *_ in sections) + b".shstrtab\0"
        strtab_off = off + len(body)
        body += names
        shoff = -(-(off + len(body)) // 8) * 8
        body += b"\0" * (shoff - off - len(body))
        shdrs = [bytes(64)]
        pos = 1
        for name, flags, addr, size in sections:
            shdrs.append(struct.pack("<IIQQQQIIQQ", pos, 1, flags, addr, 0, size, 0, 0, 16, 0))
            pos += len(name) + 1
        shdrs.append(struct.pack("<IIQQQQIIQQ", pos, 3, 0, 0, strtab_off, len(names), 0, 0,
                                 1, 0))
        body += b"".join(shdrs)
        shnum, shstrndx = len(shdrs), len(shdrs) - 1
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    hdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, shoff, 0, 64, 56, nph,
                              64, shnum, shstrndx)
    return hdr + b"".join(phdrs) + bytes(body)


def _text() -> tuple[int, int, bytes, int]:
    return (TEXT_PA, PF_R | PF_X, b"\xcc" * 64, 0x1000)


def _entry_in_data(tmp_path: Path, sections=()) -> Path:
    data = POWEROFF + b"\0" * 64
    p = tmp_path / "vmlinux-entry-in-data"
    p.write_bytes(make_pv_elf([_text(), (DATA_PA, PF_R | PF_W, data, 0x3000)],
                              VIRT_BASE + DATA_PA, sections))
    return p


def test_a_kernel_whose_entry_segment_lacks_pf_x_runs_its_first_instruction(tmp_path):
    """Xen maps the whole image executable (libelf ignores p_flags; libxenguest's
    start-of-day entries carry no NX), so Linux 7.x's entry in a RW segment runs."""
    s = Session(resolve(str(_entry_in_data(tmp_path))))
    m = s.machine
    _pa, pte = m.walk(s.kernel.entry)
    assert not m.read_u64_phys(pte) & PTE_NX
    res = s.run(timeout=60)
    assert (res.exit_kind, res.shutdown_reason) == ("shutdown", 0), res.detail
    assert res.hypercalls["sched_op"] == 1 and not res.faults


def test_code_sections_in_a_data_segment_are_executable_and_the_rest_is_not(tmp_path):
    """With section headers, pvmon maps executable exactly the pages of the
    SHF_EXECINSTR sections (and PF_X segments): the entry page, not the page of
    data beside it."""
    code_va = VIRT_BASE + DATA_PA
    path = _entry_in_data(tmp_path, [(".text", SHF_ALLOC | SHF_EXECINSTR, VIRT_BASE + TEXT_PA, 64),
                                     (".init.text", SHF_ALLOC | SHF_EXECINSTR, code_va, 0x100),
                                     (".data", SHF_ALLOC | 1, code_va + 0x1000, 0x2000)])
    k = parse_kernel(path.read_bytes(), path)
    assert k.exec_ranges == ((TEXT_PA, TEXT_PA + 0x1000), (DATA_PA, DATA_PA + 0x100))
    s = Session(resolve(str(path)))
    m = s.machine
    for va, nx in ((code_va, False), (code_va + 0x1000, True), (VIRT_BASE + TEXT_PA, False)):
        _pa, pte = m.walk(va)
        assert bool(m.read_u64_phys(pte) & PTE_NX) is nx, hex(va)
    res = s.run(timeout=60)
    assert (res.exit_kind, res.shutdown_reason) == ("shutdown", 0), res.detail


def test_a_pt_load_without_r_w_or_x_is_not_loaded(tmp_path):
    """xen/common/libelf/libelf-tools.c elf_phdr_is_loadable: PT_LOAD with any of R, W, X."""
    data = make_pv_elf([(TEXT_PA, PF_R | PF_X, POWEROFF, 0x1000),
                        (0x400000, 0, b"\x11" * 32, 0x1000)], VIRT_BASE + TEXT_PA)
    k = parse_kernel(data)
    assert [paddr for paddr, *_ in k.segments] == [TEXT_PA]


@pytest.mark.parametrize("entry", [VIRT_BASE + 0x100000, VIRT_BASE + DATA_PA + 0x3001],
                         ids=["below-the-image", "past-its-end"])
def test_an_entry_point_outside_the_image_is_refused_as_xen_refuses_it(tmp_path, entry):
    """libelf-dominfo.c elf_xen_addr_calc_check: "ELF start or entries are out of bounds"."""
    p = tmp_path / "vmlinux-bad-entry"
    p.write_bytes(make_pv_elf([_text(), (DATA_PA, PF_R | PF_W, POWEROFF, 0x3000)], entry))
    with pytest.raises(GuestImageError, match="entry point .* outside the kernel image"):
        parse_kernel(p.read_bytes(), p)
    r = subprocess.run([sys.executable, "-m", "pvmon", "run", str(p)], capture_output=True,
                       text=True, cwd=REPO, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "outside the kernel image" in r.stderr


def test_hostile_section_headers_are_ignored_as_xen_ignores_them(tmp_path):
    """A section table pointing past the file costs nothing: the segments decide."""
    data = bytearray(_entry_in_data(tmp_path).read_bytes())
    struct.pack_into("<Q", data, 40, 0x7FFF_FFFF)        # e_shoff: past the end
    struct.pack_into("<HHH", data, 58, 64, 0xFFF0, 0)     # e_shentsize, e_shnum, e_shstrndx
    k = parse_kernel(bytes(data))
    assert any(a <= DATA_PA < b for a, b in k.exec_ranges)
