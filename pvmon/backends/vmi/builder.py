"""The VMI option ROM pvmon builds, and how its reference guest is entered.

The ROM [VMIH] ``struct vrom_header``, [VMIC] ``probe_vmi_rom``/``check_vmi_rom``
(facts sheet 1.2-1.4): at guest-physical :data:`ROM_PA` (2 KiB aligned, inside
both Linux's scan range 0xC0000-0xE0000 and the 2006 spec's C8000h-DFFFFh, with
a zero byte sum over ``rom_length`` x 512 bytes so the spec's checksum holds):
0xAA55, ``rom_length``, "cVmi", API 3.0, ``virtual_top``, a "GPL v2" license
string (Linux refuses any other), a "PCIR" header (vendor 0x15AD, device
0x0801), ``vmi_init`` at +0x80 and ``get_reloc`` at +0x88, and one 16-byte call
entry per call number at +0x100: ``vmcall; ret`` (``vmcall; iret`` for IRET,
which Linux reaches by a patched ``jmp``). The ``vmcall`` is how a ROM call
reaches pvmon's VMI backend (pvmon's HVM platform hands it to the dispatch
layer).

Boot: VMI defines no boot protocol (Linux booted through the PC BIOS and
found the ROM later). pvmon loads the 32-bit ELF at its ``p_paddr``s and enters
``e_entry`` in 32-bit protected mode at ring 0, paging off, flat segments,
EBX = the ROM's physical address as a hint (the guest scans anyway).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pvmon.backends.lguest.builder import LguestKernel, load_kernel  # the same ELF32 loader
from pvmon.backends.vmi import abi
from pvmon.errors import GuestImageError

ROM_PA = 0xC8000
ROM_SIZE = 0x2000                   # 8 KiB: rom_length 16
CALLS_OFF = 0x100
CALL_SLOT = 16
LICENSE_OFF, PCI_OFF = 0x90, 0xA0
#: the hypervisor's hole at the top of the guest's address space ([SPEC]: 64 MiB)
VIRTUAL_TOP = 0xFC000000
VMCALL = b"\x0f\x01\xc1"

__all__ = [
    "ROM_PA",
    "LguestKernel",
    "VmiLayout",
    "build",
    "extra_bytes_for",
    "load_kernel",
    "rom_bytes",
]


@dataclass
class VmiLayout:
    """Where things are (guest-physical)."""

    entry: int
    ram: int
    rom: int
    rom_size: int
    extras: dict = field(default_factory=dict)


def rom_bytes() -> bytes:
    rom = bytearray(ROM_SIZE)
    struct.pack_into("<HB", rom, 0, abi.ROM_SIGNATURE, ROM_SIZE // 512)
    rom[3] = 0xCB                                         # rom_entry: retf (no BIOS init)
    struct.pack_into("<IBBB", rom, 8, abi.VROM_SIGNATURE, abi.API_MINOR, abi.API_MAJOR, 0)
    struct.pack_into("<I", rom, 0x10, VIRTUAL_TOP)
    struct.pack_into("<HHH", rom, 0x16, LICENSE_OFF, PCI_OFF, 0)
    rom[abi.OFF_VMI_INIT:abi.OFF_VMI_INIT + 4] = VMCALL + b"\xc3"
    rom[abi.OFF_GET_RELOC:abi.OFF_GET_RELOC + 4] = VMCALL + b"\xc3"
    rom[LICENSE_OFF:LICENSE_OFF + 7] = b"GPL v2\0"
    rom[PCI_OFF:PCI_OFF + 0x18] = struct.pack("<4sHHHHBBBBHBBBBH", b"PCIR",
                                              abi.PCI_VENDOR_VMWARE, abi.PCI_DEVICE_VMI,
                                              0, 0x18, 0, 0x05, 0x80, 0, ROM_SIZE // 512,
                                              0, 3, 0, 0x80, 0)
    for n in range(abi.NUM_CALLS):
        off = CALLS_OFF + CALL_SLOT * n
        tail = b"\xcf" if n == 33 else b"\xc3"
        rom[off:off + CALL_SLOT] = (VMCALL + tail).ljust(CALL_SLOT, b"\xcc")
    rom[-1] = (-sum(rom[:-1])) & 0xFF                    # byte sum 0 ([SPEC])
    return bytes(rom)


def extra_bytes_for(ram: int) -> int:
    return 0


def build(machine, kernel: LguestKernel, cmdline: str, initrd: bytes | None = None
          ) -> VmiLayout:
    """Load the kernel and the ROM; enter 32-bit protected mode at ring 0.
    Raises GuestImageError when the kernel does not fit or overlaps the ROM."""
    from pvmon.engine.hvm import enter_protected32, require
    require()
    ram = machine.ram_bytes
    for pa, _data, memsz in kernel.segments:
        if pa < 0x100000 or pa + memsz > ram:
            raise GuestImageError(f"kernel segment at {pa:#x} (+{memsz:#x}) must lie in guest "
                                  f"RAM above 1 MiB ({ram:#x} bytes)")
    enter_protected32(machine, kernel.entry, ROM_PA)
    for pa, data, memsz in kernel.segments:
        machine.write_phys(pa, bytes(data) + bytes(memsz - len(data)))
    machine.write_phys(ROM_PA, rom_bytes())
    # the CPU's IF is always set under VMI; the guest's is the ROM's (starts clear)
    from unicorn import x86_const as x86
    machine.uc.reg_write(x86.UC_X86_REG_RFLAGS, 0x202)
    machine.uc.reg_write(x86.UC_X86_REG_RSP, 0)
    return VmiLayout(entry=kernel.entry, ram=ram, rom=ROM_PA, rom_size=ROM_SIZE)
