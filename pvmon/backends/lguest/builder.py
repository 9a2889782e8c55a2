"""The lguest Launcher's side of a boot, as pvmon does it: the 32-bit ELF
loader, ``boot_params`` at guest-physical 0, and the host's Switcher.

Launcher facts (facts sheet 2.5, [LGL] ``main``/``load_kernel``/``tell_kernel``,
[LGX] ``lguest_arch_setup_regs``, [BOOT]): guest RAM at guest-physical 0;
an ELF vmlinux (ET_EXEC, EM_386) loaded at each PT_LOAD ``p_paddr``;
``boot_params`` (the zero page) at 0 with one e820 RAM entry, the command
line at 0x1000, ``hardware_subarch`` = 1 (X86_SUBARCH_LGUEST),
KEEP_SEGMENTS; the kernel entered at ``e_entry`` with ESI = 0, CS/DS/ES/SS
the flat ``__KERNEL_CS|1``/``__KERNEL_DS|1`` (ring 1), EFLAGS 0x202, other
registers 0, in the host's identity ("linear") mapping until the first
LHCALL_NEW_PGTABLE.

pvmon's host (what lguest's Switcher is, here): two pages above guest RAM,
mapped read-only at :data:`SWITCHER_VA` (the top 4 MiB of the address space,
which LGUEST_INIT tells the guest to leave alone through ``reserve_mem``):

* page 0: the GDT the CPU uses (32 entries: the Switcher's ring-0
  LGUEST_CS/DS, the guest's flat ring-1 kernel segments, the TSS, and what
  LOAD_GDT_ENTRY/LOAD_TLS put there), the TSS (``ss1:esp1`` from
  LHCALL_SET_STACK), the boot stub, the IDT the CPU uses (256 gates);
* page 1: one 8-byte trap stub per vector, ``vmcall; iret``. Every host
  IDT gate leads to its stub unless the guest installed a direct trap there
  (a trap gate for an exception other than 7, 13, 14, or the system-call
  vector: [LGI] ``direct_trap``); the stub's ``vmcall`` is how the CPU
  "exits to the host" (pvmon's HVM platform hands it to the dispatch layer),
  which handles the hypercall (vector 0x1F), emulates port I/O (#GP), or
  reflects the trap or interrupt to the guest's handler.

The identity mapping of "linear mode" is a host page directory (also above
RAM) mapping all RAM 1:1 plus the Switcher. Sources and the simplifications
(the CPU walks the guest's own page tables, no shadows; the host writes the
Switcher's page-directory entry into each page directory the guest loads)
are in docs/lguest.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from pvmon.backends.lguest import abi
from pvmon.errors import GuestImageError

PAGE = 4096
#: The Switcher's virtual address: the top 4 MiB (one non-PAE PDE).
SWITCHER_VA = 0xFFC00000
SWITCHER_PDE = SWITCHER_VA >> 22
#: ``reserve_mem`` LGUEST_INIT gives the guest (4 GiB - switcher address).
RESERVE_MEM = (1 << 32) - SWITCHER_VA
#: offsets in Switcher page 0
GDT_OFF, TSS_OFF, BOOT_OFF, IDT_OFF = 0x000, 0x100, 0x200, 0x800
#: Switcher page 1: the trap stub of vector v at STUBS_OFF + 8 * v
STUBS_OFF = 0x1000
STUB = b"\x0f\x01\xc1\xcf" + b"\xcc" * 4          # vmcall; iret
#: The boot stub's stack (guest RAM below the command line; lguest's guest
#: never looks at it before it sets its own stack).
BOOT_STACK = 0x3000
CMDLINE_PA = 0x1000
EM_386 = 3
PT_LOAD = 1
#: X86 PTE bits
P, RW, US = 1, 2, 4


@dataclass
class LguestKernel:
    """A parsed 32-bit kernel ELF: ``entry`` (e_entry, physical, as the
    Launcher jumps to it), ``segments`` [(paddr, file bytes, memsz)]."""

    path: Path | None
    entry: int
    segments: list[tuple[int, bytes, int]] = field(default_factory=list)
    #: How the guest enters the host (trace header ``guest.mechanism``).
    mechanism: str = "int0x1f"


@dataclass
class LguestLayout:
    """Where the Launcher and pvmon's host put things (guest-physical
    addresses; ``switcher_va``: virtual). Recorded in trace headers."""

    entry: int
    ram: int
    boot_params: int
    cmdline: int
    switcher_pa: int
    switcher_va: int
    linear_pgdir: int
    initrd: int = 0
    initrd_size: int = 0
    extras: dict = field(default_factory=dict)


def load_kernel(path: Path) -> LguestKernel:
    """Parse an ELF32 EM_386 ET_EXEC image. Raises GuestImageError (one
    line) for anything else."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GuestImageError(f"{path}: cannot read the kernel: {exc.strerror}") from None
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise GuestImageError(f"{path}: not an ELF file")
    if data[4] != 1 or data[5] != 1:
        raise GuestImageError(f"{path}: an lguest kernel is a 32-bit little-endian ELF "
                              "(lguest is x86-32 only)")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != EM_386 or e_type != 2:
        raise GuestImageError(f"{path}: not an i386 executable (e_machine {e_machine}, "
                              f"e_type {e_type})")
    (entry,) = struct.unpack_from("<I", data, 24)
    (phoff,) = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    if phnum == 0 or phentsize < 32 or phoff + phnum * phentsize > len(data):
        raise GuestImageError(f"{path}: program headers missing or outside the file")
    segs = []
    for i in range(phnum):
        p_type, off, _va, pa, filesz, memsz = struct.unpack_from("<6I", data, phoff + i * phentsize)
        if p_type != PT_LOAD or memsz == 0:
            continue
        if off + filesz > len(data) or filesz > memsz:
            raise GuestImageError(f"{path}: a PT_LOAD segment lies outside the file")
        segs.append((pa, data[off:off + filesz], memsz))
    if not segs:
        raise GuestImageError(f"{path}: no PT_LOAD segment")
    return LguestKernel(Path(path), entry, segs)


