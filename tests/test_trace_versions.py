"""Trace format versions: a version-1 file (tests/data/format1-pvtest-v1.pvt)
stays readable, replayable and verifiable, and a current recording of the same
guest carries the same information with its TSC reads grouped into
``tsc_run`` events; likewise a version-3 file with port reads
(tests/data/format3-pvtest-kvm.pvt, the corpus's pvtest-kvm trace as
session 12 recorded it) and the ``io_run`` events of version 4.

The version-1 file was recorded by pvmon before version 2 existed; when the
reference guests changed in session 9 (Xen's periodic-timer rule) it was
written again in the version-1 layout, one ``tsc`` event per TSC read and
version 1 in the preamble and header, by ``python tests/test_trace_versions.py``
(what a version-1 pvmon wrote, from the current guest image)."""

import json
from pathlib import Path

from click.testing import CliRunner

from pvmon.backends.registry import backend_for_version
from pvmon.cli import cli
from pvmon.dispatch.core import IO_RUN_MAX
from pvmon.dispatch.xen import TSC_RUN_MAX
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.openloop import replay_open
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace import format as fmt
from pvmon.trace.reader import TraceReader
from pvmon.trace.stats import TraceStats

V1_TRACE = Path(__file__).parent / "data" / "format1-pvtest-v1.pvt"
V1_TSC_READS = 2476
V3_TRACE = Path(__file__).parent / "data" / "format3-pvtest-kvm.pvt"


def _without_tsc(events):
    """The events other than TSC reads, without their seqs (which TSC grouping renumbers)."""
    return [{k: v for k, v in e.items() if k != "seq"} for e in events
            if e["k"] not in ("tsc", "tsc_run")]


def _tsc_reads(events):
    out = []
    for e in events:
        if e["k"] == "tsc":
            out.append((e["rip"], e["val"]))
        elif e["k"] == "tsc_run":
            assert len(e["rip"]) == len(e["val"]) <= TSC_RUN_MAX
            out.extend(zip(e["rip"], e["val"], strict=True))
    return out


def test_a_version_1_trace_reads_with_its_per_read_tsc_events():
    r = TraceReader(V1_TRACE)
    assert r.version == 1 and r.complete
    stats = TraceStats.of(r)
    assert stats.by_kind["tsc"] == V1_TSC_READS and "tsc_run" not in stats.by_kind
    assert stats.tsc_reads == V1_TSC_READS
    out = CliRunner().invoke(cli, ["trace", "info", str(V1_TRACE)])
    assert out.exit_code == 0 and "version 1" in out.output
    out = CliRunner().invoke(cli, ["trace", "cat", str(V1_TRACE), "--filter", "tsc"])
    assert out.exit_code == 0 and "rdtsc = 0x" in out.output


def test_a_version_1_trace_still_verifies_and_replays_open_loop():
    run = open_run(V1_TRACE)
    rep = replay_closed(run)
    assert rep.total == 0 and rep.ending["outcome"] == "identical"
    assert rep.compared == len(run.reader)
    rep = replay_open(open_run(V1_TRACE, need_guest=False), run.version)
    assert rep.total == 0 and rep.stats["calls"] > 300


def test_a_version_2_recording_holds_the_same_events_with_tsc_reads_in_runs(tmp_path):
    path = tmp_path / "v2.pvt"
    assert Session(resolve("pvtest-v1"), record=path).run(timeout=120).clean
    new, old = TraceReader(path), TraceReader(V1_TRACE)
    assert new.version == fmt.FORMAT_VERSION == 4
    new_evs, old_evs = list(new.events()), list(old.events())
    # every TSC value the guest read, in order, at the same RIPs
    assert _tsc_reads(new_evs) == _tsc_reads(old_evs) and len(_tsc_reads(new_evs)) == V1_TSC_READS
    # and nothing else changed but the numbering
    assert _without_tsc(new_evs) == _without_tsc(old_evs)
    runs = [e for e in new_evs if e["k"] == "tsc_run"]
    assert 0 < len(runs) < V1_TSC_READS
    assert max(len(r["val"]) for r in runs) >= 1000    # the guest's 1000-read loop: one run
    # a run holds reads with no other event between them: its neighbours are other kinds
    kinds = [e["k"] for e in new_evs]
    assert all(a != "tsc_run" or b != "tsc_run" or len(runs_at) == TSC_RUN_MAX
               for a, b, runs_at in zip(kinds, kinds[1:], [e.get("val") for e in new_evs]))
    out = CliRunner().invoke(cli, ["trace", "cat", str(path), "--filter", "tsc"]).output
    assert out.count("rdtsc") == len(runs)
    doc = json.loads(CliRunner().invoke(cli, ["trace", "stats", str(path), "--json"]).output)
    assert doc["tsc_reads"] == V1_TSC_READS


