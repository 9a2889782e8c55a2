"""The stream's canonical paravirtual operations (``p``) and the filter by
canonical family and operation (dotted terms), in the live view and the
player, on Xen PV, Xen PVH, lguest, VMI and (Debian) KVM."""

from __future__ import annotations

import pytest

from pvmon.backends.kvm import DEFAULT_CMDLINE as KVM_CMDLINE
from pvmon.guests.catalog import resolve
from pvmon.pvops import Deriver
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from pvmon.ui.app import PvmonApp
from pvmon.ui.canonical import summary, trace_abi
from pvmon.ui.filters import EventFilter
from pvmon.ui.widgets.hypercalls import HypercallStream
from tests.tui_support import drive, live_app, until


def _ops_by_seq(path) -> dict[int, tuple[str, ...]]:
    """seq -> canonical operation names, as `pvmon trace cat --pvops` derives them."""
    out = {}
    with TraceReader(path) as r:
        d = Deriver(trace_abi(r.header), r.header)
        for ev in r:
            names = tuple(o.op for o in d.ops(ev))
            if names:
                out[ev["seq"]] = names
    return out


def test_dotted_terms_match_canonical_operations_and_plain_terms_keep_their_meaning():
    ev = {"k": "hc", "name": "mmu_update", "abi": "xen"}
    ops = ("mmu.set_pte", "mmu.set_pte", "mmu.flush_tlb")
    assert EventFilter.parse("mmu.set_pte").matches(ev, ops)
    assert EventFilter.parse("MMU.").matches(ev, ops)
    assert EventFilter.parse("mmu.*").matches(ev, ops)
    assert EventFilter.parse("*.flush_tlb").matches(ev, ops)
    assert not EventFilter.parse("irq.").matches(ev, ops)
    assert not EventFilter.parse("mmu.set_pte").matches(ev)        # not derived: no match
    assert not EventFilter.parse("mmu -mmu.flush_tlb").matches(ev, ops)
    assert EventFilter.parse("mmu").matches(ev)                     # the hypercall family
    assert EventFilter.parse("mmu.set_ptx irq.").unknown_canonical() == ["mmu.set_ptx"]
    assert summary(ops) == "mmu.set_pte×2 mmu.flush_tlb" and summary(()) == "-"


def test_live_view_shows_canonical_operations_and_filters_by_operation_and_family(tmp_path):
    path = tmp_path / "live.pvt"
    app, _live = live_app(record=path)

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen._finished_shown, what="the boot to end")
        stream = screen.query_one(HypercallStream)
        await pilot.press("p")
        assert stream.show_pvops and "pv-ops" in str(stream.border_title)
        stream.go(0)
        await pilot.pause(0.1)
        first = stream.render_line(0).text
        assert "│" in first and "console.write" in first     # console_io(write)
        await pilot.press("f", *"mmu.set_pte", "enter")
        shown = [ev["seq"] for ev in screen.rows.shown]
        await pilot.press("f", "ctrl+u", *"irq.", "enter")
        irq = [ev["seq"] for ev in screen.rows.shown]
        await pilot.press("f", "ctrl+u", *"mmu.set_ptx", "enter")
        assert screen.rows.shown == []
        await pilot.press("f", "ctrl+u", "enter")
        assert len(screen.rows.shown) == 1836
        await pilot.press("p")
        assert not stream.show_pvops and "pv-ops" not in str(stream.border_title)
        # the event dicts the engine also handed to the writer are untouched
        assert all("pvops" not in ev for ev in screen.rows.all)
        return shown, irq

    result = []

    async def run(pilot):
        result.append(await script(pilot))

    drive(app, run)
    shown, irq = result[0]
    ops = _ops_by_seq(path)
    calls = {ev["seq"] for ev in TraceReader(path) if ev["k"] == "hc"}
    assert shown and shown == sorted(s for s in calls if "mmu.set_pte" in ops.get(s, ()))
    assert irq and irq == sorted(s for s in calls
                                 if any(o.startswith("irq.") for o in ops.get(s, ())))


