"""Writable page tables, as the PV platform does them: a guest-kernel write
to a read-only mapping of one of its pinned page-table frames is carried out
on the guest's behalf (Xen's ptwr emulation, xen/arch/x86/pv/ro-page-fault.c).

pvmon lets the engine redo the write itself: the mapping is made writable
for exactly one instruction (a single step), then read-only again.
"""

from __future__ import annotations

from pvmon.engine.machine import GuestPageFault, Machine


class WritablePageTables:
    """Writable-page-table emulation for one PV domain on ``machine``; the
    pinned frames are ``backend.pinned`` (``{frame: level}``, read on every
    fault: the backend makes it when it attaches, after this)."""

    def __init__(self, machine: Machine, backend) -> None:
        self.m = machine
        self.b = backend
        #: Writes carried out so far (one per write fault on a pinned frame).
        self.emulations = 0
        self._restore = (0, 0)

    def on_write_fault(self, va: int) -> bool:
        """A kernel-mode write fault (error code 3: present, write) at ``va``.
        Returns True when ``va`` is in a pinned page-table frame: the write is
        then redone by a single step with its PTE writable (the machine calls
        the handler's ``after_step``, which calls :meth:`after_step`); False
        when it is the guest's own fault to take."""
        m = self.m
        try:
            pa, pte_ma = m.walk(va)
        except GuestPageFault:
            return False
        if (pa >> 12) not in self.b.pinned:
            return False
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
