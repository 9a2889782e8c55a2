"""The PV kernel loader reads a well-formed ELF's headers without pyelftools
and gets what pyelftools gets: the same kernel image for the Debian kernels
and the built-in guests, and for ELFs with damaged headers the same image or
the same one-line error (pyelftools reads whatever the plain reader passes on)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from pvmon.backends.xen import builder
from pvmon.errors import GuestImageError

IMAGES = Path(builder.__file__).resolve().parents[2] / "guests" / "images"
BUILTIN = sorted(p for p in IMAGES.glob("*.elf") if p.read_bytes()[4] == 2)
DEBIAN = [p for p in (Path.home() / ".cache/pvmon/guests" / g / "vmlinux"
                      for g in ("debian-6.1", "debian-6.12", "debian-7.2")) if p.exists()]


def _image(k: builder.KernelImage) -> tuple:
    return (k.entry, k.virt_base, k.paddr_offset, k.hypercall_page, k.notes, k.exec_ranges,
            [(p, v, bytes(b), m) for p, v, b, m in k.segments])


def _outcome(data: bytes | Path, plain: bool, monkeypatch) -> object:
    """The image or error message of ``data`` (bytes, or a file: mapped as
    ``pvmon run`` maps it), read by the plain reader where it can or by
    pyelftools alone."""
    with monkeypatch.context() as m:
        if not plain:
            m.setattr(builder, "_plain_elf64_headers", lambda _data: None)
        try:
            if isinstance(data, Path):
                return _image(builder.load_kernel(data))
            return _image(builder.parse_kernel(data))
        except GuestImageError as exc:
            return str(exc)


@pytest.mark.parametrize("path", BUILTIN + DEBIAN, ids=lambda p: p.parent.name + "/" + p.name)
def test_the_plain_reader_reads_every_guest_kernel_as_pyelftools_does(path, monkeypatch):
    data = path.read_bytes()
    assert builder._plain_elf64_headers(data) is not None        # no pyelftools needed
    assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)
    assert builder._plain_elf64_headers(data) == builder._elftools_headers(data, path)


def test_the_debian_boot_loads_its_kernel_without_importing_pyelftools(tmp_path):
    import subprocess
    import sys
    if not DEBIAN:
        pytest.skip("no Debian kernel cached")
    code = ("import sys; from pathlib import Path; from pvmon.backends.xen.builder import "
            f"load_kernel; load_kernel(Path({str(DEBIAN[0])!r})); "
            "print(any(m.startswith('elftools') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


# ELF64 header fields (offset, struct format) worth damaging
_FIELDS = [(4, "B"), (5, "B"), (6, "B"), (7, "B"), (16, "H"), (18, "H"), (24, "Q"), (32, "Q"),
           (40, "Q"), (54, "H"), (56, "H"), (58, "H"), (60, "H"), (62, "H")]


def _damaged(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    shoff, = struct.unpack_from("<Q", data, 40)
    phoff, = struct.unpack_from("<Q", data, 32)
    for _ in range(rng.randrange(1, 3)):
        what = rng.randrange(4)
        if what == 0:                                   # a file header field
            off, fmt = rng.choice(_FIELDS)
            bits = struct.calcsize(fmt) * 8
            value = rng.choice([0, 1, 2, 3, 0xFFFF, 0xFF00, rng.randrange(1 << bits),
                                len(data), len(data) - 8, (1 << bits) - 1])
            struct.pack_into("<" + fmt, out, off, value & ((1 << bits) - 1))
        elif what == 1 and shoff and shoff < len(data):     # a section header field
            n, = struct.unpack_from("<H", data, 60)
            base = shoff + 64 * rng.randrange(max(n, 1))
            off = base + rng.choice([0, 4, 8, 24, 32, 40, 44, 56])
            if off + 8 <= len(out):
                size = 4 if off - base in (0, 4, 40, 44) else 8
                value = rng.choice([0, 1, 2, 3, 4, 9, 11, 0x800, 0x806, 0x70000001,
                                    rng.randrange(1 << 32), len(data)])
                out[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif what == 2 and phoff and phoff < len(data):     # a program header field
            n, = struct.unpack_from("<H", data, 56)
            base = phoff + 56 * rng.randrange(max(n, 1))
            off = base + rng.choice([0, 4, 8, 16, 24, 32, 40])
            if off + 8 <= len(out):
                size = 4 if off - base in (0, 4) else 8
                value = rng.choice([0, 1, 4, 7, rng.randrange(1 << 32), len(data), 1 << 40])
                out[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        else:                                           # cut the file short
            del out[rng.randrange(64, len(out)):]
    return bytes(out)


@pytest.mark.parametrize("seed", range(8))
def test_damaged_headers_load_or_fail_exactly_as_with_pyelftools(seed, monkeypatch, tmp_path):
    rng = random.Random(seed)
    sources = [p.read_bytes() for p in BUILTIN if p.name in ("pvtest-v2.elf", "pvtest-kvm.elf")]
    plain_answers = 0
    for i in range(150):
        data = _damaged(rng.choice(sources), rng)
        if builder._plain_elf64_headers(data) is not None:
            plain_answers += 1
        assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch), (seed, i)
        if i % 10 == 0:                     # a mapped file: pyelftools seeks in the mapping
            path = tmp_path / f"vmlinux-{i}"
            path.write_bytes(data)
            assert _outcome(path, True, monkeypatch) == _outcome(path, False, monkeypatch), \
                (seed, i)
    assert plain_answers > 10


def _reference_l1(kernel, pt_pfn: int, n_pt: int, mapped_pages: int) -> bytes:
    """The bootstrap L1 entries as the builder wrote them one page at a time."""
    from pvmon.engine.machine import PAGE_SIZE, PTE_A, PTE_D, PTE_NX, PTE_P, PTE_RW, PTE_US
    xr = [(a - kernel.paddr_offset, b - kernel.paddr_offset) for a, b in kernel.exec_ranges]
    l1 = bytearray((n_pt - 3) * PAGE_SIZE)
    for p in range(mapped_pages):
        flags = PTE_P | PTE_US | PTE_A
        if not pt_pfn <= p < pt_pfn + n_pt:
            flags |= PTE_RW | PTE_D
        pa = p * PAGE_SIZE
        if xr and not any(a - PAGE_SIZE < pa < b for a, b in xr):
            flags |= PTE_NX
        struct.pack_into("<Q", l1, p * 8, pa | flags)
    return bytes(l1)


@pytest.mark.parametrize("exec_ranges", [None, (), ((0x201800, 0x203001),), ((0, 0x1000),
                                         (0x2ff000, 0x300001), (0x5000000, 0x6000000))],
                         ids=["as-built", "none", "unaligned", "edges"])
def test_the_bootstrap_l1_maps_each_page_as_the_page_by_page_builder_did(exec_ranges):
    import dataclasses

    from pvmon.engine.machine import PAGE_SIZE, Machine
    kernel = builder.load_kernel(IMAGES / "pvtest-v2.elf")
    if exec_ranges is not None:
        kernel = dataclasses.replace(kernel, exec_ranges=tuple(
            (a + kernel.paddr_offset, b + kernel.paddr_offset) for a, b in exec_ranges))
    memory = 64 << 20
    m = Machine(memory, builder.extra_bytes_for(memory))
    lay = builder.build(m, kernel, "console=hvc0")
    mapped_pages = (lay.mapped_end_va - lay.virt_base) // PAGE_SIZE
    l1 = m.read_phys((lay.pt_base_pfn + 3) * PAGE_SIZE, (lay.nr_pt_frames - 3) * PAGE_SIZE)
    assert l1 == _reference_l1(kernel, lay.pt_base_pfn, lay.nr_pt_frames, mapped_pages)
