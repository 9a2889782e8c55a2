"""Guest memory access for backends, recording every byte read and written.

The recorded lists become the ``rd``/``wr`` fields of a hypercall event, which
is what lets open-loop replay feed a call to another backend without the guest.
"""

from __future__ import annotations

import struct

from pvmon.backends.base import GuestFault
from pvmon.engine.machine import GuestPageFault, Machine


class RecordingGuestAccess:
    """:class:`~pvmon.backends.base.GuestAccess` over a :class:`Machine`.

    ``record``: when False, nothing is kept (the hot path of an unrecorded run).
    ``reads``/``writes``: ``[space, address, bytes]`` with space "v" (guest-
    virtual), "p" (machine) or "w" (a page walk: address = va, bytes = u64 pa,
    u64 L1-entry machine address), cleared by :meth:`begin`.
    """

    def __init__(self, machine: Machine, record: bool = False) -> None:
        self.m = machine
        self.record = record
        self.reads: list = []
        self.writes: list = []

    def begin(self) -> None:
        if self.record:
            self.reads = []
            self.writes = []

    def read(self, va: int, size: int) -> bytes:
        if size < 0:
            raise GuestFault(va)
        try:
            data = self.m.read_virt(va, size)
        except GuestPageFault as exc:
            raise GuestFault(exc.va) from None
        if self.record:
            self.reads.append(["v", va, data])
        return data

    def write(self, va: int, data: bytes) -> None:
        try:
            self.m.write_virt(va, data)
        except GuestPageFault as exc:
            raise GuestFault(exc.va, True) from None
        if self.record:
            self.writes.append(["v", va, bytes(data)])

    def walk(self, va: int) -> tuple[int, int]:
        """Translate ``va`` through the current page tables: ``(pa, pte_ma)``
        (the machine address of its L1 entry). Recorded as ``["w", va,
        <u64 pa, u64 pte_ma>]``. Raises GuestFault when ``va`` is not mapped."""
        try:
            pa, pte_ma = self.m.walk(va)
        except GuestPageFault as exc:
            raise GuestFault(exc.va) from None
        if self.record:
            self.reads.append(["w", va, struct.pack("<QQ", pa, pte_ma)])
        return pa, pte_ma

    # Word access to machine memory (event-channel bits in shared_info and
    # vcpu_info), recorded like read_machine/write_machine.
    def read_u64_phys(self, ma: int) -> int:
        v = self.m.read_u64_phys(ma)
        if self.record:
            self.reads.append(["p", ma, struct.pack("<Q", v)])
        return v

    def write_u64_phys(self, ma: int, value: int) -> None:
        value &= 0xFFFF_FFFF_FFFF_FFFF
        self.m.write_u64_phys(ma, value)
        if self.record:
            self.writes.append(["p", ma, struct.pack("<Q", value)])

    def read_phys(self, ma: int, size: int) -> bytes:
        data = self.m.read_phys(ma, size)
        if self.record:
            self.reads.append(["p", ma, data])
        return data

    def write_phys_data(self, ma: int, data: bytes) -> None:
        self.m.write_phys_data(ma, data)
        if self.record:
            self.writes.append(["p", ma, bytes(data)])

    def read_machine(self, ma: int, size: int) -> bytes:
        try:
            data = self.m.read_phys(ma, size)   # ValueError outside machine memory
        except ValueError:
            raise GuestFault(ma) from None
        if self.record:
            self.reads.append(["p", ma, data])
        return data

    def write_machine(self, ma: int, data: bytes) -> None:
        try:
            self.m.write_phys(ma, data)     # ValueError outside machine memory, nothing written
        except ValueError:
            raise GuestFault(ma, True) from None
        if self.record:
            self.writes.append(["p", ma, data if data.__class__ is bytes else bytes(data)])
