"""Page types and type reference counts of a 64-bit PV domain's page tables,
as Xen 4.17 keeps them (xen/arch/x86/mm.c; pvmon/backends/xen/pv/pagetype.py):
checked by the page-type section of pvtest-v2-rules
(guests/src/checks_pagetypes.c, each check naming its mm.c function), and by
recounting every reference from scratch at the end of real runs: the counts
kept call by call must equal the recount, without a scan on the way."""

import re
from pathlib import Path

import pytest

from pvmon.backends.xen.pv import pagetype as PT
from pvmon.dispatch.console_input import script_lines
from pvmon.guests.catalog import resolve
from pvmon.guests.initramfs import ensure_initramfs
from pvmon.session import Session

RULES_IMAGE = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images" / \
    "pvtest-v2-rules.elf"
SECTION = "rules: page types and reference counts"


def _session(guest, **kw):
    s = Session(resolve(guest), **kw)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=600)
    return s, res, ring.decode(errors="replace")


def _audit(s: Session) -> list[str]:
    b = s.backend
    return b.types.audit(b.pinned, [r for v in b.vcpus for r in (v.kernel_cr3, v.user_cr3)],
                         [f for v in b.vcpus for f in v.gdt_frames])


def _section(ring: str, title: str = SECTION) -> list[tuple[str, str]]:
    """(ok|FAIL, check line) of one section of the guest's report (the
    page-type one by default), up to the next section."""
    part = ring.split(f"pvtest: # {title}\n", 1)[1].split("pvtest: # ", 1)[0]
    return re.findall(r"^pvtest: (ok|FAIL) \d+ - (.*)$", part, re.MULTILINE)


@pytest.fixture(scope="module")
def rules():
    return _session(str(RULES_IMAGE))


def test_the_rules_guest_passes_every_page_type_check(rules):
    _s, res, ring = rules
    assert res.exit_kind == "shutdown"
    lines = _section(ring)
    assert len(lines) == 53 and all(v == "ok" for v, _ in lines), \
        [name for v, name in lines if v != "ok"]
    names = [name for _, name in lines]
    for want in (
        "pin L1 of a page the kernel still maps writable -> -EINVAL",
        "update_va_mapping mapping a pinned L1 writable -> -EBUSY",
        ("pin L1 of a page whose kernel mapping is read-only but an entry of a pinned L1 "
         "still maps writable -> -EINVAL"),
        "mapping the unpinned L1 below the pinned L2 writable -> -EBUSY",
        "pin L2 holding a writable self-map -> -EINVAL",
        "pin L2 holding a read-only self-map -> 0",
        "a plain write of an entry mapping the L1 itself writable -> #PF, the entry unchanged",
        ("mapping writable the L1 that maps the kernel (never pinned, below the live L4) "
         "-> -EBUSY"),
    ):
        assert any(n.startswith(want) for n in names), want


def test_every_page_type_check_names_the_mm_c_function_or_the_step_it_follows(rules):
    _s, _res, ring = rules
    for _v, name in _section(ring):
        # a refusal says where it comes from; a "-> 0" step may follow the one before it
        if re.search(r"-> -E[A-Z]+", name):
            assert "(MM " in name or "MM " in name or "still not writable" in name \
                or "it stays an L2" in name or "twice" in name, name


def test_the_rules_guest_passes_every_descriptor_page_and_cr3_check(rules):
    """PGT_seg_desc_page (set_gdt, update_descriptor, SET_LDT) and a kernel's
    mov to %cr3 through new_guest_cr3 (guests/src/checks_segdesc.c)."""
    _s, _res, ring = rules
    seg = _section(ring, "rules: descriptor pages and CR3")
    cr3 = _section(ring, "rules: a kernel's mov to %cr3")
    assert len(seg) == 23 and len(cr3) == 9
    assert all(v == "ok" for v, _ in seg + cr3), [n for v, n in seg + cr3 if v != "ok"]
    names = [n for _, n in seg + cr3]
    for want in (
        "set_gdt of a frame the kernel still maps writable -> -EINVAL (DT pv_set_gdt",
        "set_gdt of a read-only frame holding a present TSS descriptor -> -EINVAL",
        "update_va_mapping mapping the loaded GDT frame writable -> -EBUSY",
        "it reads back with DPL 3 (DT check_descriptor",
        "update_descriptor into a pinned L1 -> -EINVAL",
        "SET_LDT with a base not page aligned -> -EINVAL",
        "mov to %cr3 of a pinned L1 -> #GP(0), CR3 unchanged (EPO write_cr",
        "mov to %cr3 of that copy made read-only -> done, validated as an L4",
        "the copy maps writable again -> 0",
    ):
        assert any(n.startswith(want) for n in names), want
    # every refusal names its source (DT: descriptor-tables.c, MM: mm.c, EPO:
    # emul-priv-op.c) or the function of the check just before it
    for n in names:
        if re.search(r"-> (-E[A-Z]+|#GP)", n):
            assert re.search(r"\((DT|MM|EPO) |__addr_ok|\(its CR3", n) or "8193" in n \
                or "not 8-byte" in n, n


