"""Canonical paravirtual operations (issue 21): the vocabulary, Xen PV's mapping
onto it, their derivation from recorded traces and `pvmon trace pvops`.

Real traces only: the stored pvtest-v2 recording (tests/data/golden-pvtest-v2.pvt)
and a fresh recording of pvtest-v2 on the real engine."""

from __future__ import annotations

import inspect
import itertools
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen import pvops as xen_pvops
from pvmon.backends.xen.backend import XenBackend
from pvmon.errors import TraceError
from pvmon.pvops import OPS, BatchRef, derive, mapping_for
from pvmon.pvops.render import OpCounts
from pvmon.trace.reader import TraceReader

GOLDEN_V2 = Path(__file__).parent / "data" / "golden-pvtest-v2.pvt"

#: The canonical operations of the stored pvtest-v2 recording (xen-4.17), by name.
PVTEST_V2_COUNTS = {
    "batch.submit": 1, "console.write": 144, "cpu.cpuid": 4, "cpu.fpu_trap": 2,
    "cpu.iret": 15, "cpu.load_gdt": 1, "cpu.set_callback": 3, "cpu.set_segment_base": 5,
    "cpu.set_stack": 1, "cpu.set_trap": 1, "cpu.write_descriptor": 1, "info.features": 2,
    "info.version": 7, "irq.bind": 3, "irq.notify": 143, "irq.unbind": 2, "irq.unmask": 1,
    "memory.map": 1, "memory.query": 3, "mmu.flush_tlb": 2, "mmu.invlpg": 12,
    "mmu.new_root": 2, "mmu.pin": 2, "mmu.set_pte": 16, "mmu.unpin": 2, "power.shutdown": 1,
    "sched.block": 2, "sched.yield": 1465, "time.oneshot": 2, "time.periodic": 2,
    "time.read_clock": 2476, "time.stop": 3, "unmapped": 2,
}


def _ops(path: Path = GOLDEN_V2) -> list:
    with TraceReader(path) as r:
        return list(derive(r, "xen", r.header))


def _implemented() -> list[str]:
    return [n for n in abi.HYPERCALLS.values() if hasattr(XenBackend, f"hc_{n}")]


def test_every_hypercall_the_xen_backend_implements_is_mapped_or_says_why_not():
    missing = [n for n in _implemented()
               if n not in xen_pvops.CALLS and n not in xen_pvops.UNMAPPED]
    assert not missing, f"hypercalls with no canonical operation and no reason: {missing}"
    assert all(xen_pvops.UNMAPPED.values()), "every unmapped entry says why"


def test_every_sub_op_of_a_mapped_call_is_mapped_or_says_why_not():
    tables = {"mmuext_op": abi.MMUEXT_CMDS, "mmu_update": abi.MMU_CMDS,
              **{c: t for c, (t, _mask) in xen_pvops._ARG0_SUBOPS.items()},
              "event_channel_op_compat": abi.EVTCHNOP_CMDS,
              "physdev_op_compat": abi.PHYSDEVOP_CMDS}
    gaps = []
    for call, entries in xen_pvops.CALLS.items():
        if not isinstance(entries, dict):
            continue
        for sub in tables[call].values():
            if sub not in entries and f"{call} {sub}" not in xen_pvops.UNMAPPED \
                    and f"{call.removesuffix('_compat')} *" not in xen_pvops.UNMAPPED:
                gaps.append(f"{call} {sub}")
    assert not gaps


def test_each_mapping_entry_names_a_canonical_operation_and_its_sources():
    entries = [e for v in xen_pvops.CALLS.values()
               for e in (v.values() if isinstance(v, dict) else [v])]
    for e in entries:
        assert e.op in OPS, e
        assert e.header.startswith("xen/include/public/") and e.header.endswith(".h"), e
        assert e.linux, e
    for op in OPS.values():
        assert op.meaning and op.linux, op


