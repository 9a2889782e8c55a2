"""The guest page walk in C (pvmon/engine/_pagewalk.c) answers exactly as the
Python walk it replaces: the same machine and PTE addresses, the same faults
with the same #PF error codes, over a real guest's page tables."""

import pytest

from pvmon.engine import machine as machine_mod
from pvmon.engine.machine import GuestPageFault
from pvmon.guests.catalog import resolve
from pvmon.session import Session


def _answers(m, vas, **kw):
    out = []
    for va in vas:
        try:
            out.append(m.walk(va, **kw))
        except GuestPageFault as exc:
            out.append(("#PF", exc.va, exc.error_code))
    return out


def test_the_c_page_walk_matches_the_python_walk_on_a_booted_guests_tables(monkeypatch):
    assert machine_mod._c_walk is not None, "pvmon/engine/_pagewalk.c was not built"
    s = Session(resolve("pvtest-v2"))
    s.run(timeout=60)
    m, lay = s.machine, s.layout
    base = s.kernel.entry & ~0xFFF
    vas = [s.kernel.entry, lay.start_info_va, lay.stack_top_va - 8,
           0, 0x1000, 1 << 46, (1 << 47) - 8, 1 << 47, 0xFFFF_8000_0000_0000,
           0xFFFF_FFFF_FFFF_F000, 0xDEAD_BEEF_0000]
    vas += [base + i * 0x1000 + 0x123 for i in range(-64, 2048, 7)]
    kinds = [{}, {"write": True}, {"user": True}, {"write": True, "user": True}]
    c = [_answers(m, vas, **kw) for kw in kinds]
    monkeypatch.setattr(machine_mod, "_c_walk", None)
    py = [_answers(m, vas, **kw) for kw in kinds]
    assert c == py
    flat = [a for k in c for a in k]
    assert any(a[0] == "#PF" for a in flat) and any(a[0] != "#PF" for a in flat)


@pytest.mark.parametrize("cr3", [0, 1 << 40])
def test_a_walk_through_tables_outside_memory_faults_instead_of_reading_past_it(cr3):
    s = Session(resolve("pvtest-v2"))
    m = s.machine
    with pytest.raises(GuestPageFault):
        m.walk(0x1000, cr3=(m.phys_bytes + cr3) & ~0xFFF)


def _reads(m, vas, sizes, **kw):
    out = []
    for va in vas:
        for size in sizes:
            try:
                out.append(m.read_virt(va, size, **kw))
            except GuestPageFault as exc:
                out.append(("#PF", exc.va, exc.error_code))
    return out


def test_a_guest_virtual_read_gets_the_same_bytes_and_faults_with_or_without_the_c_walk(
        monkeypatch):
    # read_virt walks a read within one page with the C walk inline
    s = Session(resolve("pvtest-v2"))
    s.run(timeout=60)
    m, lay = s.machine, s.layout
    base = s.kernel.entry & ~0xFFF
    vas = [s.kernel.entry, lay.start_info_va, lay.stack_top_va - 8, 0, 1 << 47,
           0xDEAD_BEEF_0000] + [base + i * 0x1000 + 0xFF8 for i in range(-8, 512, 13)]
    sizes = [1, 8, 16, 4096 - 0xFF8]
    c = [_reads(m, vas, sizes, **kw) for kw in ({}, {"user": True})]
    monkeypatch.setattr(machine_mod, "_c_walk", None)
    py = [_reads(m, vas, sizes, **kw) for kw in ({}, {"user": True})]
    assert c == py
    flat = [a for k in c for a in k]
    assert any(type(a) is tuple for a in flat) and any(type(a) is bytes for a in flat)
