"""xentrace in and out: an export of a built-in guest's trace read by Debian's
own xenalyze and xentrace_format, the round trip back into a pvmon trace, and
crafted xentrace files covering every record class, several CPUs and domains,
lost records and a TSC that goes backwards."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pvmon.errors import TraceError
from pvmon.trace import TraceReader
from pvmon.trace.xentrace import records as R
from pvmon.trace.xentrace.importer import import_xentrace
from pvmon.trace.xentrace.reader import XentraceReader
from tests.hostile_support import one_line_error, pvmon

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden-pvtest-v2.pvt"


def python2() -> str | None:
    """A Python 2 interpreter: Debian bookworm's xentrace_format is Python 2
    code behind a python3 shebang (it stops at a SyntaxError), so the test runs
    it with Python 2 where the machine has one."""
    for cand in ("python2", "python2.7"):
        p = shutil.which(cand)
        if p and subprocess.run([p, "-c", "print 1"], capture_output=True,
                                check=False).returncode == 0:
            return p
    for p in sorted(Path.home().glob(".pyenv/versions/2.7*/bin/python2.7")):
        return str(p)
    return None


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xt") / "golden.xt"
    p = pvmon("trace", "export", str(GOLDEN), "--format", "xentrace", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert re.search(r"wrote [\d,]+ xentrace records", p.stderr)
    return out


def _stats() -> dict:
    p = pvmon("trace", "stats", str(GOLDEN), "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _subcalls(path: Path = GOLDEN) -> Counter:
    """Names of the multicall entries of a trace."""
    out: Counter = Counter()
    with TraceReader(path) as r:
        for ev in r:
            if ev.get("name") == "multicall":
                out.update(ev["op"]["calls"])
    return out


def _xenalyze_counts(xt: Path) -> tuple[dict[int, int], str]:
    p = subprocess.run(["xenalyze", "--summary", str(xt)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    counts = {int(m.group(1)): int(m.group(2))
              for m in re.finditer(r"^\s+\S.*?\[\s*(\d+)\]:\s+(\d+)$", p.stdout,
                                   re.MULTILINE)}
    return counts, p.stdout


def _check_xenalyze(pvt: Path, xt: Path) -> None:
    """xenalyze's per-hypercall counts are trace stats' plus the multicall entries
    (xenalyze counts those as calls too)."""
    counts, out = _xenalyze_counts(xt)
    assert "|-- Domain 1 --|" in out
    p = pvmon("trace", "stats", str(pvt), "--json")
    assert p.returncode == 0, p.stderr
    stats = json.loads(p.stdout)["hypercalls"]
    subs = _subcalls(pvt)
    want: Counter = Counter()
    for name, hs in stats.items():
        want[_nr(name)] += hs["count"]
    for name, n in subs.items():
        want[_nr(name)] += n
    assert counts == dict(want)
    total = sum(hs["count"] for hs in stats.values())
    assert re.search(rf"^\s+hypercall\s+{total + sum(subs.values())}$", out, re.MULTILINE)
    assert re.search(rf"^\s+hypercall \(subcall\)\s+{sum(subs.values())}$", out,
                     re.MULTILINE)


_NO_XENALYZE = pytest.mark.skipif(
    shutil.which("xenalyze") is None,
    reason="xenalyze missing (apt-get install xen-utils-common; scripts/setup.sh)")


@_NO_XENALYZE
def test_xenalyze_counts_the_hypercalls_trace_stats_counts(exported):
    _check_xenalyze(GOLDEN, exported)


@_NO_XENALYZE
def test_xenalyze_reads_the_export_of_a_debian_boot_and_it_imports_back(tmp_path):
    pvt = ROOT / "traces" / "debian-6.12-boot.pvt"
    xt, back = tmp_path / "d.xt", tmp_path / "d.pvt"
    assert pvmon("trace", "export", str(pvt), "--format", "xentrace", "-o",
                 str(xt)).returncode == 0
    _check_xenalyze(pvt, xt)
    assert pvmon("trace", "import", str(xt), "-o", str(back)).returncode == 0
    with TraceReader(pvt) as a, TraceReader(back) as b:
        assert [_key(e) for e in a if _exported(e)] == [_key(e) for e in b]


@pytest.mark.skipif(shutil.which("xentrace_format") is None or python2() is None,
                    reason="xentrace_format (xen-utils-common) or a Python 2 to run it missing")
def test_xentrace_format_reads_every_hypercall_record(exported, tmp_path):
    defs = tmp_path / "defs"
    defs.write_text(f"{R.TRC_PV_HYPERCALL_V2:#010x} hc %(1)d\n"
                    f"{R.TRC_PV_HYPERCALL_SUBCALL:#010x} sub %(1)d\n"
                    "0 other %(event)x\n")
    with exported.open("rb") as fh:
        p = subprocess.run([python2(), shutil.which("xentrace_format"), str(defs)], stdin=fh,
                           capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    stats = _stats()["hypercalls"]
    from pvmon.backends.xen import abi
    got = Counter(int(ln.split()[1]) for ln in lines if ln.startswith("hc "))
    want = Counter({_nr(n): hs["count"] for n, hs in stats.items()})
    assert got == want
    # xentrace_format masks the argument-presence bits off V2 records only: it names
    # SUBCALL 0x20100e where trace.h has 0x20200e, so the test masks those itself.
    subs = Counter(int(ln.split()[1]) & R.HYPERCALL_OP_MASK for ln in lines
                   if ln.startswith("sub "))
    assert subs == Counter({abi.HYPERCALL_NUMBERS[n]: c for n, c in _subcalls().items()})


def _nr(name: str) -> int:
    from pvmon.backends.xen import abi
    return abi.HYPERCALL_NUMBERS[name] if name in abi.HYPERCALL_NUMBERS \
        else int(name.rsplit("_", 1)[1])


def _exported(ev: dict) -> bool:
    """Whether an event has a xentrace record (docs/xentrace.md)."""
    return ev["k"] in ("hc", "fault", "upcall") or (
        ev["k"] == "exit" and ev.get("reason") in ("shutdown", "crash"))


def _key(ev: dict) -> tuple:
    return (ev.get("k"), ev.get("name"), ev.get("vec"))


def test_an_export_imported_again_gives_the_same_call_sequence(exported, tmp_path):
    out = tmp_path / "back.pvt"
    p = pvmon("trace", "import", str(exported), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "imported" in p.stderr and "domain 1" in p.stderr
    with TraceReader(GOLDEN) as a, TraceReader(out) as b:
        left = [ev for ev in a if _exported(ev)]
        right = list(b)
        assert b.header["imported"]["format"] == "xentrace"
    assert [_key(e) for e in left] == [_key(e) for e in right]
    for x, y in zip(left, right, strict=True):
        if x["k"] == "hc":
            assert y["nr"] == x["nr"]
            if y["op"].get("cmd") is not None:     # the sub-ops registers carry
                assert y["op"]["cmd"] == x["op"]["cmd"], (x, y)
            if x["name"] == "multicall":
                assert y["op"]["calls"] == x["op"]["calls"]
        elif x["k"] == "fault":
            assert (y["vec"], y["err"], y["rip"]) == (x["vec"], x["err"], x["rip"])
        elif x["k"] == "exit":
            assert (y["reason"], y["detail"]) == (x["reason"], x["detail"])
        else:
            assert (y["rip"], y["ports"]) == (x["rip"], x["ports"])
        assert y["t"] == x["t"] - left[0]["t"]       # TSC = virtual ns at pvmon's 1 GHz


def test_an_imported_trace_is_listed_and_diffed_but_never_replayed(exported, tmp_path):
    out = tmp_path / "back.pvt"
    assert pvmon("trace", "import", str(exported), "-o", str(out)).returncode == 0
    for args in (("trace", "cat", str(out)), ("trace", "stats", str(out)),
                 ("trace", "info", str(out))):
        p = pvmon(*args)
        assert p.returncode == 0, (args, p.stderr)
    assert "console_io(write)" in pvmon("trace", "cat", str(out)).stdout
    assert "imported          from xentrace file golden.xt, domain 1" in \
        pvmon("trace", "info", str(out)).stdout
    p = pvmon("diff", str(GOLDEN), str(out))
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr
    for extra in ((), ("--backend", "xen-4.6"), ("--open-loop",)):
        line = one_line_error(pvmon("replay", str(out), *extra))
        assert "imported from xentrace" in line and "cannot be verified or replayed" in line


# --- crafted files --------------------------------------------------------------------


def _window(cpu: int, recs: list[bytes]) -> bytes:
    body = b"".join(recs)
    return R.cpu_change(cpu, len(body)) + body


def _hc(nr: int, args: list[int], tsc: int, sub: bool = False) -> bytes:
    ev = R.TRC_PV_HYPERCALL_SUBCALL if sub else R.TRC_PV_HYPERCALL_V2
    return R.pack_record(ev, R.hypercall_words(nr, args), tsc)


def _run(dom: int, vcpu: int, tsc: int) -> bytes:
    return R.runstate_change(dom, vcpu, R.RUNSTATE_RUNNABLE, R.RUNSTATE_RUNNING, tsc)


def _crafted(tmp_path: Path) -> Path:
    """Two CPUs in interleaved windows, domains 3 and 7, every record class
    the importer reads (64- and 32-bit traps, both hypercall versions, a
    multicall, an upcall), a lost-records record, a wrap padding record, a
    scheduler record it skips, and a TSC that steps back on CPU 1."""
    cpu0a = [_run(3, 0, 100),
             _hc(29, [1], 110),                                  # sched_op(block)
             _hc(13, [0xFFFF8000_00001000, 2], 120),             # multicall of 2
             _hc(17, [0, 0], 120, sub=True), _hc(14, [0x1000, 5, 0], 120, sub=True),
             R.pack_record(R.TRC_PV_TRAP | R.TRC_64_FLAG, (0x80001234, 0xFFFFFFFF, 6), 130)]
    cpu1a = [_run(7, 1, 105),
             _hc(24, [7, 1, 0], 115),                            # vcpu_op(stop_periodic_timer)
             R.pack_record(R.TRC_LOST_RECORDS, (42, 7 | 1 << 16, 0, 0), 125)]
    cpu0b = [R.pack_record(R.TRC_PV_PAGE_FAULT | R.TRC_64_FLAG,
                           (0x1000, 0, 0xDEAD000, 0, 2), 140),
             R.pack_record(R.TRC_PV_TRAP, (0x401000, 13 | 1 << 15 | 0x18 << 16), 150),
             R.pack_record(R.TRC_PV_HYPERCALL | R.TRC_64_FLAG, (0x2000, 0, 18), 160),
             R.pack_record(R.TRC_PVMON_UPCALL, (0x3000, 0, 3, 5), 170),
             R.pack_record(R.TRC_TRACE_WRAP_BUFFER, (0, 0, 0), None),
             R.pack_record(R.TRC_SCHED_SWITCH + 1, (1,), 175),      # SWITCH_INFPREV: skipped
             R.pack_record(R.TRC_SCHED_SHUTDOWN, (3, 0, 3), 176)]   # dom 3 crashes
    cpu1b = [_hc(32, [4, 0], 118),                               # TSC back from 125 to 118
             _hc(20, [2, 0, 1], 180)]                            # grant_table_op(setup_table)
    data = (_window(0, cpu0a) + _window(1, cpu1a) + _window(0, cpu0b) + _window(1, cpu1b))
    path = tmp_path / "crafted.xt"
    path.write_bytes(data)
    return path


def test_crafted_records_of_every_class_merge_by_tsc_across_cpus(tmp_path):
    with XentraceReader(_crafted(tmp_path)) as r:
        assert r.cpus == [0, 1]
        recs = list(r.records())
    tscs = [rec.tsc for rec in recs if rec.tsc is not None]
    assert tscs[:4] == [100, 105, 110, 115]
    assert sum(rec.backstep for rec in recs) == 1


def test_import_asks_for_a_domain_when_several_have_pv_records(tmp_path):
    src = _crafted(tmp_path)
    line = one_line_error(pvmon("trace", "import", str(src), "-o", str(tmp_path / "o.pvt")))
    assert "several domains" in line and "3 (" in line and "7 (" in line and "--domain" in line
    line = one_line_error(pvmon("trace", "import", str(src), "-o", str(tmp_path / "o.pvt"),
                                "--domain", "9"))
    assert "domain 9 has no PV records" in line


def test_import_of_one_domain_keeps_its_calls_traps_upcalls_and_lost_records(tmp_path):
    src = _crafted(tmp_path)
    info = import_xentrace(src, tmp_path / "d3.pvt", domain=3)
    assert info["domain"] == 3 and info["vcpus"] == [0] and info["lost_records"] == 42
    assert info["tsc_backsteps"] == 1
    with TraceReader(tmp_path / "d3.pvt") as r:
        evs = list(r)
    kinds = [(e["k"], e.get("name") or e.get("vec") or e.get("n")) for e in evs]
    assert kinds == [("hc", "sched_op"), ("hc", "multicall"), ("lost", 42), ("fault", 6),
                     ("fault", 14), ("fault", 13), ("hc", "console_io"), ("upcall", None),
                     ("exit", None)]
    assert evs[0]["op"] == {"cmd": "block"}
    assert evs[1]["op"]["calls"] == ["xen_version", "update_va_mapping"]
    assert evs[3]["rip"] == 0xFFFFFFFF_80001234 and evs[3]["err"] is None
    assert (evs[4]["cr2"], evs[4]["err"]) == (0xDEAD000, 2)
    assert (evs[5]["rip"], evs[5]["err"]) == (0x401000, 0x18)      # a 32-bit trap record
    assert evs[6]["rip"] == 0x2000                                 # the version-1 record
    assert evs[7]["ports"] == [3, 5]
    assert (evs[8]["reason"], evs[8]["detail"]) == ("crash", "SCHEDOP_shutdown(crash)")
    assert [e["t"] for e in evs] == sorted(e["t"] for e in evs)
    info = import_xentrace(src, tmp_path / "d7.pvt", domain=7, vcpu=1)
    with TraceReader(tmp_path / "d7.pvt") as r:
        names = [(e.get("name"), e["op"].get("cmd")) for e in r if e["k"] == "hc"]
    assert names == [("vcpu_op", "stop_periodic_timer"), ("event_channel_op", "send"),
                     ("grant_table_op", "setup_table")]


def test_a_file_without_scheduler_records_imports_as_an_unnamed_domain(tmp_path):
    src = tmp_path / "nosched.xt"
    src.write_bytes(_window(0, [_hc(29, [0], 10), _hc(29, [2], 20)]))
    info = import_xentrace(src, tmp_path / "o.pvt")
    assert info["domain"] is None and info["events"] == 2


def test_a_truncated_last_window_keeps_its_complete_records(tmp_path):
    full = _window(0, [_run(1, 0, 1)] + [_hc(29, [0], 10 + i) for i in range(10)])
    src = tmp_path / "cut.xt"
    src.write_bytes(full[:-6])
    p = pvmon("trace", "import", str(src), "-o", str(tmp_path / "o.pvt"))
    assert p.returncode == 0, p.stderr
    assert "cut short at byte 0x0" in p.stderr
    with TraceReader(tmp_path / "o.pvt") as r:
        assert len(r) == 9


@pytest.mark.parametrize("case, data, words", [
    ("not a trace", b"PK\x03\x04" + bytes(60), "not a xentrace file"),
    ("empty", b"", "empty file"),
    ("too short", R.cpu_change(0, 0)[:8], "too short"),
    ("big-endian", struct.pack(">Iii", R.header_word(R.TRC_TRACE_CPU_CHANGE, 2, False), 0, 0)
     + bytes(8), "big-endian"),
    ("cpu out of range", R.cpu_change(5000, 0), "outside 0 to"),
    ("garbage after a window", R.cpu_change(0, 0) + b"\xff" * 16, "expected a TRC_TRACE_CPU"),
    ("record past its window", R.cpu_change(0, 8) + R.pack_record(R.TRC_PV_HYPERCALL_V2,
                                                                  (29,), 5)[:8]
     + R.cpu_change(0, 0), "runs past the end of its window"),
    ("no pv records", _window(0, [R.pack_record(0x00082001, (1, 2), 5)]), "no PV hypercall"),
])
def test_hostile_xentrace_files_get_one_line_and_exit_2(tmp_path, case, data, words):
    src = tmp_path / "bad.xt"
    src.write_bytes(data)
    line = one_line_error(pvmon("trace", "import", str(src), "-o", str(tmp_path / "o.pvt")))
    assert words in line, (case, line)
    assert not (tmp_path / "o.pvt").exists()


def test_a_huge_window_size_is_a_truncation_not_an_allocation(tmp_path):
    src = tmp_path / "huge.xt"
    src.write_bytes(R.cpu_change(0, 0xFFFFFFF0) + _run(1, 0, 1) + _hc(29, [0], 2))
    with XentraceReader(src) as r:
        assert r.truncated_at == 0
        assert len(list(r.records())) == 2
    with pytest.raises(TraceError, match="truncated"):
        XentraceReader(src, strict=True)


def test_the_tui_player_opens_an_imported_trace(exported, tmp_path):
    from pvmon.ui.app import PvmonApp
    from pvmon.ui.screens.player import PlayerScreen
    from pvmon.ui.widgets.hypercalls import HypercallStream
    from tests.tui_support import drive, until
    out = tmp_path / "back.pvt"
    assert pvmon("trace", "import", str(exported), "-o", str(out)).returncode == 0

    async def script(pilot):
        await until(pilot, lambda: getattr(pilot.app.screen, "index", None) is not None,
                    what="the index")
        await pilot.pause(0.05)
        screen = pilot.app.screen
        assert isinstance(screen, PlayerScreen)
        assert len(screen.query_one(HypercallStream).source) > 300
        assert screen.index.counts["event_channel_op"] == 149

    drive(PvmonApp(trace=out), script)


def test_a_multicall_collects_its_entries_while_another_vcpu_runs(tmp_path):
    src = tmp_path / "two.xt"
    src.write_bytes(
        _window(0, [_run(2, 0, 1), _hc(13, [0x1000, 2], 10), _hc(17, [0], 10, sub=True)])
        + _window(1, [_run(2, 1, 2), _hc(29, [0], 11)])
        + _window(0, [_hc(14, [0x2000, 0, 0], 12, sub=True), _hc(29, [1], 20)]))
    info = import_xentrace(src, tmp_path / "o.pvt")
    assert info["vcpus"] == [0, 1]
    with TraceReader(tmp_path / "o.pvt") as r:
        evs = list(r)
    assert [(e["name"], e["cpu"], e["t"]) for e in evs] == [
        ("multicall", 0, 9), ("sched_op", 1, 10), ("sched_op", 0, 19)]
    assert evs[0]["op"]["calls"] == ["xen_version", "update_va_mapping"]
