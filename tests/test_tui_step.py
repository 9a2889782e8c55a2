"""Pausing and stepping in the live view stop at any guest exit (MSR, port
I/O, MMIO, interrupt, halt, CPUID, hypercall), not only at hypercalls: Xen
PVH on the built-in guest, KVM on Debian 6.12."""

from __future__ import annotations

import threading
import time

import pytest

from pvmon.backends.kvm import DEFAULT_CMDLINE as KVM_CMDLINE
from pvmon.guests.catalog import resolve
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from pvmon.ui.live_session import STEP_KINDS, BootSpec, LiveSession
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.status import StatusLine
from tests.tui_support import drive, live_app, until

PVH = {"mode": "pvh"}


def _events(path) -> list[dict]:
    with TraceReader(path) as r:
        return list(r)


def _wait_paused(live: LiveSession, after: dict | None = None, timeout: float = 60) -> dict:
    """The event ``live`` is paused at (a different one than ``after``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ev = live.paused_at
        if live.phase == "paused" and ev is not None and ev is not after:
            return ev
        if live.phase == "finished":
            raise AssertionError("the run ended instead of pausing")
        time.sleep(0.005)
    raise AssertionError("timed out waiting for a pause")


def test_stepping_a_pvh_guest_stops_at_each_exit_and_the_recording_is_unchanged(tmp_path):
    ref = _events(Session(resolve("pvtest-v2-pvh"), record=tmp_path / "ref.pvt", **PVH)
                  .run().trace_path)
    path = tmp_path / "stepped.pvt"
    app, live = live_app("pvtest-v2-pvh", paused=True, record=path, **PVH)
    stops: list[dict] = []

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: live.phase == "paused", what="the first pause")
        stops.append(live.paused_at)
        await until(pilot, lambda: "paused after #0 msr" in screen.query_one(StatusLine).text,
                    what="the status line at the first exit")
        for _ in range(5):
            before = live.paused_at
            await pilot.press("n")
            await until(pilot, lambda b=before: live.phase == "paused"
                        and live.paused_at is not b)
            stops.append(live.paused_at)
        await pilot.press("b", *"irq", "enter")
        assert live.breakpoints == {"irq"}
        before = live.paused_at
        await pilot.press("space")
        await until(pilot, lambda: live.phase == "paused" and live.paused_at is not before)
        stops.append(live.paused_at)
        stream = screen.query_one(HypercallStream)
        await until(pilot, lambda: stream.event is live.paused_at,
                    what="the stream to follow to the exit")
        await pilot.press("b", "ctrl+u", "enter")
        await pilot.press("space")
        await until(pilot, lambda: live.phase == "finished" and screen._finished_shown)

    drive(app, script)
    steps = [ev for ev in ref if ev["k"] in STEP_KINDS]
    assert [(e["seq"], e["k"]) for e in stops[:6]] == [(e["seq"], e["k"]) for e in steps[:6]]
    assert [e["k"] for e in stops[:2]] == ["msr", "msr"]     # not only hypercalls
    first_irq = next(e for e in ref if e["k"] == "irq" and e["seq"] > stops[5]["seq"])
    assert (stops[6]["k"], stops[6]["seq"]) == ("irq", first_irq["seq"])
    # pausing and stepping at exits never change what is recorded
    got = _events(path)
    assert len(got) == len(ref)
    assert got == ref
    assert live.result.exit_kind == "shutdown"
    # when the guest runs on, the tap is gone: the writer's own path again
    assert live._tap is None and live.session.dispatch.record.__name__ == "append"


def test_stepping_without_a_recording_numbers_calls_as_an_unwatched_run_does():
    ref = Session(resolve("pvtest-v2-pvh"), **PVH)
    calls: list[tuple] = []
    ref.dispatch.call_listeners.append(lambda ev: calls.append((ev["seq"], ev["name"],
                                                                ev["ret"], ev["t"])))
    ref.run()

    live = LiveSession.create(BootSpec(resolve("pvtest-v2-pvh"), paused=True, **PVH))
    seen: list[tuple] = []
    live.session.dispatch.call_listeners.append(
        lambda ev: seen.append((ev["seq"], ev["name"], ev["ret"], ev["t"])))
    t = threading.Thread(target=live.run)
    t.start()
    try:
        ev = _wait_paused(live)
        kinds = [(ev["k"], ev["seq"])]
        for _ in range(3):
            live.step()
            ev = _wait_paused(live, ev)
            kinds.append((ev["k"], ev["seq"]))
        assert kinds == [("msr", None), ("msr", None), ("hc", 0), ("hc", 1)]
        assert live.session.dispatch.record is not None     # the tap, while paused
        live.resume()
        t.join(60)
    finally:
        live.stop()
        t.join(10)
    assert live.result.exit_kind == "shutdown"
    assert live.session.dispatch.record is None     # unwatched paths once running on
    assert seen == calls


@pytest.mark.debian
@pytest.mark.slow
def test_stepping_a_kvm_guest_stops_at_port_io_msr_and_cpuid_exits(debian612):
    live = LiveSession.create(BootSpec(debian612, backend="kvm-6.12", cmdline=KVM_CMDLINE,
                                       paused=True))
    t = threading.Thread(target=live.run)
    t.start()
    kinds: list[str] = []
    try:
        ev = _wait_paused(live)
        kinds.append(ev["k"])
        for _ in range(10):
            live.step()
            ev = _wait_paused(live, ev)
            kinds.append(ev["k"])
        for kind in ("msr", "io", "mmio", "irq"):     # breakpoints on exit kinds
            live.set_breakpoints({kind})
            live.resume()
            ev = _wait_paused(live, ev)
            assert ev["k"] == kind and ev["seq"] is None
        live.set_breakpoints(set())
        live.step()
        ev = _wait_paused(live, ev)
        kinds.append(ev["k"])
        live.resume()
        t.join(600)
    finally:
        live.stop()
        t.join(10)
    assert kinds[:2] == ["msr", "msr"] and "cpuid" in kinds and "hc" not in kinds
    assert live.result.exit_kind == "shutdown"
    assert live.session.dispatch.record is None
