"""The KVM guest builder: a minimal PC booted through the PVH entry point.

Boot protocol: the ``XEN_ELFNOTE_PHYS32_ENTRY`` entry of the uncompressed
vmlinux with a ``struct hvm_start_info`` (EBX), as Firecracker boots a KVM
guest whose ELF carries the note (firecracker ``src/vmm/src/arch/x86_64/
mod.rs`` ``load_kernel``/``configure_pvh``, v1.16). Linux accepts it on a
non-Xen host: with no Xen CPUID leaves ``xen_prepare_pvh`` builds
``boot_params`` from start_info's memory map, command line and module 0
(``arch/x86/platform/pvh/enlighten.c``). Why this and not the 64-bit Linux
boot protocol: pvmon already enters the PVH state (``enter_protected32``,
proven by the Xen PVH guests), and the kernel then builds its own
boot_params, page tables and GDT, so there is no zero page, e820 table or
identity map of ours to get wrong. A kernel without the note
(CONFIG_PVH=n) is refused with one line; Debian's 6.1 and 6.12 have it.

Guest-physical layout (RAM below ``ram_bytes``; nothing above it):

    0x0000_1000  scratch of the 32-bit entry trampoline (free after entry)
    0x0000_6000  hvm_start_info (56 bytes), module list at +0x40
    0x0000_7000  memory map (hvm_memmap_table_entry, 24 bytes each)
    0x0000_8000  command line (at most 2048 bytes, COMMAND_LINE_SIZE)
    0x000E_0000  ACPI tables (pvmon.platforms.hvm.pc_acpi), type ACPI
    kernel       at its p_paddr (Linux: 16 MiB)
    initrd       page-aligned after the kernel, module 0
    0xC000_0000  the 32-bit MMIO hole: RAM ends below it (at most 3 GiB)
    0xFEC0_0000  I/O APIC (MMIO), 0xFEE0_0000 local APIC (MMIO)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvmon.engine.machine import PAGE_SIZE, Machine
from pvmon.errors import GuestImageError
from pvmon.platforms.hvm.boot import (
    CMDLINE_PA,
    START_INFO_PA,
    load_physical,
    write_start_info,
)

MAX_CMDLINE = 2048
ACPI_PA = 0xE0000
ACPI_BYTES = 0x10000
LOW_RAM_END = 0xA0000
HIGH_RAM = 0x100000
E820_RAM, E820_RESERVED, E820_ACPI = 1, 2, 3
#: Start of the 32-bit MMIO hole (as Firecracker's 1 GiB gap below 4 GiB): RAM
#: must end below it, since pvmon maps guest RAM in one piece.
MMIO_HOLE = 0xC0000000


def check_memory(ram_bytes: int) -> None:
    """Raise PvmonError (one line) when ``ram_bytes`` does not fit below
    :data:`MMIO_HOLE`."""
    from pvmon.errors import PvmonError
    if ram_bytes > MMIO_HOLE:
        raise PvmonError(f"--memory {ram_bytes >> 20} MiB is too much for a KVM guest on pvmon: "
                         f"at most {MMIO_HOLE >> 20} MiB (RAM ends below the 32-bit MMIO hole "
                         "that holds the APICs)")


@dataclass
class KvmLayout:
    """Where the builder put everything (guest-physical addresses)."""

    nr_pages: int
    entry: int
    start_info_pa: int
    rsdp_pa: int
    cmdline_pa: int
    mod_start: int = 0
    mod_len: int = 0
    boot: str = "pvh-entry"
    extras: dict = field(default_factory=dict)


def memory_map(ram_bytes: int) -> list[tuple[int, int, int]]:
    """``(addr, size, type)`` entries: low RAM, the ACPI area, RAM from 1 MiB."""
    return [(0, LOW_RAM_END, E820_RAM), (ACPI_PA, ACPI_BYTES, E820_ACPI),
            (HIGH_RAM, ram_bytes - HIGH_RAM, E820_RAM)]


def build(machine: Machine, kernel, cmdline: str, initrd: bytes | None = None) -> KvmLayout:
    """Load ``kernel`` (a :class:`~pvmon.backends.xen.builder.KernelImage`
    with a PHYS32_ENTRY note), write start_info, the memory map, the command
    line, the initrd and the ACPI tables, and put the CPU in the 32-bit
    entry state. Raises GuestImageError when the kernel has no entry note or
    it or the initrd does not fit."""
    from pvmon.engine.hvm import enter_protected32, require
    from pvmon.platforms.hvm.pc_acpi import build_pc_acpi_tables
    require()
    ram = machine.ram_bytes
    check_memory(ram)
    entry = kernel.notes.get("PHYS32_ENTRY")
    if not isinstance(entry, int):
        raise GuestImageError(f"{kernel.path or 'the kernel'} has no PVH entry note "
                              "(XEN_ELFNOTE_PHYS32_ENTRY, CONFIG_PVH): pvmon boots KVM guests "
                              "through it")
    _entry, _kend, mod_start, mod_len = load_physical(machine, kernel, HIGH_RAM, ram, initrd)
    acpi = build_pc_acpi_tables(ACPI_PA)
    machine.write_phys_data(acpi.base, acpi.blob)
    cmd = cmdline.encode()[:MAX_CMDLINE - 1] + b"\0"
    write_start_info(machine, cmd, memory_map(ram), acpi.rsdp_paddr, mod_start, mod_len)
    layout = KvmLayout(ram // PAGE_SIZE, entry, START_INFO_PA, acpi.rsdp_paddr, CMDLINE_PA,
                       mod_start, mod_len)
    enter_protected32(machine, entry, START_INFO_PA)
    return layout


__all__ = ["KvmLayout", "build", "memory_map"]