def test_the_stored_pvtest_v2_recording_gives_the_expected_canonical_counts():
    counts = OpCounts.of(_ops())
    assert dict(counts.ops) == PVTEST_V2_COUNTS
    assert counts.native == {"time.read_clock": 2476}   # rdtsc: no call on Xen PV


def test_a_multicall_is_flattened_into_its_entries_with_the_batch_as_context():
    ops = [o for o in _ops() if o.seq == 246]
    assert [o.op for o in ops] == ["batch.submit", "info.version", "mmu.set_pte",
                                   "mmu.invlpg"]
    submit, version, set_pte, invlpg = ops
    assert submit.call == "multicall" and submit.args == {"count": 2} and not submit.batch
    assert version.batch == (BatchRef("multicall", 246, 0, 2),)
    assert version.call == "xen_version version"
    assert version.ret == 0x40011                  # the result Xen wrote into the entry: 4.17
    assert set_pte.batch == invlpg.batch == (BatchRef("multicall", 246, 1, 2),)
    assert set_pte.args["level"] == 1 and set_pte.args["present"]
    assert invlpg.args["scope"] == "local"


def test_timer_arguments_are_nanoseconds_as_xen_defines_them():
    ops = _ops()
    oneshot = next(o for o in ops if o.op == "time.oneshot")
    assert oneshot.args["relative"] is False
    # The deadline is absolute Xen system time in ns: the guest blocks, and the
    # next event happens exactly at the deadline.
    with TraceReader(GOLDEN_V2) as r:
        after = [ev for ev in r if ev["seq"] > oneshot.seq and ev.get("op", {}).get("cmd")
                 == "block"]
        woke = next(r.events(after[0]["seq"] + 1, after[0]["seq"] + 2))
    assert oneshot.args["deadline_ns"] == woke["t"] == 2_280_556
    periodic = [o for o in ops if o.op == "time.periodic"]
    assert [(o.args["period_ns"], o.args["relative"]) for o in periodic] == \
        [(1_000_000, True), (100, True)]


def test_page_table_entries_come_as_frame_level_and_flags():
    ops = _ops()
    pin = next(o for o in ops if o.op == "mmu.pin")
    assert pin.args == {"frame": 528, "level": 1}
    upd = [o for o in ops if o.call == "mmu_update NORMAL_PT_UPDATE"]
    # An entry in a frame the guest pinned as an L1 table is an L1 entry.
    in_l1 = [o for o in upd if o.args["entry_ma"] >> 12 == 528]
    assert in_l1 and all(o.args["level"] == 1 for o in in_l1)
    first = in_l1[0]
    assert first.args["frame"] == 0x20c and first.args["flags"] == 0x63


def test_the_level_of_a_table_comes_from_its_pin_the_header_root_or_the_entry_naming_it():
    with TraceReader(GOLDEN_V2) as r:
        root = r.header["layout"]["pt_base_pfn"]
    st = xen_pvops.new_state({"layout": {"pt_base_pfn": root}})
    assert st.levels == {root: 4}
    # An mmu_update of an L4 entry names the L3 it points to.
    ev = {"k": "hc", "abi": "xen", "name": "mmu_update", "seq": 0, "t": 0, "ret": 0,
          "args": [0x1000, 1, 0, abi.DOMID_SELF, 0],
          "rd": [["v", 0x1000, ((root << 12) | abi.MMU_NORMAL_PT_UPDATE).to_bytes(8, "little")
                  + ((77 << 12) | 0x67).to_bytes(8, "little")]]}
    (op,) = xen_pvops.translate(ev, st)
    assert op.op == "mmu.set_pte" and op.args["level"] == 4 and op.args["frame"] == 77
    assert st.levels[77] == 3


def test_derive_is_a_generator_that_streams_an_endless_event_source():
    with TraceReader(GOLDEN_V2) as r:
        events = list(r)
    endless = itertools.cycle(events)        # no end: only a streaming reader returns
    ops = derive(endless, "xen")
    assert inspect.isgenerator(ops)
    assert len(list(itertools.islice(ops, 10_000))) == 10_000