def test_the_rules_guest_passes_every_page_reference_check(rules):
    """A page given back while mapped lingers until its last reference goes;
    a freed page is not the domain's (guests/src/checks_pagerefs.c)."""
    s, _res, ring = rules
    lines = _section(ring, "rules: page references")
    assert len(lines) == 14 and all(v == "ok" for v, _ in lines), \
        [n for v, n in lines if v != "ok"]
    names = [n for _, n in lines]
    for want in (
        "decrease_reservation of a page the kernel still maps -> 1 extent (MEM",
        "populate_physmap while it lingers never hands that page out",
        "decrease_reservation of the freed page -> 0 extents",
        "mapping the freed page -> -EBUSY (MM get_page_from_l1e",
        ("mapping the new frame where the old one was -> 0; the page given back comes back "
         "unscrubbed"),
    ):
        assert any(n.startswith(want) for n in names), want
    # nothing lingers at the end; the free pool holds the one frame an earlier grant
    # transfer lost, and that frame is not the domain's
    t = s.backend.types
    assert not t.lingering and len(s.backend.free_mfns) == 1
    assert t.freed == set(s.backend.free_mfns)


def test_a_loaded_gdt_frame_holds_one_seg_desc_reference_per_slot():
    """pvtest-v2 loads a one-page GDT (checks_xen.c): that frame has the
    seg_desc type, count 1, refuses a page-table type and a writable one, and
    the audit counts it as the GDT's."""
    s, res, _ring = _session("pvtest-v2")
    assert res.exit_kind == "shutdown"
    t = s.backend.types
    (f,) = s.backend.vcpu.gdt_frames
    assert t.type_of(f) == PT.SEG_DESC and t.cnt[f] == 1
    assert t.get_type(f, PT.L1) == -PT.EINVAL
    assert t.mod_l1(0, 0, (f << 12) | 3) == -PT.EBUSY
    assert _audit(s) == []


def test_check_descriptor_fixes_up_and_refuses_as_xen():
    """check_descriptor (pv/descriptor-tables.c@stable-4.17), 64-bit PV."""
    cd = PT.check_descriptor
    assert cd(0) == 0 and cd(0x0000_0900_0000_0067) == 0x0000_0900_0000_0067   # not present
    assert cd(0x00CF_9A00_0000_FFFF) == 0x00CF_FA00_0000_FFFF    # code DPL 0 -> 3
    assert cd(0x00AF_FB00_0000_FFFF) == 0x00AF_FB00_0000_FFFF    # 64-bit code DPL 3 kept
    assert cd(0x0000_8900_0000_0067) is None                     # present TSS
    assert cd(0x0000_8E00_E033_0000) is None                     # interrupt gate
    assert cd(0x0000_EC00_E033_0000) == 0x0000_8C00_E033_0000    # call gate: DPL 0, RPL 3
    assert cd(0x0000_8C00_0010_0000) == 0x0000_8C00_0013_0000    # DPL 0 raised, into RPL
    assert cd(0x0000_EC00_E008_0000) is None                     # a Xen selector
    assert cd(0x0000_EC00_E00C_0000) == 0x0000_8C00_E00F_0000    # an LDT selector
    assert cd(0x0000_EC01_0010_0000) is None                     # reserved bits
    assert cd(0x0000_8000_0000_0000) == 0x0000_8000_0000_0000    # system type 0 kept


def test_the_counts_kept_call_by_call_equal_a_recount_at_the_end_of_the_rules_guest(rules):
    s, _res, _ring = rules
    assert _audit(s) == []
    t = s.backend.types
    assert t.promotions - t.demotions == sum(1 for x in t.typ if PT.L1 <= x <= PT.L4)
    assert s.dispatch.ptwr.refused == 1          # the one writable self-map written plainly
    # the guest leaves nothing of its own pinned: the builder's L4 (pin + CR3) and
    # the rules checks' user L4 remain
    assert t.type_of(s.backend.layout.pt_base_pfn) == PT.L4
    assert t.cnt[s.backend.layout.pt_base_pfn] == 2


def test_pvtest_v2_ends_with_the_builders_tree_typed_and_its_data_pages_writable():
    s, res, _ring = _session("pvtest-v2")
    assert res.exit_kind == "shutdown"
    assert _audit(s) == []
    b = s.backend
    t = b.types
    l4 = b.layout.pt_base_pfn
    assert t.type_of(l4) == PT.L4
    # the start-of-day tables map the xenstore page writable: its type says so
    assert t.type_of(b.layout.store_pfn) == PT.WRITABLE


