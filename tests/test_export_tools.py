"""`pvmon trace export` output read by the tools it is for: a JSON parser that
reads numbers as doubles (JavaScript's, as ui.perfetto.dev uses) gets every
address exactly, console output as text, and the right names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pvmon.trace import TraceReader
from pvmon.trace.export import MAX_SAFE_INT, estimate_size, large_export_warning

PVMON = [sys.executable, "-m", "pvmon.cli"]


def _pvmon(*args, **kw):
    return subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300, check=False, **kw)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real pvtest-v2 run (its RIPs and pointers are above 2**53) and its
    Perfetto export."""
    d = tmp_path_factory.mktemp("export")
    trace, out = d / "v2.pvt", d / "v2.json"
    p = _pvmon("run", "pvtest-v2", "--quiet", "--record", trace)
    assert p.returncode == 0, p.stderr
    p = _pvmon("trace", "export", trace, "--format", "perfetto", "-o", out)
    assert p.returncode == 0, p.stderr
    assert "warning" not in p.stderr
    return trace, out


def _numbers(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _numbers(x)
    elif isinstance(v, list):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield v


def _check_against_trace(doc, trace):
    with TraceReader(trace) as r:
        events = list(r)
    by_seq = {e["seq"]: e for e in events}
    slices = [e for e in doc["traceEvents"] if e.get("cat") == "hypercall"]
    assert len(slices) == sum(1 for e in events if e["k"] == "hc")
    big = 0
    for s in slices:
        ev = by_seq[int(s["args"]["seq"])]
        assert int(s["args"]["rip"], 16) == ev["rip"]
        assert [int(a, 16) for a in s["args"]["args"]] == list(ev["args"])
        big += ev["rip"] > MAX_SAFE_INT
    assert big > 100        # the check above covered addresses a double rounds
    return events


def test_a_double_based_json_parser_reads_every_address_of_an_export_exactly(recorded):
    trace, out = recorded
    doc = json.loads(out.read_text(), parse_int=float)   # numbers as doubles, as JavaScript
    # no number in the file is beyond what a double holds exactly
    assert all(abs(x) <= MAX_SAFE_INT for x in _numbers(doc))
    _check_against_trace(doc, trace)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_nodes_json_parse_reads_the_export_as_recorded(recorded, tmp_path):
    trace, out = recorded
    script = ("const d = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));"
              "process.stdout.write(JSON.stringify(d));")
    p = subprocess.run(["node", "-e", script, str(out)], capture_output=True, text=True,
                       timeout=120, check=True)
    _check_against_trace(json.loads(p.stdout), trace)


def test_the_export_shows_console_output_as_text_and_names_guest_and_backend(recorded):
    trace, out = recorded
    doc = json.loads(out.read_text())
    evs = doc["traceEvents"]
    proc = next(e for e in evs if e["ph"] == "M" and e["name"] == "process_name")
    assert proc["args"]["name"] == "pvtest-v2 on xen-4.17"
    con = [e for e in evs if e.get("cat") == "con"]
    text = "".join(e["args"]["text"] for e in con if e["args"]["ch"] == "ring")
    assert "pvtest: pvtest-v2 booting" in text and "passed, 0 failed" in text
    assert any(e["name"].startswith("pvtest: ok 1 - ") for e in con)
    with TraceReader(trace) as r:
        recorded_text = b"".join(e["data"] for e in r if e["k"] == "con" and e["ch"] == "ring")
    assert text == recorded_text.decode()


def test_a_very_large_export_is_announced_with_its_estimated_size(recorded, tmp_path):
    trace, out = recorded
    with TraceReader(trace) as r:
        est = estimate_size(r, "perfetto")
        actual = out.stat().st_size
        assert 0.5 * actual < est < 2 * actual
        assert large_export_warning(r, "perfetto") is None     # a boot: far below the limit
        msg = large_export_warning(r, "perfetto", threshold=1000)
        assert msg is not None and f"{len(r):,} events" in msg and "about" in msg
        assert "perfetto" in msg


def test_export_progress_is_silent_when_stderr_is_not_a_terminal(recorded, tmp_path):
    trace, _ = recorded
    p = _pvmon("trace", "export", trace, "--format", "jsonl", "-o", tmp_path / "x.jsonl",
               env={**os.environ, "TERM": "xterm"})
    assert p.returncode == 0
    want = f"jsonl records to {tmp_path / 'x.jsonl'}"
    assert len(p.stderr.splitlines()) == 1 and p.stderr.rstrip().endswith(want)
