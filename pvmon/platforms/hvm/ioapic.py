"""An I/O APIC (82093AA-style, version 0x11, 24 pins) at 0xFEC00000.

It routes the platform's ISA interrupt lines (here the UART's IRQ 4) to the
local APIC as Linux programs it. Registers (Intel 82093AA datasheet, section
3; KVM ``arch/x86/kvm/ioapic.c`` for the values a KVM guest sees):

* MMIO: IOREGSEL at +0x00 (index), IOWIN at +0x10 (the selected register);
* index 0x00 ID (bits 27:24), 0x01 version (0x00170011: 24 entries,
  version 0x11, KVM's ``IOAPIC_VERSION_ID``), 0x02 arbitration id,
  0x10 + 2n / 0x11 + 2n redirection entry n (low, high dwords);
* an entry: vector (7:0), delivery mode (10:8), destination mode (11),
  delivery status (12, read-only), polarity (13), remote IRR (14,
  read-only), trigger mode (15: 1 = level), mask (16), destination (63:56).
  Reset: every entry masked.

Delivery: an edge-triggered pin delivers its vector to the local APIC on the
rising edge of its line when unmasked; a level-triggered pin while its line
is high and remote IRR is clear, setting remote IRR until the local APIC's
EOI of that vector (:meth:`IoApic.eoi`). There is one vCPU, so every
destination reaches it. No access raises.
"""

from __future__ import annotations

from collections.abc import Callable

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
PINS = 24
VERSION = 0x11
IOREGSEL, IOWIN = 0x00, 0x10
RTE_MASKED = 1 << 16
RTE_LEVEL = 1 << 15
RTE_REMOTE_IRR = 1 << 14
_RTE_RO = RTE_REMOTE_IRR | (1 << 12)


class IoApic:
    """``deliver(vector, level)``: hand a vector to the local APIC
    (:meth:`pvmon.platforms.hvm.lapic.LocalApic.raise_vector`)."""

    def __init__(self, deliver: Callable[[int, bool], None], ioapic_id: int = 0) -> None:
        self.deliver = deliver
        self.id = ioapic_id & 0xF
        self.sel = 0
        self.rte = [RTE_MASKED] * PINS
        self.lines = [False] * PINS
        self.delivered = 0

    def read(self, offset: int, size: int) -> int:
        """An MMIO read at ``offset`` from the base."""
        if offset == IOREGSEL:
            return self.sel
        if offset == IOWIN:
            return self._read_reg(self.sel)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """An MMIO write at ``offset`` from the base."""
        if offset == IOREGSEL:
            self.sel = value & 0xFF
        elif offset == IOWIN:
            self._write_reg(self.sel, value & 0xFFFFFFFF)

    def _read_reg(self, index: int) -> int:
        if index == 0:
            return self.id << 24
        if index == 1:
            return ((PINS - 1) << 16) | VERSION
        if index == 2:
            return self.id << 24
        pin, high = divmod(index - 0x10, 2)
        if 0 <= pin < PINS:
            v = self.rte[pin]
            return (v >> 32) & 0xFFFFFFFF if high else v & 0xFFFFFFFF
        return 0

    def _write_reg(self, index: int, value: int) -> None:
        if index == 0:
            self.id = (value >> 24) & 0xF
            return
        pin, high = divmod(index - 0x10, 2)
        if not 0 <= pin < PINS:
            return
        old = self.rte[pin]
        if high:
            new = (old & 0xFFFFFFFF) | ((value & 0xFF000000) << 32)
        else:
            new = (old & (0xFFFFFFFF << 32)) | (old & _RTE_RO) | (value & 0x1FFFF & ~_RTE_RO)
            if not new & RTE_LEVEL:
                new &= ~RTE_REMOTE_IRR
        self.rte[pin] = new
        if self.lines[pin] and new & RTE_LEVEL:
            self._service(pin)

    def set_irq(self, pin: int, level: bool) -> None:
        """The interrupt line of ``pin`` goes to ``level``."""
        if not 0 <= pin < PINS:
            return
        old = self.lines[pin]
        self.lines[pin] = level
        rte = self.rte[pin]
        if rte & RTE_LEVEL:
            if level:
                self._service(pin)
        elif level and not old and not rte & RTE_MASKED:
            self.delivered += 1
            self.deliver(rte & 0xFF, False)

    def _service(self, pin: int) -> None:
        rte = self.rte[pin]
        if rte & (RTE_MASKED | RTE_REMOTE_IRR):
            return
        self.rte[pin] = rte | RTE_REMOTE_IRR
        self.delivered += 1
        self.deliver(rte & 0xFF, True)

    def eoi(self, vector: int) -> None:
        """The local APIC retired level-triggered ``vector``: clear remote IRR
        of the pins using it and deliver again where the line is still high."""
        for pin, rte in enumerate(self.rte):
            if rte & RTE_LEVEL and rte & 0xFF == vector and rte & RTE_REMOTE_IRR:
                self.rte[pin] = rte & ~RTE_REMOTE_IRR
                if self.lines[pin]:
                    self._service(pin)


__all__ = ["IOAPIC_BASE", "IOAPIC_SIZE", "IoApic"]
