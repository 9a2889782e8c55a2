"""The divergence view over two real recorded runs: pvtest-v1 (hypercall page)
and pvtest-v2 (syscall), which make different calls."""

from __future__ import annotations

import pytest

from pvmon.guests.catalog import resolve
from pvmon.guests.code import ImageCode
from pvmon.trace.reader import TraceReader
from pvmon.ui.app import PvmonApp
from pvmon.ui.divergence import Divergence, align, call_key, first_difference
from pvmon.ui.screens.divergence import DivergenceScreen
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.status import StatusLine
from tests.tui_support import drive, record, until

EXPLANATION = ("first divergence: the two kernels differ at this call\n"
               "(test: pvtest-v1 vs pvtest-v2, aligned by call name)")


@pytest.fixture(scope="module")
def divergence(tmp_path_factory):
    d = tmp_path_factory.mktemp("div")
    sides = []
    for g in ("pvtest-v1", "pvtest-v2"):
        with TraceReader(record(g, d / f"{g}.pvt")) as r:
            sides.append([ev for ev in r if ev["k"] == "hc"])
    left, right = align(*sides)
    return Divergence(left, right, first_difference(left, right), EXPLANATION,
                      left_label="pvtest-v1", right_label="pvtest-v2",
                      left_code=ImageCode(resolve("pvtest-v1")),
                      right_code=ImageCode(resolve("pvtest-v2")))


def test_alignment_pairs_equal_calls_and_leaves_gaps():
    a = [{"k": "hc", "name": n} for n in ("x", "y", "z")]
    b = [{"k": "hc", "name": n} for n in ("x", "z", "w")]
    left, right = align(a, b)
    assert [e and e["name"] for e in left] == ["x", "y", "z", None]
    assert [e and e["name"] for e in right] == ["x", None, "z", "w"]
    assert first_difference(left, right) == 1
    with pytest.raises(ValueError):
        Divergence([None], [], 0, "")


def test_the_first_divergence_is_selected_with_its_explanation_and_code(divergence):
    d = divergence
    assert d.differs and d.first == d.differs[0]

    async def script(pilot):
        screen = pilot.app.screen
        assert isinstance(screen, DivergenceScreen)
        await pilot.pause(0.1)
        left = screen.query_one("#left", HypercallStream)
        right = screen.query_one("#right", HypercallStream)
        assert left.cursor == right.cursor == d.first
        assert call_key(left.event) != call_key(right.event)
        assert "first divergence" in str(screen.query_one("#explanation").render())
        status = screen.query_one(StatusLine).text
        assert f"row {d.first}/{len(d.left)}" in status and "differs" in status
        codes = [str(screen.query_one(s).border_title) for s in ("#left-code", "#right-code")]
        for title, ev, label in zip(codes, (left.event, right.event), ("v1", "v2")):
            if ev is not None:
                assert f"pvtest-{label}: " in title and "0x" not in title.split(": ")[1][:2]

    drive(PvmonApp(divergence=divergence), script)


def test_keys_walk_the_differences_and_keep_both_sides_together(divergence):
    d = divergence

    async def script(pilot):
        screen = pilot.app.screen
        left = screen.query_one("#left", HypercallStream)
        right = screen.query_one("#right", HypercallStream)
        await pilot.press("n")
        await until(pilot, lambda: left.cursor == d.differs[1])
        assert right.cursor == left.cursor
        await pilot.press("N")
        await until(pilot, lambda: left.cursor == d.differs[0])
        await pilot.press("down", "down")
        assert right.cursor == left.cursor == d.first + 2
        await pilot.press("tab")
        assert right.has_focus
        await pilot.press("up")
        assert left.cursor == right.cursor == d.first + 1
        await pilot.press("d")
        assert left.cursor == d.first

    drive(PvmonApp(divergence=divergence), script)


