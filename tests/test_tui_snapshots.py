"""Snapshot tests of the three main screens (pytest-textual-snapshot).

Update after an intended change with ``pytest tests/test_tui_snapshots.py
--snapshot-update`` and look at the report before committing the SVGs."""

from __future__ import annotations

import pytest

from pvmon.guests.catalog import resolve
from pvmon.guests.code import ImageCode
from pvmon.trace.reader import TraceReader
from pvmon.ui.app import PvmonApp
from pvmon.ui.divergence import Divergence, align, first_difference
from tests.tui_support import live_app, record, until


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    return {g: record(g, d / f"{g}.pvt") for g in ("pvtest-v1", "pvtest-v2")}


def test_live_view_at_the_end_of_a_boot_in_80x24(snap_compare):
    app, _live = live_app()

    async def finished(pilot):
        await until(pilot, lambda: app.screen._finished_shown)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=(80, 24), run_before=finished)


def test_player_at_an_event(snap_compare, traces):
    app = PvmonApp(trace=traces["pvtest-v2"])

    async def at_event(pilot):
        await until(pilot, lambda: app.screen.index is not None)
        app.screen.seek_seq(app.screen.index.seqs[120])
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(110, 32), run_before=at_event)


def test_divergence_view(snap_compare, traces):
    sides = []
    for g in ("pvtest-v1", "pvtest-v2"):
        with TraceReader(traces[g]) as r:
            sides.append([ev for ev in r if ev["k"] == "hc"])
    left, right = align(*sides)
    div = Divergence(left, right, first_difference(left, right),
                     "pvtest-v1 and pvtest-v2 differ here: aligned by call name",
                     left_label="pvtest-v1", right_label="pvtest-v2",
                     left_code=ImageCode(resolve("pvtest-v1")),
                     right_code=ImageCode(resolve("pvtest-v2")))

    async def settle(pilot):
        await pilot.pause(0.2)

    assert snap_compare(PvmonApp(divergence=div), terminal_size=(110, 32), run_before=settle)


def test_player_with_the_canonical_operations_column_filtered_by_family(snap_compare, traces):
    app = PvmonApp(trace=traces["pvtest-v2"])

    async def canonical(pilot):
        await until(pilot, lambda: app.screen.index is not None)
        await pilot.press("p")
        await until(pilot, lambda: app.screen.index.pvops is not None)
        await pilot.press("f", *"mmu.", "enter")
        await until(pilot, lambda: app.screen.filter.text == "mmu.")
        app.screen.seek_seq(app.screen.rows.seqs[5])
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=(130, 32), run_before=canonical)
