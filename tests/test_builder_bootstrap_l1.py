"""The Xen PV builder's bootstrap L1 entries, made a run of pages at a time,
are the ones the page-by-page builder wrote: the same flags (present, user,
accessed; writable and dirty but for the page-table frames; NX outside the
kernel's executable ranges) for every page it maps."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pvmon.backends.xen import builder

IMAGES = Path(builder.__file__).resolve().parents[2] / "guests" / "images"


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
