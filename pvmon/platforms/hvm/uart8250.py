"""An 8250/16550A UART (COM1: I/O ports 0x3F8-0x3FF, ISA IRQ 4).

The register model is the 16550A's, as QEMU's ``hw/char/serial.c`` emulates
it for KVM guests, reduced to what Linux's driver looks at
(``drivers/tty/serial/8250/8250_port.c`` ``autoconfig``,
``serial8250_do_startup``, ``serial8250_handle_irq``,
``serial8250_console_write``):

====== ============================ =======================================
offset read                         write
====== ============================ =======================================
0      RBR (DLAB=0) / DLL           THR (DLAB=0) / DLL
1      IER (bits 3:0) / DLM         IER / DLM
2      IIR (bits 7:6 = 11 with FIFO) FCR (bit 0 FIFO enable, 1/2 clear)
3      LCR                          LCR (bit 7 DLAB)
4      MCR (bits 4:0)               MCR (bit 4 loopback)
5      LSR (DR, THRE, TEMT)         (ignored)
6      MSR                          (ignored)
7      SCR                          SCR
====== ============================ =======================================

What the probe needs (facts sheet 3.4 note 3): IER reads back 0 and 0x0F;
in loopback (MCR bit 4) the modem outputs loop to the inputs, so after
MCR = LOOP|OUT2|RTS the MSR's top nibble reads 0x90 (DCD|CTS), and bytes
written to THR arrive in RBR; FCR bit 0 makes IIR bits 7:6 read 11
(a 16550A). Outside loopback the line is connected: MSR reads DCD|DSR|CTS.

Transmission is instant: a byte written to THR goes to ``on_output`` at
once, so LSR always has THRE|TEMT. The THR-empty interrupt follows the
16550A: it is pending after a byte is sent or when IER.THRI is set while
THR is empty, and clears when IIR reports it or THR is written. Received
bytes wait in a 16-byte FIFO (:meth:`Uart8250.receive` takes as many as fit).

The interrupt output (``irq_line``) is high while an enabled condition
holds: received data (IER bit 0), THR empty (bit 1), a line status error
(bit 2, never raised here), a modem status change (bit 3). ``on_irq`` is
called with the new level whenever it changes; the platform turns the rising
edge into ISA IRQ 4 (an edge-triggered IO-APIC pin). No access raises.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

COM1_BASE = 0x3F8
COM1_IRQ = 4
PORTS = 8
FIFO_BYTES = 16

# register bits (Linux include/uapi/linux/serial_reg.h)
IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI = 0x01, 0x00, 0x02, 0x04
IIR_FIFO_BITS = 0xC0
FCR_ENABLE_FIFO, FCR_CLEAR_RCVR = 0x01, 0x02
LCR_DLAB = 0x80
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 0x01, 0x02, 0x04, 0x08
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
#: modem inputs of a connected line outside loopback (QEMU serial.c: CD, DSR, CTS)
MSR_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS


class Uart8250:
    """One 16550A. ``on_output(data)``: bytes the guest transmitted;
    ``on_irq(level)``: the interrupt output changed. Ports are offsets 0-7
    from :attr:`base`."""

    def __init__(self, on_output: Callable[[bytes], None],
                 on_irq: Callable[[bool], None] | None = None, base: int = COM1_BASE) -> None:
        self.base = base
        self.on_output = on_output
        self.on_irq = on_irq
        self.rx: deque[int] = deque()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.dll, self.dlm = 0x01, 0x00      # 115200 baud
        self.fcr = 0
        self.thr_pending = False             # THR-empty interrupt pending
        self.msr_delta = 0                   # MSR bits 3:0
        self.irq_line = False
        self.tx_bytes = 0
        self.rx_bytes = 0

    # -- input side ---------------------------------------------------------------------------
    def room(self) -> int:
        """Bytes :meth:`receive` would take now."""
        return FIFO_BYTES - len(self.rx)

    def receive(self, data: bytes) -> int:
        """Bytes arriving on the line: as many as fit in the FIFO (the rest
        is the caller's to offer later). Returns how many were taken."""
        n = min(len(data), self.room())
        self.rx.extend(data[:n])
        self.rx_bytes += n
        if n:
            self._update_irq()
        return n

    def input_consumed(self) -> bool:
        """True when the guest has read every received byte."""
        return not self.rx

    # -- registers ------------------------------------------------------------------------------
    def _msr(self) -> int:
        if self.mcr & MCR_LOOP:
            m = self.mcr
            inputs = ((MSR_DCD if m & MCR_OUT2 else 0) | (MSR_RI if m & MCR_OUT1 else 0)
                      | (MSR_DSR if m & MCR_DTR else 0) | (MSR_CTS if m & MCR_RTS else 0))
        else:
            inputs = MSR_CONNECTED
        return inputs | self.msr_delta

    def _lsr(self) -> int:
        return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)

    def _iir_source(self) -> int:
        if self.ier & IER_RDI and self.rx:
            return IIR_RDI
        if self.ier & IER_THRI and self.thr_pending:
            return IIR_THRI
        if self.ier & IER_MSI and self.msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        level = self._iir_source() != IIR_NO_INT
        if level != self.irq_line:
            self.irq_line = level
            if self.on_irq is not None:
                self.on_irq(level)

    def read(self, offset: int) -> int:
        """The byte at port ``base + offset`` (offset 0-7; others read 0xFF)."""
        if offset == 0:
            if self.lcr & LCR_DLAB:
                return self.dll
            v = self.rx.popleft() if self.rx else 0
            self._update_irq()
            return v
        if offset == 1:
            return self.dlm if self.lcr & LCR_DLAB else self.ier
        if offset == 2:
            src = self._iir_source()
            if src == IIR_THRI:
                self.thr_pending = False      # reading IIR acknowledges THRE
                self._update_irq()
            return src | (IIR_FIFO_BITS if self.fcr & FCR_ENABLE_FIFO else 0)
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return self._lsr()
        if offset == 6:
            v = self._msr()
            self.msr_delta = 0
            self._update_irq()
            return v
        if offset == 7:
            return self.scr
        return 0xFF

    def write(self, offset: int, value: int) -> None:
        """Write the byte ``value`` to port ``base + offset``."""
        value &= 0xFF
        if offset == 0:
            if self.lcr & LCR_DLAB:
                self.dll = value
                return
            self.tx_bytes += 1
            if self.mcr & MCR_LOOP:
                if len(self.rx) < FIFO_BYTES:
                    self.rx.append(value)
            else:
                self.on_output(bytes([value]))
            self.thr_pending = True          # sent at once: THR empty again
            self._update_irq()
        elif offset == 1:
            if self.lcr & LCR_DLAB:
                self.dlm = value
                return
            old = self.ier
            self.ier = value & 0x0F
            if self.ier & IER_THRI and not old & IER_THRI:
                self.thr_pending = True      # THR is always empty
            self._update_irq()
        elif offset == 2:
            self.fcr = value & 0xC9
            if value & FCR_CLEAR_RCVR:
                self.rx.clear()
            self._update_irq()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            old = self._msr() & 0xF0
            self.mcr = value & 0x1F
            new = self._msr() & 0xF0
            changed = old ^ new
            if changed:
                # loopback changes the modem inputs: set the delta bits (16550A)
                self.msr_delta |= ((MSR_DCTS if changed & MSR_CTS else 0)
                                   | (MSR_DDSR if changed & MSR_DSR else 0)
                                   | (MSR_TERI if old & MSR_RI and not new & MSR_RI else 0)
                                   | (MSR_DDCD if changed & MSR_DCD else 0))
            self._update_irq()
        elif offset == 7:
            self.scr = value


__all__ = ["COM1_BASE", "COM1_IRQ", "FIFO_BYTES", "PORTS", "Uart8250"]