def _port_reads(events):
    out = []
    for e in events:
        if e["k"] == "io" and e["dir"] == "in":
            out.append((e["port"], e["size"], e["val"]))
        elif e["k"] == "io_run":
            assert len(e["port"]) == len(e["size"]) == len(e["val"]) <= IO_RUN_MAX
            assert len(e["port"]) > 1       # a run of one read is an `io` event
            out.extend(zip(e["port"], e["size"], e["val"], strict=True))
    return out


def _without_reads(events):
    """The events other than TSC and port reads, without their seqs."""
    return [{k: v for k, v in e.items() if k != "seq"} for e in events
            if e["k"] not in ("tsc", "tsc_run", "io_run")
            and not (e["k"] == "io" and e["dir"] == "in")]


def test_a_version_3_trace_with_port_reads_still_verifies():
    run = open_run(V3_TRACE)
    assert run.reader.version == 3
    rep = replay_closed(run)
    assert rep.total == 0 and rep.ending["outcome"] == "identical"
    assert rep.compared == len(run.reader)


def test_a_version_4_recording_holds_the_same_port_reads_in_runs(tmp_path):
    old_run = open_run(V3_TRACE)
    path = tmp_path / "v4.pvt"
    sess = Session(old_run.guest, backend=backend_for_version(old_run.version), record=path,
                   **old_run.session_args())
    sess.run(timeout=120)
    new, old = TraceReader(path), old_run.reader
    assert new.version == 4
    new_evs, old_evs = list(new.events()), list(old.events())
    # every port read and every TSC read, in order, and nothing else changed
    assert _port_reads(new_evs) == _port_reads(old_evs) and len(_port_reads(old_evs)) > 10_000
    assert _tsc_reads(new_evs) == _tsc_reads(old_evs)
    assert _without_reads(new_evs) == _without_reads(old_evs)
    assert len(new_evs) < len(old_evs)     # (its UART polling reads one port between writes)
    assert any(e["k"] == "io_run" for e in new_evs)
    stats = json.loads(CliRunner().invoke(cli, ["trace", "stats", str(path), "--json"]).output)
    assert stats["port_reads"] == len(_port_reads(old_evs))
    out = CliRunner().invoke(cli, ["trace", "cat", str(path), "--filter", "io"]).output
    assert " io in x" in out and "io dir=out" in out
    # and it verifies
    rep = replay_closed(open_run(path))
    assert rep.total == 0 and rep.ending["outcome"] == "identical"


def _write_version_1(path: Path) -> None:
    """Record pvtest-v1 with one ``tsc`` event per TSC read, as version 1 did,
    into a file whose preamble and header say version 1."""
    from pvmon.trace import writer as writer_mod
    saved = fmt.FORMAT_VERSION
    fmt.FORMAT_VERSION = 1
    try:
        sess = Session(resolve("pvtest-v1"), record=path)
        sess.dispatch.tsc_run_max = 0
        assert sess.run(timeout=120).clean
    finally:
        fmt.FORMAT_VERSION = saved
    assert writer_mod and TraceReader(path).version == 1


if __name__ == "__main__":      # regenerate tests/data/format1-pvtest-v1.pvt
    _write_version_1(V1_TRACE)
    print(V1_TRACE, len(TraceReader(V1_TRACE)), "events")
