"""The live view, driven with Textual's Pilot over real boots of pvtest-v2."""

from __future__ import annotations

import threading

from pvmon.trace.reader import TraceReader
from pvmon.ui.families import family_of
from pvmon.ui.live_session import BootSpec, LiveSession
from pvmon.ui.screens.help import HelpScreen
from pvmon.ui.screens.live import LiveScreen
from pvmon.ui.screens.player import PlayerScreen
from pvmon.ui.widgets.console import GuestConsole
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.status import StatusLine
from tests.tui_support import drive, live_app, record, reference_calls, until


def _calls(rows):
    return [(ev["seq"], ev["name"], ev["ret"], ev["t"]) for ev in rows.all]


def test_boot_shows_console_stream_registers_and_exit_reason():
    app, live = live_app()

    async def script(pilot):
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        await until(pilot, lambda: screen._finished_shown, what="the boot to end")
        await pilot.pause(0.05)
        assert "pvtest: 119 passed, 0 failed" in screen.query_one(GuestConsole).text
        stream = screen.query_one(HypercallStream)
        assert len(stream.source) == 1836 and stream.cursor == 1835 and stream.follow
        assert stream.event["name"] == "sched_op"
        status = screen.query_one(StatusLine).text
        assert "FINISHED" in status and "calls 1836" in status
        assert "exit: shutdown - SCHEDOP_shutdown(poweroff)" in status
        assert screen.query_one("#regs").border_title == "registers at #1835"
        assert "HYPERVISOR_sched_op" in screen.query_one("#code").border_title
        assert screen.counts["event_channel_op"] == 149

    drive(app, script)
    assert live.result.exit_kind == "shutdown"


def test_breakpoint_pauses_after_the_named_call_and_step_moves_one_call():
    app, live = live_app(paused=True)

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: live.phase == "paused", what="the first pause")
        assert live.paused_at["seq"] == 0
        await pilot.press("n")
        await until(pilot, lambda: live.phase == "paused" and live.paused_at["seq"] == 1)
        await pilot.press("b", *"set_gdt", "enter")
        assert live.breakpoints == {"set_gdt"}
        await pilot.press("space")
        await until(pilot, lambda: live.phase == "paused" and live.paused_at["seq"] > 1)
        assert live.paused_at["name"] == "set_gdt"
        await pilot.pause(0.15)
        assert "paused after" in screen.query_one(StatusLine).text
        # the panes show the guest as it is at the pause
        assert screen.query_one("#regs").border_title == f"registers at #{live.paused_at['seq']}"
        await pilot.press("b", "ctrl+u", "enter")
        assert live.breakpoints == frozenset()
        await pilot.press("space")
        await until(pilot, lambda: live.phase == "finished")
        await until(pilot, lambda: screen._finished_shown)
        # pausing, stepping and breaking never change what the guest sees
        assert _calls(screen.rows) == reference_calls()

    drive(app, script)
    assert live.result.exit_kind == "shutdown"


def test_pause_from_another_thread_stops_at_a_hypercall_and_changes_nothing(pvtest_v2):
    live = LiveSession.create(BootSpec(pvtest_v2))
    calls = live.events    # what the UI would drain: every call, in order
    t = threading.Thread(target=live.run)
    live.pause()
    t.start()
    for _ in range(500):
        if live.phase == "paused":
            break
        threading.Event().wait(0.01)
    assert live.phase == "paused" and live.paused_at["seq"] == len(calls) - 1
    n = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) == n, "the guest ran on while paused"
    live.resume()
    t.join(30)
    assert live.result.exit_kind == "shutdown"
    assert [(ev["seq"], ev["name"], ev["ret"], ev["t"]) for ev in calls] == reference_calls()


def test_filter_key_shows_only_matching_calls():
    app, _live = live_app()

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen._finished_shown)
        await pilot.press("f", *"mmu", "enter")
        rows = screen.rows
        assert rows.shown and all(family_of(ev) == "mmu" or "mmu" in ev["name"]
                                  for ev in rows.shown)
        assert len(rows.shown) == sum(1 for ev in rows.all if "mmu" in ev["name"] or
                                      family_of(ev) == "mmu")
        assert "[mmu]" in str(screen.query_one(HypercallStream).border_title)
        await pilot.press("f", "ctrl+u", *"console -event", "enter")
        assert {ev["name"] for ev in rows.shown} == {"console_io"}
        await pilot.press("f", "ctrl+u", "enter")
        assert len(rows.shown) == 1836

    drive(app, script)


def test_text_typed_into_the_console_reaches_the_guest_and_is_recorded(tmp_path):
    path = tmp_path / "typed.pvt"
    app, live = live_app(paused=True, record=path)

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: live.phase == "paused")
        screen.query_one(GuestConsole).focus()
        await pilot.press("h", "i", "enter")
        await pilot.press("escape")
        assert not screen.query_one(GuestConsole).has_focus
        await pilot.press("space")   # a binding again, not a key for the guest
        await until(pilot, lambda: live.phase == "finished")

    drive(app, script)
    with TraceReader(path) as r:
        typed = [ev["data"] for ev in r if ev["k"] == "con" and ev["dir"] == "in"]
    assert b"".join(typed) == b"hi\r"


