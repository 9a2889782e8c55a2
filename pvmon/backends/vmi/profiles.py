"""How a VMI guest finds and accepts the option ROM, per API generation: the
ROM *profiles* ``vmi-3.0`` (what Linux 2.6.21-2.6.36 did, the version pvmon's
backend implements) and ``vmi-2.0`` (VMware's March 2006 proposal,
"Paravirtualization API Version 2.0", and the RFC patch series posted with it),
each fact with its source, and :func:`find_rom`, which applies a profile's rule
to guest-physical memory the way that generation's guest did.

This is a declaration, not a second backend: pvmon's ROM and VMI backend speak
API 3.0 only (docs/vmi.md, "API 2.0: the March 2006 proposal", says what a
``vmi-2.0`` backend would need). The profiles let a test (and a reader) check
pvmon's ROM against both rules: it is found by both scans and satisfies the
2006 checksum, and a 2006 guest would still refuse it, for its API version.

Sources (all read from the LKML archive ``ammarfaizi2/lore-inbox``; Linux
3.0-era files as in ``/work/shared/research/pv-abi-facts.md`` section 1):

* ``SPEC4``: "VMI Interface Proposal Documentation for I386, Part 4", Zachary
  Amsden, LKML 2006-03-13, Message-ID ``<4415CE1C.1060608@vmware.com>``,
  section 4 "ROM Implementation": Detection, Data layout (``HyperRomHeader``).
* ``SPEC5``: the same, Part 5, ``<4415CE76.9030006@vmware.com>``, Appendix A
  (the "cVmi" signature, ``VMI_Init`` returns 0 or -1).
* ``RFC3``: "[RFC, PATCH 3/24] i386 Vmi interface definition", Zachary Amsden,
  LKML 2006-03-13, ``<200603131841.k2DIfsBA005883@zach-dev.vmware.com>``:
  ``include/asm-i386/mach-vmi/paravirtualInterface.h`` (``VMI_API_REV_MAJOR``
  13, ``MIN_VMI_API_REV_MINOR`` 0, ``VROM_CALL_LEN`` 32, ``VROMHeader``,
  ``VROMCallTable`` "@ 0x80: ROM calls 4-127") and ``vmiCalls.h`` (the
  ``VMI_CALLS`` list, numbered by its order in ``enum VMICall``).
* ``RFC5``: "[RFC, PATCH 5/24] i386 Vmi code patching", the same day,
  ``<200603131802.k2DI2nv8005665@zach-dev.vmware.com>``:
  ``arch/i386/mach-vmi/setup.c`` (``probe_vmi_rom``, ``vmi_init``,
  ``patch_call_site``).
* ``VMIH``/``VMIC``: Linux ``arch/x86/include/asm/vmi.h`` and
  ``arch/x86/kernel/vmi_32.c`` (``probe_vmi_rom``, ``check_vmi_rom``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pvmon.backends.vmi import abi

#: The 2006 proposal's call table: ``vmiCalls.h``'s ``VMI_CALLS`` in order
#: (``enum VMICall`` numbers them from 0; ``NUM_VMI_CALLS`` = 85) [RFC3].
CALLS_2006: tuple[str, ...] = (
    "RESERVED0", "RESERVED1", "RESERVED2", "RESERVED3", "Init", "CPUID", "WRMSR", "RDMSR",
    "SetGDT", "SetLDT", "SetIDT", "SetTR", "GetGDT", "GetLDT", "GetIDT", "GetTR",
    "WriteGDTEntry", "WriteLDTEntry", "WriteIDTEntry", "UpdateKernelStack",
    "SetCR0", "SetCR2", "SetCR3", "SetCR4", "GetCR0", "GetCR2", "GetCR3", "GetCR4",
    "INVD", "WBINVD", "SetDR", "GetDR", "RDPMC", "RDTSC", "CLTS",
    "EnableInterrupts", "DisableInterrupts", "GetInterruptMask", "SetInterruptMask",
    "IRET", "SYSEXIT", "Pause", "Halt", "Reboot", "Shutdown",
    "SetPxE", "GetPxE", "SwapPxE", "SetPxELong", "GetPxELong", "SwapPxELongAtomic",
    "TestAndSetPxEBit", "TestAndClearPxEBit", "AllocatePage", "ReleasePage", "InvalPage",
    "FlushTLB", "FlushDeferredCalls", "SetLinearMapping",
    "IN", "INB", "INW", "INS", "INSB", "INSW", "OUT", "OUTB", "OUTW", "OUTS", "OUTSB",
    "OUTSW", "SetIOPLMask", "DeactivatePxELongAtomic", "TestAndSetPxELongBit",
    "TestAndClearPxELongBit", "SetInitialAPState", "APICWrite", "APICRead", "IODelay",
    "GetCycleFrequency", "GetCycleCounter", "SetAlarm", "CancelAlarm", "GetWallclockTime",
    "WallclockUpdated",
)


@dataclass(frozen=True)
class RomProfile:
    """One generation's ROM rule. ``scan``: (first, end exclusive, step) of the
    guest-physical scan; ``checksum``: whether the 8-bit byte sum over
    ``rom_length`` x 512 bytes must be 0; ``api``: (major, lowest minor) the
    guest requires in the header; ``licenses``: the license strings accepted at
    the header's ``license_offs`` (None: not checked); ``pci_header``: whether
    ``pci_header_offs`` must be non-zero; ``calls``: call number -> name;
    ``call_slot``: (offset of call n = ``base + step * n``) as (base, step), or
    None when calls are found through ``get_reloc``; ``sources``: fact -> source."""

    name: str
    title: str
    scan: tuple[int, int, int]
    checksum: bool
    api: tuple[int, int]
    licenses: tuple[str, ...] | None
    pci_header: bool
    calls: dict[int, str]
    call_slot: tuple[int, int] | None
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


PROFILES: dict[str, RomProfile] = {
    "vmi-3.0": RomProfile(
        name="vmi-3.0",
        title="VMI API 3.0, as Linux 2.6.21-2.6.36 probed it",
        scan=(0xC0000, 0xE0000, 2048), checksum=False, api=(abi.API_MAJOR, abi.API_MINOR),
        licenses=("GPL", "GPL v2"), pci_header=True, calls=dict(abi.HYPERCALLS),
        call_slot=None,
        sources={
            "scan": "VMIC probe_vmi_rom: 0xC0000 <= base < 0xE0000, += 2048",
            "checksum": "VMIC check_vmi_rom: no checksum test",
            "api": "VMIH VMI_API_REV_MAJOR 3, VMI_API_REV_MINOR 0; VMIC check_vmi_rom",
            "licenses": "VMIC check_vmi_rom: license string 'GPL' or 'GPL v2'",
            "pci_header": "VMIC check_vmi_rom: pci_header_offs 0 is refused",
            "calls": "VMIH VMI_CALL_* (get_reloc gives each call's address)",
        }),
    "vmi-2.0": RomProfile(
        name="vmi-2.0",
        title="VMware's March 2006 proposal, 'Paravirtualization API Version 2.0' rev 1.2 "
              "and its RFC patches (ROM API 13.0)",
        scan=(0xC8000, 0xE0000, 2048), checksum=True, api=(13, 0),
        licenses=None, pci_header=False,
        calls={n: c for n, c in enumerate(CALLS_2006) if not c.startswith("RESERVED")},
        call_slot=(0, 32),
        sources={
            "scan": "SPEC4 Detection: 'scanning the memory region from C8000h - DFFFFh in "
                    "2 kilobyte increments'",
            "checksum": "SPEC4 Detection: 'the checksum of the region indicated by the "
                        "romLength field must be zero', 'a simple 8-bit addition of all bytes'",
            "signature": "SPEC4 Detection (0x55, 0xAA); SPEC5 Appendix A ('cVmi' in "
                         "hyperSignature)",
            "api": "RFC3 paravirtualInterface.h: VMI_API_REV_MAJOR 13, "
                   "MIN_VMI_API_REV_MINOR 0; RFC5 probe_vmi_rom: major must equal 13",
            "licenses": "SPEC4 HyperRomHeader has no license field (0x10-0x17 are "
                        "reserved2/reserved3); RFC5 probe_vmi_rom checks none",
            "pci_header": "RFC5 probe_vmi_rom does not look at pciHeaderOffset",
            "calls": "RFC3 vmiCalls.h VMI_CALLS (enum order; 0-3 reserved, Init 4, 85 in all)",
            "call_slot": "RFC3 VROM_CALL_LEN 32, VROMCallTable '@ 0x80: ROM calls 4-127'; "
                         "RFC5 patch_call_site: a call site becomes 'call rom+32*n'",
        },
        notes=(
            ("The RFC code itself (RFC5 probe_vmi_rom) scans 0xC0000-0xE0000 in 2048-byte "
            "steps and does not test the checksum, as Linux 3.0 later did; the scan range "
            "and the checksum rule here are the spec text's."),
            ("No get_reloc: RFC5 vmi_init calls slot 4 (Init) as a regparm(1) function "
            "(non-zero: failure), copies rom_length x 512 bytes into the kernel's own "
            "__VMI_START area and patches each annotated call site to 'call' the copy's "
            "slot, so the ROM's code must run at any address."),
            ("The document's title version (2.0) is not the ROM header's: the header "
            "carries the API revision, 13.0 in the code posted with it (RFC3), whose "
            "revision history lists the 3.x to 13.x changes."),
        )),
}


def byte_sum(rom: bytes) -> int:
    """The 8-bit sum of ``rom``'s bytes (0 for a ROM that passes the 2006 checksum)."""
    return sum(rom) & 0xFF


