"""The trace player (`pvmon view`), driven with Pilot over a real recorded boot."""

from __future__ import annotations

import pytest

from pvmon.trace.reader import TraceReader
from pvmon.trace.render import describe
from pvmon.ui.app import PvmonApp
from pvmon.ui.console_text import ConsoleChannels, sanitize
from pvmon.ui.screens.player import PlayerScreen, parse_position
from pvmon.ui.trace_index import STREAM_KINDS
from pvmon.ui.widgets.console import GuestConsole
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.status import StatusLine
from pvmon.ui.widgets.timeline import Timeline
from tests.tui_support import drive, record, until


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return record("pvtest-v2", tmp_path_factory.mktemp("player") / "v2.pvt")


@pytest.fixture(scope="module")
def events(trace):
    with TraceReader(trace) as r:
        return list(r)


def _player(trace):
    return PvmonApp(trace=trace)


async def _loaded(pilot):
    await until(pilot, lambda: pilot.app.screen.index is not None, what="the index")
    await pilot.pause(0.05)
    return pilot.app.screen


def test_opening_a_trace_shows_its_calls_console_and_exit(trace, events):
    async def script(pilot):
        screen = await _loaded(pilot)
        assert isinstance(screen, PlayerScreen)
        stream = screen.query_one(HypercallStream)
        assert len(stream.source) == sum(ev["k"] in STREAM_KINDS for ev in events)
        assert stream.event["seq"] == next(ev["seq"] for ev in events if ev["k"] in STREAM_KINDS)
        status = screen.query_one(StatusLine).text
        assert "v2.pvt" in status and "pvtest-v2" in status
        assert "exit: shutdown" in status
        assert screen.index.counts["event_channel_op"] == 148

    drive(_player(trace), script)


def test_jump_to_event_number_and_to_virtual_time(trace, events):
    hc = [ev for ev in events if ev["k"] == "hc"]
    target = hc[200]
    t_target = hc[300]["t"]

    async def script(pilot):
        screen = await _loaded(pilot)
        stream = screen.query_one(HypercallStream)
        await pilot.press("g", *str(target["seq"]), "enter")
        assert stream.event["seq"] == target["seq"]
        await pilot.press("g", *f"{t_target}ns", "enter")
        # the selected event is the last shown one at or before the first event at t
        first_at = next(ev["seq"] for ev in events if ev["t"] >= t_target)
        assert stream.event["seq"] == max(ev["seq"] for ev in events
                                          if ev["k"] in STREAM_KINDS and ev["seq"] <= first_at)
        await pilot.press("g", *"nonsense", "enter")   # a notification, no move
        assert stream.event["seq"] <= first_at

    drive(_player(trace), script)


def test_the_console_shows_what_the_guest_had_written_at_the_selected_event(trace, events):
    hc = [ev for ev in events if ev["k"] == "hc"]
    seq = hc[150]["seq"]
    channels = ConsoleChannels()
    expected = b"".join(ev["data"] for ev in events if ev["k"] == "con" and ev["seq"] <= seq
                        and ev["dir"] == "out" and channels.accept(ev["ch"]))

    async def script(pilot):
        screen = await _loaded(pilot)
        screen.seek_seq(seq)
        await pilot.pause(0.2)
        assert screen.query_one(GuestConsole).text == sanitize(expected).expandtabs(8)
        assert screen.query_one("#regs").border_title == f"registers at #{seq}"

    drive(_player(trace), script)


def test_search_finds_calls_by_name_or_argument_forward_and_back(trace, events):
    matches = [ev["seq"] for ev in events
               if ev["k"] in STREAM_KINDS and "reason=poweroff" in describe(ev).lower()]
    uvas = [ev["seq"] for ev in events if ev["k"] in STREAM_KINDS and
            "update_va_mapping" in describe(ev).lower()]
    assert matches and len(uvas) >= 2

    async def script(pilot):
        screen = await _loaded(pilot)
        stream = screen.query_one(HypercallStream)
        await pilot.press("slash", *"update_va", "enter")
        await until(pilot, lambda: stream.event["seq"] == uvas[0])
        await pilot.press("n")
        await until(pilot, lambda: stream.event["seq"] == uvas[1])
        await pilot.press("N")
        await until(pilot, lambda: stream.event["seq"] == uvas[0])
        screen.search_text = "REASON=POWEROFF"     # case-insensitive, in the arguments
        await pilot.press("n")
        await until(pilot, lambda: stream.event["seq"] == matches[0])

    drive(_player(trace), script)


def test_filter_and_timeline_scrubbing(trace, events):
    async def script(pilot):
        screen = await _loaded(pilot)
        stream = screen.query_one(HypercallStream)
        await pilot.press("f", *"console", "enter")
        shown = [stream.source.row(i) for i in range(len(stream.source))]
        assert shown and {ev["name"] for ev in shown} == {"console_io"}
        await pilot.press("f", "ctrl+u", "enter")
        timeline = screen.query_one(Timeline)
        timeline.focus()
        before = stream.event["seq"]
        await pilot.press("right", "right", "right")
        await until(pilot, lambda: stream.event["seq"] > before)
        t_before = stream.event["t"]
        await pilot.click(Timeline, offset=(timeline.size.width - 1, 0))
        await until(pilot, lambda: stream.event["t"] > t_before)

    drive(_player(trace), script)


def test_positions_parse_as_event_numbers_or_virtual_times():
    assert parse_position("#1234") == ("seq", 1234)
    assert parse_position("77") == ("seq", 77)
    assert parse_position("1.5ms") == ("time", 1_500_000)
    assert parse_position("t=2us") == ("time", 2_000)
    with pytest.raises(ValueError, match="neither an event number"):
        parse_position("soon")
