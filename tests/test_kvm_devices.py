"""The KVM guest platform's devices and kvmclock arithmetic, without a guest:
the 8250 UART as Linux's driver probes and drives it, the I/O APIC as Linux
programs it, the ACPI tables Linux reads, and the pvclock numbers."""

import shutil
import struct
import subprocess

import pytest

from pvmon.backends.kvm.pvclock import (
    pack_time_info,
    scale_delta,
    time_scale,
    tsc_khz,
    unpack_time_info,
)
from pvmon.platforms.hvm.ioapic import IOAPIC_BASE, IoApic
from pvmon.platforms.hvm.pc_acpi import build_pc_acpi_tables, eisa_id
from pvmon.platforms.hvm.uart8250 import FIFO_BYTES, Uart8250


def _uart():
    out, irqs = bytearray(), []
    u = Uart8250(out.extend, irqs.append)
    return u, out, irqs


# ------------------------------------------------------------------- UART
def test_uart_passes_linux_autoconfig_probe():
    """IER reads back 0 and 0x0F; loopback with OUT2|RTS gives MSR 0x90;
    FIFO enable makes IIR bits 7:6 read 11 (a 16550A)."""
    u, _, _ = _uart()
    u.write(1, 0)
    assert u.read(1) & 0x0F == 0
    u.write(1, 0x0F)
    assert u.read(1) & 0x0F == 0x0F
    u.write(1, 0)
    u.write(4, 0x10 | 0x0A)                # MCR = LOOP | OUT2 | RTS
    assert u.read(6) & 0xF0 == 0x90
    u.write(4, 0)
    u.write(2, 0x01)                       # FCR: enable FIFO
    assert u.read(2) >> 6 == 3
    u.write(7, 0x5A)
    assert u.read(7) == 0x5A


def test_uart_loopback_returns_written_bytes_and_sends_nothing():
    u, out, _ = _uart()
    u.write(4, 0x10)
    u.write(0, ord("x"))
    assert u.read(5) & 0x01
    assert u.read(0) == ord("x")
    assert out == b""


def test_uart_output_is_immediate_and_lsr_always_ready():
    u, out, _ = _uart()
    for ch in b"hi\n":
        assert u.read(5) & 0x60 == 0x60    # THRE | TEMT
        u.write(0, ch)
    assert out == b"hi\n"


def test_uart_dlab_switches_to_divisor_latch():
    u, out, _ = _uart()
    u.write(3, 0x80)
    u.write(0, 0x0C)
    u.write(1, 0x00)
    assert (u.read(0), u.read(1)) == (0x0C, 0)
    u.write(3, 0x03)
    assert out == b""


def test_uart_thre_interrupt_follows_the_16550a():
    """Enabling THRI with THR empty raises the line; reading IIR (THRI)
    clears it; a THR write raises it again."""
    u, _, irqs = _uart()
    u.write(1, 0x02)
    assert u.irq_line and irqs == [True]
    assert u.read(2) & 0x0F == 0x02
    assert not u.irq_line
    assert u.read(2) & 0x01                # no interrupt now
    u.write(0, ord("a"))
    assert u.irq_line
    u.write(1, 0)
    assert not u.irq_line


def test_uart_receive_raises_rx_interrupt_until_drained():
    u, _, _ = _uart()
    u.write(1, 0x01)
    assert u.receive(b"ls\n") == 3
    assert u.irq_line and u.read(2) & 0x0F == 0x04
    got = bytes(u.read(0) for _ in range(3))
    assert got == b"ls\n" and not u.irq_line and u.input_consumed()
    assert not u.read(5) & 0x01


def test_uart_fifo_takes_only_what_fits():
    u, _, _ = _uart()
    assert u.receive(b"a" * 40) == FIFO_BYTES
    assert u.receive(b"b") == 0
    u.read(0)
    assert u.receive(b"bc") == 1


def test_uart_never_raises_on_any_access():
    u, _, _ = _uart()
    for off in range(-2, 12):
        for v in (0, 0xFF, 0x1234):
            u.write(off, v)
            u.read(off)


# ------------------------------------------------------------------- I/O APIC
def test_ioapic_identifies_as_kvm_does():
    got = []
    io = IoApic(lambda v, lvl: got.append((v, lvl)))
    io.write(0, 4, 1)
    assert io.read(0x10, 4) == 0x00170011       # 24 entries, version 0x11
    io.write(0, 4, 0x10 + 2 * 4)
    assert io.read(0x10, 4) & (1 << 16)         # masked at reset


