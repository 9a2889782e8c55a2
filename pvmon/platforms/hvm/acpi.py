"""ACPI tables for a Xen PVH domU: RSDP, XSDT, RSDT, FADT, DSDT, MADT.

A PVH guest finds its firmware tables through ``hvm_start_info.rsdp_paddr``
(Linux ``pvh_get_root_pointer``). Linux needs them to choose the
APIC_VIRTUAL_WIRE interrupt mode, the only mode in which it sets up its
per-CPU timer (``xen_time_init``); see docs/hvm-platform.md and the facts
sheet (shared/research/hvm-facts.md) sections 3.1 and 5.6.

Sources (layouts and values taken as facts; the code is ours):

* xen.git ``tools/libs/light/libxl_x86_acpi.c@stable-4.17``: what libxl builds
  for a PVH domU: ``table_flags`` 0 (no IO-APIC, no PM timer, no buttons, no
  VGA, no 8042, no CMOS RTC), ACPI revision 5, local APIC id ``2 * vcpu``,
  LAPIC base 0xFEE00000.
* xen.git ``tools/libacpi/build.c``, ``static_tables.c``, ``acpi2_0.h``
  ``@stable-4.17``: the table layouts, the FADT's static fields and flags,
  the revisions (RSDP 2, XSDT/RSDT 1, MADT 2), the MADT (flags PCAT_COMPAT,
  one Processor Local APIC entry per vCPU, no IO-APIC without
  ``ACPI_HAS_IOAPIC``), and ``tools/libacpi/Makefile`` (DSDT revision 5).
* ACPI 6.x specification: section 5.2.5.3 (RSDP), 5.2.7/5.2.8 (RSDT/XSDT),
  5.2.9 (FADT, flag HW_REDUCED_ACPI is bit 20), 5.2.12 (MADT).

Two deliberate differences from libacpi, both chosen for pvmon:

* ``hw_reduced=True`` (the default) sets the FADT's HW_REDUCED_ACPI flag and
  leaves out the fixed hardware (PM1a event/control blocks, GPE0, SCI 9 and
  the FACS) that libacpi still describes for PVH although Xen emulates none
  of it there. Linux then skips the PIT and the legacy PIC
  (``acpi_generic_reduced_hw_init``) and never touches the PM ports.
  ``hw_reduced=False`` gives libacpi's FADT as a PVH domU on Xen 4.17 sees it.
* The DSDT is a bare header (no AML). libxl's ``dsdt_pvh`` carries processor
  objects and the ``\\_SB`` info fields of HVM guests; Linux enumerates the
  CPUs of a PVH guest from the MADT and needs none of them.

All multi-byte fields are little endian. Every table is 16-byte aligned
(the FACS 64-byte aligned), as libxl's allocator does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pvmon.errors import PvmonError

# -- constants (sources in the module docstring) ------------------------------------------

ACPI_AREA_BYTES = 0x1000
"""Bytes the caller reserves at ``base`` (one 4 KiB page): enough for
:data:`MAX_CPUS` vCPUs in either FADT mode. Mark it E820 type 3 (ACPI
reclaimable), as libxl does for its ACPI modules."""

MAX_CPUS = 128
"""Most vCPUs the MADT describes: APIC ids are ``2 * vcpu`` in one byte, and
0xFF is the broadcast id."""

LAPIC_BASE = 0xFEE00000
"""Local APIC MMIO base (libxl ``LAPIC_BASE_ADDRESS``; SDM vol. 3 10.4.1)."""

HEADER_LEN = 36
RSDP_LEN = 36
FADT_REVISION = 5
FADT_LEN = 268           # struct acpi_fadt with sleep_control/status (revision 5)
FACS_LEN = 64
MADT_LAPIC_ENTRY_LEN = 8

# FADT flags (libacpi acpi2_0.h; HW_REDUCED_ACPI from ACPI 5.0 table 5-35)
FADT_WBINVD = 1 << 0
FADT_PROC_C1 = 1 << 2
FADT_PWR_BUTTON = 1 << 4
FADT_SLP_BUTTON = 1 << 5
FADT_FIX_RTC = 1 << 6
FADT_TMR_VAL_EXT = 1 << 8
FADT_USE_PLATFORM_CLOCK = 1 << 15
FADT_HW_REDUCED_ACPI = 1 << 20
FADT_FLAGS_LIBACPI_PVH = (FADT_WBINVD | FADT_PROC_C1 | FADT_FIX_RTC | FADT_TMR_VAL_EXT
                          | FADT_USE_PLATFORM_CLOCK | FADT_PWR_BUTTON | FADT_SLP_BUTTON)
"""0x8175: libacpi's static flags, plus both buttons because PVH has no
``ACPI_HAS_BUTTONS`` (build.c)."""

# IA-PC boot architecture flags (acpi2_0.h). Linux reads NO_CMOS_RTC and NO_VGA
# into x86_platform.legacy, and xen_hvm_guest_late_init takes those two as the
# sign of a PVH domain.
IAPC_NO_VGA = 1 << 2
IAPC_NO_CMOS_RTC = 1 << 5
IAPC_BOOT_ARCH_PVH = IAPC_NO_VGA | IAPC_NO_CMOS_RTC

MADT_PCAT_COMPAT = 1 << 0
MADT_TYPE_LOCAL_APIC = 0
MADT_LAPIC_ENABLED = 1 << 0

# libacpi's fixed hardware for hw_reduced=False (xen.git
# xen/include/public/hvm/ioreq.h, ACPI_*_ADDRESS_V1; static_tables.c)
_PM1A_EVT_BLK = 0xB000
_PM1A_CNT_BLK = 0xB004
_GPE0_BLK = 0xAFE0
_SCI_INT = 9
_RESET_PORT = 0xCF9
_RESET_VALUE = 6
_GAS_SYSTEM_IO = 1

_CREATOR_ID = b"PVMN"
_CREATOR_REVISION = 1


def xen_apic_id(vcpu: int) -> int:
    """The local APIC id Xen gives vCPU ``vcpu``: ``2 * vcpu`` (libxl
    ``acpi_lapic_id``; xen.git ``xen/arch/x86/hvm/vlapic.c`` sets
    ``APIC_ID`` to ``vcpu_id * 2``)."""
    return 2 * vcpu


@dataclass(frozen=True)
class AcpiTables:
    """ACPI tables laid out for one guest-physical area.

    ``blob`` is copied to guest-physical ``base``; it is at most
    :data:`ACPI_AREA_BYTES` long. ``rsdp_paddr`` goes into
    ``hvm_start_info.rsdp_paddr``. ``tables`` maps each table's signature
    (``"RSD PTR "``, ``"XSDT"``, ``"RSDT"``, ``"FACP"``, ``"DSDT"``, ``"APIC"``
    and, with ``hw_reduced=False``, ``"FACS"``) to its guest-physical address.
    """

    base: int
    blob: bytes
    rsdp_paddr: int
    tables: dict[str, int] = field(default_factory=dict)

    def chunks(self) -> list[tuple[int, bytes]]:
        """The tables as ``[(paddr, bytes)]``, one per table (its own length,
        without alignment padding), in address order."""
        out = []
        for name, paddr in sorted(self.tables.items(), key=lambda item: item[1]):
            offset = paddr - self.base
            length_at = 20 if name == "RSD PTR " else 4
            (length,) = struct.unpack_from("<I", self.blob, offset + length_at)
            out.append((paddr, self.blob[offset:offset + length]))
        return out


# -- table builders -------------------------------------------------------------------------

def _checksum_fix(buf: bytearray, offset: int, length: int) -> None:
    """Set ``buf[offset]`` so that ``buf[:length]`` sums to 0 mod 256."""
    buf[offset] = 0
    buf[offset] = (-sum(buf[:length])) & 0xFF


def _padded(value: bytes, width: int, what: str) -> bytes:
    if len(value) > width or not all(0x20 <= b < 0x7F for b in value):
        raise PvmonError(f"ACPI {what} must be at most {width} printable ASCII bytes: {value!r}")
    return value.ljust(width, b" ")


def _table(signature: bytes, revision: int, body: bytes, oem: tuple[bytes, bytes]) -> bytes:
    """A system description table: the 36-byte header (ACPI 5.2.6) plus
    ``body``, with its checksum set."""
    length = HEADER_LEN + len(body)
    header = struct.pack("<4sIBB6s8sI4sI", signature, length, revision, 0, oem[0], oem[1],
                         1, _CREATOR_ID, _CREATOR_REVISION)
    buf = bytearray(header + body)
    _checksum_fix(buf, 9, length)
    return bytes(buf)


def _gas(space: int, bit_width: int, address: int) -> bytes:
    """A 12-byte Generic Address Structure (ACPI 5.2.3.2)."""
    return struct.pack("<BBBBQ", space, bit_width, 0, 0, address)


def _fadt_body(dsdt: int, facs: int, hw_reduced: bool) -> bytes:
    """FADT revision 5 after the header (offsets as in libacpi ``struct
    acpi_fadt``; the table is :data:`FADT_LEN` bytes)."""
    body = bytearray(FADT_LEN - HEADER_LEN)

    def put(offset: int, fmt: str, *values: int | bytes) -> None:
        struct.pack_into("<" + fmt, body, offset - HEADER_LEN, *values)

    put(36, "I", facs)                    # FIRMWARE_CTRL
    put(40, "I", dsdt)                    # DSDT
    put(96, "HH", 0x0FFF, 0x0FFF)         # P_LVL2_LAT, P_LVL3_LAT: no C2/C3
    put(109, "H", IAPC_BOOT_ARCH_PVH)     # IAPC_BOOT_ARCH
    put(112, "I", FADT_FLAGS_LIBACPI_PVH | (FADT_HW_REDUCED_ACPI if hw_reduced else 0))
    # RESET_REG as libacpi; unused, since FLAGS has no RESET_REG_SUP.
    put(116, "12s", _gas(_GAS_SYSTEM_IO, 8, _RESET_PORT))
    put(128, "B", _RESET_VALUE)
    put(132, "Q", facs)                   # X_FIRMWARE_CTRL
    put(140, "Q", dsdt)                   # X_DSDT
    if not hw_reduced:
        # libacpi's fixed hardware for PVH: PM1a event/control, GPE0, SCI 9.
        # PM_TMR_BLK stays 0: PVH has no ACPI_HAS_PMTIMER.
        put(46, "H", _SCI_INT)
        put(56, "I", _PM1A_EVT_BLK)
        put(64, "I", _PM1A_CNT_BLK)
        put(80, "I", _GPE0_BLK)
        put(88, "BB", 4, 2)               # PM1_EVT_LEN, PM1_CNT_LEN
        put(92, "B", 4)                   # GPE0_BLK_LEN
        put(148, "12s", _gas(_GAS_SYSTEM_IO, 32, _PM1A_EVT_BLK))   # X_PM1a_EVT_BLK
        put(172, "12s", _gas(_GAS_SYSTEM_IO, 16, _PM1A_CNT_BLK))   # X_PM1a_CNT_BLK
    return bytes(body)


def _madt_body(nr_cpus: int) -> bytes:
    """MADT after the header: LAPIC address, flags, then one Processor Local
    APIC entry (type 0, length 8) per vCPU: processor id ``i``, APIC id
    ``2 * i``, enabled. No IO-APIC, no interrupt source overrides."""
    body = struct.pack("<II", LAPIC_BASE, MADT_PCAT_COMPAT)
    for vcpu in range(nr_cpus):
        body += struct.pack("<BBBBI", MADT_TYPE_LOCAL_APIC, MADT_LAPIC_ENTRY_LEN, vcpu,
                            xen_apic_id(vcpu), MADT_LAPIC_ENABLED)
    return body


def _facs() -> bytes:
    """FACS (ACPI 5.2.10): signature, length 64, version 1; no checksum."""
    return struct.pack("<4sI", b"FACS", FACS_LEN) + bytes(24) + bytes([1]) + bytes(31)


def _rsdp(oem_id: bytes, rsdt: int, xsdt: int) -> bytes:
    """RSDP revision 2 (ACPI 5.2.5.3): checksum over the first 20 bytes,
    extended checksum over all 36."""
    buf = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, oem_id, 2, rsdt, RSDP_LEN,
                                xsdt, 0))
    _checksum_fix(buf, 8, 20)
    _checksum_fix(buf, 32, RSDP_LEN)
    return bytes(buf)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def build_acpi_tables(base: int, *, nr_cpus: int = 1, oem_id: bytes = b"PVMON ",
                      oem_table_id: bytes = b"PVMONPVH", hw_reduced: bool = True) -> AcpiTables:
    """Lay out a PVH domU's ACPI tables at guest-physical ``base``.

    Layout from ``base``, each 16-byte aligned: RSDP (so ``rsdp_paddr ==
    base``), XSDT [FADT, MADT], RSDT [FADT, MADT], FADT, DSDT, MADT and, with
    ``hw_reduced=False``, the FACS (64-byte aligned).

    :param base: guest-physical address of a 4 KiB aligned area of
        :data:`ACPI_AREA_BYTES` the caller reserves, below 4 GiB (the
        RSDT, the FADT's DSDT and the MADT's LAPIC address are 32-bit).
    :param nr_cpus: vCPUs, 1 to :data:`MAX_CPUS`; vCPU ``i`` gets APIC id ``2*i``.
    :param oem_id: OEM ID of every table, at most 6 printable ASCII bytes
        (padded with spaces).
    :param oem_table_id: OEM table ID, at most 8 printable ASCII bytes.
    :param hw_reduced: set HW_REDUCED_ACPI and describe no fixed hardware
        (default); False gives libacpi's Xen 4.17 PVH FADT (see module doc).
    :returns: the tables, every checksum correct.
    :raises PvmonError: ``base`` not 4 KiB aligned or the area not below
        4 GiB, ``nr_cpus`` out of range, or a bad OEM string.
    """
    if base % 0x1000 or base < 0 or base + ACPI_AREA_BYTES > 1 << 32:
        raise PvmonError(f"ACPI table area at {base:#x} must be 4 KiB aligned and below 4 GiB")
    if not 1 <= nr_cpus <= MAX_CPUS:
        raise PvmonError(f"ACPI MADT: {nr_cpus} vCPUs is out of range (1 to {MAX_CPUS})")
    oem = (_padded(oem_id, 6, "OEM ID"), _padded(oem_table_id, 8, "OEM table ID"))

    # Addresses first (every table's length is known up front), then contents.
    fixed_tables = 2                                          # FADT, MADT
    sizes = {"RSD PTR ": RSDP_LEN, "XSDT": HEADER_LEN + 8 * fixed_tables,
             "RSDT": HEADER_LEN + 4 * fixed_tables, "FACP": FADT_LEN, "DSDT": HEADER_LEN,
             "APIC": HEADER_LEN + 8 + MADT_LAPIC_ENTRY_LEN * nr_cpus}
    if not hw_reduced:
        sizes["FACS"] = FACS_LEN
    addr: dict[str, int] = {}
    cursor = base
    for name, size in sizes.items():
        cursor = _align(cursor, 64 if name == "FACS" else 16)
        addr[name] = cursor
        cursor += size
    assert cursor - base <= ACPI_AREA_BYTES, "MAX_CPUS and ACPI_AREA_BYTES disagree"

    facs = addr.get("FACS", 0)
    content = {
        "RSD PTR ": _rsdp(oem[0], addr["RSDT"], addr["XSDT"]),
        "XSDT": _table(b"XSDT", 1, struct.pack("<QQ", addr["FACP"], addr["APIC"]), oem),
        "RSDT": _table(b"RSDT", 1, struct.pack("<II", addr["FACP"], addr["APIC"]), oem),
        "FACP": _table(b"FACP", FADT_REVISION, _fadt_body(addr["DSDT"], facs, hw_reduced), oem),
        "DSDT": _table(b"DSDT", 5, b"", oem),
        "APIC": _table(b"APIC", 2, _madt_body(nr_cpus), oem),
    }
    if not hw_reduced:
        content["FACS"] = _facs()

    blob = bytearray(cursor - base)
    for name, data in content.items():
        assert len(data) == sizes[name], name
        offset = addr[name] - base
        blob[offset:offset + len(data)] = data
    return AcpiTables(base=base, blob=bytes(blob), rsdp_paddr=addr["RSD PTR "], tables=addr)
