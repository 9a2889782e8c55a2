"""Grant tables v1 and v2 of a 64-bit PV domU, as Xen 4.17 keeps them.

One :class:`GrantTable` per domain answers ``grant_table_op`` (hypercall 20)
the way ``do_grant_table_op`` does in ``xen/common/grant_table.c@stable-4.17``,
with the PV mapping paths of ``xen/arch/x86/pv/grant_table.c@stable-4.17`` and
the structures of ``xen/include/public/grant_table.h`` (names in
:mod:`pvmon.backends.xen.abi`). Each rule below names the function it follows.

The world a pvmon domU lives in: itself (``DOMID``, 1), which can grant to
itself and map, copy and transfer its own grants, and domain 0 (xenstored and
xenconsoled), which exists, is privileged and grants this domain nothing. Any
other domain id does not exist: ``rcu_lock_domain_by_id`` finds nothing and the
guest gets ``GNTST_bad_domain`` (or ``-ESRCH`` from ``get_version``).

Guest memory is reached only through the backend's recording access: the
argument structs through guest-virtual reads and writes (one read per struct,
as ``copy_from_guest`` takes it), the shared grant entries, the v2 status
entries and page-table entries through machine reads and writes, so open-loop
replay sees every input and output.

The table's frames: ``builder.GRANT_FRAMES`` shared frames from
``layout.grant_ma`` (the domain's ``max_grant_frames``; one in use at
creation, ``INITIAL_NR_GRANT_FRAMES``, more after ``setup_table``) and
``builder.GRANT_STATUS_FRAMES`` status frames at the top of machine memory
(v2 only). The guest may map only frames in use (``frame_shared``).

Not modelled, and why:

* a debug build's ``_PAGE_GNTTAB`` PTE bit (62) and its #GP on an implicit
  unmap (``put_page_from_l1e``, ``xen/arch/x86/mm.c``): the reference models a
  build with ``NDEBUG``, where the bit is 0;
* ``adjust_guest_l1e`` on the PTE a map writes (the guest-kernel and user
  bits): pvmon writes no PV L1 entry with them (its ``mmu_update`` neither);
* page reference and type counts are pvmon's: a frame "is" a page table when
  it is pinned or sits at level 1 below a live root (the current kernel and
  user L4, every pinned table), it "has" a writable-incompatible type when it is
  pinned or a loaded GDT frame, and it "is referenced" when a live page table,
  a pin, the GDT, the registered ``vcpu_info`` or an active grant names it;
* IOMMU mappings (no passthrough), I/O-memory grants, per-vCPU maptrack free
  lists and stealing (one vCPU).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from pvmon.backends.base import GuestFault
from pvmon.backends.xen import abi, builder
from pvmon.backends.xen.pv import pagetype as PT
from pvmon.engine.machine import (
    PAGE_SIZE,
    PTE_A,
    PTE_ADDR_MASK,
    PTE_D,
    PTE_NX,
    PTE_P,
    PTE_PS,
    PTE_RW,
    PTE_US,
)

E = abi
U32 = 0xFFFF_FFFF
INITIAL_NR_GRANT_FRAMES = 1      # xen/arch/x86/include/asm/grant_table.h@stable-4.17
MAX_GRANT_VERSION = 2            # gnttab=max-ver:2, the x86 PV default (xen-command-line)
MAX_MAPTRACK_FRAMES = 1024       # gnttab_max_maptrack_frames default (grant_table.c)
MAPTRACK_PER_PAGE = PAGE_SIZE // 16   # struct grant_mapping is 16 bytes
MAPTRACK_TAIL = U32
UNMAP_BATCH = 32                 # GNTTAB_UNMAP_BATCH_SIZE: a TLB flush per batch
V1_PER_PAGE = PAGE_SIZE // E.GRANT_ENTRY_V1_SIZE
V2_PER_PAGE = PAGE_SIZE // E.GRANT_ENTRY_V2_SIZE
STATUS_PER_PAGE = PAGE_SIZE // E.GRANT_STATUS_SIZE
# struct active_grant_entry.pin: four 8-bit counters (grant_table.c GNTPIN_*)
HSTW, HSTR, DEVW, DEVR = 1 << 0, 1 << 8, 1 << 16, 1 << 24
HSTW_MASK, DEVW_MASK = 0xFF << 0, 0xFF << 16
PAGE_AVAIL = 0xE00               # _PAGE_AVAIL: PTE bits 9-11 (asm/page.h)
_XEN_L4_SLOTS = range(256, 272)  # Xen-private L4 slots (is_guest_l4_slot)


def _oflow(pin_incr: int) -> int:
    """GNTPIN_incr2oflow_mask: the top bit of each counter being incremented."""
    return pin_incr << 7


def addr_ok(va: int) -> bool:
    """__addr_ok (xen/arch/x86/include/asm/uaccess.h@stable-4.17): below 2^47
    or at/above HYPERVISOR_VIRT_END; the hole Xen keeps and non-canonical
    addresses fail."""
    return va < 1 << 47 or va >= E.HYPERVISOR_VIRT_END


def handle_okay(va: int, nr: int, size: int) -> bool:
    """guest_handle_okay -> array_access_ok for a 64-bit PV guest: ``nr``
    elements of ``size`` bytes at ``va``; only the start address is checked."""
    return nr < 0xFFFF_FFFF_FFFF_FFFF // size and addr_ok(va)


def grant_to_status_frames(grant_frames: int) -> int:
    """Status frames a v2 table of ``grant_frames`` frames needs (grant_table.c)."""
    return -(-grant_frames * V2_PER_PAGE // STATUS_PER_PAGE)


@dataclass
class Active:
    """struct active_grant_entry of one pinned grant (kept while ``pin``)."""

    pin: int = 0
    domid: int = 0
    mfn: int = 0
    start: int = 0
    length: int = PAGE_SIZE
    is_sub_page: bool = False


@dataclass
class _CopyBuf:
    """struct gnttab_copy_buf: one side of a copy, kept across a batch."""

    domain: str | None = None      # "self" / "dom0" once locked
    domid: int = 0                 # ptr.domid as the guest named it
    u: int = 0                     # ptr.u: the ref (low 32 bits) or the gmfn
    offset: int = 0
    length: int = 0
    mfn: int = 0
    read_only: bool = False
    have_grant: bool = False
    virt: bool = False             # claimed (mapped)


@dataclass
class _Unmap:
    """struct gnttab_unmap_common: what unmap_common leaves for the completion."""

    status: int = 0
    done: int = 0
    ref: int = 0
    mfn: int = 0


@dataclass
class _Maptrack:
    """Handle-indexed struct grant_mapping table and vCPU 0's free list."""

    ref: list[int] = field(default_factory=list)     # grant ref, or the free-list link
    flags: list[int] = field(default_factory=list)   # GNTMAP_* (u16), 0 when free
    dom: list[int] = field(default_factory=list)
    head: int = MAPTRACK_TAIL
    tail: int = MAPTRACK_TAIL

    @property
    def limit(self) -> int:
        return len(self.ref)