def test_record_key_stops_recording_and_leaves_a_readable_trace(tmp_path):
    path = tmp_path / "cut.pvt"
    app, live = live_app(paused=True, record=path)

    async def script(pilot):
        await until(pilot, lambda: live.phase == "paused")
        await pilot.press("r")
        await pilot.press("space")
        await until(pilot, lambda: live.phase == "finished")
        assert live.recording is None

    drive(app, script)
    with TraceReader(path) as r:
        assert r.complete
        evs = list(r)
    # it ends with an exit record saying the recording stopped (the run went on),
    # so verify compares up to there
    assert evs and evs[-1]["seq"] <= 3 and [ev["k"] for ev in evs].count("exit") == 1
    assert evs[-1]["k"] == "exit" and evs[-1]["reason"] == "interrupted"
    assert evs[-1]["detail"].startswith("recording stopped")
    assert live.result.exit_kind == "shutdown"


def test_record_key_when_not_recording_reboots_the_guest_recording(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short names: Pilot types each character
    path = tmp_path / "reboot.pvt"
    app, first = live_app()

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen._finished_shown)
        await pilot.press("r", "ctrl+u", *"reboot.pvt", "enter")
        await until(pilot, lambda: screen.live is not first)
        await until(pilot, lambda: screen.live.phase == "finished" and screen._finished_shown)
        assert len(screen.rows.all) == 1836

    drive(app, script)
    with TraceReader(path) as r:
        assert r.complete and r.header["guest"]["name"] == "pvtest-v2"
        assert next(iter(r.events(len(r) - 1)))["k"] == "exit"


def test_the_result_after_an_r_reboot_is_the_rebooted_run(tmp_path, monkeypatch):
    """`pvmon boot` prints the summary of what the app returns: after `r`
    rebooted to record, that is the recorded run on screen, not the first."""
    monkeypatch.chdir(tmp_path)
    app, first = live_app(paused=True)   # the first run: paused, then stopped by the reboot

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: first.phase == "paused")
        await pilot.press("r", "ctrl+u", *"second.pvt", "enter")
        await until(pilot, lambda: screen.live is not first)
        assert first.result.exit_kind == "interrupted" and first.result.trace_path is None
        await until(pilot, lambda: screen.live.phase == "paused")   # boots paused again
        await pilot.press("space")
        await until(pilot, lambda: screen.live.phase == "finished" and screen._finished_shown)
        assert app.live is screen.live
        await pilot.press("q")

    drive(app, script)
    res = app.return_value
    assert res is app.live.result and res is not first.result
    assert res.trace_path is not None and res.trace_path.name == "second.pvt"
    assert res.exit_kind == "shutdown" and sum(res.hypercalls.values()) == 1836


def test_open_key_plays_a_trace_on_top_and_q_closes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record("pvtest-v2", tmp_path / "o.pvt")
    app, _live = live_app()

    async def script(pilot):
        await until(pilot, lambda: app.screen._finished_shown)
        await pilot.press("o", *"x.pvt", "enter")
        assert isinstance(app.screen, LiveScreen)   # a bad path is a notification
        await pilot.press("o", *"o.pvt", "enter")
        assert isinstance(app.screen, PlayerScreen)
        await until(pilot, lambda: app.screen.index is not None)
        await pilot.press("q")
        assert isinstance(app.screen, LiveScreen)

    drive(app, script)


def test_help_lists_the_keys_and_quit_while_paused_stops_the_guest():
    app, live = live_app(paused=True)

    async def script(pilot):
        await until(pilot, lambda: live.phase == "paused")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, LiveScreen)
        await pilot.press("q")

    drive(app, script)
    assert live.result.exit_kind == "interrupted"


def test_the_command_palette_lists_the_screen_commands():
    app, live = live_app(paused=True)

    async def script(pilot):
        await until(pilot, lambda: live.phase == "paused")
        await pilot.press("ctrl+p")
        await pilot.press(*"break")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "PromptScreen")
        await pilot.press(*"iret", "enter")
        assert live.breakpoints == {"iret"}
        await pilot.press("q")

    drive(app, script)


def test_the_console_pane_of_a_pvtest_v2_boot_holds_each_line_once():
    # pvtest-v2 writes every line to console_io and to hvc0: the pane shows the
    # guest console once, as `pvmon run` prints it (pvmon.dispatch.console_output).
    app, _live = live_app()

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen._finished_shown, what="the boot to end")
        await pilot.pause(0.05)
        lines = [ln for ln in screen.query_one(GuestConsole).text.split("\n") if ln]
        repeated = {ln for ln in lines if lines.count(ln) > 1}
        assert not repeated, f"lines shown twice: {sorted(repeated)[:3]}"
        assert any("pvtest: 119 passed, 0 failed" in ln for ln in lines)
        assert len(lines) == 142

    drive(app, script)
