"""The Xen PVH domain builder: the start-of-day state a PVH kernel expects.

Facts: the entry contract of xen.git ``docs/misc/pvh.pandoc`` (stable-4.17)
and Linux ``arch/x86/platform/pvh/head.S``: 32-bit protected mode, paging
off, EBX = guest-physical address of ``struct hvm_start_info``
(``xen/include/public/arch-x86/hvm/start_info.h``: magic 0x336EC578, version
1, flags, nr_modules, modlist_paddr, cmdline_paddr, rsdp_paddr,
memmap_paddr, memmap_entries), entered at ``XEN_ELFNOTE_PHYS32_ENTRY``
(``xen/include/public/elfnote.h``, 18). The kernel's PT_LOAD segments are
loaded at their physical addresses (``p_paddr``), as libxenguest does for
HVM-type guests. Guest frames are machine frames (pvmon's P2M is the
identity), so GFN = PFN = MFN throughout.

Guest-physical layout (RAM below ``ram_bytes``, the rest reserved):

    0x0000_6000  hvm_start_info (56 bytes), module list at +0x40
    0x0000_7000  memory map (hvm_memmap_table_entry, 24 bytes each)
    0x0000_8000  command line (at most 1024 bytes, MAX_GUEST_CMDLINE)
    0x000E_0000  ACPI tables (RSDP, XSDT, FADT, DSDT, MADT), type ACPI in the map
    kernel       at its p_paddr (Linux: 16 MiB)
    initrd       page-aligned after the kernel, module 0
    last pages   xenstore ring, console ring (reserved in the map; their
                 frames reach the guest through HVM_PARAM_STORE_PFN and
                 HVM_PARAM_CONSOLE_PFN)

Above RAM, frames pvmon keeps for Xen: shared_info (until the guest maps it
into its own physmap with XENMEM_add_to_physmap) and the grant-table frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvmon.backends.xen.builder import GRANT_FRAMES, GRANT_STATUS_FRAMES, KernelImage
from pvmon.engine.machine import PAGE_SIZE, Machine

#: struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h)
from pvmon.platforms.hvm.boot import START_INFO_PA, load_physical, write_start_info

MAX_GUEST_CMDLINE = 1024
ACPI_PA = 0xE0000
ACPI_BYTES = 0x10000
ISA_HOLE = (0xA0000, 0x100000)
#: e820 / hvm_memmap_table_entry types (start_info.h XEN_HVM_MEMMAP_TYPE_*)
E820_RAM, E820_RESERVED, E820_ACPI = 1, 2, 3
#: Frames above RAM pvmon keeps for Xen: shared_info, the grant frames, the
#: grant-status frames (last, where grant_table.py looks for them).
EXTRA_PAGES = 1 + GRANT_FRAMES + GRANT_STATUS_FRAMES


@dataclass
class PvhLayout:
    """Where the PVH builder put everything (guest-physical addresses and
    frame numbers; GFN = machine frame). ``mode`` is what the backend attaches
    by (:meth:`pvmon.backends.xen.backend.XenBackend.attach`)."""

    nr_pages: int
    entry: int
    start_info_pa: int
    shared_info_ma: int
    grant_ma: int
    store_pfn: int
    console_pfn: int
    rsdp_pa: int
    mod_start: int = 0
    mod_len: int = 0
    store_evtchn: int = 1
    console_evtchn: int = 2
    mode: str = "pvh"
    extras: dict = field(default_factory=dict)


def extra_bytes_for(ram_bytes: int) -> int:
    """Bytes above RAM the builder needs (shared_info and grant frames)."""
    return EXTRA_PAGES * PAGE_SIZE


def memory_map(ram_bytes: int, store_pfn: int) -> list[tuple[int, int, int]]:
    """The guest's memory map as ``(addr, size, type)`` entries, in bytes:
    RAM below the ISA hole, the ACPI area, RAM from 1 MiB to the special
    pages, and the special pages reserved."""
    top = store_pfn * PAGE_SIZE
    return [(0, ACPI_PA, E820_RAM), (ACPI_PA, ACPI_BYTES, E820_ACPI),
            (ISA_HOLE[1], top - ISA_HOLE[1], E820_RAM),
            (top, ram_bytes - top, E820_RESERVED)]


def build(machine: Machine, kernel: KernelImage, cmdline: str,
          initrd: bytes | None = None) -> PvhLayout:
    """Load ``kernel`` for a PVH boot, write hvm_start_info, the memory map,
    the command line and the ACPI tables, and put the CPU in the PVH entry
    state (:func:`pvmon.engine.hvm.enter_protected32`). Raises
    GuestImageError when the kernel has no PHYS32_ENTRY note or does not fit."""
    from pvmon.engine.hvm import enter_protected32, require
    require()
    ram = machine.ram_bytes
    nr_pages = ram // PAGE_SIZE
    store_pfn, console_pfn = nr_pages - 2, nr_pages - 1
    top = store_pfn * PAGE_SIZE
    entry, _kend, mod_start, mod_len = load_physical(machine, kernel, ISA_HOLE[1], top, initrd)

    from pvmon.platforms.hvm.acpi import build_acpi_tables
    acpi = build_acpi_tables(ACPI_PA, nr_cpus=1)
    machine.write_phys_data(acpi.base, acpi.blob)

    cmd = cmdline.encode()[:MAX_GUEST_CMDLINE - 1] + b"\0"
    write_start_info(machine, cmd, memory_map(ram, store_pfn), acpi.rsdp_paddr, mod_start,
                     mod_len)
    layout = PvhLayout(nr_pages, entry, START_INFO_PA, ram, ram + PAGE_SIZE, store_pfn,
                       console_pfn, acpi.rsdp_paddr, mod_start, mod_len)
    enter_protected32(machine, entry, START_INFO_PA)
    return layout


__all__ = ["PvhLayout", "build", "extra_bytes_for", "memory_map"]
