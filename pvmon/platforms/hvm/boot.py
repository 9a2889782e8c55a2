"""Loading a kernel for the HVM platform's 32-bit entry (Xen PVH, and KVM
booted through the same note as Firecracker does): the ELF's PT_LOAD
segments at their physical addresses, the initrd page-aligned after them.
The entry contract itself is the ABI's (``hvm_start_info``: xen.git
``docs/misc/pvh.pandoc``, Linux ``arch/x86/platform/pvh/head.S``)."""

from __future__ import annotations

import struct
from typing import Any

from pvmon.engine.machine import PAGE_SIZE, Machine
from pvmon.errors import GuestImageError

#: struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h): magic, and
#: where pvmon puts it and what it points at (guest-physical)
HVM_START_MAGIC = 0x336EC578
START_INFO_PA = 0x6000
MODLIST_PA = START_INFO_PA + 0x40
MEMMAP_PA = 0x7000
CMDLINE_PA = 0x8000


def load_physical(machine: Machine, kernel: Any, low: int, top: int,
                  initrd: bytes | None) -> tuple[int, int, int, int]:
    """Copy ``kernel``'s segments (a :class:`~pvmon.backends.xen.builder.KernelImage`
    with a ``PHYS32_ENTRY`` note) to their ``p_paddr``, zero-filling each to
    its ``p_memsz``, and ``initrd`` after the image. ``[low, top)`` is the
    guest-physical range they may use (bytes). Returns ``(entry, kernel end,
    initrd address, initrd length)``, the initrd pair ``(0, 0)`` without one.
    Raises GuestImageError (one line) when the note is missing, the entry lies
    outside the image, or anything does not fit."""
    entry = kernel.notes.get("PHYS32_ENTRY")
    if not isinstance(entry, int):
        raise GuestImageError(f"{kernel.path or 'the kernel'} has no XEN_ELFNOTE_PHYS32_ENTRY "
                              "note (CONFIG_PVH): it cannot be entered in 32-bit mode")
    kend = 0
    for paddr, _vaddr, data, memsz in kernel.segments:
        if paddr < low or paddr + memsz > top:
            raise GuestImageError(f"kernel segment at physical {paddr:#x}+{memsz:#x} does not "
                                  f"fit in {machine.ram_bytes >> 20} MiB")
        machine.write_phys_data(paddr, data)
        if memsz > len(data):
            machine.write_phys_data(paddr + len(data), bytes(memsz - len(data)))
        kend = max(kend, paddr + memsz)
    if not 0 < entry < kend:
        raise GuestImageError(f"PHYS32_ENTRY {entry:#x} lies outside the loaded kernel")
    mod_start = mod_len = 0
    if initrd:
        mod_start = -(-kend // PAGE_SIZE) * PAGE_SIZE
        mod_len = len(initrd)
        if mod_start + mod_len > top:
            raise GuestImageError(f"initrd ({mod_len} bytes) does not fit in guest memory")
        machine.write_phys_data(mod_start, initrd)
    return entry, kend, mod_start, mod_len


def write_start_info(machine: Machine, cmdline: bytes, memmap: list[tuple[int, int, int]],
                     rsdp_paddr: int, mod_start: int, mod_len: int) -> int:
    """Write ``struct hvm_start_info`` version 1 at :data:`START_INFO_PA` with
    the command line (NUL-terminated ``cmdline``, already cut to the ABI's
    limit), the memory map (``(addr, size, type)`` in bytes, 24-byte
    ``hvm_memmap_table_entry`` each), the ACPI RSDP and the initrd as module 0
    (none when ``mod_len`` is 0). Returns its address, the EBX of the entry."""
    machine.write_phys_data(CMDLINE_PA, cmdline)
    machine.write_phys_data(MEMMAP_PA, b"".join(struct.pack("<QQII", a, s, t, 0)
                                                for a, s, t in memmap))
    nr_modules = 1 if mod_len else 0
    if nr_modules:
        machine.write_phys_data(MODLIST_PA, struct.pack("<QQQQ", mod_start, mod_len, 0, 0))
    machine.write_phys_data(START_INFO_PA, struct.pack(
        "<IIIIQQQQII", HVM_START_MAGIC, 1, 0, nr_modules, MODLIST_PA if nr_modules else 0,
        CMDLINE_PA, rsdp_paddr, MEMMAP_PA, len(memmap), 0))
    return START_INFO_PA


__all__ = ["CMDLINE_PA", "HVM_START_MAGIC", "MEMMAP_PA", "MODLIST_PA", "START_INFO_PA",
           "load_physical", "write_start_info"]