def rom_problems(rom: bytes, profile: RomProfile) -> list[str]:
    """Why a guest of ``profile``'s generation would refuse the option ROM image
    ``rom`` (its bytes from the ROM's start, at least ``rom_length`` x 512 of
    them); an empty list when it accepts it. Checks, in the guest's order: the
    0xAA55 signature, "cVmi", the checksum (when the profile requires it), the
    API version, the PCI header offset, the license string."""
    if len(rom) < 0x20 or rom[0:2] != b"\x55\xaa":
        return ["no 0xAA55 option ROM signature"]
    problems = []
    if int.from_bytes(rom[8:12], "little") != abi.VROM_SIGNATURE:
        problems.append("no 'cVmi' signature")
    length = rom[2] * 512
    if profile.checksum:
        if length == 0 or length > len(rom):
            problems.append(f"rom_length {rom[2]} x 512 does not fit the image")
        elif byte_sum(rom[:length]) != 0:
            problems.append(f"byte sum over rom_length x 512 is {byte_sum(rom[:length]):#04x}, "
                            "not 0")
    major, minor = rom[0x0D], rom[0x0C]
    if major != profile.api[0] or minor < profile.api[1]:
        problems.append(f"API {major}.{minor}; this generation requires "
                        f"{profile.api[0]}.{profile.api[1]} or a later minor")
    pci = int.from_bytes(rom[0x18:0x1A], "little")
    if profile.pci_header and pci == 0:
        problems.append("no PCI header (pci_header_offs 0)")
    if profile.licenses is not None:
        off = int.from_bytes(rom[0x16:0x18], "little")
        text = rom[off:rom.find(b"\0", off)].decode("latin-1") if 0 < off < len(rom) else ""
        if text not in profile.licenses:
            problems.append(f"license {text!r} is not one of {', '.join(profile.licenses)}")
    return problems


