"""gdb on a replay of a pvtest-v2 recording: forward under gdb still verifies,
reverse-stepi and reverse-continue land where going forward had been, and
the monitor commands stop at calls and trace events."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pvmon.guests.catalog import resolve
from pvmon.trace.reader import TraceReader
from tests.gdb_support import ROOT, Pvmon, needs_gdb, run_gdb

ELF = resolve("pvtest-v2").vmlinux
pytestmark = needs_gdb


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("gdb") / "v2.pvt"
    subprocess.run([sys.executable, "-m", "pvmon", "run", "pvtest-v2", "--quiet", "--record",
                    str(path)], cwd=ROOT, check=True, capture_output=True)
    return path


def _events(out: str) -> list[int]:
    """The event numbers ``monitor info event`` printed, in order (-1: before event 0)."""
    found = []
    for line in out.splitlines():
        if line.startswith("before event 0"):
            found.append(-1)
        m = re.match(r"after event ([\d,]+) of", line)
        if m:
            found.append(int(m.group(1).replace(",", "")))
    return found


def _replay(trace, commands: list[str]) -> tuple[str, int, str]:
    pv = Pvmon("replay", str(trace))
    out = run_gdb(pv.port, commands, file=ELF)
    status, stdout, _ = pv.wait()
    return out, status, stdout


def test_reverse_stepi_returns_to_the_registers_before_the_step(trace) -> None:
    out, status, stdout = _replay(trace, [
        "break checks_events", "continue", "stepi", "info registers", "stepi",
        "reverse-stepi", "info registers", "reverse-stepi", "p $pc", "delete", "continue"])
    blocks = re.findall(r"(rax .*?gs_base +\S+)", out, re.DOTALL)
    assert len(blocks) == 2 and blocks[0] == blocks[1]           # every register the same
    assert "$1 = (void (*)()) 0xffffffff80201810 <checks_events>" in out   # two back
    assert status == 0 and "no divergence" in stdout             # still verifies


def test_reverse_continue_stops_at_the_previous_breakpoint_hit_of_the_forward_run(trace) -> None:
    out, status, stdout = _replay(trace, [
        "break printk", "continue", "monitor info event", "continue", "monitor info event",
        "continue", "monitor info event", "reverse-continue", "monitor info event",
        "reverse-continue", "monitor info event", "reverse-continue", "p $pc",
        "delete", "continue"])
    ev = _events(out)
    assert len(ev) == 5
    forward, back = ev[:3], ev[3:]
    assert forward[0] < forward[1] < forward[2]
    assert back == [forward[1], forward[0]]
    assert "No more reverse-execution history." in out            # before the first hit
    assert "<_start>" in out.rsplit("No more reverse-execution history.", 1)[1]
    assert status == 0 and "no divergence" in stdout


def test_reverse_stepi_after_a_continue_finds_the_calling_instruction(trace) -> None:
    out, status, _ = _replay(trace, [
        "break printk", "continue", "continue", "monitor info event", "reverse-stepi",
        "x/i $pc", "monitor info event", "stepi", "p $pc", "delete", "continue"])
    assert re.search(r"=> 0x[0-9a-f]+ <\w+\+\d+>:\s+call\s+0x[0-9a-f]+ <printk>", out)
    ev = _events(out)
    assert ev[0] == ev[1]                       # the call made no event
    assert re.search(r"\$1 = \(void \(\*\)\(\)\) 0x[0-9a-f]+ <printk>", out)
    assert status == 0


def test_goto_event_forward_and_back_and_the_registers_match_the_trace(trace) -> None:
    rec = list(TraceReader(trace).events(0, 400))
    hc = next(e for e in rec[200:] if e.get("k") == "hc")     # a call event after 200
    n = hc["seq"]
    out, status, stdout = _replay(trace, [
        f"monitor goto-event {n}", "continue", "monitor info event", "p/x $pc",
        "monitor goto-event 2", "reverse-continue", "monitor info event", "p/x $pc",
        "continue"])
    ev = _events(out)
    assert ev == [n, 2]
    pcs = re.findall(r"\$\d+ = (0x[0-9a-f]+)", out)
    # stopped right after the call's syscall (2 bytes), unless an event upcall came next
    after = rec[n + 1] if n + 1 < len(rec) else {}
    assert int(pcs[0], 16) == hc["rip"] + 2 or after.get("k") == "upcall"
    assert int(pcs[1], 16) == rec[2]["rip"] + 2                  # set_trap_table's syscall
    assert status == 0 and "no divergence" in stdout


def test_break_hypercall_stops_after_each_named_call(trace) -> None:
    out, status, stdout = _replay(trace, [
        "monitor break-hypercall mmuext_op", "continue", "monitor info event", "continue",
        "monitor info event", "monitor delete-hypercall", "continue"])
    lines = [ln for ln in out.splitlines() if ln.startswith("after event")]
    assert len(lines) == 2 and all("mmuext_op(" in ln for ln in lines)
    assert status == 0 and "no divergence" in stdout


def test_snapshot_memory_and_spacing_are_reported(trace) -> None:
    out, status, stdout = _replay(trace, [
        "break printk", "continue", "continue", "reverse-continue", "monitor info snapshots",
        "delete", "continue"])
    assert re.search(r"snapshot memory: [\d.]+ MiB private \([\d.]+x guest RAM of 256 MiB\)",
                     out)
    assert re.search(r"last going back .*: [\d.]+ s wall, [\d.]+ s CPU", out)
    assert "gdb reverse execution:" in stdout and "restores" in stdout
    assert status == 0


def _hc_after(trace, n: int) -> int:
    """The number of the first call event at or after event ``n``."""
    return next(e["seq"] for e in TraceReader(trace).events(n) if e.get("k") == "hc")


def test_reverse_continue_finds_the_last_hit_of_a_breakpoint_set_after_the_run_passed_it(
        trace) -> None:
    # the snapshots were taken with another breakpoint set, or none: the search must
    # use gdb's breakpoints of now, and stop at the last printk before here
    calls = [e["seq"] for e in TraceReader(trace).events() if e.get("k") == "hc"]
    n = calls[-2]
    out, status, stdout = _replay(trace, [
        "break check", "continue", "continue", "continue", "monitor info event", "delete",
        f"monitor goto-event {n}", "continue", "monitor info event",
        "break printk", "reverse-continue", "monitor info event", "p $pc",
        "continue", "monitor info event", "delete", "continue"])
    ev = _events(out)
    third, here, back = ev[0], ev[1], ev[2]
    assert here == n and third <= back < here
    assert re.search(r"\$1 = \(void \(\*\)\(\)\) 0x[0-9a-f]+ <printk>", out)
    # going on from there meets no printk before where the search started
    assert len(ev) == 3 or ev[3] >= here
    assert status == 0 and "no divergence" in stdout


def test_reverse_continue_skips_segments_whose_code_never_held_the_breakpoint(trace) -> None:
    # stops at three events make three segments after the first; _start runs only
    # at the very beginning, so only the first segment is re-executed
    stops = [_hc_after(trace, k) for k in (600, 1200, 1800)]
    cmds = []
    for k in stops:
        cmds += [f"monitor goto-event {k}", "continue"]
    out, status, stdout = _replay(trace, [
        *cmds, "monitor info event", "break _start", "reverse-continue", "p $pc",
        "monitor info snapshots", "delete", "continue"])
    assert _events(out) == [stops[-1]]
    assert "Breakpoint 1, " in out and "No more reverse-execution history" not in out
    assert re.search(r"\$1 = \(void \(\*\)\(\)\) 0x[0-9a-f]+ <_start>", out)
    found = re.search(r"re-executed (\d+) segments and skipped (\d+)", out)
    assert found and int(found.group(1)) == 1 and int(found.group(2)) >= 2
    assert status == 0 and "no divergence" in stdout