def linear_tables(ram: int) -> int:
    """Page tables of the linear mapping of ``ram`` bytes (one per 4 MiB)."""
    return (ram + (4 << 20) - 1) >> 22


def extra_bytes_for(ram: int) -> int:
    """Switcher (2 pages), its page table, the linear page directory and
    the linear page tables (non-PAE), or the PDPT page and four page
    directories of 2 MiB pages (PAE: fewer)."""
    return (4 + max(linear_tables(ram), 4)) * PAGE


#: PAE: the Switcher's slot, PDPT entry 3, page-directory entry 510
PAE_SWITCHER_PDPTE, PAE_SWITCHER_PDE = SWITCHER_VA >> 30, (SWITCHER_VA >> 21) & 511
PS = 0x80


def _seg(base: int, limit: int, access: int, flags: int) -> bytes:
    return struct.pack("<Q", (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40)
                       | (((limit >> 16) & 0xF) << 48) | (flags << 52)
                       | (((base >> 24) & 0xFF) << 56))


def boot_stub(entry: int) -> bytes:
    """Ring 0 to ring 1 (what the Switcher's first entry to the guest does):
    load the data segments and a stack, zero EAX, ``iret`` to
    ``__KERNEL_CS|1:entry`` with ``__KERNEL_DS|1``, ESP 0, EFLAGS 0x202."""
    ds, cs = abi.KERNEL_DS, abi.KERNEL_CS
    return (b"\xb8" + struct.pack("<I", ds) + b"\x8e\xd8\x8e\xc0\x8e\xe0\x8e\xe8"
            + b"\xb8" + struct.pack("<I", abi.LGUEST_DS) + b"\x8e\xd0"
            + b"\xbc" + struct.pack("<I", BOOT_STACK)
            + b"\x31\xc0"
            + bytes([0x6A, ds, 0x6A, 0x00]) + b"\x68" + struct.pack("<I", 0x202)
            + bytes([0x6A, cs]) + b"\x68" + struct.pack("<I", entry) + b"\xcf")


