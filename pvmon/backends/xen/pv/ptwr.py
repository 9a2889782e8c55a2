"""Writable page tables, as the PV platform does them: a guest-kernel write
to a read-only mapping of one of its pinned page-table frames is carried out
on the guest's behalf (Xen's ptwr emulation, xen/arch/x86/pv/ro-page-fault.c).

pvmon lets the engine redo the write itself: the mapping is made writable
for exactly one instruction (a single step), then read-only again. The
entry written is then accounted as ``mod_l1_entry`` does (ptwr_emulated_update
calls it): the new entry takes its reference, the old one drops its
(:mod:`pvmon.backends.xen.pv.pagetype`). An entry Xen refuses (a writable
mapping of a page table: "could not get_page_from_l1e()") makes the
emulation X86EMUL_UNHANDLEABLE and the guest gets its #PF after all
(pv_ro_page_fault, xen/arch/x86/pv/ro-page-fault.c@stable-4.17): pvmon puts
the old entry back and delivers the fault at the writing instruction.

Xen emulates writes to L1 tables only; pvmon also carries out a write to a
frame the guest pinned at any level (as it did before page types).
"""

from __future__ import annotations

import struct

from pvmon.backends.xen.pv import pagetype as PT
from pvmon.engine.machine import PAGE_SIZE, GuestPageFault, Machine

#: A table is compared a run of 64 entries (512 bytes) at a time.
_RUN = struct.Struct("<64Q")


def _changed_entries(before: bytes, after: bytes) -> list[tuple[int, int, int]]:
    """(slot, old entry, new entry) of every entry of a 4 KiB table that differs
    between ``before`` and ``after``, by slot. A write changes one entry or a
    few: only the 512-byte runs that differ are unpacked."""
    out = []
    for start in range(0, PAGE_SIZE, _RUN.size):
        end = start + _RUN.size
        if before[start:end] == after[start:end]:
            continue
        first = start // 8
        for j, (old, new) in enumerate(zip(_RUN.unpack_from(before, start),
                                           _RUN.unpack_from(after, start), strict=True)):
            if old != new:
                out.append((first + j, old, new))
    return out


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
        #: (table frame written, its 4 KiB before the write, its level or 0).
        self._entry = (0, b"", 0)
        #: Writes whose new entry Xen refuses (put back, the #PF delivered).
        self.refused = 0
        #: (RIP, CR2) of the write being redone.
        self._fault = (0, 0)

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
        self._fault = (m.reg("rip"), va)
        # The whole table as it was: one instruction may change more than the
        # entry at ``va`` (a 16-byte store, a string store), and each entry it
        # changes is accounted after the step.
        self._entry = (frame, m.read_phys(frame << 12, PAGE_SIZE) if PT.L1 <= level <= PT.L4
                       else b"", level if PT.L1 <= level <= PT.L4 else 0)
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
        frame, before, level = self._entry
        if not level:
            return
        m = self.m
        after = m.read_phys(frame << 12, PAGE_SIZE)
        if after == before:
            return
        types = self.b.types
        refused = []
        for i, old, new in _changed_entries(before, after):
            if (level == 4 and 256 <= i < 272) or \
                    (new & 1 and types.get_entry(level, frame, new)):
                refused.append((i, old))
                continue
            if old & 1:
                types.put_entry(level, frame, old)
        if refused:
            self._refuse(frame, refused)

    def _refuse(self, frame: int, entries: list[tuple[int, int]]) -> None:
        """Undo a write Xen would not have carried out (``entries``: slot and
        old value) and deliver the #PF (write to a present page, kernel mode:
        error code 3) at the writing instruction, as Xen propagates the fault
        it could not emulate."""
        m = self.m
        for i, old in entries:
            m.write_u64_phys((frame << 12) + 8 * i, old)
        self.refused += 1
        rip, cr2 = self._fault
        m.set_reg("rip", rip)
        p = self.b.p
        p._jump = None
        self.b.vcpu.deliver_trap(14, 3, cr2, rip)
        if p._jump is not None:
            m.set_reg("rip", p._jump)
            p._jump = None
