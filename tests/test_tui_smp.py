"""The TUI over SMP Xen PV guests (docs/smp.md): the live view and the player
show a vCPU column, the scheduler's switches, the vCPU on the engine, and
filter by vCPU. Real Debian 6.12 boots with two vCPUs (pvtest-v2 brings up
no second vCPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.trace.reader import TraceReader
from pvmon.ui.app import PvmonApp
from pvmon.ui.families import family_of
from pvmon.ui.filters import EventFilter
from pvmon.ui.screens.live import LiveScreen
from pvmon.ui.screens.player import PlayerScreen
from pvmon.ui.widgets.hypercalls import HypercallStream, row_text
from pvmon.ui.widgets.registers import RegisterPane
from pvmon.ui.widgets.status import StatusLine
from tests.tui_support import drive, live_app, until

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ no guest
def test_a_cpu_term_shows_one_vcpus_events_and_the_switches_off_it():
    flt = EventFilter.parse("cpu:1")
    assert flt.matches({"k": "hc", "name": "sched_op", "cpu": 1})
    assert not flt.matches({"k": "hc", "name": "sched_op", "cpu": 0})
    assert not flt.matches({"k": "hc", "name": "sched_op"})     # no cpu: vCPU 0
    assert EventFilter.parse("cpu:0").matches({"k": "hc", "name": "sched_op"})
    # a switch belongs to the vCPU it gave the engine to and the one it took it from
    off = {"k": "vcpu_switch", "from": 1, "to": 0, "why": "block", "cpu": 0}
    assert flt.matches(off) and EventFilter.parse("cpu:0").matches(off)
    assert not EventFilter.parse("cpu:2").matches(off)
    # terms combine as any other: vCPU 1's calls but not its mmu_updates
    both = EventFilter.parse("cpu:1 -mmu_update")
    assert not both.matches({"k": "hc", "name": "mmu_update", "cpu": 1})
    assert EventFilter.parse("CPU:1").matches({"k": "hc", "name": "iret", "cpu": 1})


def test_a_vcpu_switch_is_a_sched_event_and_the_column_names_the_vcpu():
    sw = {"k": "vcpu_switch", "from": 0, "to": 1, "why": "quantum", "rip": 0x1000,
          "seq": 7, "t": 1000, "cpu": 1}
    assert family_of(sw) == "sched"
    line = row_text(sw, with_cpu=True).plain
    assert " c1 " in line and "SCHED" in line and "vcpu_switch" in line
    assert " c1 " not in row_text(sw).plain


def test_boot_with_vcpus_without_a_terminal_is_no_longer_refused_for_the_vcpus():
    p = subprocess.run([sys.executable, "-m", "pvmon", "boot", "--vcpus", "2"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                       cwd=ROOT, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "no terminal" in p.stderr and "--vcpus" not in p.stderr


# ------------------------------------------------------------- the live view
@pytest.mark.debian
@pytest.mark.slow
def test_live_view_of_a_two_vcpu_boot_shows_both_vcpus_and_filters_by_one():
    app, live = live_app("debian-6.12", vcpus=2)

    async def script(pilot):
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        stream = screen.query_one(HypercallStream)
        assert stream.show_cpu
        await until(pilot, lambda: screen._finished_shown, timeout=90, what="the boot to end")
        rows = screen.rows.all
        assert {ev.get("cpu") for ev in rows} == {0, 1}
        switches = [ev for ev in rows if ev["k"] == "vcpu_switch"]
        assert switches and all(ev["seq"] is None for ev in switches)  # nothing records
        assert {ev["why"] for ev in switches} >= {"quantum", "block"}
        assert all(ev["cpu"] == ev["to"] != ev["from"] for ev in switches)
        # hypercalls keep the numbers an unwatched run gives them
        calls = [ev["seq"] for ev in rows if ev["k"] == "hc"]
        assert calls == list(range(len(calls)))
        status = screen.query_one(StatusLine).text
        assert "vcpu " in status and "of 2" in status
        assert "vCPU" in screen.query_one("#regs").border_title
        screen.set_filter("cpu:1")
        await pilot.pause(0.05)
        shown = screen.rows.shown
        assert shown and all(ev.get("cpu") == 1 or ev.get("from") == 1 for ev in shown)
        assert any(ev["k"] == "hc" for ev in shown)
        # v shows the other vCPU's registers as saved when it left the engine,
        # or says it is not up: Linux's panic stops the other CPUs
        # (xen_smp_send_stop -> VCPUOP_down), and whether vCPU 1 has gone down
        # before vCPU 0's SCHEDOP_shutdown depends on the boot's timing (since
        # session 13's MSR policy it has)
        on = live.sample.cpu
        await pilot.press("v")
        other = 1 - on
        assert screen.shown_vcpu == other
        title = screen.query_one("#regs").border_title
        assert f"vCPU {other}" in title
        if live.session.backend.vcpus[other].up:
            assert "(saved)" in title and live.sample.others[other]["rip"] != 0
        else:
            assert "(saved)" not in title and other not in live.sample.others
        await pilot.press("v")
        assert screen.shown_vcpu is None
        assert f"vCPU {on} (on the engine)" in screen.query_one("#regs").border_title

    drive(app, script, size=(120, 32))
    assert live.result is not None


@pytest.mark.debian
@pytest.mark.slow
def test_a_recording_two_vcpu_live_run_numbers_its_switches_as_the_trace_does(tmp_path):
    out = tmp_path / "smp.pvt"
    app, live = live_app("debian-6.12", vcpus=2, record=out, paused=True)
    seen = []

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: live.phase == "paused", timeout=60, what="the first pause")
        await pilot.press("space")
        await until(pilot, lambda: screen._finished_shown, timeout=90, what="the boot to end")
        seen.extend((e["seq"], e["from"], e["to"], e["why"]) for e in screen.rows.all
                    if e["k"] == "vcpu_switch")

    drive(app, script)
    with TraceReader(out) as r:
        recorded = [(e["seq"], e["from"], e["to"], e["why"]) for e in r
                    if e["k"] == "vcpu_switch"]
    assert recorded and seen == recorded


# ------------------------------------------------------------------ the player
@pytest.fixture(scope="module")
def smp_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("smp") / "smp2.pvt"
    p = subprocess.run([sys.executable, "-m", "pvmon", "run", "debian-6.12", "--vcpus", "2",
                        "--record", str(path), "--quiet"], cwd=ROOT, capture_output=True,
                       text=True, timeout=180, check=False)
    assert p.returncode == 1 and "exit: crash" in p.stderr, p.stderr   # the panic, no root
    return path


@pytest.mark.debian
@pytest.mark.slow
def test_player_of_a_two_vcpu_trace_shows_the_vcpu_column_switches_and_filters(smp_trace):
    app = PvmonApp(trace=smp_trace)

    async def script(pilot):
        await until(pilot, lambda: pilot.app.screen.index is not None, timeout=60,
                    what="the index")
        await pilot.pause(0.05)
        screen = app.screen
        assert isinstance(screen, PlayerScreen)
        stream = screen.query_one(HypercallStream)
        assert stream.show_cpu
        idx = screen.index
        kinds = {idx.event(s)["k"] for s in idx.seqs[::50]}
        assert "vcpu_switch" in kinds
        screen.set_filter("vcpu_switch")
        await pilot.pause(0.05)
        ev = stream.event
        assert ev["k"] == "vcpu_switch"
        assert f"vcpu {ev['cpu']} of 2" in screen.query_one(StatusLine).text
        assert screen.query_one("#regs").border_title.endswith(f"· vCPU {ev['cpu']}")
        screen.set_filter("cpu:1")
        await pilot.pause(0.05)
        seqs = list(screen.rows.seqs)
        assert seqs
        for s in seqs[:200]:
            e = idx.event(s)
            assert e.get("cpu") == 1 or e.get("from") == 1
        assert screen.query_one(RegisterPane) is not None

    drive(app, script, size=(120, 32))


def test_a_paused_two_vcpu_run_samples_the_other_vcpus_saved_registers():
    """Paused mid-run (at the vcpu_op calls of pvtest-v2-smp's bring-up), once
    vCPU 1 is up and off the engine the live session's sample carries its
    saved registers (here the context VCPUOP_initialise gave it), which the
    live view's ``v`` shows."""
    import threading
    import time

    from pvmon.guests.catalog import resolve
    from pvmon.ui.live_session import BootSpec, LiveSession

    live = LiveSession.create(BootSpec(resolve("pvtest-v2-smp"), vcpus=2, paused=True))
    t = threading.Thread(target=live.run)
    t.start()
    found = None
    try:
        live.set_breakpoints({"vcpu_op"})
        last = None
        for _ in range(200):
            end = time.monotonic() + 60
            while not (live.phase == "paused" and live.paused_at is not None
                       and live.paused_at is not last):
                assert live.phase != "finished", "the run ended before the other vCPU ran"
                assert time.monotonic() < end, "timed out waiting for a pause"
                time.sleep(0.005)
            last = live.paused_at
            s = live.sample
            other = 1 - s.cpu
            if other in s.others:
                found = (s, other)
                break
            live.resume()
        live.set_breakpoints(set())
        live.resume()
        t.join(120)
    finally:
        live.stop()
        t.join(10)
    assert found is not None, "no pause with the other vCPU up and off the engine"
    s, other = found
    regs = s.others[other]
    assert regs["rip"] != 0 and regs["cr3"] != 0 and regs["rip"] != s.regs["rip"]
