"""The count-only path of the canonical view (``trace stats --pvops``, ``trace
pvops``): the same counters, in the same order, as counting the operations
:func:`pvmon.pvops.derive` yields, on every trace of the corpus and on events a
damaged or hostile trace may hold. Real traces only."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest

from pvmon.backends.xen import pvops as xen_pvops
from pvmon.pvops import derive
from pvmon.pvops.render import OpCounts, _count_run, stats_and_counts
from pvmon.trace import stats
from pvmon.trace.reader import TraceReader
from pvmon.trace.stats import TraceStats

ROOT = Path(__file__).resolve().parent.parent
# (the Debian traces, 0.4-1.7 MB, take a second or two each to derive: slow)
CORPUS = [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name.startswith("debian")
                       else []) for p in sorted((ROOT / "traces").glob("*.pvt"))]


def _abi(reader: TraceReader) -> str:
    backend = reader.header.get("backend")
    abi = backend.get("abi") if isinstance(backend, dict) else None
    return abi if isinstance(abi, str) else "xen"


def _shape(c: OpCounts) -> str:
    """Everything the tables show, insertion order included (ties keep it)."""
    return json.dumps([c.to_dict(), list(c.ops.items()),
                       {op: list(n.items()) for op, n in c.calls.items()},
                       list(c.native.items())])


@pytest.mark.parametrize("path", CORPUS)
def test_the_fast_count_of_a_corpus_trace_equals_the_count_of_its_derived_operations(path):
    with TraceReader(path) as r:
        abi = _abi(r)
        fast, _ = _count_run(abi, r.header, r, 0, len(r.frames))
        slow = OpCounts.of(derive(r, abi, r.header))
    assert _shape(fast) == _shape(slow)
    assert fast.total > 0


@pytest.fixture
def split_small_traces(monkeypatch):
    """Read even a small trace as one run per few frames."""
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES", 0)
    monkeypatch.setattr(stats, "PARALLEL_MIN_EVENTS", 0)
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES_PER_JOB", 1)


@pytest.mark.parametrize("name", ["pvtest-v2--xen-4.17.pvt", "pvtest-v2-pvh--xen-4.17.pvt",
                                  "pvtest-kvm--kvm-6.12.pvt"])
def test_stats_and_counts_in_one_read_equal_the_two_reads(name, split_small_traces):
    with TraceReader(ROOT / "traces" / name) as r:
        abi = _abi(r)
        st, counts = stats_and_counts(r, abi, r.header, jobs=3)
        assert json.dumps(st.to_dict()) == json.dumps(TraceStats.of(r).to_dict())
        assert _shape(counts) == _shape(OpCounts.of(derive(r, abi, r.header)))


def _mutations(ev: dict) -> list[dict]:
    """Damaged forms of a Xen PV event: what a hostile trace may hold."""
    out = []
    for key, vals in (("args", [None, [], [1], "x", [None, 2, 0, 0, 0, 0], [0, 0], (1, 2)]),
                      ("rd", [None, [], "x", [["v", 0, b""]], [["p", 0, b"\0" * 64]],
                              [[1, 2]], [["v", "a", b""], *(ev.get("rd") or [])],
                              [*(ev.get("rd") or [])[:1], ["v", 0, bytearray(8)]]]),
                      ("name", [None, 7, "iret", "multicall", "mmuext_op", "mmu_update",
                                "event_channel_op", "memory_op", "xenpmu_op"]),
                      ("k", [None, 3, "tsc", "cpuid", "io", "mmio", "halt"]),
                      ("abi", [None, 5, "xen"]), ("val", [None, [], [1, 2], 3]),
                      ("op", [None, {"ptr": 1, "val": 2}, {"cmd": "TLB_FLUSH_LOCAL"}])):
        for v in vals:
            m = copy.deepcopy(ev)
            m[key] = v
            out.append(m)
    args = ev.get("args")
    if isinstance(args, list) and len(args) >= 2:
        for a1 in (0, 1, 2, 5000, 1 << 63 | 1, -1):
            m = copy.deepcopy(ev)
            m["args"] = [args[0], a1, *args[2:]]
            out.append(m)
    return out


def test_damaged_events_count_as_translate_counts_them():
    picked: dict[object, dict] = {}
    for name in ("pvtest-v2--xen-4.17.pvt", "pvtest-v2-pvh--xen-4.17.pvt"):
        with TraceReader(ROOT / "traces" / name) as r:
            for ev in r:        # one event of each kind and call
                picked.setdefault((ev.get("k"), ev.get("name")), ev)
    lapic = 0xFEE00000
    hvm = [{"k": "mmio", "seq": 1, "t": 2, "dir": d, "addr": a, "val": v}
           for d in ("wr", "rd", None) for a in (lapic + 0xB0, lapic + 0x300, lapic + 0x380,
                                                 lapic + 0x20, 0x1000, None, "x")
           for v in (0, 0x31, None)]
    checked = 0
    for ev in [*picked.values(), *hvm]:
        for m in [ev, *_mutations(ev)]:
            for hvm in (False, True):
                fast: dict = {}
                slow: dict = {}
                st_fast = xen_pvops.XenState(hvm=hvm)
                st_slow = xen_pvops.XenState(hvm=hvm)
                try:
                    want = [(o.op, o.call, o.native is not None)
                            for o in xen_pvops.translate(m, st_slow)]
                except Exception as e:  # noqa: BLE001 - the fast path must raise too
                    with pytest.raises(type(e)):
                        xen_pvops.count_events([m], st_fast, fast, "xen", lambda ev: None)
                    continue
                for key in want:
                    slow[key] = slow.get(key, 0) + 1
                other: list = []
                xen_pvops.count_events([m], st_fast, fast, "xen", other.append)
                assert list(fast.items()) == list(slow.items()) and not other, m
                assert st_fast.ipi_ports == st_slow.ipi_ports
                checked += 1
    assert checked > 500


def test_an_event_of_another_abi_goes_to_that_abis_counter():
    ev = {"k": "hc", "abi": "kvm", "name": "mmu_update", "args": [0, 1], "seq": 1, "t": 0}
    other: list = []
    seen: dict = {}
    xen_pvops.count_events([ev], xen_pvops.new_state(), seen, "xen", other.append)
    assert other == [ev] and seen == {}


def _array_event(name: str, cmds: list[int], va: int = 0x10000) -> dict:
    """An mmu_update/mmuext_op hypercall event whose array the backend read."""
    if name == "mmu_update":
        raw = b"".join(struct.pack("<QQ", 0x5000 | c, 0x7067) for c in cmds)
    else:
        raw = b"".join(struct.pack("<I4xQQ", c, 0x1234, 0) for c in cmds)
    return {"k": "hc", "abi": "xen", "seq": 3, "t": 4, "name": name,
            "args": [va, len(cmds), 0, 0x7FF0, 0, 0], "op": {}, "ret": 0,
            "rd": [["v", va - 8, b"\0" * 8 + raw]]}


@pytest.mark.parametrize("name,cmds", [
    ("mmu_update", [0]), ("mmu_update", [1]), ("mmu_update", [2]), ("mmu_update", [3]),
    ("mmu_update", [0, 2, 3, 1]), ("mmuext_op", [0]), ("mmuext_op", [99, 0]),
    ("mmuext_op", [5, 5]), ("mmuext_op", [0, 1 << 31]), ("mmuext_op", [6, 7, 99]),
    ("mmuext_op", [99])])
def test_an_array_call_counts_each_entry_as_translate_reads_it(name, cmds):
    ev = _array_event(name, cmds)
    want: dict = {}
    for o in xen_pvops.translate(ev, xen_pvops.new_state()):
        key = (o.op, o.call, o.native is not None)
        want[key] = want.get(key, 0) + 1
    for _ in range(2):          # the second time from the key caches
        seen: dict = {}
        xen_pvops.count_events([ev], xen_pvops.new_state(), seen)
        assert list(seen.items()) == list(want.items())


@pytest.mark.parametrize("abi", ["vmi", "uml"])
def test_a_stateless_mapping_can_always_continue_a_run_so_parallel_counts_are_not_redone(abi):
    from pvmon.pvops import mapping_for
    mod = mapping_for(abi)
    assert mod.continue_state(mod.new_state(None), mod.resume_state(None)) is not None