class GrantTable:
    """The grant table of the domain a :class:`~pvmon.backends.xen.backend.XenBackend`
    serves. ``backend``: its owner (guest access, layout, version, page
    tables, vCPU); ``domid``: the domain's id."""

    def __init__(self, backend, domid: int) -> None:
        self.b = backend
        self.domid = domid
        self.guest = backend.guest
        lay = backend.layout
        self.shared_base = lay.grant_ma >> 12
        #: Machine address of each shared frame: Xen's own frames, until an
        #: auto-translated (PVH) guest maps one into its physmap (:meth:`map_frame_at`).
        self.frame_ma = [(self.shared_base + i) << 12 for i in range(builder.GRANT_FRAMES)]
        self.status_base = builder.grant_status_ma(backend.m.phys_bytes) >> 12
        self.max_frames = builder.GRANT_FRAMES
        self.version = 1
        self.nr_frames = INITIAL_NR_GRANT_FRAMES
        self.nr_status = 0
        self.active: dict[int, Active] = {}
        self.mt = _Maptrack()
        self._seed(lay)
        caps = backend.ver.capabilities
        self.unlimited = "gnttab_unlimited_batches" in caps
        self.pte_flag_check = "gnttab_unmap_checks_pte_flags" in caps
        self.copy_claims_first = "gnttab_copy_claims_first" in caps
        # XSA-227 (xen.git ce442926c2): a contains_pte address must be PTE-aligned
        self.pte_align = 7 if "xsa227_gnttab_pte_aligned" in caps else 0

    def _seed(self, lay) -> None:
        """The table a domU starts with under libxl: the toolstack grants the
        console and xenstore pages to domain 0 in the reserved entries
        (xc_dom_gnttab_seed, tools/libs/guest/xg_dom_boot.c@stable-4.17), and
        xenconsoled and xenstored map them read-write through those grants
        (tools/console/daemon/io.c, tools/xenstore/xenstored_domain.c
        map_interface): each entry reads GTF_permit_access|GTF_reading|
        GTF_writing, domid 0, and is pinned by domain 0. Written before the
        guest runs, like the rest of the start-of-day state."""
        busy = E.GTF_permit_access | E.GTF_reading | E.GTF_writing
        for ref, pfn in ((E.GNTTAB_RESERVED_CONSOLE, lay.console_pfn),
                         (E.GNTTAB_RESERVED_XENSTORE, lay.store_pfn)):
            self.b.m.write_phys_data(self._entry_ma(ref), struct.pack("<HHI", busy, 0, pfn))
            self.active[ref] = Active(pin=HSTW, domid=0, mfn=pfn)

    # ------------------------------------------------------------ frames
    def nr_entries(self) -> int:
        """nr_grant_entries: entries in the frames in use, for this version."""
        return self.nr_frames * (V1_PER_PAGE if self.version == 1 else V2_PER_PAGE)

    def frame_shared(self, mfn: int) -> bool:
        """True when ``mfn`` is a grant frame this domain may map: a shared
        frame in use, or (v2) a status frame (share_xen_page_with_guest in
        gnttab_grow_table and gnttab_populate_status_frames)."""
        i = mfn - self.shared_base
        if 0 <= i < self.nr_frames:
            return True
        return 0 <= mfn - self.status_base < self.nr_status

    def _entry_ma(self, ref: int) -> int:
        size = E.GRANT_ENTRY_V1_SIZE if self.version == 1 else E.GRANT_ENTRY_V2_SIZE
        off = ref * size
        frame = off >> 12
        if frame < len(self.frame_ma):
            return self.frame_ma[frame] + (off & 0xFFF)
        return (self.shared_base << 12) + off

    def _status_ma(self, ref: int) -> int | None:
        """Where GTF_reading/GTF_writing of ``ref`` live: the shared entry's
        flags (v1) or its status entry (v2); None for a v2 ref beyond the table."""
        if self.version == 1:
            return self._entry_ma(ref)
        if ref >= self.nr_entries():
            return None
        return (self.status_base << 12) + ref * E.GRANT_STATUS_SIZE

    def _u16(self, ma: int) -> int:
        return struct.unpack("<H", self.guest.read_machine(ma, 2))[0]

    def _set_u16(self, ma: int, v: int) -> None:
        self.guest.write_machine(ma, struct.pack("<H", v & 0xFFFF))

    def _header(self, ref: int) -> tuple[int, int]:
        """(flags, domid) of a shared entry: the combined pair Xen reads at once."""
        return struct.unpack("<HH", self.guest.read_machine(self._entry_ma(ref), 4))

    def _entry_frame(self, ref: int) -> int:
        ma = self._entry_ma(ref)
        if self.version == 1:
            return struct.unpack("<I", self.guest.read_machine(ma + 4, 4))[0]
        return struct.unpack("<Q", self.guest.read_machine(ma + 8, 8))[0]

    # ------------------------------------------------ domains and frames
    def _domain(self, dom: int, any_id: bool) -> str | None:
        """rcu_lock_domain_by_id / rcu_lock_domain_by_any_id (DOMID_SELF only
        with ``any_id``): "self", "dom0" or None (no such domain)."""
        if dom == self.domid or (any_id and dom == E.DOMID_SELF):
            return "self"
        if dom == 0:
            return "dom0"
        return None

    def _own_table_status(self, dom: int) -> int:
        """The GNTST status of a table operation naming ``dom`` (DOMID_SELF
        allowed): GNTST_okay for this domain, GNTST_permission_denied for
        another existing one (XSM_TARGET, xsm/dummy.h), GNTST_bad_domain for
        one that does not exist (common/grant_table.c)."""
        d = self._domain(dom, any_id=True)
        if d is None:
            return E.GNTST_bad_domain
        return E.GNTST_okay if d == "self" else E.GNTST_permission_denied

    def _owned(self, mfn: int) -> bool:
        """The frame belongs to this domain: its RAM, or a hypervisor page shared
        with it (shared_info, grant frames in use): get_page(page, d) succeeds."""
        b = self.b
        return b._valid_mfn(mfn) or mfn << 12 == b.layout.shared_info_ma or \
            self.frame_shared(mfn)

    def _writable_ok(self, mfn: int) -> bool:
        """get_page_type(page, PGT_writable_page) would succeed: the frame has no
        page-table or descriptor type (pvmon: not pinned, no L1-L4 type in
        ``b.types``, not a loaded GDT frame of any vCPU: no seg_desc type)."""
        b = self.b
        return mfn not in b.pinned and b.types.type_of(mfn) in (PT.NONE, PT.WRITABLE)

    def _live_tables(self):
        """Every (mfn, level) of the page tables in use: below the current kernel
        and user L4 and below every pinned table, Xen's L4 slots skipped. Tables
        are read whole through the recording access (one 4 KiB read each)."""
        b = self.b
        v = b.vcpu
        roots = [(v.kernel_cr3, 4)] + ([(v.user_cr3, 4)] if v.user_cr3 else [])
        roots += [(mfn, lvl) for mfn, lvl in b.pinned.items()]
        seen: set[tuple[int, int]] = set()
        stack = list(reversed(roots))
        while stack:
            mfn, lvl = stack.pop()
            if (mfn, lvl) in seen or not b._valid_mfn(mfn):
                continue
            seen.add((mfn, lvl))
            yield mfn, lvl
            if lvl == 1:
                continue
            entries = struct.unpack("<512Q", self.guest.read_machine(mfn << 12, PAGE_SIZE))
            for i in range(511, -1, -1):
                e = entries[i]
                if not e & PTE_P or (lvl == 4 and i in _XEN_L4_SLOTS) or \
                        (lvl in (2, 3) and e & PTE_PS):
                    continue
                stack.append(((e & PTE_ADDR_MASK) >> 12, lvl - 1))

    def _is_l1(self, mfn: int) -> bool:
        """The frame is in use as an L1 page table (page_lock succeeds and its
        type is PGT_l1_page_table, pv/grant_table.c)."""
        return any(m == mfn and lvl == 1 for m, lvl in self._live_tables())

    def _mapped(self, mfn: int) -> bool:
        """Some live page table has an entry naming ``mfn`` (a reference Xen counts)."""
        for table, lvl in self._live_tables():
            if table == mfn:
                return True
            if lvl != 1:
                continue
            entries = struct.unpack("<512Q", self.guest.read_machine(table << 12, PAGE_SIZE))
            if any(e & PTE_P and (e & PTE_ADDR_MASK) >> 12 == mfn for e in entries):
                return True
        return False

    def _referenced(self, mfn: int) -> bool:
        """Any reference to the frame beyond its allocation: steal_page needs none."""
        b = self.b
        if mfn in b.pinned or b.types.type_of(mfn) == PT.SEG_DESC or \
                mfn == b.vcpu.vcpu_info_ma() >> 12:
            return True
        if any(a.mfn == mfn for a in self.active.values()):
            return True
        return self._mapped(mfn)

    # ------------------------------------------------------ the hypercall
    def op(self, cmd: int, uop: int, count: int) -> int:
        """do_grant_table_op(cmd, uop, count): the value for RAX. ``cmd`` and
        ``count`` are the low 32 bits of their registers. A count that does not
        fit an int is -EINVAL, as is a continuation argument above the command's
        12 bits on anything but cache_flush; unknown commands and dump_table
        (not in 4.17's switch) are -ENOSYS."""
        cmd &= U32
        count &= U32
        name = E.GNTTABOP_CMDS.get(cmd & E.GNTTABOP_CMD_MASK, cmd)
        self.b.op = {"cmd": name, "count": count}
        if not self.unlimited and count > 512:
            return -E.EINVAL          # 3.4: "if ( count > 512 ) return -EINVAL"
        if count >= 1 << 31:
            return -E.EINVAL
        opaque = cmd & ~E.GNTTABOP_CMD_MASK
        cmd &= E.GNTTABOP_CMD_MASK
        if cmd != E.GNTTABOP_cache_flush and opaque:
            return -E.EINVAL
        fn = self._OPS.get(cmd)
        if fn is None:
            return -E.ENOSYS
        size = E.GNTTAB_ARG_SIZE[name]
        if cmd in self._BATCHED and not handle_okay(uop, count, size):
            return -E.EFAULT
        if cmd == E.GNTTABOP_cache_flush:
            return self._cache_flush(uop, count, opaque)
        return fn(self, uop, count)

    def _read(self, va: int, size: int) -> bytes:
        return self.guest.read(va, size)

    def _write(self, va: int, data: bytes) -> None:
        self.guest.write(va, data)

    # ======================================================= setup / query
    def _setup_table(self, uop: int, count: int) -> int:
        """gnttab_setup_table: grow the table to ``nr_frames`` (at most the
        domain's max_grant_frames: GNTST_general_error) and write the frames'
        numbers; DOMID_SELF or the domain's own id; another existing domain is
        GNTST_permission_denied (xsm_grant_setup, XSM_TARGET), a missing one
        GNTST_bad_domain. A frame the list cannot take is GNTST_bad_virt_addr."""
        if count != 1:
            return -E.EINVAL
        dom, nr, frame_list = struct.unpack("<H2xI8xQ", self._read(uop, 24))
        if not handle_okay(frame_list, nr, 8):
            return -E.EFAULT
        status = self._own_table_status(dom)
        if status == E.GNTST_okay and nr > self.max_frames:
            status = E.GNTST_general_error
        if status == E.GNTST_okay:
            if nr > self.nr_frames or (self.version > 1 and
                                       grant_to_status_frames(nr) > self.nr_status):
                self._grow(nr)
            for i in range(nr):
                try:
                    self._write(frame_list + 8 * i, struct.pack("<Q", self.shared_base + i))
                except GuestFault:
                    status = E.GNTST_bad_virt_addr
        self._write(uop + 8, struct.pack("<h", status))
        return 0

    def _grow(self, req: int) -> None:
        """gnttab_grow_table: new shared frames (and, in v2, status frames)
        start cleared."""
        req = max(req, INITIAL_NR_GRANT_FRAMES)
        for i in range(self.nr_frames, req):
            self.guest.write_machine(self.frame_ma[i], bytes(PAGE_SIZE))
        if self.version > 1:
            self._populate_status(req)
        self.nr_frames = max(self.nr_frames, req)

    def map_frame_at(self, frame: int, status: bool, ma: int) -> int:
        """XENMEM_add_to_physmap with XENMAPSPACE_grant_table from an
        auto-translated (PVH) domain: shared frame ``frame`` (growing the
        table to it, as gnttab_map_frame does) now appears at machine address
        ``ma``, its contents with it. Status frames (``status``) are not
        offered to PVH guests here: -EINVAL. Returns 0 or a negative errno
        (xen/common/grant_table.c gnttab_map_frame@stable-4.17)."""
        if status or frame >= self.max_frames:
            return -E.EINVAL
        if frame >= self.nr_frames:
            self._grow(frame + 1)
        old = self.frame_ma[frame]
        if ma >= self.b.m.phys_bytes:
            # an unpopulated guest frame (Linux PVH takes grant frames from above
            # RAM): Xen's frame appears there, and stays where pvmon keeps it
            return 0 if self.b.m.alias_frame(ma, old) else -E.EINVAL
        if old != ma:
            self.b.m.write_phys_data(ma, self.b.m.read_phys(old, PAGE_SIZE))
            self.frame_ma[frame] = ma
        return 0

    def _populate_status(self, grant_frames: int) -> None:
        """gnttab_populate_status_frames: cleared status frames for the table."""
        want = grant_to_status_frames(grant_frames)
        for i in range(self.nr_status, want):
            self.guest.write_machine((self.status_base + i) << 12, bytes(PAGE_SIZE))
        self.nr_status = max(self.nr_status, want)

    def _query_size(self, uop: int, count: int) -> int:
        """gnttab_query_size: frames in use and the domain's maximum; the same
        domain errors as setup_table (xsm_grant_query_size)."""
        if count != 1:
            return -E.EINVAL
        dom, nr, mx = struct.unpack("<H2xII4x", self._read(uop, 16))
        status = self._own_table_status(dom)
        if status == E.GNTST_okay:
            nr, mx = self.nr_frames, self.max_frames
        self._write(uop + 4, struct.pack("<IIh", nr, mx, status))
        return 0

    # ============================================================ versions
    def _set_version(self, uop: int, count: int) -> int:
        """gnttab_set_version: 1 or 2 (-EINVAL otherwise; v2 is allowed unless
        the domain was created with max_grant_version 1, which answers -ENOSYS:
        pvmon's domains take the default, 2). Switching needs every entry from
        GNTTAB_NR_RESERVED_ENTRIES on unpinned (-EBUSY); v2 -> v1 needs the
        first eight entries representable in v1 (-ERANGE) and no mapping of a
        status frame left (-EBUSY, gnttab_unpopulate_status_frames). The shared
        frames are cleared, the reserved entries kept (converted), status frames
        added or dropped. The version in force is always written back."""
        (want,) = struct.unpack("<I", self._read(uop, 4))
        if want not in (1, 2):
            res = -E.EINVAL
        elif want == 2 and MAX_GRANT_VERSION == 1:
            res = -E.ENOSYS
        elif want == self.version:
            res = 0
        else:
            res = self._switch_version(want)
        self._write(uop, struct.pack("<I", self.version))
        return res

    def _switch_version(self, want: int) -> int:
        n = self.nr_entries()
        if any(ref >= E.GNTTAB_NR_RESERVED_ENTRIES and ref < n and a.pin
               for ref, a in self.active.items()):
            return -E.EBUSY
        rsv = E.GNTTAB_NR_RESERVED_ENTRIES
        if self.version == 1:
            self._populate_status(self.nr_frames)
            raw = self.guest.read_machine(self._entry_ma(0), rsv * E.GRANT_ENTRY_V1_SIZE)
            kept = [struct.unpack_from("<HHI", raw, 8 * i) for i in range(rsv)]
        else:
            raw = self.guest.read_machine(self._entry_ma(0), rsv * E.GRANT_ENTRY_V2_SIZE)
            entries = [struct.unpack_from("<HH4xQ", raw, 16 * i) for i in range(rsv)]
            for flags, _dom, frame in entries:
                typ = flags & E.GTF_type_mask
                if typ == E.GTF_transitive or (typ == E.GTF_permit_access and frame >> 32):
                    return -E.ERANGE
            status = self.guest.read_machine(self._status_ma(0), rsv * 2)
            kept = []
            for i, (flags, dom, frame) in enumerate(entries):
                if flags & E.GTF_type_mask == E.GTF_permit_access:
                    kept.append((flags | struct.unpack_from("<H", status, 2 * i)[0], dom,
                                 frame & U32))
                else:
                    kept.append((0, 0, 0))
            if any(self._mapped(self.status_base + i) for i in range(self.nr_status)):
                return -E.EBUSY
            self.nr_status = 0
        for i in range(self.nr_frames):
            self.guest.write_machine((self.shared_base + i) << 12, bytes(PAGE_SIZE))
        self.version = want
        if want == 1:
            self.guest.write_machine(self._entry_ma(0), b"".join(
                struct.pack("<HHI", *e) for e in kept))
        else:
            busy = E.GTF_reading | E.GTF_writing
            self.guest.write_machine(self._status_ma(0), b"".join(
                struct.pack("<H", f & busy) for f, _d, _fr in kept))
            self.guest.write_machine(self._entry_ma(0), b"".join(
                struct.pack("<HH4xQ", f & ~busy, d, fr) for f, d, fr in kept))
        return 0

    def _get_status_frames(self, uop: int, count: int) -> int:
        """gnttab_get_status_frames: the status frames' numbers (v2); asking
        for more than there are (any, in v1) is GNTST_general_error; domain
        errors as setup_table."""
        if count != 1:
            return -E.EINVAL
        nr, dom, _st, frame_list = struct.unpack("<IHhQ", self._read(uop, 16))
        self.b.op.update(dom=dom, nr_frames=nr)
        if not handle_okay(frame_list, nr, 8):
            return -E.EFAULT
        status = self._own_table_status(dom)
        if status == E.GNTST_okay and nr > self.nr_status:
            status = E.GNTST_general_error
        if status == E.GNTST_okay:
            for i in range(nr):
                try:
                    self._write(frame_list + 8 * i, struct.pack("<Q", self.status_base + i))
                except GuestFault:
                    status = E.GNTST_bad_virt_addr
        self._write(uop + 6, struct.pack("<h", status))
        return 0

    def _get_version(self, uop: int, count: int) -> int:
        """gnttab_get_version: a missing domain is -ESRCH, another existing one
        -EPERM (xsm_grant_query_size); the version is written at offset 4."""
        dom = struct.unpack("<H6x", self._read(uop, 8))[0]
        d = self._domain(dom, any_id=True)
        if d is None:
            return -E.ESRCH
        if d != "self":
            return -E.EPERM
        self._write(uop + 4, struct.pack("<I", self.version))
        return 0

    # ======================================================= active entries
    def _set_status(self, ref: int, act: Active, readonly: bool, mapflag: bool) -> int:
        """_set_status_v1 / _set_status_v2: before a first pin the entry must
        grant access (GTF_permit_access; for copies in v2 also GTF_transitive;
        GTF_sub_page never for maps) to this domain; a writable pin of a
        GTF_readonly entry is refused; then GTF_reading (and GTF_writing) are
        set in the entry (v1) or its status entry (v2). GNTST_general_error
        when refused."""
        flags, domid = self._header(ref)
        mask = E.GTF_type_mask | (E.GTF_sub_page if mapflag else 0)
        typ = flags & mask
        if self.version == 1:
            bad_type = typ != E.GTF_permit_access
        else:
            bad_type = typ != E.GTF_permit_access and (mapflag or typ != E.GTF_transitive)
        if not act.pin and (bad_type or domid != self.domid):
            return E.GNTST_general_error
        if not readonly and flags & E.GTF_readonly:
            return E.GNTST_general_error
        st = self._status_ma(ref)
        cur = flags if self.version == 1 else self._u16(st)
        self._set_u16(st, cur | E.GTF_reading | (0 if readonly else E.GTF_writing))
        return E.GNTST_okay

    def _reduce_status(self, act: Active, st: int | None, readonly: bool) -> None:
        """reduce_status_for_pin: GTF_reading cleared once nothing is pinned,
        GTF_writing once no writable pin is left."""
        if st is None:
            return
        clear = 0 if act.pin else E.GTF_reading
        if not readonly and not act.pin & (HSTW_MASK | DEVW_MASK):
            clear |= E.GTF_writing
        if clear:                       # gnttab_clear_flags: a locked andw, always a write
            self._set_u16(st, self._u16(st) & ~clear)

    def _act(self, ref: int) -> Active:
        return self.active.get(ref) or Active()

    def _keep(self, ref: int, act: Active) -> None:
        if act.pin:
            self.active[ref] = act
        else:
            self.active.pop(ref, None)

    # ============================================================ maptrack
    def _get_handle(self) -> int | None:
        """get_maptrack_handle for vCPU 0: the head of its free list, which
        always keeps one entry; a new maptrack page when that is all there is
        (its first entry is the handle, the rest go to the list's head); None
        when every maptrack frame is in use (GNTST_no_space)."""
        mt = self.mt
        head = mt.head
        if head != MAPTRACK_TAIL:
            nxt = mt.ref[head]
            if nxt != MAPTRACK_TAIL:
                mt.head = nxt
                return head
        if mt.limit // MAPTRACK_PER_PAGE >= MAX_MAPTRACK_FRAMES:
            return None
        handle = mt.limit
        mt.ref.extend(range(handle + 1, handle + MAPTRACK_PER_PAGE + 1))
        mt.flags.extend([0] * MAPTRACK_PER_PAGE)
        mt.dom.extend([0] * MAPTRACK_PER_PAGE)
        if mt.tail == MAPTRACK_TAIL:
            mt.tail = handle + MAPTRACK_PER_PAGE - 1
        mt.ref[handle + MAPTRACK_PER_PAGE - 1] = mt.head
        mt.head = handle + 1
        return handle

    def _put_handle(self, handle: int) -> None:
        """put_maptrack_handle: the entry becomes the free list's tail."""
        mt = self.mt
        mt.ref[handle] = MAPTRACK_TAIL
        mt.flags[handle] = 0
        mt.ref[mt.tail] = handle
        mt.tail = handle

    # ============================================================== map
    def _map(self, uop: int, count: int) -> int:
        """gnttab_map_grant_ref: each struct gnttab_map_grant_ref is read,
        mapped (map_grant_ref) and written back whole (status, handle,
        dev_bus_addr)."""
        statuses = []
        for i in range(count):
            va = uop + 32 * i
            host, flags, ref, dom, _st, handle, dev = struct.unpack("<QIIHhIQ",
                                                                   self._read(va, 32))
            status, handle, dev = self._map_one(host, flags, ref, dom, handle, dev)
            statuses.append(status)
            if count == 1:
                self.b.op.update(dom=dom, ref=ref, flags=flags, host_addr=host)
            self._write(va, struct.pack("<QIIHhIQ", host, flags, ref, dom, status, handle, dev))
        self.b.op["status"] = statuses
        return 0

    def _map_one(self, host: int, flags: int, ref: int, dom: int, handle_in: int,
                 dev_in: int) -> tuple[int, int, int]:
        """map_grant_ref (common/grant_table.c@stable-4.17), in its order:
        no device_map or host_map -> GNTST_bad_gntref; ``dom`` looked up by
        id (DOMID_SELF is not an id: GNTST_bad_domain); a maptrack handle
        (GNTST_no_space); the ref within the table (GNTST_bad_gntref); an
        entry pinned by another domain or near its counters' overflow
        (128 pins of one kind) -> GNTST_general_error; the entry's access
        (_set_status); the granted frame this domain's (GNTST_bad_page); a
        writable device or host mapping of a frame that has a page-table or
        descriptor type -> GNTST_general_error; then the host mapping
        (create_grant_pv_mapping). Returns (status, handle, dev_bus_addr);
        on failure the guest's handle and dev_bus_addr come back unchanged."""
        ro = bool(flags & E.GNTMAP_readonly)
        pin_incr = 0
        if flags & E.GNTMAP_device_map:
            pin_incr += DEVR if ro else DEVW
        if flags & E.GNTMAP_host_map:
            pin_incr += HSTR if ro else HSTW
        if not pin_incr:
            return E.GNTST_bad_gntref, handle_in, dev_in
        d = self._domain(dom, any_id=False)
        if d is None:
            return E.GNTST_bad_domain, handle_in, dev_in
        handle = self._get_handle()
        if handle is None:
            return E.GNTST_no_space, handle_in, dev_in
        if d != "self":
            # Domain 0's table grants this domain nothing (and pvmon does not know its
            # size: a ref beyond it would be GNTST_bad_gntref under Xen).
            self._put_handle(handle)
            return E.GNTST_general_error, handle_in, dev_in
        if ref >= self.nr_entries():
            self._put_handle(handle)
            return E.GNTST_bad_gntref, handle_in, dev_in
        act = self._act(ref)
        if act.pin and (act.domid != self.domid or act.pin & _oflow(pin_incr) or act.is_sub_page):
            self._put_handle(handle)
            return E.GNTST_general_error, handle_in, dev_in
        st = self._status_ma(ref)
        if not act.pin or (not ro and not act.pin & (HSTW_MASK | DEVW_MASK)):
            rc = self._set_status(ref, act, ro, mapflag=True)
            if rc:
                self._put_handle(handle)
                return rc, handle_in, dev_in
            if not act.pin:
                gfn = self._entry_frame(ref)
                if not self._owned(gfn):
                    self._reduce_status(act, st, ro)
                    self._put_handle(handle)
                    return E.GNTST_bad_page, handle_in, dev_in
                act = Active(domid=self.domid, mfn=gfn)
        act.pin += pin_incr
        self._keep(ref, act)
        mfn = act.mfn
        rc = E.GNTST_okay
        if not ro and not self._writable_ok(mfn):
            rc = E.GNTST_general_error          # get_page_type(PGT_writable_page) fails
        elif flags & E.GNTMAP_host_map:
            rc = self._create_mapping(host, mfn, flags)
        if rc:
            act.pin -= pin_incr
            self._keep(ref, act)
            self._reduce_status(act, self._status_ma(ref), ro)
            self._put_handle(handle)
            return rc, handle_in, dev_in
        mt = self.mt
        mt.ref[handle], mt.dom[handle], mt.flags[handle] = ref, dom, flags & 0xFFFF
        return E.GNTST_okay, handle, mfn << 12

    def _map_guest_l1e(self, linear: int) -> int | None:
        """map_guest_l1e (xen/arch/x86/pv/mm.c): machine address of the L1 entry
        for ``linear`` in the current page tables, or None when the address is
        not a guest one (__addr_ok) or an upper level is absent or a superpage."""
        if not addr_ok(linear):
            return None
        # Hypercalls come from guest kernel mode: the kernel's L4 is the one in CR3.
        table = self.b.vcpu.kernel_cr3 << 12
        for shift in (39, 30, 21):
            e = self.b.guest.read_u64_phys(table + ((linear >> shift) & 511) * 8)
            if not e & PTE_P or e & PTE_PS or not self.b._valid_mfn((e & PTE_ADDR_MASK) >> 12):
                return None
            table = e & PTE_ADDR_MASK
        return table + ((linear >> 12) & 511) * 8

    @staticmethod
    def _grant_pte_flags(flags: int) -> int:
        """grant_to_pte_flags (pv/grant_table.c): present, accessed, dirty, NX;
        user for GNTMAP_application_map, writable unless GNTMAP_readonly; the
        flags' guest-available bits (from bit 16) in PTE bits 9-11."""
        pte = PTE_P | PTE_A | PTE_D | PTE_NX
        if flags & E.GNTMAP_application_map:
            pte |= PTE_US
        if not flags & E.GNTMAP_readonly:
            pte |= PTE_RW
        pte |= ((flags >> E.GNTMAP_guest_avail0) << 9) & PAGE_AVAIL
        return pte

    def _create_mapping(self, addr: int, mfn: int, flags: int) -> int:
        """create_grant_pv_mapping: with GNTMAP_contains_pte ``addr`` is the
        machine address of an L1 entry, which must be 8-byte aligned, in a frame
        of this domain's that is in use as an L1 table; otherwise a linear
        address whose L1 entry the current page tables hold. Either failing is
        GNTST_general_error; the entry is overwritten with the grant's PTE."""
        if flags & E.GNTMAP_contains_pte:
            if addr & self.pte_align or not self.b._valid_mfn(addr >> 12) or \
                    not self._is_l1(addr >> 12):
                return E.GNTST_general_error
            pte_ma = addr
        else:
            pte_ma = self._map_guest_l1e(addr)
            if pte_ma is None:
                return E.GNTST_general_error
        self.b.set_l1e(pte_ma, (mfn << 12) | self._grant_pte_flags(flags))
        return E.GNTST_okay

    # ============================================================ unmap
    def _unmap(self, uop: int, count: int) -> int:
        """gnttab_unmap_grant_ref: batches of 32, each op's status written as it
        is done, a TLB flush after each batch, then the pins dropped."""
        return self._unmap_batches(uop, count, replace=False)

    def _unmap_and_replace(self, uop: int, count: int) -> int:
        """gnttab_unmap_and_replace: as unmap, with the PTE at ``new_addr``
        moved into the grant's place (only for host-virtual mappings)."""
        return self._unmap_batches(uop, count, replace=True)

    def _unmap_batches(self, uop: int, count: int, replace: bool) -> int:
        statuses = []
        batch: list[_Unmap] = []
        rc = 0
        for i in range(count):
            va = uop + 24 * i
            try:
                a, bb, handle = struct.unpack("<QQI4x", self._read(va, 24))
            except GuestFault:
                rc = -E.EFAULT
                break
            if replace:
                c = self._unmap_common(a, 0, bb, handle)
            else:
                c = self._unmap_common(a, bb, 0, handle)
            batch.append(c)
            statuses.append(c.status)
            if count == 1:
                self.b.op.update(host_addr=a, handle=handle)
            try:
                self._write(va + 20, struct.pack("<h", c.status))
            except GuestFault:
                rc = -E.EFAULT
                break
            if len(batch) == UNMAP_BATCH:
                self._complete(batch)
                batch = []
        if batch:
            self._complete(batch)
        self.b.op["status"] = statuses
        return rc

    def _complete(self, batch: list[_Unmap]) -> None:
        """gnttab_flush_tlb, then unmap_common_complete for each op of the batch."""
        self.b.m.flush_tlb()
        for c in batch:
            if not c.done:
                continue
            act = self._act(c.ref)
            ro = bool(c.done & E.GNTMAP_readonly)
            if c.done & E.GNTMAP_device_map:
                act.pin -= DEVR if ro else DEVW
            if c.done & E.GNTMAP_host_map:
                act.pin -= HSTR if ro else HSTW
            self._keep(c.ref, act)
            self._reduce_status(act, self._status_ma(c.ref), ro)

    def _unmap_common(self, host: int, dev: int, new: int, handle: int) -> _Unmap:
        """unmap_common: a handle beyond the maptrack table or not in use is
        GNTST_bad_handle; a device address other than the mapping's is
        GNTST_bad_dev_addr; with ``host`` the host mapping is removed
        (replace_grant_pv_mapping, GNTST_general_error when it fails); with
        ``dev`` the device mapping. With neither, nothing happens and the
        handle stays in use. The handle is freed once neither mapping remains."""
        c = _Unmap()
        mt = self.mt
        if handle >= mt.limit or not mt.flags[handle]:
            c.status = E.GNTST_bad_handle
            return c
        ref, flags = mt.ref[handle], mt.flags[handle]
        if ref >= self.nr_entries():
            c.status = E.GNTST_bad_handle
            return c
        act = self._act(ref)
        c.ref, c.mfn = ref, act.mfn
        if dev and flags & E.GNTMAP_device_map and dev != act.mfn << 12:
            c.status = E.GNTST_bad_dev_addr
            return c
        if host and flags & E.GNTMAP_host_map:
            rc = self._replace_mapping(host, act.mfn, new, flags)
            if rc:
                c.status = rc
                return c
            mt.flags[handle] &= ~E.GNTMAP_host_map
            c.done |= E.GNTMAP_host_map | (flags & E.GNTMAP_readonly)
        if dev and flags & E.GNTMAP_device_map:
            mt.flags[handle] &= ~E.GNTMAP_device_map
            c.done |= E.GNTMAP_device_map | (flags & E.GNTMAP_readonly)
        if not mt.flags[handle] & (E.GNTMAP_device_map | E.GNTMAP_host_map):
            self._put_handle(handle)
        return c

    def _replace_mapping(self, addr: int, frame: int, new_addr: int, flags: int) -> int:
        """replace_grant_pv_mapping (pv/grant_table.c@stable-4.17): find the
        grant's L1 entry as create did (a contains_pte mapping cannot be
        replaced: ``new_addr`` is GNTST_general_error there); with ``new_addr``,
        first take the PTE mapping it (steal_linear_address, which leaves it
        empty even if the rest fails). The entry must map ``frame`` and agree
        with the mapping in present and writable (XSA-234); it becomes the
        stolen PTE, or empty. GNTST_general_error otherwise."""
        nl1e = 0
        if flags & E.GNTMAP_contains_pte:
            if new_addr or addr & self.pte_align or not self.b._valid_mfn(addr >> 12) or \
                    not self._is_l1(addr >> 12):
                return E.GNTST_general_error
            pte_ma = addr
        else:
            if new_addr:
                steal = self._map_guest_l1e(new_addr)
                if steal is None:
                    return E.GNTST_general_error
                nl1e = self.b.guest.read_u64_phys(steal)
                self.b.set_l1e(steal, 0)
            pte_ma = self._map_guest_l1e(addr)
            if pte_ma is None:
                return E.GNTST_general_error
        old = self.b.guest.read_u64_phys(pte_ma)
        want = self._grant_pte_flags(flags)
        if (old & PTE_ADDR_MASK) >> 12 != frame:
            return E.GNTST_general_error
        if self.pte_flag_check and (old ^ want) & (PTE_P | PTE_RW):
            return E.GNTST_general_error
        self.b.set_l1e(pte_ma, nl1e)
        return E.GNTST_okay

    # ============================================================== copy
    def _copy(self, uop: int, count: int) -> int:
        """gnttab_copy: each struct gnttab_copy gets its status (gnttab_copy_one);
        a side stays claimed for the next op while it names the same domain and
        ref or frame, and is released at the end or on an error."""
        src, dest = _CopyBuf(), _CopyBuf()
        rc = 0
        statuses = []
        for i in range(count):
            va = uop + 40 * i
            try:
                op = struct.unpack("<QHH4xQHH4xHHh2x", self._read(va, 40))
            except GuestFault:
                rc = -E.EFAULT
                break
            status = self._copy_one(op, dest, src)
            if status != E.GNTST_okay:
                self._release_buf(src)
                self._release_buf(dest)
            statuses.append(status)
            try:
                self._write(va + 36, struct.pack("<h", status))
            except GuestFault:
                rc = -E.EFAULT
                break
        self._release_buf(src)
        self._release_buf(dest)
        self.b.op["status"] = statuses
        return rc

    def _copy_one(self, op: tuple, dest: _CopyBuf, src: _CopyBuf) -> int:
        """gnttab_copy_one (4.6 and later): lock both domains (a frame may be
        named only by DOMID_SELF: GNTST_permission_denied; a missing domain
        GNTST_bad_domain), claim the source read-only and the destination
        writable, then check the lengths (gnttab_copy_buf). Before 4.6
        (__gnttab_copy, 3.4) the lengths came first and a bad frame was
        GNTST_general_error."""
        s_u, s_dom, s_off, d_u, d_dom, d_off, length, flags, _st = op
        if not self.copy_claims_first:
            return self._copy_34(op)
        if src.domain is None or s_dom != src.domid or dest.domain is None or \
                d_dom != dest.domid:
            self._release_buf(src)
            self._release_buf(dest)
            src.domain = dest.domain = None
            rc = self._lock(s_dom, flags & E.GNTCOPY_source_gref, src)
            if rc == E.GNTST_okay:
                rc = self._lock(d_dom, flags & E.GNTCOPY_dest_gref, dest)
            if rc != E.GNTST_okay:
                src.domain = dest.domain = None
                return rc
        for u, buf, flag in ((s_u, src, E.GNTCOPY_source_gref), (d_u, dest, E.GNTCOPY_dest_gref)):
            if not self._buf_valid(u, buf, flags & flag):
                self._release_buf(buf)
                rc = self._claim(u, buf, flags & flag, flag == E.GNTCOPY_source_gref)
                if rc != E.GNTST_okay:
                    return rc
        if s_off + length > PAGE_SIZE or d_off + length > PAGE_SIZE:
            return E.GNTST_bad_copy_arg
        for off, buf in ((s_off, src), (d_off, dest)):
            if off < buf.offset or off + length > buf.offset + buf.length:
                return E.GNTST_general_error
        data = self.guest.read_machine((src.mfn << 12) + s_off, length)
        self.guest.write_machine((dest.mfn << 12) + d_off, data)
        return E.GNTST_okay

    def _lock(self, domid: int, is_gref: int, buf: _CopyBuf) -> int:
        """gnttab_copy_lock_domain."""
        if domid != E.DOMID_SELF and not is_gref:
            return E.GNTST_permission_denied
        d = self._domain(domid, any_id=True)
        if d is None:
            return E.GNTST_bad_domain
        buf.domain, buf.domid = d, domid
        return E.GNTST_okay

    @staticmethod
    def _buf_valid(u: int, buf: _CopyBuf, has_gref: int) -> bool:
        """gnttab_copy_buf_valid: the same ref (its 32 bits) or the same frame."""
        if not buf.virt:
            return False
        if has_gref:
            return buf.have_grant and u & U32 == buf.u & U32
        return u == buf.u

    def _claim(self, u: int, buf: _CopyBuf, is_gref: int, source: bool) -> int:
        """gnttab_copy_claim_buf: a ref through acquire_grant_for_copy, a frame
        through get_paged_frame (this domain's, else GNTST_bad_page); a
        destination must take a writable type (GNTST_general_error)."""
        buf.read_only = source
        if is_gref:
            rc, mfn, off, length = self._acquire(buf.domain, u & U32, buf.read_only)
            if rc != E.GNTST_okay:
                return rc
            buf.u = (buf.u & ~U32) | (u & U32)
            buf.have_grant = True
            buf.mfn, buf.offset, buf.length = mfn, off, length
        else:
            if not self._owned(u):
                return E.GNTST_bad_page
            buf.u, buf.mfn, buf.offset, buf.length = u, u, 0, PAGE_SIZE
        if not buf.read_only and not self._writable_ok(buf.mfn):
            return E.GNTST_general_error
        buf.virt = True
        return E.GNTST_okay

    def _release_buf(self, buf: _CopyBuf) -> None:
        """gnttab_copy_release_buf."""
        buf.virt = False
        if buf.have_grant:
            self._release(buf.u & U32, buf.read_only)
            buf.have_grant = False

    def _acquire(self, rd: str | None, ref: int, readonly: bool) -> tuple[int, int, int, int]:
        """acquire_grant_for_copy: (status, mfn, offset, length). As a map
        takes it, with v2 sub-page grants (their offset and length bound the
        copy) and transitive grants, which in pvmon's world always fail
        (GNTST_general_error: one that names this domain refers to itself;
        any other domain grants nothing)."""
        if rd != "self":
            return E.GNTST_general_error, 0, 0, 0
        if ref >= self.nr_entries():
            return E.GNTST_bad_gntref, 0, 0, 0
        pin_incr = HSTR if readonly else HSTW
        act = self._act(ref)
        if act.pin and (act.domid != self.domid or act.pin & _oflow(pin_incr)):
            return E.GNTST_general_error, 0, 0, 0
        st = self._status_ma(ref)
        old_pin = act.pin
        flags = self._header(ref)[0]
        need_status = not old_pin or (not readonly and not old_pin & (DEVW_MASK | HSTW_MASK))
        if self.version == 2 and flags & E.GTF_type_mask == E.GTF_transitive:
            if need_status:
                rc = self._set_status(ref, act, readonly, mapflag=False)
                if rc:
                    return rc, 0, 0, 0
            self._reduce_status(act, st, readonly)
            return E.GNTST_general_error, 0, 0, 0
        if need_status:
            rc = self._set_status(ref, act, readonly, mapflag=False)
            if rc:
                return rc, 0, 0, 0
            start, length, sub = 0, PAGE_SIZE, False
            if self.version == 2 and flags & E.GTF_sub_page:
                off, length = struct.unpack("<HH", self.guest.read_machine(
                    self._entry_ma(ref) + 4, 4))
                start, sub = off & 0x7FFF, True
            gfn = self._entry_frame(ref)
            if not self._owned(gfn):
                self._reduce_status(act, st, readonly)
                return E.GNTST_bad_page, 0, 0, 0
            if not act.pin:
                act = Active(domid=self.domid, mfn=gfn, start=start, length=length,
                             is_sub_page=sub)
            elif act.mfn != gfn or (act.is_sub_page and (not sub or act.start != start or
                                                        act.length != length)):
                self._reduce_status(act, st, readonly)
                return E.GNTST_general_error, 0, 0, 0
        act.pin += pin_incr
        self._keep(ref, act)
        return E.GNTST_okay, act.mfn, act.start, act.length

    def _release(self, ref: int, readonly: bool) -> None:
        """release_grant_for_copy."""
        act = self._act(ref)
        act.pin -= HSTR if readonly else HSTW
        self._keep(ref, act)
        self._reduce_status(act, self._status_ma(ref), readonly)

    def _copy_34(self, op: tuple) -> int:
        """__gnttab_copy (xen/common/grant_table.c@3.4.0-rc3): lengths first
        (GNTST_bad_copy_arg), then DOMID_SELF for frames
        (GNTST_permission_denied), the domains (GNTST_bad_domain), each side
        (an invalid or foreign frame GNTST_general_error); no batching."""
        s_u, s_dom, s_off, d_u, d_dom, d_off, length, flags, _st = op
        if s_off + length > PAGE_SIZE or d_off + length > PAGE_SIZE:
            return E.GNTST_bad_copy_arg
        s_gref, d_gref = flags & E.GNTCOPY_source_gref, flags & E.GNTCOPY_dest_gref
        if (s_dom != E.DOMID_SELF and not s_gref) or (d_dom != E.DOMID_SELF and not d_gref):
            return E.GNTST_permission_denied
        sd, dd = self._domain(s_dom, True), self._domain(d_dom, True)
        if sd is None or dd is None:
            return E.GNTST_bad_domain
        held = []
        try:
            if s_gref:
                rc, s_mfn, _o, _l = self._acquire(sd, s_u & U32, True)
                if rc:
                    return rc
                held.append((s_u & U32, True))
            else:
                s_mfn = s_u
            if not self._owned(s_mfn):
                return E.GNTST_general_error
            if d_gref:
                rc, d_mfn, _o, _l = self._acquire(dd, d_u & U32, False)
                if rc:
                    return rc
                held.append((d_u & U32, False))
            else:
                d_mfn = d_u
            if not self._owned(d_mfn) or not self._writable_ok(d_mfn):
                return E.GNTST_general_error
            data = self.guest.read_machine((s_mfn << 12) + s_off, length)
            self.guest.write_machine((d_mfn << 12) + d_off, data)
            return E.GNTST_okay
        finally:
            for ref, ro in held:
                self._release(ref, ro)

    # ========================================================= the others
    def _swap(self, uop: int, count: int) -> int:
        """gnttab_swap_grant_ref: either ref beyond the table is
        GNTST_bad_gntref, a pinned one GNTST_eagain; the same ref twice is a
        no-op; otherwise the two entries (and v2 status entries) trade places."""
        statuses = []
        for i in range(count):
            va = uop + 12 * i
            a, bref = struct.unpack("<II4x", self._read(va, 12))
            n = self.nr_entries()
            if a >= n or bref >= n:
                st = E.GNTST_bad_gntref
            elif a == bref:
                st = E.GNTST_okay
            elif self._act(a).pin or self._act(bref).pin:
                st = E.GNTST_eagain
            else:
                size = E.GRANT_ENTRY_V1_SIZE if self.version == 1 else E.GRANT_ENTRY_V2_SIZE
                ea, eb = self._entry_ma(a), self._entry_ma(bref)
                da, db = self.guest.read_machine(ea, size), self.guest.read_machine(eb, size)
                self.guest.write_machine(ea, db)
                self.guest.write_machine(eb, da)
                if self.version == 2:
                    sa, sb = self._status_ma(a), self._status_ma(bref)
                    va_, vb_ = self._u16(sa), self._u16(sb)
                    self._set_u16(sa, vb_)
                    self._set_u16(sb, va_)
                st = E.GNTST_okay
            statuses.append(st)
            self._write(va + 8, struct.pack("<h", st))
        self.b.op["status"] = statuses
        return 0

    def _cache_flush(self, uop: int, count: int, cur_ref: int) -> int:
        """gnttab_cache_flush / _cache_flush on x86: offset and length within a
        page and ``op`` only CLEAN/INVAL (else -EINVAL, GNTTAB_CACHE_SOURCE_GREF
        included); an empty op is 0 (-EILSEQ inside a continuation); the frame
        must exist (-EINVAL) and be owned by a domain (-EPERM); an own frame is
        cleaned (0), invalidation alone is -EOPNOTSUPP (x86 flushtlb.h)."""
        if not handle_okay(uop, count, 16):
            return -E.EFAULT
        for i in range(count):
            dev, off, length, op = struct.unpack("<QHHI", self._read(uop + 16 * i, 16))
            if off >= PAGE_SIZE or length > PAGE_SIZE or off + length > PAGE_SIZE or \
                    op & ~(E.GNTTAB_CACHE_INVAL | E.GNTTAB_CACHE_CLEAN):
                return -E.EINVAL
            if length == 0 or op == 0:
                if cur_ref:
                    return -E.EILSEQ
                continue
            mfn = dev >> 12
            if mfn >= self.b.m.phys_bytes // PAGE_SIZE:
                return -E.EINVAL
            if not self._owned(mfn):
                return -E.EPERM
            if op == E.GNTTAB_CACHE_INVAL:
                return -E.EOPNOTSUPP
            cur_ref = 0
        return 0

    def _transfer(self, uop: int, count: int) -> int:
        """gnttab_transfer: the page named by ``mfn`` leaves this domain
        (steal_page: only a page of its own with no reference beyond its
        allocation, else GNTST_bad_page) and goes to ``domid``: a missing
        domain is GNTST_bad_domain, domain 0 accepts nothing from it
        (GNTST_general_error); the page is freed either way. To itself, the
        entry ``ref`` must be exactly GTF_accept_transfer naming this domain:
        the page comes back, its frame is written to the entry with
        GTF_transfer_committed and GTF_transfer_completed set, and the M2P maps
        it to the gfn the entry held."""
        statuses = []
        b = self.b
        for i in range(count):
            va = uop + 24 * i
            mfn, domid, ref = struct.unpack("<QH2xI8x", self._read(va, 24))
            if not b._valid_mfn(mfn) or self._referenced(mfn):
                st = E.GNTST_bad_page
            else:
                d = self._domain(domid, any_id=False)
                if d is None:
                    st = E.GNTST_bad_domain
                elif d != "self" or ref >= self.nr_entries() or \
                        self._header(ref) != (E.GTF_accept_transfer, self.domid):
                    st = E.GNTST_general_error
                else:
                    st = E.GNTST_okay
                    ema = self._entry_ma(ref)
                    self._set_u16(ema, E.GTF_accept_transfer | E.GTF_transfer_committed)
                    gfn = self._entry_frame(ref)
                    b.m.write_u64_phys(b.layout.m2p_ma + mfn * 8, gfn)
                    if self.version == 1:
                        self.guest.write_machine(ema + 4, struct.pack("<I", mfn & U32))
                    else:
                        self.guest.write_machine(ema + 8, struct.pack("<Q", mfn))
                    self._set_u16(ema, E.GTF_accept_transfer | E.GTF_transfer_committed |
                                  E.GTF_transfer_completed)
                if st != E.GNTST_okay:
                    b.free_frame(mfn)
            statuses.append(st)
            self._write(va + 16, struct.pack("<h", st))
        self.b.op["status"] = statuses
        return 0

    _OPS: ClassVar[dict] = {
        E.GNTTABOP_map_grant_ref: _map, E.GNTTABOP_unmap_grant_ref: _unmap,
        E.GNTTABOP_setup_table: _setup_table, E.GNTTABOP_transfer: _transfer,
        E.GNTTABOP_copy: _copy, E.GNTTABOP_query_size: _query_size,
        E.GNTTABOP_unmap_and_replace: _unmap_and_replace,
        E.GNTTABOP_set_version: _set_version, E.GNTTABOP_get_status_frames: _get_status_frames,
        E.GNTTABOP_get_version: _get_version, E.GNTTABOP_swap_grant_ref: _swap,
        E.GNTTABOP_cache_flush: _cache_flush,
    }
    # Sub-ops whose argument array Xen checks with guest_handle_okay first.
    _BATCHED: ClassVar[frozenset] = frozenset({E.GNTTABOP_map_grant_ref, E.GNTTABOP_unmap_grant_ref,
                          E.GNTTABOP_unmap_and_replace, E.GNTTABOP_transfer,
                          E.GNTTABOP_copy, E.GNTTABOP_swap_grant_ref})


__all__ = ["GrantTable", "addr_ok", "grant_to_status_frames", "handle_okay"]
