"""The PVH ACPI tables (pvmon/platforms/hvm/acpi.py), read back the way an OS
does: from the RSDP through the XSDT to the FADT, DSDT and MADT."""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass

import pytest

from pvmon.errors import PvmonError
from pvmon.platforms.hvm.acpi import (
    ACPI_AREA_BYTES,
    FADT_HW_REDUCED_ACPI,
    LAPIC_BASE,
    MAX_CPUS,
    AcpiTables,
    build_acpi_tables,
)

BASE = 0xFC001000   # where libxl puts a PVH domU's tables


# -- a tiny reader, independent of the builder --------------------------------------------

@dataclass
class Table:
    paddr: int
    signature: bytes
    length: int
    revision: int
    data: bytes


class GuestMemory:
    """The blob placed at its base, read by guest-physical address."""

    def __init__(self, tables: AcpiTables) -> None:
        self.base = tables.base
        self.mem = tables.blob

    def read(self, paddr: int, size: int) -> bytes:
        offset = paddr - self.base
        assert 0 <= offset and offset + size <= len(self.mem), hex(paddr)
        return self.mem[offset:offset + size]

    def table(self, paddr: int) -> Table:
        signature, length, revision = struct.unpack("<4sIB", self.read(paddr, 9))
        return Table(paddr, signature, length, revision, self.read(paddr, length))


def checksum_ok(data: bytes) -> bool:
    return sum(data) % 256 == 0


