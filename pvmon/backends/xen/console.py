"""The PV console backend: drains the guest's console ring
(xen/include/public/io/console.h, struct xencons_interface) and feeds input
into it, like xenconsoled does for a real domU."""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi
from pvmon.backends.xen.ring import ring_read as _ring_read
from pvmon.backends.xen.ring import ring_write as _ring_write

_C = abi.XENCONS


class ConsoleRing:
    """Console ring in the guest page at machine address ``ma``."""

    def __init__(self, mem, ma: int) -> None:
        self.mem = mem
        self.ma = ma

    def drain(self) -> bytes:
        """Take every byte the guest produced since the last drain."""
        m = self.mem
        cons, prod = struct.unpack_from("<II", m.read_phys(self.ma + _C["out_cons"], 8))
        n = (prod - cons) & 0xFFFFFFFF
        if n == 0 or n > _C["out_size"]:
            if n:
                m.write_phys_data(self.ma + _C["out_cons"], struct.pack("<I", prod))
            return b""
        out = _ring_read(m, self.ma + _C["out"], _C["out_size"], cons, n)
        m.write_phys_data(self.ma + _C["out_cons"], struct.pack("<I", prod))
        return out

    def feed(self, data: bytes) -> int:
        """Put input bytes into the ring; returns how many fitted."""
        m = self.mem
        cons, prod = struct.unpack_from("<II", m.read_phys(self.ma + _C["in_cons"], 8))
        size = _C["in_size"]
        room = size - ((prod - cons) & 0xFFFFFFFF)
        n = min(room, len(data))
        _ring_write(m, self.ma + _C["in"], size, prod, data[:n])
        m.write_phys_data(self.ma + _C["in_prod"], struct.pack("<I", (prod + n) & 0xFFFFFFFF))
        return n

    def input_consumed(self) -> bool:
        """True when the guest has read every input byte (in_cons == in_prod)."""
        cons, prod = struct.unpack_from("<II", self.mem.read_phys(self.ma + _C["in_cons"], 8))
        return cons == prod
