"""The PV MMU: a Xen PV guest owns no page tables of its own making; it
asks Xen to write them (mmu_update, update_va_mapping) and to pin frames as
page tables of a level and switch roots (mmuext_op), and Xen validates each
entry (xen/arch/x86/mm.c@stable-4.17). HVM-style guests (PVH) write their
page tables themselves and have none of this.

:class:`PvMmu` is a mixin of :class:`~pvmon.backends.xen.backend.XenBackend`
(its ``hc_*`` methods are that backend's hypercalls): it uses the backend's
``guest``, ``m``, ``layout``, ``ver``, ``vcpu``, ``gnttab``, ``op``,
``domid``, ``_read``/``_write``, ``_valid_mfn`` and ``_subop_gate``, and
keeps ``pinned`` (``{frame: level}``, :data:`~pvmon.backends.base.CAP_PV_MMU`),
which writable-page-table emulation (:mod:`pvmon.backends.xen.pv.ptwr`) and
the grant table read.
"""

from __future__ import annotations

import struct

from pvmon.backends.base import GuestFault
from pvmon.backends.xen import abi
from pvmon.backends.xen.pv import ldt
from pvmon.backends.xen.pv import pagetype as PT
from pvmon.engine.machine import PAGE_SIZE, PTE_ADDR_MASK, PTE_P

E = abi
# Packed once (struct.Struct): every mmu_update and mmuext_op uses them.
_QQ = struct.Struct("<QQ")              # struct mmu_update {ptr, val}
_Q = struct.Struct("<Q")                # a page-table entry
_U32 = struct.Struct("<I")              # *pdone
_MMUEXT_OP = struct.Struct("<I4xQQ")    # struct mmuext_op {cmd, arg1, arg2}
#: The name of each mmu_update command (ptr & 3) in the op.
_MMU_CMD_NAMES = tuple(abi.MMU_CMDS.get(c, c) for c in range(4))
_NORMAL, _PRESERVE_AD, _MACHPHYS = (E.MMU_NORMAL_PT_UPDATE, E.MMU_PT_UPDATE_PRESERVE_AD,
                                    E.MMU_MACHPHYS_UPDATE)
_L1 = PT.L1