def walk(tables: AcpiTables) -> tuple[bytes, dict[bytes, Table]]:
    """RSDP, then every table the XSDT names, plus the FADT's X_DSDT."""
    mem = GuestMemory(tables)
    rsdp = mem.read(tables.rsdp_paddr, 36)
    (xsdt_addr,) = struct.unpack_from("<Q", rsdp, 24)
    xsdt = mem.table(xsdt_addr)
    found = {b"XSDT": xsdt}
    for i in range((xsdt.length - 36) // 8):
        (ptr,) = struct.unpack_from("<Q", xsdt.data, 36 + 8 * i)
        table = mem.table(ptr)
        found[table.signature] = table
    (x_dsdt,) = struct.unpack_from("<Q", found[b"FACP"].data, 140)
    found[b"DSDT"] = mem.table(x_dsdt)
    return rsdp, found


def madt_entries(madt: Table) -> list[tuple[int, bytes]]:
    """(type, entry bytes) of every MADT interrupt controller structure."""
    entries, offset = [], 44
    while offset < madt.length:
        kind, length = madt.data[offset], madt.data[offset + 1]
        assert length >= 2, "a zero-length MADT entry would loop forever"
        entries.append((kind, madt.data[offset:offset + length]))
        offset += length
    assert offset == madt.length
    return entries


# -- tests ------------------------------------------------------------------------------------

def test_the_rsdp_is_acpi_2_with_both_checksums_right() -> None:
    tables = build_acpi_tables(BASE)
    rsdp, _ = walk(tables)
    signature, _, oem_id, revision, rsdt, length, xsdt = struct.unpack_from("<8sB6sBIIQ", rsdp)
    assert signature == b"RSD PTR "
    assert (oem_id, revision, length) == (b"PVMON ", 2, 36)
    assert checksum_ok(rsdp[:20]) and checksum_ok(rsdp)
    assert rsdt and xsdt
    assert tables.rsdp_paddr == BASE


def test_every_table_has_a_correct_checksum_and_fits_the_reserved_area() -> None:
    for nr_cpus in (1, 2, 64, MAX_CPUS):
        for hw_reduced in (True, False):
            tables = build_acpi_tables(BASE, nr_cpus=nr_cpus, hw_reduced=hw_reduced)
            assert len(tables.blob) <= ACPI_AREA_BYTES
            _, found = walk(tables)
            assert set(found) == {b"XSDT", b"FACP", b"APIC", b"DSDT"}
            for table in found.values():
                assert checksum_ok(table.data), table.signature
            for paddr, data in tables.chunks():
                assert paddr % 16 == 0
                assert data[:4] == b"FACS" or checksum_ok(data)


def test_the_xsdt_and_rsdt_point_at_the_fadt_and_madt() -> None:
    tables = build_acpi_tables(BASE, nr_cpus=2)
    mem = GuestMemory(tables)
    rsdp, found = walk(tables)
    assert list(found)[:3] == [b"XSDT", b"FACP", b"APIC"]
    rsdt = mem.table(struct.unpack_from("<I", rsdp, 16)[0])
    assert rsdt.signature == b"RSDT" and checksum_ok(rsdt.data)
    assert list(struct.unpack_from("<2I", rsdt.data, 36)) == [tables.tables["FACP"],
                                                              tables.tables["APIC"]]
    assert found[b"XSDT"].revision == 1 and rsdt.revision == 1


def test_the_fadt_is_revision_5_hardware_reduced_with_the_dsdt_behind_x_dsdt() -> None:
    tables = build_acpi_tables(BASE)
    _, found = walk(tables)
    fadt = found[b"FACP"]
    assert (fadt.revision, fadt.length) == (5, 268)
    firmware_ctrl, dsdt32 = struct.unpack_from("<II", fadt.data, 36)
    (sci_int,) = struct.unpack_from("<H", fadt.data, 46)
    pm1a_evt, _, pm1a_cnt, _, _, pm_tmr, gpe0, gpe1 = struct.unpack_from("<8I", fadt.data, 56)
    (iapc_boot_arch,) = struct.unpack_from("<H", fadt.data, 109)
    (flags,) = struct.unpack_from("<I", fadt.data, 112)
    x_firmware_ctrl, x_dsdt = struct.unpack_from("<QQ", fadt.data, 132)
    assert flags & FADT_HW_REDUCED_ACPI
    assert (sci_int, pm1a_evt, pm1a_cnt, pm_tmr, gpe0, gpe1) == (0, 0, 0, 0, 0, 0)
    assert fadt.data[148:268] == bytes(120)          # no X_ PM, GPE or sleep registers
    assert firmware_ctrl == x_firmware_ctrl == 0     # no FACS in hardware-reduced mode
    assert x_dsdt == dsdt32 == tables.tables["DSDT"]
    assert iapc_boot_arch == 0x24                    # NO_VGA | NO_CMOS_RTC, as libxl for PVH
    dsdt = found[b"DSDT"]
    assert (dsdt.length, dsdt.revision) == (36, 5)


def test_the_libacpi_fadt_describes_xens_pm_blocks_and_a_facs_without_hw_reduced() -> None:
    tables = build_acpi_tables(BASE, hw_reduced=False)
    mem = GuestMemory(tables)
    _, found = walk(tables)
    fadt = found[b"FACP"]
    (flags,) = struct.unpack_from("<I", fadt.data, 112)
    assert flags == 0x8175                           # libacpi static flags + both buttons
    assert struct.unpack_from("<H", fadt.data, 46) == (9,)
    assert struct.unpack_from("<I", fadt.data, 56) == (0xB000,)
    assert struct.unpack_from("<I", fadt.data, 76) == (0,)   # no PM timer for PVH
    (facs_addr,) = struct.unpack_from("<Q", fadt.data, 132)
    assert facs_addr % 64 == 0
    facs = mem.read(facs_addr, 64)
    assert facs[:4] == b"FACS" and struct.unpack_from("<I", facs, 4) == (64,)


def test_the_madt_has_one_local_apic_per_vcpu_with_xens_even_ids_and_no_io_apic() -> None:
    tables = build_acpi_tables(BASE, nr_cpus=4)
    _, found = walk(tables)
    madt = found[b"APIC"]
    assert madt.revision == 2
    lapic_addr, flags = struct.unpack_from("<II", madt.data, 36)
    assert lapic_addr == LAPIC_BASE == 0xFEE00000
    assert flags == 1                                # PCAT_COMPAT, as libacpi
    entries = madt_entries(madt)
    assert [kind for kind, _ in entries] == [0, 0, 0, 0]   # type 1 (IO-APIC) absent
    parsed = [struct.unpack("<BBBBI", entry) for _, entry in entries]
    assert parsed == [(0, 8, i, 2 * i, 1) for i in range(4)]


def test_bad_areas_and_vcpu_counts_are_refused_with_a_readable_error() -> None:
    with pytest.raises(PvmonError, match="4 KiB aligned"):
        build_acpi_tables(BASE + 0x10)
    with pytest.raises(PvmonError, match="below 4 GiB"):
        build_acpi_tables(1 << 32)
    with pytest.raises(PvmonError, match="out of range"):
        build_acpi_tables(BASE, nr_cpus=0)
    with pytest.raises(PvmonError, match="out of range"):
        build_acpi_tables(BASE, nr_cpus=MAX_CPUS + 1)
    with pytest.raises(PvmonError, match="OEM ID"):
        build_acpi_tables(BASE, oem_id=b"TOOLONG")


def test_the_tables_are_the_same_bytes_every_time() -> None:
    assert build_acpi_tables(BASE, nr_cpus=3) == build_acpi_tables(BASE, nr_cpus=3)


@pytest.mark.skipif(shutil.which("iasl") is None, reason="iasl (acpica-tools) not installed")
@pytest.mark.parametrize("hw_reduced", [True, False])
def test_iasl_disassembles_every_table_without_errors(tmp_path, hw_reduced: bool) -> None:
    tables = build_acpi_tables(BASE, nr_cpus=2, hw_reduced=hw_reduced)
    names = {v: k for k, v in tables.tables.items()}
    for paddr, data in tables.chunks():
        name = names[paddr]
        if name == "RSD PTR ":
            continue      # iasl 20200925 only disassembles tables with the standard header
        path = tmp_path / f"{name}.dat"
        path.write_bytes(data)
        run = subprocess.run(["iasl", "-d", str(path)], check=False, capture_output=True,
                             text=True, cwd=tmp_path, timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr
        dsl = (tmp_path / f"{name}.dsl").read_text(errors="replace")
        assert "Error" not in dsl and "Invalid" not in dsl, dsl
        if name == "FACP" and hw_reduced:
            assert "Hardware Reduced (V5) : 1" in dsl
        if name == "APIC":
            assert dsl.count("Subtable Type : 00 [Processor Local APIC]") == 2


@pytest.mark.skipif(shutil.which("acpiexec") is None, reason="acpiexec (acpica-tools) not installed")
def test_acpica_loads_the_hardware_reduced_tables_and_their_empty_dsdt_cleanly(tmp_path) -> None:
    tables = build_acpi_tables(BASE, nr_cpus=2)
    files = []
    for name in ("FACP", "DSDT", "APIC"):
        data = dict(tables.chunks())[tables.tables[name]]
        (tmp_path / f"{name}.dat").write_bytes(data)
        files.append(f"{name}.dat")
    run = subprocess.run(["acpiexec", "-b", "quit", *files], check=False, capture_output=True,
                         text=True, cwd=tmp_path, timeout=30)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "1 ACPI AML tables successfully acquired and loaded" in out, out
    assert "Unexpected" not in out and "Error" not in out, out
