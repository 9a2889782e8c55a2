"""VMI ROM profiles: the rule by which a guest of each API generation finds and
accepts the option ROM (Linux's API 3.0; the March 2006 "Paravirtualization API
Version 2.0" proposal and its RFC code, ROM API 13.0), applied to pvmon's own
ROM as the guest would see it in guest-physical memory."""

from __future__ import annotations

import pytest

from pvmon.backends.vmi import abi
from pvmon.backends.vmi import builder as B
from pvmon.backends.vmi.profiles import (
    CALLS_2006,
    PROFILES,
    byte_sum,
    find_rom,
    rom_problems,
)

V3, V2 = PROFILES["vmi-3.0"], PROFILES["vmi-2.0"]


def lowmem(*roms: tuple[int, bytes]):
    """read_phys over the first MiB with ``roms`` placed at their addresses."""
    mem = bytearray(0x100000)
    for pa, rom in roms:
        mem[pa:pa + len(rom)] = rom
    return lambda pa, n: bytes(mem[pa:pa + n])


def with_header(rom: bytes, **fields) -> bytes:
    """``rom`` with header bytes replaced (offset -> bytes), the checksum left as is."""
    b = bytearray(rom)
    for off, data in fields.values():
        b[off:off + len(data)] = data
    return bytes(b)


def test_pvmons_rom_is_found_by_both_scans_and_passes_the_2006_checksum():
    rom = B.rom_bytes()
    assert byte_sum(rom[:rom[2] * 512]) == 0
    for prof in (V3, V2):
        scan = find_rom(lowmem((B.ROM_PA, rom)), prof)
        assert scan.found == B.ROM_PA
    assert find_rom(lowmem((B.ROM_PA, rom)), V3).accepted


def test_a_2006_guest_refuses_pvmons_rom_for_its_api_version_only():
    scan = find_rom(lowmem((B.ROM_PA, B.rom_bytes())), V2)
    assert scan.problems == ["API 3.0; this generation requires 13.0 or a later minor"]
    # the same ROM with the header's version set to 13.0 and the sum fixed again
    rom = bytearray(with_header(B.rom_bytes(), v=(0x0C, bytes([0, 13]))))
    rom[-1] = (rom[-1] - byte_sum(rom)) & 0xFF
    assert rom_problems(bytes(rom), V2) == []
    assert rom_problems(bytes(rom), V3)[0].startswith("API 13.0")


def test_the_scan_ranges_differ_below_0xc8000():
    rom = B.rom_bytes()
    assert find_rom(lowmem((0xC0000, rom)), V3).found == 0xC0000
    miss = find_rom(lowmem((0xC0000, rom)), V2)
    assert miss.found is None and miss.problems == ["no VMI ROM in 0xc8000-0xdffff"]
    # both stop short of 0xE0000; another option ROM on the way is passed over
    assert find_rom(lowmem((0xE0000, rom)), V3).found is None
    vga = b"\x55\xaa\x40" + bytes(0x7FFD)
    scan = find_rom(lowmem((0xC0000, vga), (0xD0000, rom)), V3)
    assert (scan.found, scan.skipped) == (0xD0000, [0xC0000])


def test_a_bad_checksum_is_refused_by_the_2006_rule_only():
    rom = bytearray(B.rom_bytes())
    rom[-1] = (rom[-1] + 0x5A) & 0xFF
    assert rom_problems(bytes(rom), V3) == []
    problems = rom_problems(bytes(rom), V2)
    assert any("byte sum over rom_length x 512 is 0x5a, not 0" in p for p in problems)


def test_the_license_and_pci_header_are_3_0_rules_only():
    rom = with_header(B.rom_bytes(), lic=(B.LICENSE_OFF, b"Proprietary\0"),
                      pci=(0x18, b"\0\0"))
    p3 = rom_problems(rom, V3)
    assert "no PCI header (pci_header_offs 0)" in p3
    assert "license 'Proprietary' is not one of GPL, GPL v2" in p3
    assert not any("license" in p or "PCI" in p for p in rom_problems(rom, V2))


@pytest.mark.parametrize("name, n2006, n30", [
    ("CPUID", 5, 0), ("SetGDT", 8, 3), ("IRET", 39, 33), ("Halt", 42, 35),
    ("SetPxE", 45, 38), ("FlushTLB", 56, 47), ("SetAlarm", 81, 68),
    ("WallclockUpdated", 84, 71)])
def test_the_2006_call_table_numbers_calls_by_their_order_in_vmicalls_h(name, n2006, n30):
    assert V2.calls[n2006] == name and abi.HYPERCALL_NUMBERS[name] == n30


def test_the_2006_table_has_85_entries_and_calls_3_0_dropped():
    assert len(CALLS_2006) == 85 and CALLS_2006[4] == "Init"
    assert CALLS_2006.index("FlushDeferredCalls") == 57
    only_2006 = set(V2.calls.values()) - set(V3.calls.values())
    assert {"Init", "INVD", "Pause", "GetPxE", "FlushDeferredCalls", "INB", "OUTB"} <= only_2006
    assert {"SetLazyMode", "UpdatePxE", "MachineToPhysical"} <= \
        set(V3.calls.values()) - set(V2.calls.values())
    # every fact of a profile names its source
    for prof in PROFILES.values():
        assert {"scan", "checksum", "api", "licenses", "pci_header", "calls"} <= \
            set(prof.sources)