def test_a_replay_report_opens_with_its_first_divergence_selected(tmp_path):
    from pvmon.backends.registry import resolve_version
    from pvmon.replay.closed import replay_closed
    from pvmon.replay.source import open_run
    from pvmon.ui.report_view import divergence_from_report

    run = open_run(record("pvtest-v2", tmp_path / "v2.pvt"), None)
    report = replay_closed(run, resolve_version("xen-3.4"))
    assert report.total
    d = divergence_from_report(report, run)
    first = report.divergences[0]
    assert d.left[d.first] is first.left and d.right[d.first] is first.right
    assert len(d.differs) == len(report.divergences)
    assert f"{report.total:,} divergence(s)" in d.explanation

    async def script(pilot):
        left = pilot.app.screen.query_one("#left", HypercallStream)
        await until(pilot, lambda: left.cursor == d.first and left.has_focus)
        await pilot.press("n")
        await until(pilot, lambda: left.cursor == d.differs[1])

    drive(PvmonApp(divergence=d), script)


@pytest.fixture(scope="module")
def replay_with_every_divergence(tmp_path_factory):
    """pvtest-v2 replayed on xen-3.4 (47 divergences) with the report keeping
    only the first 5 in memory (the rest spilled), as a long replay keeps its
    first 50; `pvmon replay --tui` copies all of them into a DifferenceLog."""
    import pvmon.replay.report as report_mod
    from pvmon.backends.registry import resolve_version
    from pvmon.replay.closed import replay_closed
    from pvmon.replay.source import open_run
    from pvmon.ui.report_view import DifferenceLog

    run = open_run(record("pvtest-v2", tmp_path_factory.mktemp("all") / "v2.pvt"), None)
    mp = pytest.MonkeyPatch()
    mp.setattr(report_mod, "DETAILED", 5)
    try:
        report = replay_closed(run, resolve_version("xen-3.4"))
    finally:
        mp.undo()
    log = DifferenceLog.from_report(report)
    yield report, run, log
    log.close()


def test_every_divergence_of_a_replay_is_kept_not_only_the_detailed_ones(
        replay_with_every_divergence):
    from pvmon.ui.report_view import divergence_from_report

    report, run, log = replay_with_every_divergence
    assert len(report.divergences) == 5 < report.total == len(log)
    assert [d.n for d in log] == list(range(1, report.total + 1))
    d = divergence_from_report(report, run, log)
    assert len(d.differs) == report.total
    for k, det in enumerate(report.divergences):   # the spilled copies equal the originals
        row = d.differs[k]
        assert d.left[row] == det.left and d.right[row] == det.right
    assert "the first" not in d.explanation   # nothing is left out


def test_n_walks_every_difference_and_the_explanation_follows_the_selection(
        replay_with_every_divergence):
    from pvmon.ui.report_view import divergence_from_report

    report, run, log = replay_with_every_divergence
    d = divergence_from_report(report, run, log)
    total = report.total

    def explanation(screen) -> str:
        return str(screen.query_one("#explanation").render())

    async def script(pilot):
        screen = pilot.app.screen
        left = screen.query_one("#left", HypercallStream)
        await until(pilot, lambda: left.cursor == d.first and left.has_focus)
        assert f"difference 1 of {total}" in explanation(screen)
        for k in range(1, total):
            await pilot.press("n")
            await until(pilot, lambda k=k: left.cursor == d.differs[k] and
                        f"difference {k + 1} of {total}" in explanation(screen),
                        what=f"difference {k + 1} explained")
            text = explanation(screen)
            diff = log[k]
            assert diff.what[0][1][:30] in text.replace("\n", " ")
            assert f"difference {k + 1}" in screen.query_one(StatusLine).text
        await pilot.press("n")                     # past the last: stays, says so
        await pilot.pause(0.05)
        assert left.cursor == d.differs[-1]
        await pilot.press("N")
        await until(pilot, lambda: left.cursor == d.differs[-2] and
                    f"difference {total - 1} of {total}" in explanation(screen))
        assert not d.differs_at(0)     # the calls before the first difference
        await pilot.press("home")
        await until(pilot, lambda: left.cursor == 0 and
                    "the same recorded call in both runs" in explanation(screen))
        assert f"difference 1 of {total} follows" in explanation(screen)

    drive(PvmonApp(divergence=d), script, size=(120, 40))
