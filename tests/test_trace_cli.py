"""`pvmon trace info|cat|stats|export` through click's CliRunner on real trace files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pvmon.cli import cli
from pvmon.trace import TraceReader, TraceWriter
from pvmon.trace import format as fmt
from pvmon.trace.synth import synthetic_events, synthetic_header


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "run.pvt"
    with TraceWriter(path, synthetic_header(), frame_events=200) as w:
        w.append({"seq": 0, "t": 1000, "cpu": 0, "k": "hc", "abi": "xen", "nr": 26,
                  "name": "mmuext_op", "args": [0xFFFF888000001000, 1, 0, 0x7FF0],
                  "op": {"cmd": "PIN_L4_TABLE", "mfn": 0x1234}, "ret": 0, "rip": 0x1, "via":
                  "syscall", "rd": [["v", 0xFFFF888000001000, b"\x00" * 16]], "wr": [], "ev": []})
        w.append({"seq": 1, "t": 2000, "cpu": 0, "k": "hc", "abi": "xen", "nr": 99,
                  "name": "xenpmu_op", "args": [], "op": {}, "ret": -38, "rip": 0x2})
        for ev in synthetic_events(2000, seed=5):
            w.append({**ev, "seq": ev["seq"] + 2, "t": ev["t"] + 2000})
    return path


def run(*args):
    return CliRunner().invoke(cli, ["trace", *map(str, args)], catch_exceptions=False)


def test_info_shows_header_counts_size_and_status(trace):
    res = run("info", trace)
    assert res.exit_code == 0, res.output
    for text in ("debian-6.12", "xen 4.17", "2,002", "bytes/event", "complete", "mmu_update",
                 "frames"):
        assert text in res.output


def test_cat_prints_readable_lines_with_decoded_arguments(trace):
    res = run("cat", trace, "--to", 1)
    assert res.exit_code == 0
    assert res.output.splitlines() == [
        "#0 t=0.000001000s  mmuext_op(PIN_L4_TABLE, mfn=0x1234) = 0",
        "#1 t=0.000002000s  xenpmu_op() = -38 (ENOSYS)",
    ]


def test_cat_filters_by_name_and_kind_and_prints_json_lines(trace):
    res = run("cat", trace, "--filter", "fault,console_io", "--json")
    lines = [json.loads(line) for line in res.output.splitlines()]
    assert lines and {(e["k"], e.get("name")) for e in lines} <= {("fault", None),
                                                                   ("hc", "console_io")}
    assert all(isinstance(rd[2], str) for e in lines for rd in e.get("rd", []))  # bytes as hex


def test_cat_from_and_time_seek_without_reading_earlier_frames(trace):
    with TraceReader(trace) as r:
        first, late = r.frames[0], r.frames[5]
        t_late = r.frame_events(5)[3]["t"]
    data = bytearray(trace.read_bytes())
    data[first.offset + fmt.DESC_SIZE + 20] ^= 0xFF  # frame 0 is now corrupt
    trace.write_bytes(bytes(data))
    res = run("cat", trace, "--from", late.first_seq + 3, "--to", late.first_seq + 4)
    assert res.exit_code == 0 and res.output.startswith(f"#{late.first_seq + 3} ")
    res = run("cat", trace, "--time", f"{t_late}ns", "--to", late.first_seq + 3)
    assert res.output.startswith(f"#{late.first_seq + 3} ")
    res = CliRunner().invoke(cli, ["trace", "cat", str(trace)])
    assert res.exit_code == 2
    assert f"corrupt trace at byte {first.offset}" in res.output


def test_stats_reports_counts_rates_and_sub_operation_histograms(trace):
    res = run("stats", trace)
    assert res.exit_code == 0
    assert "NEW_BASEPTR" in res.output and "per s" in res.output
    data = json.loads(run("stats", trace, "--json").output)
    assert data["events"] == 2002 and data["status"] == "complete"
    assert data["hypercalls"]["xenpmu_op"]["errors"] == {"-38": 1}
    assert data["hypercalls"]["mmuext_op"]["subops"]["PIN_L4_TABLE"] >= 1


def test_export_perfetto_writes_chrome_trace_json(trace, tmp_path):
    out = tmp_path / "run.json"
    res = run("export", trace, "--format", "perfetto", "-o", out)
    assert res.exit_code == 0
    doc = json.loads(out.read_text())
    evs = doc["traceEvents"]
    slices = [e for e in evs if e["ph"] == "X"]
    assert slices[0]["name"] == "mmuext_op" and slices[0]["ts"] == 1.0
    assert slices[0]["dur"] == 1.0  # until the next event on the same vCPU
    assert all(e["dur"] >= 0 for e in slices)
    assert {e["cat"] for e in evs if e["ph"] == "i"} >= {"fault", "upcall", "con"}
    assert any(e["ph"] == "M" and e["args"]["name"] == "vCPU 0" for e in evs)


def test_export_jsonl_writes_header_then_events(trace, tmp_path):
    out = tmp_path / "run.jsonl"
    assert run("export", trace, "--format", "jsonl", "-o", out).exit_code == 0
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "pvmon-trace" and len(lines) == 2003


def test_a_truncated_trace_is_reported_as_such(trace):
    with TraceReader(trace) as r:
        cut = r.frames[3].end + 10
    trace.write_bytes(trace.read_bytes()[:cut])
    assert "truncated after event 799" in run("info", trace).output
    res = CliRunner().invoke(cli, ["trace", "cat", str(trace), "--from", "795"])
    assert res.exit_code == 0 and "truncated after event 799" in res.output


def test_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.pvt"
    bad.write_bytes(b"garbage")
    res = CliRunner().invoke(cli, ["trace", "info", str(bad)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "not a pvmon trace" in res.output