def test_an_abi_without_a_mapping_is_refused_in_one_line():
    with pytest.raises(TraceError, match="no canonical mapping for ABI 'nosuch-abi'"):
        mapping_for("nosuch-abi")


def _pvmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvmon", *args], check=False,
                          capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def fresh_v2(tmp_path_factory):
    from pvmon.guests.catalog import resolve
    from pvmon.session import Session
    path = tmp_path_factory.mktemp("pvops") / "v2.pvt"
    result = Session(resolve("pvtest-v2"), record=path, keep_console=False).run()
    assert result.exit_kind == "shutdown", (result.exit_kind, result.detail)
    return path


def test_trace_pvops_counts_a_fresh_pvtest_v2_recording_by_family(fresh_v2):
    res = _pvmon("trace", "pvops", "--json", str(fresh_v2))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    flat = {op: n for fam in out["families"].values() for op, n in fam.items()}
    assert flat == PVTEST_V2_COUNTS
    assert list(out["families"])[:3] == ["cpu", "irq", "mmu"]
    assert out["families"]["mmu"]["mmu.set_pte"] == 16
    assert out["calls"]["mmu.set_pte"] == {"update_va_mapping": 11,
                                           "mmu_update NORMAL_PT_UPDATE": 5}
    text = _pvmon("trace", "pvops", str(fresh_v2))
    assert text.returncode == 0, text.stderr
    assert "4,329 canonical operations from 3,605 events (xen, complete)" in text.stdout
    assert "mmu.set_pte" in text.stdout and "native 2,476" in text.stdout


def test_trace_pvops_list_prints_the_stream_with_the_original_call(fresh_v2):
    res = _pvmon("trace", "pvops", "--list", str(fresh_v2))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == sum(PVTEST_V2_COUNTS.values())
    pin = next(line for line in lines if "mmu.pin" in line)
    assert pin.split() == ["185", "0.000099900s", "mmu.pin", "frame=528", "level=1", "<-",
                           "mmuext_op", "PIN_L1_TABLE", "=", "0"]
    assert any("[multicall #246 entry 2/2]" in line and "mmu.set_pte" in line
               for line in lines)
    js = _pvmon("trace", "pvops", "--list", "--json", str(fresh_v2))
    recs = [json.loads(line) for line in js.stdout.splitlines()]
    assert len(recs) == len(lines)
    batched = [r for r in recs if r.get("batch")]
    assert [r["op"] for r in batched] == ["info.version", "mmu.set_pte", "mmu.invlpg"]
    assert batched[0]["batch"] == [{"call": "multicall", "seq": 246, "index": 0, "size": 2}]


def test_trace_pvops_on_a_missing_file_is_one_line_and_exit_2(tmp_path):
    res = _pvmon("trace", "pvops", str(tmp_path / "none.pvt"))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_docs_pvops_md_holds_the_vocabulary_table_the_data_gives():
    from pvmon.pvops.render import markdown_tables
    doc = (Path(__file__).parent.parent / "docs" / "pvops.md").read_text(encoding="utf-8")
    assert doc.endswith(markdown_tables()), \
        "regenerate docs/pvops.md's tables from pvmon.pvops.render.markdown_tables()"
    for op in OPS:
        assert f"| `{op}` |" in doc


#: A multicall entry {op update_va_mapping, result, va, val, flags 0, ...} (xen.h).
UVM_ENTRY = struct.pack("<QQ6Q", abi.HYPERCALL_NUMBERS["update_va_mapping"], 0,
                        0xFFFF_8880_0000_0000, (0x1234 << 12) | 0x67, abi.UVMF_NONE, 0, 0, 0)


