"""The LDT of a 64-bit Xen PV vCPU as Xen 4.17 keeps it (issue 19;
pvmon/backends/xen/pv/ldt.py, docs/xen-rules.md "The LDT"): MMUEXT_SET_LDT
loads the engine's LDTR, the table's pages are mapped on the first fault in
the LDT area (a seg_desc type reference, validated), the guest gets the #PF
or #GP Xen gives when they cannot be, and the mappings go with the table.
The reference guest pvtest-v2-rules checks each rule from the guest's side
(guests/src/checks_ldt.c); these tests run it and look at pvmon's state."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.pv import ldt
from pvmon.engine import hvm
from pvmon.guests.catalog import resolve
from pvmon.session import Session

IMAGES = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images"

pytestmark = pytest.mark.skipif(not hvm.rings_available(),
                                reason="needs pvmon's patched engine (pvmon engine build)")


def _run(image: str, **kw):
    s = Session(resolve(image), **kw)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=120)
    return s, res, ring.decode()


@pytest.fixture(scope="module")
def rules():
    return _run(str(IMAGES / "pvtest-v2-rules.elf"))


def _section(ring: str) -> list[tuple[str, str]]:
    body = ring.split("pvtest: # rules: the LDT", 1)[1].split("pvtest: # ", 1)[0]
    return re.findall(r"^pvtest: (ok|FAIL) \d+ - (.*)$", body, re.MULTILINE)


def test_every_ldt_check_of_the_rules_guest_passes(rules):
    _s, res, ring = rules
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    lines = _section(ring)
    assert len(lines) == 40 and all(v == "ok" for v, _ in lines), \
        [name for v, name in lines if v != "ok"]
    names = [name for _, name in lines]
    for want in (
        "a user-mode load of %fs through an LDT page the kernel maps writable -> #PF",
        "then the same load maps the page and %fs:0 reads at the LDT descriptor's base",
        "update_va_mapping mapping writable a page the LDT maps -> -EBUSY",
        "the first use validated the page: its DPL 0 data descriptor reads back with DPL 3",
        "ljmp from 64-bit user code to an LDT 32-bit code selector runs compatibility mode",
        "HYPERVISOR_iret to an LDT 32-bit code selector, its page not yet mapped",
        "an LDT page holding a present TSS descriptor (past nr_ents) -> #PF at ldt_base",
        "a selector whose descriptor would lie at 2^47 -> #GP(offset | TI) = #GP(0x1004)",
        "after SET_LDT(0, 0) an LDT selector -> #GP(0x0004)",
        "a load through a descriptor without the accessed bit sets it in the guest's page",
        "with the kernel's mapping of the LDT page removed the LDT still loads",
    ):
        assert any(n.startswith(want) for n in names), want


def test_each_ldt_check_names_its_source(rules):
    for _v, name in _section(rules[2]):
        assert re.search(r"\((MM|DT|TR|SDM|load_LDT|pv/mm\.c|__addr_ok|struct|Xen|do_iret|"
                         r"pv_map)", name), name


def test_the_rules_guest_ends_with_no_ldt_and_the_type_counts_recount(rules):
    s, _res, _ring = rules
    b = s.backend
    v = b.vcpu
    assert v.ldt == (0, 0) and v.ldt_pages == {}
    assert s.machine.ldt() == (0, 0, 0)                 # lldt(0)
    # four pages were mapped on a fault (the fifth to ninth faults failed and were
    # delivered); the HYPERVISOR_iret to LDT code mapped its page without one
    assert s.dispatch.ldt_maps == 4
    # no LDT page holds a type any more: the recount agrees with the kept counts
    assert b.types.audit(b.pinned, [r for w in b.vcpus for r in (w.kernel_cr3, w.user_cr3)],
                         [f for w in b.vcpus for f in w.gdt_frames]) == []


def test_a_vcpu_switch_moves_the_ldt_area_to_the_new_vcpus_mappings():
    """Each Xen vCPU has its own LDT area (LDT_VIRT_START(v)); pvmon has one,
    which ldt.switch fills with the incoming vCPU's mappings and LDTR."""
    s, res, _ring = _run("pvtest-v2-smp", vcpus=2)
    assert res.exit_kind == "shutdown"
    b = s.backend
    v0, v1 = b.vcpus
    m = s.machine
    slot = ldt.hv_l1_ma(b.layout) + (ldt.LDT_PAGES + 3) * 8
    frame = b.layout.start_info_pfn                 # any frame: the slot's contents are checked
    owner = ldt._owner(b)
    other = v1 if owner is v0 else v0
    other.ldt, other.ldt_pages = (0x1000, 4 * 512), {3: frame}
    owner.ldt, owner.ldt_pages = (0, 0), {}
    ldt.switch(b, owner, other)
    assert m.read_u64_phys(slot) & ~0xFFF & ((1 << 52) - 1) == frame << 12
    assert m.ldt() == (ldt.LDT_SELECTOR, ldt.HV_LDT_VA, 4 * 512 * 8 - 1)
    ldt.switch(b, other, owner)                     # back: the slot empties, no LDT
    assert m.read_u64_phys(slot) == 0 and m.ldt() == (0, 0, 0)
    assert other.ldt_pages == {3: frame}            # kept for its next turn, as Xen keeps them


def test_a_page_table_cannot_be_an_ldt_page_and_the_guest_gets_the_fault_xen_gives(rules):
    """mapping_fault on the finished rules guest's live backend (kernel mode):
    the bootstrap L4, mapped read-only, refuses the seg_desc type -> #PF at
    ldt_base + offset with the user bit clear (pv_inject_event); an LDT
    running past 2^47 -> #GP(offset | TI); nothing is mapped or typed."""
    s, _res, _ring = rules
    b = s.backend
    v = b.vcpu
    l4 = b.layout.pt_base_pfn
    before = (b.types.type_of(l4), b.types.cnt[l4])
    ldt.set_ldt(b, v, b.layout.pt_base_va, 512)
    assert s.machine.ldt() == (ldt.LDT_SELECTOR, ldt.HV_LDT_VA, 512 * 8 - 1)
    assert ldt.mapping_fault(b, ldt.HV_LDT_VA + 16, 4) == (14, 0, b.layout.pt_base_va + 16)
    assert v.ldt_pages == {} and (b.types.type_of(l4), b.types.cnt[l4]) == before
    ldt.set_ldt(b, v, 0x7FFF_FFFF_F000, 1024)
    assert ldt.mapping_fault(b, ldt.HV_LDT_VA + 0x1008, 0) == (13, 0x100C, None)
    ldt.set_ldt(b, v, 0, 0)
    assert s.machine.ldt() == (0, 0, 0)


def test_a_pvh_domain_gets_einval_for_set_ldt():
    """do_mmuext_op (xen/arch/x86/mm.c@stable-4.17): a PVH domain's own page
    owner is not a PV domain, -EINVAL before any entry is read (real Xen 4.17.7
    agreed, docs/xen-oracle.md difference 26); it loads its own LDT with LLDT."""
    s, res, _ring = _run("pvtest-v2-pvh", mode="pvh")
    assert res.exit_kind == "shutdown"
    assert s.backend._mmuext(13, 0, 0) == -abi.EINVAL
