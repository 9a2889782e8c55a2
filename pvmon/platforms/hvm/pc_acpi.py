"""ACPI tables for pvmon's minimal PC (the KVM guest platform).

The tables of :mod:`pvmon.platforms.hvm.acpi` (RSDP, XSDT, RSDT, a
HW_REDUCED_ACPI FADT, MADT), changed in the two places a KVM guest with an
8250 UART needs, as Firecracker's ACPI tables do
(firecracker ``src/vmm/src/acpi/``, v1.16):

* the MADT also describes an I/O APIC (type 1, 12 bytes: id, address
  0xFEC00000, GSI base 0; ACPI 6.x 5.2.12.3). A HW-reduced FADT makes Linux
  use the NULL legacy PIC (``acpi_generic_reduced_hw_init``), so ISA IRQs
  have no interrupt controller unless an I/O APIC is present; with one, the
  interrupt mode is APIC_SYMMETRIC_IO;
* the DSDT declares COM1 as ``\\_SB.COM1`` (``_HID`` PNP0501, ``_CRS`` with
  I/O 0x3F8-0x3FF and an edge-triggered, active-high interrupt 4). Without a
  legacy PIC the ISA IRQ numbers 0-15 are not preallocated, so the 8250
  driver's built-in port at IRQ 4 could not request its interrupt; through
  PNP (``8250_pnp``, CONFIG_PNPACPI) the port gets GSI 4 from the I/O APIC.

The AML is encoded here byte by byte (ACPI 6.x section 20: DefScope 0x10,
DefDevice 0x5B 0x82, DefName 0x08, DWordConst 0x0C, DefBuffer 0x11, PkgLength;
section 6.4: the I/O port descriptor 0x47, the extended interrupt
descriptor 0x89, the end tag 0x79).
"""

from __future__ import annotations

import struct

from pvmon.platforms.hvm import acpi as base_acpi
from pvmon.platforms.hvm.acpi import LAPIC_BASE, AcpiTables

MADT_TYPE_IOAPIC = 1
MADT_IOAPIC_ENTRY_LEN = 12


def _pkg(body: bytes) -> bytes:
    """``PkgLength`` + ``body`` (ACPI 20.2.4): one byte below 64, else two or three."""
    n = len(body) + 1
    if n < 0x40:
        return bytes([n]) + body
    n += 1
    if n < 0x1000:
        return bytes([0x40 | (n & 0xF), n >> 4]) + body
    n += 1
    return bytes([0x80 | (n & 0xF), (n >> 4) & 0xFF, n >> 12]) + body


def eisa_id(text: str) -> int:
    """The compressed EISA id of ``"PNP0501"`` as AML's EisaId() makes it."""
    c = [ord(ch) - 0x40 for ch in text[:3]]
    v = (c[0] << 26) | (c[1] << 21) | (c[2] << 16) | int(text[3:], 16)
    return int.from_bytes(v.to_bytes(4, "big"), "little")


def serial_device_aml(name: bytes = b"COM1", port: int = 0x3F8, irq: int = 4,
                      uid: int = 0) -> bytes:
    """``Device (name) { _HID PNP0501, _UID, _CRS {IO, Interrupt} }``."""
    crs = (struct.pack("<BBHHBB", 0x47, 0x01, port, port, 0x01, 0x08)          # IO(Decode16)
           + struct.pack("<BHBBI", 0x89, 6, 0x03, 1, irq)     # Interrupt(consumer, edge, high)
           + b"\x79\x00")                                      # end tag
    buf = b"\x11" + _pkg(b"\x0a" + bytes([len(crs)]) + crs)
    body = (name + b"\x08_HID\x0c" + struct.pack("<I", eisa_id("PNP0501"))
            + b"\x08_UID\x0a" + bytes([uid]) + b"\x08_CRS" + buf)
    return b"\x5b\x82" + _pkg(body)


def dsdt_aml() -> bytes:
    """``Scope (\\_SB) { COM1 }``."""
    return b"\x10" + _pkg(b"\\_SB_" + serial_device_aml())


def build_pc_acpi_tables(base: int, *, ioapic_addr: int = 0xFEC00000, ioapic_id: int = 0,
                         oem_table_id: bytes = b"PVMONKVM") -> AcpiTables:
    """The tables at guest-physical ``base`` (4 KiB aligned, below 4 GiB),
    one vCPU (APIC id 0). Same layout as
    :func:`pvmon.platforms.hvm.acpi.build_acpi_tables` (RSDP at ``base``),
    with the MADT's I/O APIC entry and the DSDT's COM1. Raises PvmonError
    for a bad ``base``."""
    plain = base_acpi.build_acpi_tables(base, nr_cpus=1, oem_table_id=oem_table_id)
    oem = (b"PVMON ", oem_table_id)
    dsdt = base_acpi._table(b"DSDT", 5, dsdt_aml(), oem)
    madt_body = (struct.pack("<II", LAPIC_BASE, base_acpi.MADT_PCAT_COMPAT)
                 + struct.pack("<BBBBI", base_acpi.MADT_TYPE_LOCAL_APIC,
                               base_acpi.MADT_LAPIC_ENTRY_LEN, 0, 0, base_acpi.MADT_LAPIC_ENABLED)
                 + struct.pack("<BBBBII", MADT_TYPE_IOAPIC, MADT_IOAPIC_ENTRY_LEN, ioapic_id, 0,
                               ioapic_addr, 0))
    madt = base_acpi._table(b"APIC", 2, madt_body, oem)
    # re-lay the area: the plain layout's RSDP/XSDT/RSDT/FADT, then DSDT and MADT
    addr = dict(plain.tables)
    cursor = max(addr["FACP"] + base_acpi.FADT_LEN, addr["RSDT"] + 44)
    addr["DSDT"] = cursor = (cursor + 15) & ~15
    addr["APIC"] = (cursor + len(dsdt) + 15) & ~15
    end = addr["APIC"] + len(madt)
    blob = bytearray(end - base)
    blob[:len(plain.blob)] = plain.blob
    blob[addr["DSDT"] - base:addr["DSDT"] - base + len(dsdt)] = dsdt
    blob[addr["APIC"] - base:addr["APIC"] - base + len(madt)] = madt
    # point the FADT, XSDT and RSDT at the moved tables, then fix their checksums
    fadt = addr["FACP"] - base
    struct.pack_into("<I", blob, fadt + 40, addr["DSDT"])
    struct.pack_into("<Q", blob, fadt + 140, addr["DSDT"])
    _fix(blob, fadt, base_acpi.FADT_LEN)
    x = addr["XSDT"] - base
    struct.pack_into("<QQ", blob, x + 36, addr["FACP"], addr["APIC"])
    _fix(blob, x, 36 + 16)
    r = addr["RSDT"] - base
    struct.pack_into("<II", blob, r + 36, addr["FACP"], addr["APIC"])
    _fix(blob, r, 36 + 8)
    if len(blob) > base_acpi.ACPI_AREA_BYTES:
        raise AssertionError("KVM ACPI tables overflow their page")
    return AcpiTables(base=base, blob=bytes(blob), rsdp_paddr=plain.rsdp_paddr, tables=addr)


def _fix(blob: bytearray, offset: int, length: int) -> None:
    """Set the header checksum (byte 9) of the table at ``offset``."""
    blob[offset + 9] = 0
    blob[offset + 9] = (-sum(blob[offset:offset + length])) & 0xFF


__all__ = ["build_pc_acpi_tables", "dsdt_aml", "eisa_id", "serial_device_aml"]