def test_ioapic_edge_pin_delivers_on_rising_edge_only_when_unmasked():
    got = []
    io = IoApic(lambda v, lvl: got.append((v, lvl)))
    io.set_irq(4, True)
    io.set_irq(4, False)
    assert got == []
    io.write(0, 4, 0x18)                       # pin 4 low dword
    io.write(0x10, 4, 0x21)                    # vector 0x21, edge, unmasked
    io.set_irq(4, True)
    io.set_irq(4, True)                        # no new edge
    io.set_irq(4, False)
    io.set_irq(4, True)
    assert got == [(0x21, False), (0x21, False)]


def test_ioapic_level_pin_waits_for_eoi():
    got = []
    io = IoApic(lambda v, lvl: got.append((v, lvl)))
    io.write(0, 4, 0x10 + 2 * 9)
    io.write(0x10, 4, 0x31 | (1 << 15))
    io.set_irq(9, True)
    io.set_irq(9, True)
    assert got == [(0x31, True)]
    assert io.read(0x10, 4) & (1 << 14)        # remote IRR
    io.eoi(0x31)                               # line still high: delivered again
    assert got == [(0x31, True)] * 2


# ------------------------------------------------------------------- ACPI
def _table(blob, base, pa):
    off = pa - base
    length = struct.unpack_from("<I", blob, off + 4)[0]
    return blob[off:off + length]


def test_pc_acpi_tables_checksum_and_describe_ioapic_and_com1():
    t = build_pc_acpi_tables(0xE0000)
    for name, pa in t.tables.items():
        if name == "RSD PTR ":
            continue
        assert sum(_table(t.blob, t.base, pa)) & 0xFF == 0, name
    madt = _table(t.blob, t.base, t.tables["APIC"])
    assert madt[44:46] == bytes([0, 8]) and madt[52:54] == bytes([1, 12])
    assert struct.unpack_from("<I", madt, 56)[0] == IOAPIC_BASE
    dsdt = _table(t.blob, t.base, t.tables["DSDT"])
    assert b"COM1" in dsdt and struct.pack("<I", eisa_id("PNP0501")) in dsdt
    fadt = _table(t.blob, t.base, t.tables["FACP"])
    assert struct.unpack_from("<I", fadt, 40)[0] == t.tables["DSDT"]


@pytest.mark.skipif(not shutil.which("iasl"), reason="acpica-tools (iasl) not installed")
def test_pc_dsdt_disassembles_to_a_pnp0501_with_io_and_irq_4(tmp_path):
    t = build_pc_acpi_tables(0xE0000)
    (tmp_path / "dsdt.dat").write_bytes(_table(t.blob, t.base, t.tables["DSDT"]))
    subprocess.run(["iasl", "-d", "dsdt.dat"], cwd=tmp_path, capture_output=True, check=True)
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert 'EisaId ("PNP0501")' in dsl
    assert "0x03F8" in dsl and "0x00000004" in dsl and "Edge, ActiveHigh" in dsl


# ------------------------------------------------------------------- kvmclock
@pytest.mark.parametrize("hz", [1_000_000_000, 2_596_000_000, 100_000_000, 3_999_999_000])
def test_kvmclock_scale_gives_the_guest_back_its_tsc_rate(hz):
    """Linux's pvclock_tsc_khz of KVM's kvm_get_time_scale result is the rate."""
    mul, shift = time_scale(hz)
    assert 0 < mul < 1 << 32 and -32 < shift < 32
    assert abs(tsc_khz(mul, shift) - hz // 1000) <= 1


def test_kvmclock_at_one_ghz_is_identity():
    mul, shift = time_scale(1_000_000_000)
    assert (mul, shift) == (1 << 31, 1)
    for delta in (0, 1, 999, 10**9, 123456789012):
        assert scale_delta(delta, mul, shift) == delta


def test_kvmclock_record_round_trips():
    rec = pack_time_info(4, 1000, 2000, 1 << 31, 1, 1)
    assert len(rec) == 32
    assert unpack_time_info(rec) == {"version": 4, "tsc_timestamp": 1000, "system_time": 2000,
                                     "mul": 1 << 31, "shift": 1, "flags": 1}
