"""Byte rings in guest-shared pages (xenstore and console rings:
xen/include/public/io/xs_wire.h, io/console.h): free-running indices, reads
and writes in at most two pieces so each is one recorded memory access."""

from __future__ import annotations


def ring_read(mem, base: int, size: int, idx: int, n: int) -> bytes:
    """``n`` bytes of a byte ring of ``size`` at machine address ``base``,
    starting at free-running index ``idx`` (at most two reads)."""
    if n <= 0:
        return b""
    off = idx % size
    first = min(n, size - off)
    data = mem.read_phys(base + off, first)
    if first < n:
        data += mem.read_phys(base, n - first)
    return data


def ring_write(mem, base: int, size: int, idx: int, data: bytes) -> None:
    """Write ``data`` into a byte ring at free-running index ``idx``."""
    off = idx % size
    first = min(len(data), size - off)
    mem.write_phys_data(base + off, data[:first])
    if first < len(data):
        mem.write_phys_data(base, data[first:])
