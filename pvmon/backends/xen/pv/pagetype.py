"""Page types and type reference counts of one 64-bit PV domain's frames,
kept as Xen keeps them (xen/arch/x86/mm.c@stable-4.17, ``_get_page_type``,
``_put_page_type``, ``promote_l?_table``, ``get_page_from_l?e``,
``put_page_from_l?e``, ``define_get_linear_pagetable``).

Every frame of the domain has a type and a type count. A frame with a count
of zero has no type (Xen keeps the bits, but a page table whose count drops to
zero is devalidated and any type can be taken next). Types:

* ``WRITABLE``: the frame is mapped writable by that many entries of L1
  tables that hold an L1 type (``get_page_from_l1e`` takes
  ``PGT_writable_page`` for an entry with ``_PAGE_RW``);
* ``L1`` .. ``L4``: the frame is a validated page table of that level; its
  count is the number of present entries of validated tables one level up
  that reference it, plus one for a pin (``MMUEXT_PIN_L?_TABLE``), plus one
  per CR3 (``MMUEXT_NEW_BASEPTR``/``NEW_USER_BASEPTR``) holding it, plus the
  linear (same-level, read-only) entries of other tables that reference it;
* ``SEG_DESC``: the frame is a validated descriptor-table page
  (``PGT_seg_desc_page``): its count is the number of GDT slots of the
  domain's vCPUs holding it (``pv_set_gdt``, ``arch_set_info_guest``); it is
  validated by :func:`check_descriptor` on each of its 512 descriptors
  (``validate_segdesc_page``, xen/arch/x86/pv/descriptor-tables.c).

A frame takes a page-table type from count zero only by validation
(``promote``): every present entry of the table is checked and takes its own
reference on the frame it names, which may in turn validate that frame
(recursively, as ``promote_l4_table`` validates the L3s it meets that are not
yet L3 tables). A frame with a different type and a non-zero count cannot
take the type: ``-EINVAL`` ("Bad type", ``_get_page_type``), or ``-EBUSY``
where an L1 entry wanted a writable reference (``get_page_from_l1e``,
``could_not_pin``). When a page table's count drops to zero every entry's
reference is dropped (``free_page_type``), recursively.

General page references (``count_info``, ``get_page``) are kept only as far as
a guest can see them: ``maps`` counts the present entries of validated L1
tables naming each frame (read-only ones too; ``get_page_from_l1e`` takes a
general reference for each), so :meth:`PageTypes.referenced` says whether a
frame has any reference beyond its allocation that this module knows of (a
type reference or a mapping). A frame the domain gave back while referenced
*lingers* (``guest_remove_page`` drops only the allocation reference; the
page is freed, ``free_domheap_pages``, with the last reference), and a frame
that is free (``freed``, no longer the domain's) cannot be mapped or typed.

Nothing here scans memory beyond the table being validated or devalidated:
mmu_update, update_va_mapping and writable-page-table writes adjust the
counts of the old and the new target of the one entry they change
(:meth:`PageTypes.get_entry` then :meth:`PageTypes.put_entry`, as
``mod_l?_entry`` does). The table contents are read from the machine (not
through a recording access: this is pvmon's bookkeeping, not the guest's
call).

A frame that takes an L1-L4 or descriptor type having lost its last writable
reference since the TLB's last flush has the TLB flushed first (Xen's flush
on a type change, ``tlbflush_timestamp``): no writable translation of a table
survives, so every write to one is seen (a hypercall or a writable-page-table
fault) and the counts stay exact.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

NONE, L1, L2, L3, L4, WRITABLE, SEG_DESC = 0, 1, 2, 3, 4, 5, 6
#: Type names, for messages and tests.
TYPE_NAMES = {NONE: "none", L1: "l1", L2: "l2", L3: "l3", L4: "l4", WRITABLE: "writable",
              SEG_DESC: "seg_desc"}

EINVAL, EBUSY = 22, 16
_P, _RW, _PSE = 1, 2, 0x80
_ADDR = 0x000FFFFFFFFFF000
_TABLE = struct.Struct("<512Q")
#: L4 slots that are Xen's, not the guest's (is_guest_l4_slot, 64-bit PV:
#: ROOT_PAGETABLE_FIRST_XEN_SLOT 256 .. LAST 271).
_XEN_L4_SLOTS = range(256, 272)

# Descriptor bits (the high 32 bits of a descriptor: xen/arch/x86/include/asm/desc.h).
_SEG_TYPE, _SEG_S, _SEG_DPL, _SEG_P = 15 << 8, 1 << 12, 3 << 13, 1 << 15
#: FIRST_RESERVED_GDT_ENTRY (14 pages of 512 descriptors are the guest's).
FIRST_RESERVED_GDT_ENTRY = 14 * 512
#: FLAT_KERNEL_CS of a 64-bit PV guest (FLAT_RING3_CS64, public/arch-x86/xen-x86_64.h).
_FLAT_KERNEL_CS = 0xE033
_DESCS = struct.Struct("<512Q")


def check_descriptor(desc: int) -> int | None:
    """check_descriptor (xen/arch/x86/pv/descriptor-tables.c@stable-4.17) for a
    64-bit PV domain: the descriptor as Xen stores it, or None when Xen refuses
    it. ``desc`` is the raw 64-bit descriptor.

    A not-present descriptor is kept as it is. A present one has its DPL raised
    to the guest kernel's RPL, 3 (``__fixup_guest_selector``); code and data
    segments are then accepted (no base or limit check); a system descriptor of
    type 0 (the upper half of a 16-byte gate) is kept unchanged; every other
    system descriptor but a call gate (type 0xc) is refused (TSS, LDT, interrupt
    and trap gates); a call gate must name a guest GDT selector, FLAT_KERNEL_CS
    or an LDT selector (``guest_gate_selector_okay``), has its DPL moved into
    the selector's RPL and forced to 0, and must have the low byte of its high
    word (IST, reserved) zero."""
    a, b = desc & 0xFFFF_FFFF, desc >> 32
    if not b & _SEG_P:
        return desc
    b |= _SEG_DPL                              # DPL 0-2 -> 3 (GUEST_KERNEL_RPL 3)
    if b & _SEG_S:
        return a | b << 32
    if not b & _SEG_TYPE:
        return desc                            # type 0: "harmless", kept unchanged
    if b & _SEG_TYPE != 0xC00:
        return None                            # "Everything but a call gate is discarded"
    cs = a >> 16
    if not ((cs >> 3) < FIRST_RESERVED_GDT_ENTRY or cs == _FLAT_KERNEL_CS or cs & 4):
        return None
    b &= ~_SEG_DPL
    a = (a & 0xFFFF) | ((cs | 3) << 16)        # the DPL (3) in the selector's RPL
    if b & 0xFF:
        return None                            # reserved bits
    return a | b << 32


class PageTypes:
    """Types and counts of the frames ``0 .. nr_frames-1`` of one domain.

    ``read_table(mfn)`` returns the 4096 bytes of machine frame ``mfn``.
    Frames at or past ``nr_frames`` (shared_info, grant frames: hypervisor
    frames the guest may map) are not tracked: a writable L1 entry naming one
    takes no type, and an L2-L4 entry naming one is refused (-EINVAL:
    ``get_page_from_mfn`` finds no page of the domain).
    """

    def __init__(self, nr_frames: int, read_table: Callable[[int], bytes],
                 flush_tlb: Callable[[], None] | None = None,
                 tlb_clock: Callable[[], int] | None = None) -> None:
        self.nr = nr_frames
        self._read = read_table
        #: Empties the TLB (the engine's, every vCPU's) when a frame that may
        #: still have a writable translation in it takes a page-table or
        #: descriptor type (:meth:`_flush_stale`), as Xen flushes on that type
        #: change (_get_page_type: tlbflush_timestamp, flush_tlb_mask).
        #: ``tlb_clock()`` counts the whole-TLB flushes made so far, whatever
        #: asked for them (a flush it misses only makes a type change flush
        #: once more). Neither given: no flush.
        self._flush = flush_tlb
        self._clock = tlb_clock if flush_tlb is not None else None
        #: frame -> ``tlb_clock()`` when its last writable reference went
        #: (-1: never): Xen's ``page->tlbflush_timestamp``.
        self.wstamp = [-1] * nr_frames
        #: TLB flushes made for a type change (:meth:`_flush_stale`).
        self.type_flushes = 0
        #: frame -> type (NONE when the count is 0).
        self.typ = bytearray(nr_frames)
        #: frame -> type count.
        self.cnt = [0] * nr_frames
        #: frame -> linear_pt_count: > 0 the number of linear entries the table
        #: holds, < 0 minus the number of tables' linear entries naming it
        #: (inc_linear_entries / inc_linear_uses; a table is one or the other).
        self.linear: dict[int, int] = {}
        #: Tables validated (successfully) and devalidated so far; their
        #: difference is the number of frames holding an L1-L4 type.
        self.promotions = 0
        self.demotions = 0
        #: Frames validated as descriptor pages (SEG_DESC from count 0).
        self.segdesc_validations = 0
        #: frame -> present entries of validated L1 tables naming it.
        self.maps = [0] * nr_frames
        #: Frames the domain gave back while still referenced (they stay its
        #: own until the last reference goes: then ``on_free(mfn)``).
        self.lingering: set[int] = set()
        #: Frames free (given back and unreferenced): not the domain's.
        self.freed: set[int] = set()
        #: Called with a lingering frame when its last reference goes.
        self.on_free: Callable[[int], None] | None = None

    # ---------------------------------------------------------------- queries
    def type_of(self, mfn: int) -> int:
        """The frame's type: NONE, L1..L4 or WRITABLE (NONE past the domain)."""
        return self.typ[mfn] if 0 <= mfn < self.nr else NONE

    def is_page_table(self, mfn: int) -> bool:
        """True when the frame holds an L1-L4 type (a validated page table)."""
        return 0 <= mfn < self.nr and L1 <= self.typ[mfn] <= L4

    def referenced(self, mfn: int) -> bool:
        """True when the frame of the domain holds a type reference (a table,
        a pin, a CR3, a GDT slot, a writable mapping) or is mapped by a
        present entry of a validated L1 table: a general reference beyond
        its allocation (``count_info`` above ``PGC_allocated | 1``)."""
        return bool(self.cnt[mfn] or self.maps[mfn])

    def _unreferenced(self, mfn: int) -> None:
        """A lingering frame may just have lost its last reference: free it."""
        if not self.cnt[mfn] and not self.maps[mfn] and mfn in self.lingering:
            self.lingering.discard(mfn)
            if self.on_free is not None:
                self.on_free(mfn)

    # ------------------------------------------------------- type references
    def get_type(self, mfn: int, t: int) -> int:
        """Take one type reference of type ``t`` on a frame of the domain
        (``_get_page_type``): 0, or -EINVAL when the frame has another type
        (or a table fails validation: the error of the entry that failed).
        A frame that is free (given back) has no owner: -EINVAL (get_page fails)."""
        if self.freed and mfn in self.freed:
            return -EINVAL
        cnt = self.cnt[mfn]
        if cnt:
            if self.typ[mfn] != t:
                return -EINVAL
            self.cnt[mfn] = cnt + 1
            return 0
        self.typ[mfn] = t
        self.cnt[mfn] = 1
        if t == SEG_DESC:
            if self._clock is not None and self.wstamp[mfn] == self._clock():
                self._flush_stale()
            if not self._segdesc_ok(mfn):
                self.typ[mfn] = NONE
                self.cnt[mfn] = 0
                return -EINVAL
            self.segdesc_validations += 1
        elif t <= L4:
            if self._clock is not None and self.wstamp[mfn] == self._clock():
                self._flush_stale()
            rc = self._promote(mfn, t)
            if rc:
                self.typ[mfn] = NONE
                self.cnt[mfn] = 0
                return rc
        return 0

    def _flush_stale(self) -> None:
        """The frame taking a page-table or descriptor type lost its last
        writable reference after the TLB's last flush: a writable
        translation of it may still be cached, through which the guest could
        write the table unchecked. Flush, as Xen does for a type change whose
        ``tlbflush_timestamp`` is not older than a dirty CPU's last flush
        (_get_page_type, NEED_FLUSH); Xen flushes the whole TLB too."""
        self.type_flushes += 1
        self._flush()

    def put_type(self, mfn: int) -> None:
        """Drop one type reference (``_put_page_type``); a page table whose
        count reaches zero drops its entries' references (devalidation)."""
        cnt = self.cnt[mfn]
        if cnt <= 0:          # a reference pvmon never took (a grant's PTE): ignore
            return
        self.cnt[mfn] = cnt - 1
        if cnt == 1:
            t = self.typ[mfn]
            self.typ[mfn] = NONE
            if t <= L4:
                self._demote(mfn, t)
            elif t == WRITABLE and self._clock is not None:
                self.wstamp[mfn] = self._clock()
            if self.lingering:
                self._unreferenced(mfn)

    # ----------------------------------------------------- entry references
    def get_entry(self, level: int, table: int, e: int) -> int:
        """The reference a present entry ``e`` of a validated level-``level``
        table ``table`` takes (``get_page_from_l?e``): 0 or a negative errno.
        L1: a writable entry takes a writable type on a frame of the domain
        (-EBUSY if the frame is a page table). L2-L4: the frame named takes
        the next level down's type; failing that (-EINVAL) a read-only entry
        naming a validated table of the same level is a linear page table
        (the table itself, or another that holds no linear entries while this
        one is not a linear target), anything else -EINVAL."""
        mfn = (e & _ADDR) >> 12
        if level == 1:
            if mfn < self.nr:
                if self.freed and mfn in self.freed:
                    return -EBUSY          # could_not_pin: real_pg_owner NULL
                if e & _RW and self.get_type(mfn, WRITABLE):
                    return -EBUSY          # could_not_pin
                self.maps[mfn] += 1
            return 0
        if mfn >= self.nr:
            return -EINVAL                 # get_page_from_mfn: not the domain's
        if level == 2 and e & _PSE:
            return -EINVAL                 # L2_DISALLOW_MASK: _PAGE_PSE
        rc = self.get_type(mfn, level - 1)
        if rc == -EINVAL and self._linear(level, table, mfn, e):
            return 0
        return rc

    def put_entry(self, level: int, table: int, e: int) -> None:
        """Drop what :meth:`get_entry` took for present entry ``e``
        (``put_page_from_l?e``; ``put_pt_page`` for a linear entry)."""
        mfn = (e & _ADDR) >> 12
        if mfn >= self.nr:
            return
        if level == 1:
            self.maps[mfn] -= 1
            if e & _RW:
                self.put_type(mfn)
            elif self.lingering:
                self._unreferenced(mfn)
            return
        if mfn == table:
            return                         # a self-map took no reference
        if self.typ[mfn] == level:         # a linear entry: dec uses and entries
            self._dec_linear(mfn, +1)
            self._dec_linear(table, -1)
        self.put_type(mfn)

    def mod_l1(self, table: int, old: int, new: int) -> int:
        """The references of an L1 entry of ``table`` changing from ``old``
        to ``new`` (both raw entries): :meth:`get_entry` of the new one, then
        :meth:`put_entry` of the old, in one call (every Linux PTE update
        passes here). 0, or -EBUSY with nothing changed."""
        if new & 1:                            # present
            mfn = (new & _ADDR) >> 12
            if mfn < self.nr:
                if self.freed and mfn in self.freed:
                    return -EBUSY              # could_not_pin: real_pg_owner NULL
                if new & 2:                    # and writable
                    cnt = self.cnt[mfn]
                    if not cnt:
                        self.typ[mfn] = WRITABLE
                    elif self.typ[mfn] != WRITABLE:
                        return -EBUSY          # could_not_pin
                    self.cnt[mfn] = cnt + 1
                self.maps[mfn] += 1
        if old & 1:
            mfn = (old & _ADDR) >> 12
            if mfn < self.nr:
                self.maps[mfn] -= 1
                if old & 2:
                    cnt = self.cnt[mfn]
                    if cnt > 1:
                        self.cnt[mfn] = cnt - 1
                    elif cnt == 1:
                        self.cnt[mfn] = 0
                        self.typ[mfn] = NONE
                        if self._clock is not None:
                            self.wstamp[mfn] = self._clock()
                if self.lingering:
                    self._unreferenced(mfn)
        return 0

    def swap_root(self, new: int, old: int) -> int:
        """A CR3 moving from root ``old`` to ``new`` (0: none): an L4 type
        reference taken on ``new`` (validating it if it had none), then the
        one on ``old`` dropped (new_guest_cr3). 0 or -EINVAL."""
        if new:
            cnt = self.cnt[new]
            if cnt and self.typ[new] == L4:
                self.cnt[new] = cnt + 1
            else:
                rc = self.get_type(new, L4)
                if rc:
                    return rc
        if old and old < self.nr:
            cnt = self.cnt[old]
            if cnt > 1:
                self.cnt[old] = cnt - 1
            else:
                self.put_type(old)
        return 0

    def _segdesc_ok(self, mfn: int) -> bool:
        """validate_segdesc_page: every one of the frame's 512 descriptors
        passes :func:`check_descriptor`. Xen also writes each fixed-up
        descriptor back into the frame; pvmon does not (docs/xen-rules.md,
        "Page types": it would change what Linux's set_gdt records)."""
        return all(check_descriptor(d) is not None for d in _DESCS.unpack(self._read(mfn)))

    def _linear(self, level: int, table: int, mfn: int, e: int) -> bool:
        """get_l?_linear_pagetable: True when ``e`` is an allowed linear entry
        (it then holds its references)."""
        if e & _RW:
            return False                   # "Attempt to create linear p.t. with write perms"
        if mfn == table:
            return True
        if self.linear.get(table, 0) < 0 or self.linear.get(mfn, 0) > 0:
            return False                   # inc_linear_entries / inc_linear_uses
        if self.typ[mfn] != level or not self.cnt[mfn]:
            return False                   # not an already-validated table of this level
        self.linear[table] = self.linear.get(table, 0) + 1
        self.linear[mfn] = self.linear.get(mfn, 0) - 1
        self.cnt[mfn] += 1
        return True

    def _dec_linear(self, mfn: int, step: int) -> None:
        n = self.linear.get(mfn, 0) + step
        if n:
            self.linear[mfn] = n
        else:
            self.linear.pop(mfn, None)

    # ------------------------------------------------ validation of a table
    def _entries(self, mfn: int, level: int):
        """(slot, entry) of the table's present guest entries."""
        words = _TABLE.unpack(self._read(mfn))
        if level == 4:
            return [(i, e) for i, e in enumerate(words) if e & _P and not 256 <= i < 272]
        return [(i, e) for i, e in enumerate(words) if e & _P]

    def _promote(self, mfn: int, level: int) -> int:
        """promote_l?_table: every present entry takes its reference; on a
        failure the ones taken are dropped and the entry's error returned."""
        done = []
        for _, e in self._entries(mfn, level):
            rc = self.get_entry(level, mfn, e)
            if rc:
                for old in reversed(done):
                    self.put_entry(level, mfn, old)
                return rc
            done.append(e)
        self.promotions += 1
        return 0

    def _demote(self, mfn: int, level: int) -> None:
        """free_l?_table: every present entry drops its reference."""
        self.demotions += 1
        for _, e in self._entries(mfn, level):
            self.put_entry(level, mfn, e)

    # ------------------------------------------------------------------ audit
    def audit(self, pinned: dict[int, int], roots: list[int],
              gdt_frames: list[int] = ()) -> list[str]:
        """Recount every type reference from scratch (the pins, the CR3s in
        ``roots``, the loaded GDT frames of every vCPU in ``gdt_frames``, one
        reference per slot, every present entry of every validated table) and return
        where the kept counts or types disagree, as readable lines (empty when
        they agree). A whole-memory scan: for tests, never on a guest's path
        (Xen's debug builds have the like, audit_domain)."""
        want = [0] * self.nr
        maps = [0] * self.nr
        kind = bytearray(self.nr)
        bad = []
        for mfn, level in pinned.items():
            want[mfn] += 1
            kind[mfn] = level
        for mfn in roots:
            if 0 < mfn < self.nr:
                want[mfn] += 1
                kind[mfn] = L4
        for mfn in gdt_frames:
            want[mfn] += 1
            kind[mfn] = SEG_DESC
        for table in range(self.nr):
            level = self.typ[table]
            if not L1 <= level <= L4:
                continue
            for slot, e in self._entries(table, level):
                mfn = (e & _ADDR) >> 12
                if mfn >= self.nr or (level > 1 and mfn == table):
                    continue
                if level == 1:
                    maps[mfn] += 1
                    if e & _RW:
                        want[mfn] += 1
                        kind[mfn] = WRITABLE
                    continue
                want[mfn] += 1
                if kind[mfn] not in (level - 1, level):
                    kind[mfn] = level - 1
                if self.typ[mfn] not in (level - 1, level):
                    bad.append(f"L{level} {table:#x}[{slot}] names {mfn:#x} of type "
                               f"{TYPE_NAMES[self.typ[mfn]]}")
        for mfn in range(self.nr):
            if want[mfn] != self.cnt[mfn]:
                bad.append(f"{mfn:#x}: type {TYPE_NAMES[self.typ[mfn]]} count "
                           f"{self.cnt[mfn]}, recounted {want[mfn]}")
            elif want[mfn] and kind[mfn] == WRITABLE and self.typ[mfn] != WRITABLE:
                bad.append(f"{mfn:#x}: mapped writable but of type {TYPE_NAMES[self.typ[mfn]]}")
            if maps[mfn] != self.maps[mfn]:
                bad.append(f"{mfn:#x}: mapped {self.maps[mfn]} times, recounted {maps[mfn]}")
        return bad