class PvMmu:
    """The PV MMU hypercalls and the pinned-frame bookkeeping of one domain."""

    pinned: dict[int, int]
    types: PT.PageTypes
    #: update_va_mapping calls whose L1 had no L1 type (written all the same).
    untyped_va_updates = 0

    def init_mmu(self, layout) -> None:
        """Start of day: the builder's L4 is pinned by the domain builder
        (libxenguest pins pt_base) and is the vCPU's CR3: two L4 type
        references, the whole bootstrap tree validated below it."""
        self.pinned = {layout.pt_base_pfn: 4}   # mfn -> level
        m = self.m
        # The TLB flush on a type change (PageTypes._flush_stale) and its clock:
        # every whole-TLB flush pvmon asks of the engine.
        self.types = PT.PageTypes(layout.nr_pages,
                                  lambda mfn: m.read_phys(mfn << 12, PAGE_SIZE),
                                  m.flush_tlb, lambda: m.tlb_flushes)
        for _ in range(2):
            rc = self.types.get_type(layout.pt_base_pfn, PT.L4)
            assert rc == 0, f"the builder's page tables do not validate ({rc})"
        self.types.on_free = self.free_frame

    def free_frame(self, mfn: int) -> None:
        """The frame leaves the domain for the free pool (free_domheap_pages):
        populate_physmap may hand it out again; until then it cannot be
        mapped, pinned or typed (:attr:`PageTypes.freed`)."""
        self.free_mfns.append(mfn)
        if self.mode == "pv":
            self.types.freed.add(mfn)

    def give_back(self, mfn: int) -> bool:
        """One extent of XENMEM_decrease_reservation: guest_remove_page
        (xen/common/memory.c@stable-4.17) on frame ``mfn`` of the domain.
        False: the frame is free already (get_page fails: -ENXIO, "Bad page
        free"; decrease_reservation stops there). Else True: an unreferenced
        frame is freed; one still referenced (mapped, a page table, pinned, a
        CR3, a GDT frame, a vcpu_info frame) only loses its allocation
        reference and lingers, still the domain's and still counted in its
        reservation, until its last reference goes (then
        :meth:`free_frame`); giving back a lingering frame again changes
        nothing (PGC_allocated is clear already)."""
        if self.mode != "pv":
            self.free_mfns.append(mfn)
            return True
        types = self.types
        if mfn in types.freed:
            return False
        if mfn in types.lingering:
            return True
        if types.referenced(mfn) or any(mfn == v.vcpu_info_ma() >> 12 for v in self.vcpus):
            types.lingering.add(mfn)
            return True
        self.free_frame(mfn)
        return True

    def take_free_frame(self) -> int | None:
        """A frame for populate_physmap / increase_reservation from the free
        pool (the most recently freed first), or None when the domain is at
        its maximum reservation (assign_pages: tot_pages at max_pages).

        The frame keeps the contents it had when it was freed: free_domheap_pages
        (xen/common/page_alloc.c@stable-4.17) scrubs a freed page only when its
        domain is dying, with ``scrub-domheap`` on Xen's command line, or on a
        CONFIG_SCRUB_DEBUG build (default with CONFIG_DEBUG; it fills the page
        with SCRUB_PATTERN 0xc2, scrub_one_page), "Normally we expect a domain
        to clear pages before freeing them". pvmon models neither option."""
        if not self.free_mfns:
            return None
        mfn = self.free_mfns.pop()
        if self.mode == "pv":
            self.types.freed.discard(mfn)
        return mfn

    def hc_mmu_update(self, reqs, count, done_ptr, domid, *_):
        count &= ~abi.MMU_UPDATE_PREEMPTED
        if domid != abi.DOMID_SELF and domid != self.domid:
            return -E.ESRCH
        if count > 1 << 20:
            return -E.EINVAL
        if count == 1:                    # the common case, without the batch bookkeeping
            ptr, val = _QQ.unpack(self.guest.read(reqs, 16))
            rc = self._mmu_update_one(ptr, val)
            done = 0 if rc else 1
            self.op = {"count": 1, "done": done,
                       "cmds": {_MMU_CMD_NAMES[ptr & 3]: 1}, "ptr": ptr, "val": val}
            if done_ptr:
                self.guest.write(done_ptr, _U32.pack(done))
            return rc
        data = self._read(reqs, 16 * count) if count else b""
        rc = 0
        done = 0
        cmds = {}
        for i in range(count):
            ptr, val = _QQ.unpack_from(data, i * 16)
            cmd = ptr & 3
            cmds[cmd] = cmds.get(cmd, 0) + 1
            rc = self._mmu_update_one(ptr, val)
            if rc:
                break
            done += 1
        self.op = {"count": count, "done": done,
                   "cmds": {abi.MMU_CMDS.get(k, k): v for k, v in cmds.items()}}
        if done_ptr:
            self._write(done_ptr, struct.pack("<I", done))
        return rc

    def _mmu_update_one(self, ptr: int, val: int) -> int:
        """One ``struct mmu_update`` request (xen.h); 0 or a negative errno."""
        cmd = ptr & 3
        ma = ptr & ~7
        if cmd == _NORMAL or cmd == _PRESERVE_AD:
            mfn = ma >> 12
            nr = self.layout.nr_pages
            if not 0 <= mfn < nr:
                return -E.EINVAL
            types = self.types
            level = types.typ[mfn]
            if val & PTE_P:             # _valid_pte, inline: guest RAM, or a shared hypervisor frame
                vmfn = (val & PTE_ADDR_MASK) >> 12
                if vmfn >= nr and not self._hv_frame_ok(vmfn):
                    # get_page_from_l1e's answer for an L1 entry; an L2-L4 entry
                    # naming a frame the domain cannot reference: get_page_from_mfn
                    return self._l1e_foreign_rc(vmfn) if level == _L1 else -E.EINVAL
            if level == _L1:             # mod_l1_entry, the common case, in one call
                old = _Q.unpack_from(self.m.mem, ma)[0]     # bookkeeping: not a recorded read
                rc = types.mod_l1(mfn, old, val)
                if rc:
                    return rc
                self.guest.write_machine(ma, _Q.pack(val))
                return 0
            if not PT.L1 <= level <= PT.L4:
                if level == PT.SEG_DESC:
                    return -E.EINVAL      # page_lock'd, no case for PGT_seg_desc_page
                # No page-table type: a plain write (do_mmu_update, PGT_writable_page).
                self.guest.write_machine(ma, struct.pack("<Q", val))
                return 0
            return self._mod_entry(level, mfn, ma, val)
        if cmd == E.MMU_MACHPHYS_UPDATE:
            mfn = ptr >> 12
            if not self._valid_mfn(mfn):
                return -E.EINVAL
            self.m.write_u64_phys(self.layout.m2p_ma + mfn * 8, val)
            return 0
        return -E.ENOSYS

    def _mod_entry(self, level: int, mfn: int, ma: int, val: int) -> int:
        """mod_l?_entry (xen/arch/x86/mm.c@stable-4.17): write entry ``val``
        at ``ma`` of the level-``level`` table ``mfn``; the new entry takes
        its reference first (a refusal leaves the old one), then the old
        entry's is dropped. 0 or a negative errno."""
        if level == 4 and 256 <= (ma & 0xFFF) // 8 < 272:
            return -E.EINVAL   # Xen-private L4 slots (is_guest_l4_slot)
        # Read from the machine, not through the recording access: this read is
        # pvmon's bookkeeping, not something the guest's call made Xen read.
        old = self.m.read_u64_phys(ma)
        types = self.types
        if level in (2, 4) and val & PTE_P:
            rc = self._mod_pde(level, old, val)
            if rc == 0:     # the fast path: same frame, only whitelisted flags
                self.guest.write_machine(ma, struct.pack("<Q", val))
                return 0
            if rc is not None:
                return rc
        if val & PTE_P:
            rc = types.get_entry(level, mfn, val)
            if rc:
                return rc
        # Like hardware, Xen leaves TLB maintenance to the guest (it asks with
        # mmuext_op TLB_FLUSH/INVLPG or update_va_mapping's UVMF flags).
        self.guest.write_machine(ma, struct.pack("<Q", val))
        if old & PTE_P:
            types.put_entry(level, mfn, old)
        return 0

    # mm.c@stable-4.17 FASTPATH_FLAG_WHITELIST: NX, AVAIL_HIGH (bits 52-62), AVAIL (9-11),
    # GLOBAL, DIRTY, ACCESSED, USER. CONFIG_PV_LINEAR_PT=y keeps RW out of it for PDEs.
    _FASTPATH_WHITELIST = (1 << 63) | (0x7FF << 52) | 0xE00 | 0x100 | 0x40 | 0x20 | 0x4

    def _mod_pde(self, level: int, old: int, val: int) -> int | None:
        """A present entry written into an L2 or L4 table
        (mod_l2_entry / mod_l4_entry, xen/arch/x86/mm.c@stable-4.17): an L2
        entry with _PAGE_PSE is refused (L2_DISALLOW_MASK); an entry that keeps
        its frame and changes only whitelisted flags takes the fast path; any
        other is validated, and a same-level (linear) entry must be read-only
        (get_l4_linear_pagetable: "Attempt to create linear p.t. with write
        perms": :meth:`PageTypes.get_entry`). -EINVAL; 0 for the fast path
        (the entry is written with no change of references); None to validate
        and write it.

        Versions affected by XSA-148 / XSA-182 (capabilities
        ``xsa148_l2_pse_refused`` / ``xsa182_pde_fastpath_whitelist`` absent)
        take the old fast path: same frame and still present, whatever the
        flags, before any check (mm.c@RELEASE-4.6.0: L2_DISALLOW_MASK without
        _PAGE_PSE, l?e_has_changed(.., _PAGE_PRESENT)); a new superpage outside
        it is still refused (no allowsuperpage). pvmon knows a table's level
        from its type (:mod:`pvmon.backends.xen.pv.pagetype`)."""
        caps = self.ver.capabilities
        same_frame = old & PTE_P and not (old ^ val) & PTE_ADDR_MASK
        pse = level == 2 and val & 0x80
        if pse and "xsa148_l2_pse_refused" in caps:
            return -E.EINVAL
        if "xsa182_pde_fastpath_whitelist" in caps:
            if not (old ^ val) & ~self._FASTPATH_WHITELIST & ((1 << 64) - 1) and old & PTE_P:
                return 0
        elif same_frame:
            return 0
        if pse:
            return -E.EINVAL
        return None

    def _writable_pt_mapping(self, val: int) -> bool:
        """A leaf PTE that would map a page-table frame (a frame with an
        L1-L4 type) writable: Xen refuses it (get_page_from_l1e cannot take a
        writable type reference: -EBUSY)."""
        return bool(val & PTE_P and val & 2
                    and self.types.is_page_table((val & PTE_ADDR_MASK) >> 12))

    def _valid_pte(self, val: int) -> bool:
        mfn = (val & PTE_ADDR_MASK) >> 12
        # Guest RAM, or a hypervisor frame the guest was given (shared_info, grant frames).
        return self._valid_mfn(mfn) or self._hv_frame_ok(mfn)

    def _l1e_foreign_rc(self, mfn: int) -> int:
        """What Xen answers for a present L1 entry naming frame ``mfn`` that is
        neither the domain's RAM nor a hypervisor frame shared with it
        (get_page_from_l1e, xen/arch/x86/mm.c@stable-4.17): a frame of the
        machine's RAM is -EBUSY (``could_not_pin``: a freed frame, such as a
        grant-status frame after set_version 1, has no owner to take a
        reference on; Xen's own frames and other domains' have another owner);
        a frame beyond it is I/O memory a domU has no permission for, -EPERM
        ("non-privileged attempt to map MMIO space"), or -EINVAL for the
        all-ones frame (PADDR_MASK >> PAGE_SHIFT, 52 physical address bits).
        pvmon's machine RAM is the guest's RAM and the hypervisor frames above
        it (``Machine.phys_bytes``)."""
        if mfn < self.m.phys_bytes >> 12:
            return -E.EBUSY
        return -E.EINVAL if mfn == (1 << 40) - 1 else -E.EPERM

    def _hv_frame_ok(self, mfn: int) -> bool:
        """A hypervisor frame shared with the guest: shared_info, or a grant
        frame in use (grant_table.GrantTable.frame_shared)."""
        return mfn << 12 == self.layout.shared_info_ma or self.gnttab.frame_shared(mfn)

    def hc_mmuext_op(self, ops, count, done_ptr, domid, *_):
        count &= ~abi.MMU_UPDATE_PREEMPTED
        if count > 1 << 20:
            return -E.EINVAL
        data = self.guest.read(ops, 24 * count) if count else b""
        rc = 0
        done = 0
        names = []                        # name (or number) of each op tried
        gated = "mmuext_op" in self.ver.gated
        cmd_names = abi.MMUEXT_CMDS
        mmuext = self._mmuext
        arg1 = 0
        for cmd, arg1, arg2 in _MMUEXT_OP.iter_unpack(data):
            name = cmd_names.get(cmd) or cmd
            names.append(name)
            rc = self._subop_gate("mmuext_op", name) if gated else None
            if rc is None:
                rc = mmuext(cmd, arg1, arg2)
            if rc:
                break
            done += 1
        if count == 1 and names:
            name = names[0]                 # arg1: the one op's
            key = ("linear_addr" if name in ("INVLPG_LOCAL", "INVLPG_ALL", "INVLPG_MULTI",
                                             "SET_LDT") else "mfn")
            self.op = {"cmd": name, key: arg1}
        else:
            self.op = {"count": count, "ops": names}
        if done_ptr:
            self.guest.write(done_ptr, _U32.pack(done))
        return rc

    def _mmuext(self, cmd: int, arg1: int, arg2: int) -> int:
        if cmd == 5:        # NEW_BASEPTR, the most common (with NEW_USER_BASEPTR: switch_mm)
            return self.new_guest_cr3(arg1)
        if cmd == 13:
            return self._set_ldt(arg1, arg2)
        v = self.vcpu
        types = self.types
        if cmd in (0, 1, 2, 3):
            # MMUEXT_PIN_L?_TABLE: a type reference of the level (validating the
            # table if it had none), then the pin bit. A frame mapped writable
            # (or with another type) cannot take it: "Bad type (saw .. != exp
            # ..)", "Error -22 while pinning mfn .."; pinned twice: "mfn ..
            # already pinned" (mm.c@stable-4.17 do_mmuext_op, _get_page_type).
            if not self._valid_mfn(arg1):
                return -E.EINVAL
            rc = types.get_type(arg1, cmd + 1)
            if rc:
                return rc
            if arg1 in self.pinned:
                types.put_type(arg1)
                return -E.EINVAL
            self.pinned[arg1] = cmd + 1
            if cmd == 3:
                v.install_xen_slots(arg1)
            return 0
        if cmd == 4:
            # MMUEXT_UNPIN_TABLE: "mfn .. not pinned"; else the pin's reference
            # is dropped (a table no one else references is devalidated).
            if arg1 not in self.pinned:
                return -E.EINVAL
            del self.pinned[arg1]
            types.put_type(arg1)
            return 0
        if cmd == 15:
            # MMUEXT_NEW_USER_BASEPTR: the same for the user root, which may be
            # 0 (none); the same frame again changes nothing ("Error %d
            # installing new mfn").
            if not (self._valid_mfn(arg1) or not arg1):
                return -E.EINVAL
            old = v.user_cr3
            if arg1 != old:
                rc = types.swap_root(arg1, old)
                if rc:
                    return rc
            v.new_baseptr(arg1, user=True)
            return 0
        if cmd in (6, 7, 8, 9, 10, 11):
            self.m.flush_tlb()
            return 0
        if cmd in (12, 18):
            return 0
        if cmd == 16:
            # MMUEXT_CLEAR_PAGE / COPY_PAGE take a writable type on the
            # destination: a page table's or a descriptor page's is refused
            # ("Error clearing mfn").
            if not self._valid_mfn(arg1) or types.type_of(arg1) not in (PT.NONE, PT.WRITABLE):
                return -E.EINVAL
            self.guest.write_machine(arg1 << 12, bytes(PAGE_SIZE))
            return 0
        if cmd == 17:
            if not (self._valid_mfn(arg1) and self._valid_mfn(arg2)) or \
                    types.type_of(arg1) not in (PT.NONE, PT.WRITABLE):
                return -E.EINVAL
            self.guest.write_machine(arg1 << 12, self.guest.read_machine(arg2 << 12, PAGE_SIZE))
            return 0
        if cmd in (19, 20):
            return -E.EOPNOTSUPP
        return -E.ENOSYS   # xen/arch/x86/mm.c do_mmuext_op: default: rc = -ENOSYS

    def _set_ldt(self, arg1: int, arg2: int) -> int:
        """MMUEXT_SET_LDT (linear_addr ``arg1``, nr_ents ``arg2``): 0 or -EINVAL."""
        # MMUEXT_SET_LDT (do_mmuext_op): nr_ents is a 32-bit field; over 8192
        # entries, or a base not page aligned or outside the guest's half
        # (__addr_ok: below 2^47 or from HYPERVISOR_VIRT_END), -EINVAL ("Bad
        # args to SET_LDT"); no entries: no base. Another table than the
        # current one drops the old one's page mappings and loads the LDTR;
        # the pages are mapped on the first access (pv_map_ldt_shadow_page):
        # pvmon.backends.xen.pv.ldt.
        # A PVH domain loads its own LDT: do_mmuext_op refuses its own page
        # owner, not a PV domain, with -EINVAL before any entry is read (its
        # hypercall table has hc_mmuext_op_hvm, pvh/hvm.py; real Xen 4.17.7
        # agreed, docs/xen-oracle.md difference 26); the same answer here.
        if self.mode != "pv":
            return -E.EINVAL
        ents = arg2 & 0xFFFF_FFFF
        if ents > ldt.MAX_ENTRIES or (ents and (arg1 & 0xFFF or not (
                arg1 < 1 << 47 or arg1 >= E.HYPERVISOR_VIRT_END))):
            return -E.EINVAL
        ldt.set_ldt(self, self.vcpu, arg1, ents)
        return 0

    def new_guest_cr3(self, mfn: int, load: bool = True) -> int:
        """new_guest_cr3 (xen/arch/x86/mm.c@stable-4.17) for the current vCPU:
        ``mfn`` becomes its kernel root. MMUEXT_NEW_BASEPTR calls it, and so
        does a kernel's ``mov %cr3`` (write_cr, pv/emul-priv-op.c; ``load``
        False: the engine loads CR3 itself). The frame must be the domain's
        and take an L4 (PGT_root_page_table) type reference, validating it if
        it had none ("Error while installing new baseptr"); the old root's is
        then dropped. The root in use again: no reference moves (write_ptbase
        only). A different root drops the vCPU's LDT page mappings
        (pv_destroy_ldt; pvmon.backends.xen.pv.ldt). 0 or -EINVAL."""
        if not self._valid_mfn(mfn):
            return -E.EINVAL
        v = self.vcpu
        old = v.kernel_cr3
        if mfn != old:
            rc = self.types.swap_root(mfn, old)
            if rc:
                return rc
            if v.ldt_pages:
                ldt.destroy(self, v)
        v.new_baseptr(mfn, user=False, load=load)
        return 0

    def hc_update_va_mapping(self, va, val, flags, *_):
        self.op = {"va": va, "val": val, "flags": flags}
        if val & PTE_P and not self._valid_pte(val):
            return self._l1e_foreign_rc((val & PTE_ADDR_MASK) >> 12)
        if self._writable_pt_mapping(val):
            return -E.EBUSY
        try:
            _, pte_ma = self.guest.walk(va)
        except GuestFault:
            pte_ma = self._l1_slot(va)
            if pte_ma is None:
                return -E.EINVAL
        l1 = pte_ma >> 12
        if self.types.type_of(l1) == PT.L1:
            rc = self.types.mod_l1(l1, self.m.read_u64_phys(pte_ma), val)
            if rc:
                return rc
            self.guest.write_machine(pte_ma, struct.pack("<Q", val))
        else:
            # Xen's do_update_va_mapping answers -EINVAL when the L1 it finds is
            # not an L1 page table; pvmon writes it, as before page types: a
            # live L1 always has its type here, and open-loop replay (which
            # sees no page-table contents the guest wrote itself) finds none.
            self.untyped_va_updates += 1
            self.guest.write_machine(pte_ma, struct.pack("<Q", val))
        if flags & E.UVMF_FLUSHTYPE_MASK:   # UVMF_INVLPG or UVMF_TLB_FLUSH: xen.h
            self.m.flush_tlb()
        return 0

    def set_l1e(self, pte_ma: int, val: int) -> None:
        """Write L1 entry ``val`` at machine address ``pte_ma`` for pvmon's own
        paths (grant mappings: create_grant_pv_mapping, replace_grant_pv_mapping,
        steal_linear_address), written through the recording access as before
        and accounted like an mmu_update of an L1 table: the new entry's
        writable reference taken, the old one's dropped. The caller has made
        its own checks (a writable grant of a page table is refused there)."""
        old = self.m.read_u64_phys(pte_ma)     # bookkeeping: not a recorded read
        self.guest.write_machine(pte_ma, struct.pack("<Q", val))
        l1 = pte_ma >> 12
        types = self.types
        if types.type_of(l1) != PT.L1:
            return
        if val & PTE_P and types.get_entry(1, l1, val):
            return                              # no reference to take (never for a grant)
        if old & PTE_P:
            types.put_entry(1, l1, old)

    def _l1_slot(self, va: int) -> int | None:
        """Machine address of the L1 entry for ``va`` when the L1 table exists
        but the entry itself is not present."""
        table = self.m.reg("cr3") & PTE_ADDR_MASK
        for shift in (39, 30, 21):
            e = self.guest.read_u64_phys(table + ((va >> shift) & 511) * 8)
            if not e & PTE_P or e & 0x80:
                return None
            table = e & PTE_ADDR_MASK
        return table + ((va >> 12) & 511) * 8
