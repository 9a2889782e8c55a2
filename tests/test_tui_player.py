"""The trace player (`pvmon view`), driven with Pilot over a real recorded boot."""

from __future__ import annotations

import pytest

from pvmon.dispatch.console_output import GuestConsole as OnceConsole
from pvmon.trace.reader import TraceReader
from pvmon.trace.render import describe
from pvmon.ui.app import PvmonApp
from pvmon.ui.console_text import sanitize
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
        assert screen.index.counts["event_channel_op"] == 149

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
    out: list[bytes] = []     # the guest console once, as `pvmon run` prints it
    once = OnceConsole(out.append)
    for ev in events:
        if ev["k"] == "con" and ev["seq"] <= seq and ev["dir"] == "out":
            once(ev["ch"], ev["data"])
    expected = b"".join(out)
    lines = [ln for ln in expected.split(b"\n") if ln]
    assert len(lines) == len(set(lines)) > 10       # no line twice

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
            "update_va_mapping(" in describe(ev).lower()]
    assert matches and len(uvas) >= 2

    async def script(pilot):
        screen = await _loaded(pilot)
        stream = screen.query_one(HypercallStream)
        # "update_va" alone also matches the guest's console ("ok 4 - update_va_mapping
        # maps ..."): the search looks there too; the call's line has a "("
        await pilot.press("slash", *"update_va_mapping(", "enter")
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
        assert shown and {ev.get("name", ev["k"]) for ev in shown} == {"console_io", "con"}
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


# -- console events: search and filter find them -----------------------------------------

@pytest.fixture(scope="module")
def typed_trace(tmp_path_factory):
    """pvtest-v2 recorded with console input typed in two pieces (at events
    300 and 310), as a user types at the console pane."""
    from pvmon.guests.catalog import resolve
    from pvmon.session import Session

    path = tmp_path_factory.mktemp("typed") / "typed.pvt"
    sess = Session(resolve("pvtest-v2"), record=path)
    sess.dispatch.schedule_input(300, b"xyzzy ")
    sess.dispatch.schedule_input(310, b"plugh\r")
    sess.run()
    return path


def test_search_finds_text_the_guest_wrote_to_its_console(trace, events):
    """Console output is not a call, so the search used to skip it. A match
    selects the first shown event at or after the output that completes it,
    so that the console pane shows it; n and N walk the matches."""
    needle = "pvtest: ok 1"      # ok 1, ok 10, ok 11, ...: several matches
    assert not any(needle in describe(ev).lower() for ev in events if ev["k"] == "hc")

    def seen(screen, seq):
        return sanitize(screen.index.console_until(seq)).lower().count(needle)

    async def script(pilot):
        screen = await _loaded(pilot)
        stream = screen.query_one(HypercallStream)
        rows = screen.rows.seqs
        found = []
        await pilot.press("slash", *needle, "enter")
        for k in range(1, 4):
            if k > 1:
                await pilot.press("n")
            await until(pilot, lambda k=k: seen(screen, stream.event["seq"]) >= k,
                        what=f"match {k}")
            row = stream.cursor
            assert seen(screen, rows[row - 1]) < k   # the first row that shows match k
            found.append(row)
        assert found == sorted(found)
        await pilot.press("N")
        await until(pilot, lambda: stream.cursor <= found[1])
        assert seen(screen, stream.event["seq"]) >= 2

    drive(_player(trace), script)


def test_search_finds_typed_input_even_when_typed_in_pieces(typed_trace):
    async def script(pilot):
        screen = await _loaded(pilot)
        stream = screen.query_one(HypercallStream)
        await pilot.press("slash", *"XYZZY PLUGH", "enter")      # case-insensitive
        await until(pilot, lambda: stream.event["seq"] > 310)
        assert screen.rows.seqs[stream.cursor - 1] < 310        # the first event after it
        await pilot.press("n")                                   # the only match
        await pilot.pause(0.2)
        assert screen.rows.seqs[stream.cursor - 1] < 310

    drive(_player(typed_trace), script)


def test_filter_names_console_events_input_output_and_channel(typed_trace):
    with TraceReader(typed_trace) as r:
        evs = list(r)
    con = [ev for ev in evs if ev["k"] == "con"]
    typed = [ev["seq"] for ev in con if ev["dir"] == "in"]
    ring_out = [ev["seq"] for ev in con if ev["dir"] == "out" and ev["ch"] == "ring"]
    assert typed == [300, 310] and ring_out

    async def script(pilot):
        screen = await _loaded(pilot)
        screen.set_filter("input")
        assert list(screen.rows.seqs) == typed
        screen.set_filter("ring -input")          # terms are alternatives; -term excludes
        assert list(screen.rows.seqs) == ring_out
        screen.set_filter("output")
        assert list(screen.rows.seqs) == [ev["seq"] for ev in con if ev["dir"] == "out"]
        screen.set_filter("-mmu")                 # exclusions alone: the usual kinds
        assert not any(s in screen.rows.seqs for s in typed)
        screen.set_filter("input sched")          # mixed, in event order
        seqs = list(screen.rows.seqs)
        assert seqs == sorted(seqs) and set(typed) <= set(seqs) and len(seqs) > 2
        await pilot.pause(0.1)
        screen.seek_seq(310)
        await pilot.pause(0.2)
        assert screen.query_one(HypercallStream).event["seq"] == 310

    drive(_player(typed_trace), script)