@dataclass
class RomScan:
    """What :func:`find_rom` saw: ``found`` the physical address of the first
    VMI ROM the scan reached (None: none), ``problems`` why it is refused (empty:
    accepted), ``skipped`` other 0xAA55 ROMs passed over on the way."""

    found: int | None
    problems: list[str]
    skipped: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.found is not None and not self.problems


def find_rom(read_phys: Callable[[int, int], bytes], profile: RomProfile) -> RomScan:
    """Scan guest-physical memory as ``profile``'s guest did: each ``step`` from
    ``scan[0]`` below ``scan[1]``, the first 0xAA55 ROM with the "cVmi"
    signature is the VMI ROM, then judged by :func:`rom_problems`.
    ``read_phys(pa, n)`` returns ``n`` bytes at guest-physical ``pa``."""
    first, end, step = profile.scan
    skipped = []
    for pa in range(first, end, step):
        head = read_phys(pa, 12)
        if head[0:2] != b"\x55\xaa":
            continue
        if int.from_bytes(head[8:12], "little") != abi.VROM_SIGNATURE:
            skipped.append(pa)
            continue
        length = max(head[2] * 512, 0x200)
        return RomScan(pa, rom_problems(read_phys(pa, length), profile), skipped)
    return RomScan(None, [f"no VMI ROM in {first:#x}-{end - 1:#x}"], skipped)
