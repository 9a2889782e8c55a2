"""Writable page tables, as the PV platform does them: a guest-kernel write
to a read-only mapping of one of its pinned page-table frames is carried out
on the guest's behalf (Xen's ptwr emulation, xen/arch/x86/pv/ro-page-fault.c).

pvmon lets the engine redo the write itself: the mapping is made writable
for exactly one instruction (a single step), then read-only again. The
entry written is then accounted as ``mod_l1_entry`` does (ptwr_emulated_update
calls it): the new entry takes its reference (a writable mapping of a page
table is refused: the old entry is put back), the old one drops its
(:mod:`pvmon.backends.xen.pv.pagetype`).

Xen emulates writes to L1 tables only; pvmon also carries out a write to a
frame the guest pinned at any level (as it did before page types).
"""

from __future__ import annotations

from pvmon.backends.xen.pv import pagetype as PT
from pvmon.engine.machine import GuestPageFault, Machine


class WritablePageTables:
    """Writable-page-table emulation for one PV domain on ``machine``; the
    page tables are the frames with an L1 type in ``backend.types`` and the
    pinned frames ``backend.pinned`` (``{frame: level}``), read on every fault
    (the backend makes them when it attaches, after this)."""

    def __init__(self, machine: Machine, backend) -> None:
        self.m = machine
        self.b = backend
        #: Writes carried out so far (one per write fault on a pinned frame).
        self.emulations = 0
        self._restore = (0, 0)
        #: (machine address of the 8-byte entry written, its old value, table level).
        self._entry = (0, 0, 0)
        #: Writes whose new entry Xen would refuse (put back; Xen would deliver
        #: the #PF to the guest instead).
        self.refused = 0

    def on_write_fault(self, va: int) -> bool:
        """A kernel-mode write fault (error code 3: present, write) at ``va``.
        Returns True when ``va`` is in an L1 table or a pinned frame: the write is
        then redone by a single step with its PTE writable (the machine calls
        the handler's ``after_step``, which calls :meth:`after_step`); False
        when it is the guest's own fault to take."""
        m = self.m
        try:
            pa, pte_ma = m.walk(va)
        except GuestPageFault:
            return False
        frame = pa >> 12
        types = self.b.types
        level = types.type_of(frame)
        if level != PT.L1 and frame not in self.b.pinned:
            return False
        slot = pa & ~7
        self._entry = (slot, m.read_u64_phys(slot), level if PT.L1 <= level <= PT.L4 else 0)
        pte = m.read_u64_phys(pte_ma)
        m.write_u64_phys(pte_ma, pte | 2)
        m.flush_tlb()
        self._restore = (pte_ma, pte)
        self.emulations += 1
        m.request_step()
        return True

    def after_step(self) -> None:
        """The single step is done: the PTE is read-only again."""
        pte_ma, pte = self._restore
        self.m.write_u64_phys(pte_ma, pte)
        self.m.flush_tlb()
        slot, old, level = self._entry
        if not level:
            return
        m = self.m
        new = m.read_u64_phys(slot)
        if new == old:
            return
        if level == 4 and 256 <= (slot & 0xFFF) // 8 < 272:
            m.write_u64_phys(slot, old)      # Xen's own L4 slots stay Xen's
            self.refused += 1
            return
        types = self.b.types
        frame = slot >> 12
        if new & 1 and types.get_entry(level, frame, new):
            m.write_u64_phys(slot, old)
            self.refused += 1
            return
        if old & 1:
            types.put_entry(level, frame, old)