def build(machine, kernel: LguestKernel, cmdline: str, initrd: bytes | None = None,
          pae: bool = False) -> LguestLayout:
    """Load the kernel, write boot_params and the Switcher, set the boot
    registers (RIP at the boot stub, ring 0, paging on with the linear
    mapping). Raises GuestImageError when the kernel does not fit."""
    from unicorn import x86_const as x86

    from pvmon.engine.hvm import enter_protected32, require
    require()
    ram = machine.ram_bytes
    for pa, data, memsz in kernel.segments:
        if pa < 0x4000 or pa + memsz > ram:
            raise GuestImageError(f"kernel segment at {pa:#x} (+{memsz:#x}) does not fit in "
                                  f"guest RAM ({ram:#x} bytes, above the boot pages)")
    uc = machine.uc
    enter_protected32(machine, 0, 0)
    for pa, data, memsz in kernel.segments:
        machine.write_phys(pa, bytes(data) + bytes(memsz - len(data)))
    # boot_params (struct boot_params, Documentation/x86/zero-page.txt, boot.txt)
    bp = bytearray(PAGE)
    bp[0x1E8] = 1                                           # e820_entries
    struct.pack_into("<QQI", bp, 0x2D0, 0, ram, 1)          # e820[0]: RAM
    struct.pack_into("<H", bp, 0x1FE, 0xAA55)
    bp[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", bp, 0x206, 0x207)                # hdr.version
    bp[0x210] = 0xFF                                        # type_of_loader
    bp[0x211] |= 0x40                                       # KEEP_SEGMENTS
    struct.pack_into("<I", bp, 0x228, CMDLINE_PA)           # cmd_line_ptr
    struct.pack_into("<I", bp, 0x230, 0x1000000)            # kernel_alignment
    struct.pack_into("<I", bp, 0x23C, abi.X86_SUBARCH_LGUEST)
    rd_pa = rd_size = 0
    if initrd:
        rd_size = len(initrd)
        rd_pa = (ram - rd_size) & ~(PAGE - 1)
        end = max(pa + memsz for pa, _, memsz in kernel.segments)
        if rd_pa < end:
            raise GuestImageError("the initrd does not fit above the kernel")
        machine.write_phys(rd_pa, initrd)
        struct.pack_into("<II", bp, 0x218, rd_pa, rd_size)
    machine.write_phys(0, bytes(bp))
    cl = cmdline.encode()[:PAGE - 1] + b"\0"
    machine.write_phys(CMDLINE_PA, cl + bytes(PAGE - len(cl)))
    # the Switcher
    sw = ram
    gdt = bytearray(abi.GDT_ENTRIES * 8)
    gdt[abi.GDT_ENTRY_LGUEST_CS * 8:abi.GDT_ENTRY_LGUEST_CS * 8 + 8] = _seg(0, 0xFFFFF, 0x9B, 0xC)
    gdt[abi.GDT_ENTRY_LGUEST_DS * 8:abi.GDT_ENTRY_LGUEST_DS * 8 + 8] = _seg(0, 0xFFFFF, 0x93, 0xC)
    gdt[abi.GDT_ENTRY_KERNEL_CS * 8:abi.GDT_ENTRY_KERNEL_CS * 8 + 8] = _seg(0, 0xFFFFF, 0xBB, 0xC)   # DPL 1, accessed
    gdt[abi.GDT_ENTRY_KERNEL_DS * 8:abi.GDT_ENTRY_KERNEL_DS * 8 + 8] = _seg(0, 0xFFFFF, 0xB3, 0xC)
    gdt[abi.GDT_ENTRY_TSS * 8:abi.GDT_ENTRY_TSS * 8 + 8] = _seg(SWITCHER_VA + TSS_OFF, 0x67, 0x8B, 0)  # busy TSS
    tss = bytearray(0x68)
    struct.pack_into("<II", tss, 12, 0, abi.KERNEL_DS)      # esp1, ss1
    struct.pack_into("<H", tss, 102, 0x68)                  # no I/O bitmap
    page0 = bytearray(PAGE)
    page0[GDT_OFF:GDT_OFF + len(gdt)] = gdt
    page0[TSS_OFF:TSS_OFF + len(tss)] = tss
    stub = boot_stub(kernel.entry)
    page0[BOOT_OFF:BOOT_OFF + len(stub)] = stub
    for v in range(256):
        dpl = 1
        page0[IDT_OFF + 8 * v:IDT_OFF + 8 * v + 8] = abi.gate(
            abi.KERNEL_CS, SWITCHER_VA + STUBS_OFF + 8 * v, 0xF, dpl)
    machine.write_phys(sw, bytes(page0))
    machine.write_phys(sw + PAGE, STUB * 256 + bytes(PAGE - 8 * 256))
    spt = sw + 2 * PAGE
    pgdir = sw + 3 * PAGE
    if pae:
        _linear_pae(machine, sw, spt, pgdir, ram)
    else:
        _linear(machine, sw, spt, pgdir, ram)
    # CPU: paging on with the linear mapping, the Switcher's GDT/IDT/TSS
    uc.reg_write(x86.UC_X86_REG_CR4, 0x20 if pae else 0)    # PAE
    uc.reg_write(x86.UC_X86_REG_CR3, pgdir)
    uc.reg_write(x86.UC_X86_REG_CR0, 0x80010033)            # PG | WP | NE | ET | MP | PE
    uc.reg_write(x86.UC_X86_REG_GDTR, (0, SWITCHER_VA + GDT_OFF, len(gdt) - 1, 0))
    uc.reg_write(x86.UC_X86_REG_IDTR, (0, SWITCHER_VA + IDT_OFF, 256 * 8 - 1, 0))
    # flags as QEMU caches them after ltr: descriptor bits 8-23, P | 32-bit TSS type 9
    # (QEMU checks the cached type & 7 == 1 on a stack switch; the GDT copy is busy)
    uc.reg_write(x86.UC_X86_REG_TR, (abi.TSS_SEL, SWITCHER_VA + TSS_OFF, 0x67, 0x8900))
    for r in (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX,
              x86.UC_X86_REG_RDX, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDI,
              x86.UC_X86_REG_RBP):
        uc.reg_write(r, 0)
    uc.reg_write(x86.UC_X86_REG_RIP, SWITCHER_VA + BOOT_OFF)
    return LguestLayout(entry=kernel.entry, ram=ram, boot_params=0, cmdline=CMDLINE_PA,
                        switcher_pa=sw, switcher_va=SWITCHER_VA, linear_pgdir=pgdir,
                        initrd=rd_pa, initrd_size=rd_size)


def _linear(machine, sw: int, spt: int, pgdir: int, ram: int) -> None:
    """The non-PAE linear mapping: RAM 1:1 in 4 KiB pages, the Switcher."""
    machine.write_phys(spt, struct.pack("<II", sw | P, (sw + PAGE) | P))
    n = linear_tables(ram)
    pd = bytearray(PAGE)
    for i in range(n):
        pt = sw + (4 + i) * PAGE
        struct.pack_into("<I", pd, 4 * i, pt | P | RW | US)
        first = i << 10
        count = min(1024, (ram >> 12) - first)
        machine.write_phys(pt, b"".join(struct.pack("<I", ((first + j) << 12) | P | RW | US)
                                        for j in range(count)))
    struct.pack_into("<I", pd, 4 * SWITCHER_PDE, spt | P | RW)
    machine.write_phys(pgdir, bytes(pd))


def _linear_pae(machine, sw: int, spt: int, pdpt: int, ram: int) -> None:
    """The PAE linear mapping: a PDPT and four page directories of 2 MiB
    pages mapping RAM 1:1 (up to 3 GiB), the Switcher in PDPT entry 3."""
    machine.write_phys(spt, struct.pack("<QQ", sw | P, (sw + PAGE) | P))
    entries = []
    for g in range(4):
        pd_pa = sw + (4 + g) * PAGE
        entries.append(pd_pa | P)
        pd = bytearray(PAGE)
        for i in range(512):
            va = (g << 30) | (i << 21)
            if va < ram and g < 3:
                struct.pack_into("<Q", pd, 8 * i, va | P | RW | US | PS)
        if g == PAE_SWITCHER_PDPTE:
            struct.pack_into("<Q", pd, 8 * PAE_SWITCHER_PDE, spt | P | RW)
        machine.write_phys(pd_pa, bytes(pd))
    machine.write_phys(pdpt, struct.pack("<4Q", *entries) + bytes(PAGE - 32))