def test_damaged_event_fields_give_operations_not_tracebacks():
    st = xen_pvops.new_state(None)
    events = [
        {"k": "hc", "name": "multicall", "seq": None, "args": [0x10, 3],
         "rd": [["v", 0x10], "junk", ["v", "x", b""], ["v", 0x10, UVM_ENTRY]],
         "wr": [None, ["v", 0x18, b"\x00" * 8]]},
        {"k": "hc", "name": "event_channel_op", "seq": 1, "t": "later",
         "args": [abi.EVTCHNOP["bind_ipi"], 0], "op": {"cmd": "bind_ipi", "port": [1]},
         "ret": 0},
        {"k": "hc", "name": "mmuext_op", "seq": 2, "args": [0, 1 << 40], "op": "x"},
        {"k": "tsc_run", "seq": 3, "rip": None, "val": [5, 6]},
    ]
    ops = [o for ev in events for o in xen_pvops.translate(ev, st)]
    assert [o.op for o in ops] == ["batch.submit", "mmu.set_pte", "irq.bind", "unmapped",
                                   "time.read_clock", "time.read_clock"]
    assert ops[1].batch == (BatchRef("multicall", -1, 0, 3),) and ops[1].ret == 0


def test_trace_cat_and_stats_show_canonical_operations_beside_events(fresh_v2):
    res = _pvmon("trace", "cat", "--pvops", str(fresh_v2))
    assert res.returncode == 0, res.stderr
    op_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("    = ")]
    assert len(op_lines) == sum(PVTEST_V2_COUNTS.values())   # every operation, under its event
    assert any("mmu.pin" in ln and "<- mmuext_op" in ln for ln in op_lines)
    js = _pvmon("trace", "cat", "--pvops", "--json", "--filter", "mmuext_op", str(fresh_v2))
    objs = [json.loads(ln) for ln in js.stdout.splitlines()]
    assert objs and all(o["name"] == "mmuext_op" and "pvops" in o for o in objs)
    assert sum(len(o["pvops"]) for o in objs) >= 1
    st = _pvmon("trace", "stats", "--pvops", "--json", str(fresh_v2))
    flat = {op: n for fam in json.loads(st.stdout)["pvops"]["families"].values()
            for op, n in fam.items()}
    assert flat == PVTEST_V2_COUNTS


def test_the_kvm_mapping_covers_every_kvm_hypercall_and_the_paravirtual_msrs():
    from pvmon.backends.kvm import abi as kvm_abi
    from pvmon.backends.kvm import pvops as kvm_pvops
    for nr, name in kvm_abi.HYPERCALLS.items():
        ops = list(derive([{"k": "hc", "abi": "kvm", "nr": nr, "name": name, "seq": nr,
                            "t": 0, "ret": 0}], "kvm"))
        assert ops and (ops[0].op != "unmapped" or name in kvm_pvops.UNMAPPED), name
    events = [
        {"k": "msr", "dir": "wr", "msr": kvm_abi.MSR_KVM_SYSTEM_TIME_NEW, "val": 0x5000 | 1},
        {"k": "msr", "dir": "wr", "msr": kvm_abi.MSR_KVM_WALL_CLOCK_NEW, "val": 0x6000},
        {"k": "msr", "dir": "wr", "msr": 0x6E0, "val": 123456},
        {"k": "io", "dir": "out", "port": 0x3FB, "size": 1, "val": 0x80},   # DLAB on
        {"k": "io", "dir": "out", "port": 0x3F8, "size": 1, "val": 0x01},   # divisor
        {"k": "io", "dir": "out", "port": 0x3FB, "size": 1, "val": 0x03},   # DLAB off
        {"k": "io", "dir": "out", "port": 0x3F8, "size": 1, "val": 0x41},   # 'A'
        {"k": "halt", "rip": 1, "if": True},
    ]
    ops = list(derive([dict(ev, seq=i, t=i) for i, ev in enumerate(events)], "kvm"))
    assert [o.op for o in ops] == ["memory.share_area", "time.read_clock", "time.oneshot",
                                   "console.write", "sched.block"]
    assert ops[0].args == {"area": "kvmclock", "gpa": 0x5000, "enable": True}
    assert ops[3].native and ops[4].native == "hlt"