def test_a_frame_with_a_writable_type_cannot_become_a_table_and_back():
    """The type machine on a real domain's frames: a data page mapped writable
    by the builder's tables refuses an L1 type; once the count is gone a type
    can be taken, and the last put devalidates."""
    s, _res, _ring = _session("pvtest-v2")
    t = s.backend.types
    f = s.backend.layout.store_pfn             # the xenstore page, mapped writable
    n = t.cnt[f]
    assert n >= 1 and t.type_of(f) == PT.WRITABLE
    assert t.get_type(f, PT.L1) == -PT.EINVAL
    assert t.cnt[f] == n and t.type_of(f) == PT.WRITABLE
    # a page no table maps: the frame past the bootstrap region
    free = next(x for x in range(t.nr - 1, 0, -1) if t.cnt[x] == 0)
    s.backend.m.write_phys_data(free << 12, bytes(4096))
    assert t.get_type(free, PT.L1) == 0 and t.type_of(free) == PT.L1
    assert t.get_type(free, PT.WRITABLE) == -PT.EINVAL
    before = t.demotions
    t.put_type(free)
    assert t.type_of(free) == PT.NONE and t.demotions == before + 1
    assert t.get_type(free, PT.WRITABLE) == 0
    t.put_type(free)
    assert _audit(s) == []


def test_a_frame_that_lost_its_last_writable_mapping_since_the_last_flush_flushes_the_tlb_as_it_becomes_a_table():
    """_get_page_type's flush on a type change (tlbflush_timestamp, NEED_FLUSH):
    only when the frame's last writable reference went after the TLB's last
    flush, so no writable translation of it survives into its life as a
    table; a frame never mapped writable, or flushed since, is not flushed
    for."""
    s, _res, _ring = _session("pvtest-v2")
    t, m = s.backend.types, s.backend.m
    free = next(x for x in range(t.nr - 1, 0, -1) if t.cnt[x] == 0)
    s.backend.m.write_phys_data(free << 12, bytes(4096))
    flushes = t.type_flushes
    assert t.get_type(free, PT.WRITABLE) == 0
    t.put_type(free)                       # its last writable reference goes
    clock = m.tlb_flushes
    assert t.get_type(free, PT.L1) == 0    # a table now: flushed first
    assert (t.type_flushes, m.tlb_flushes) == (flushes + 1, clock + 1)
    t.put_type(free)
    assert t.get_type(free, PT.L2) == 0    # no writable reference since the flush
    assert t.type_flushes == flushes + 1
    t.put_type(free)
    assert t.get_type(free, PT.WRITABLE) == 0
    t.put_type(free)
    m.flush_tlb()                          # the TLB emptied since: nothing to flush
    assert t.get_type(free, PT.L1) == 0
    assert t.type_flushes == flushes + 1
    t.put_type(free)
    assert _audit(s) == []


@pytest.mark.debian
@pytest.mark.slow
def test_a_debian_6_1_busybox_session_writes_no_table_through_a_stale_writable_translation(debian61):
    """Linux 6.1 makes a fresh page-table page read-only by mmu_update (no
    flush) and pins it, then writes its entries (__vunmap_range_noflush,
    copy_page_range) while the engine's TLB may still hold the page's old
    writable translation. The flush on the type change makes those writes
    fault into writable-page-table emulation, as on Xen: the counts kept
    equal a recount at the end (without it the audit found 138 differences
    and a later pin was refused)."""
    initrd = ensure_initramfs("busybox").read_bytes()
    s = Session(debian61, initrd=initrd, initrd_info={"name": "busybox"},
                script=script_lines("ls /proc\necho sum=$((6*7))\npoweroff -f\n"))
    res = s.run(timeout=600)
    assert res.exit_kind == "shutdown" and "sum=42" in res.console.decode(errors="replace")
    assert _audit(s) == []
    t = s.backend.types
    assert t.type_flushes > 100
    assert s.dispatch.ptwr.refused == 0


@pytest.mark.debian
@pytest.mark.slow
def test_a_debian_6_12_busybox_session_keeps_counts_equal_to_a_recount(debian612):
    """Linux pins on every fork and unpins on exit, and writes PTEs through
    mmu_update and writable page tables: the counts it leaves equal a recount,
    and every table typed was validated once per type gain (no scan)."""
    initrd = ensure_initramfs("busybox").read_bytes()
    s = Session(debian612, initrd=initrd, initrd_info={"name": "busybox"},
                script=script_lines("ls /proc\necho sum=$((6*7))\npoweroff -f\n"))
    res = s.run(timeout=600)
    assert res.exit_kind == "shutdown" and "sum=42" in res.console.decode(errors="replace")
    assert _audit(s) == []
    t = s.backend.types
    assert t.promotions > 300 and t.demotions > 100     # forks and exits
    assert t.promotions - t.demotions == sum(1 for x in t.typ if PT.L1 <= x <= PT.L4)
    assert s.dispatch.ptwr.refused == 0