@pytest.fixture(scope="module")
def abi_traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("pvops")
    out = {}
    for name, guest, kw in (("xen", "pvtest-v2", {}),
                            ("pvh", "pvtest-v2-pvh", {"mode": "pvh"}),
                            ("lguest", "pvtest-lguest", {"backend": "lguest-4.13"}),
                            ("vmi", "pvtest-vmi", {"backend": "vmi-3.0"})):
        out[name] = d / f"{name}.pvt"
        Session(resolve(guest), record=out[name], **kw).run()
    return out


def _play(path, terms: list[str], size=(150, 40)):
    """Open ``path`` in the player, show the column, filter by each of
    ``terms``: -> {term: shown seqs}, and the column's text of the first row."""
    app = PvmonApp(trace=path)
    got: dict[str, list[int]] = {}
    lines: list[str] = []

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen.index is not None, timeout=60)
        stream = screen.query_one(HypercallStream)
        await pilot.press("p")
        await until(pilot, lambda: stream.show_pvops, timeout=60, what="the derivation")
        for term in terms:
            await pilot.press("f", "ctrl+u", *term, "enter")
            await until(pilot, lambda t=term: screen.filter.text == t)
            got[term] = list(screen.rows.seqs)
            stream.go(0)
            await pilot.pause(0.05)
            lines.append(stream.render_line(0).text)

    drive(app, script, size=size)
    return got, lines


@pytest.mark.parametrize("abi,terms", [
    ("xen", ["mmu.", "mmu.set_pte", "irq.notify", "time.read_clock"]),
    ("pvh", ["mmu.", "irq.", "time.read_clock", "console."]),
    ("lguest", ["mmu.", "mmu.set_pte", "irq.", "time."]),
    ("vmi", ["mmu.", "mmu.set_pte", "cpu.", "time."]),
])
def test_the_player_filters_every_abi_by_canonical_family_and_operation(abi_traces, abi, terms):
    path = abi_traces[abi]
    got, lines = _play(path, terms)
    ops = _ops_by_seq(path)
    for term, line in zip(terms, lines, strict=True):
        flt = EventFilter.parse(term)
        want = sorted(s for s, names in ops.items() if flt.matches({}, names))
        assert got[term] == want and want, (abi, term)
        assert "│" in line and term.rstrip(".").split(".")[0] in line, (abi, term, line)


@pytest.mark.debian
@pytest.mark.slow
def test_the_player_filters_a_kvm_trace_by_canonical_family(debian612, tmp_path):
    path = tmp_path / "kvm.pvt"
    Session(debian612, backend="kvm-6.12", cmdline=KVM_CMDLINE, record=path).run(timeout=600)
    terms = ["irq.", "memory.share_area", "cpu.cpuid", "power."]
    got, _ = _play(path, terms)
    ops = _ops_by_seq(path)
    for term in terms:
        flt = EventFilter.parse(term)
        want = sorted(s for s, names in ops.items() if flt.matches({}, names))
        assert got[term] == want and want, term


@pytest.mark.parametrize("guest,spec,term", [
    ("pvtest-v2-pvh", {"mode": "pvh"}, "irq."),
    ("pvtest-lguest", {"backend": "lguest-4.13"}, "mmu."),
    ("pvtest-vmi", {"backend": "vmi-3.0"}, "mmu."),
])
def test_the_live_view_filters_pvh_lguest_and_vmi_calls_by_canonical_family(
        tmp_path, guest, spec, term):
    path = tmp_path / "live.pvt"
    app, _live = live_app(guest, record=path, **spec)
    shown: list[int] = []

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen._finished_shown, what="the boot to end", timeout=60)
        await pilot.press("f", *term, "enter")
        shown.extend(ev["seq"] for ev in screen.rows.shown)

    drive(app, script)
    ops = _ops_by_seq(path)
    flt = EventFilter.parse(term)
    calls = {ev["seq"] for ev in TraceReader(path) if ev["k"] == "hc"}
    want = sorted(s for s in calls if flt.matches({}, ops.get(s, ())))
    assert shown and shown == want
