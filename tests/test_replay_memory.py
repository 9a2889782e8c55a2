"""Replay memory is bounded: divergences past the first few are spilled to
disk and walked back from there, and alignment holds a bounded window of each
stream. Structural checks on real recordings, replayed on real backends."""

import io
import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pvmon.cli import cli
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.compare import ALIGNED_KINDS, SYNC_RUN, align, align_stream, key
from pvmon.replay.openloop import replay_open
from pvmon.replay.report import DETAILED
from pvmon.replay.source import open_run
from pvmon.replay.spill import Spill
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

# A build whose console refuses every write: the guest carries on, and every
# console_io call of the recording differs (hundreds of divergences).
MUTE = """
name = "mute-4.17"
base = "xen-4.17"
version = "4.17.7-mute"
description = "console writes fail"
[[fail]]
hypercall = "console_io"
subop = "write"
error = "EPERM"
reason = "console muted"
"""


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("mem") / "pvtest-v2.pvt"
    assert Session(resolve("pvtest-v2"), record=p).run(timeout=120).clean
    return p


@pytest.fixture(scope="module")
def mute(tmp_path_factory):
    p = tmp_path_factory.mktemp("prof") / "mute-4.17.toml"
    p.write_text(MUTE)
    return p


def _walks_every_divergence_from_memory_and_spill(rep):
    assert rep.total > 2 * DETAILED
    assert len(rep.divergences) == DETAILED            # full detail kept in memory
    assert rep.spilled is not None and len(rep.spilled) == rep.total - DETAILED
    walked = list(rep.iter_divergences())
    assert [d.n for d in walked] == list(range(1, rep.total + 1))
    assert walked[:DETAILED] == rep.divergences
    assert all(d.left is not None or d.right is not None for d in walked)
    assert sum(rep.by_call.values()) >= rep.total
    # streamed JSON is json.dumps of the whole report, every divergence listed
    out = io.StringIO()
    rep.write_json(out)
    assert out.getvalue() == json.dumps(rep.as_dict(), indent=1) + "\n"
    assert len(json.loads(out.getvalue())["divergences"]) == rep.total


def test_a_closed_loop_replay_with_hundreds_of_divergences_keeps_fifty_in_memory(
        trace, mute):
    from pvmon.backends.profiles import load_profile
    rep = replay_closed(open_run(trace), load_profile(mute))
    _walks_every_divergence_from_memory_and_spill(rep)
    assert rep.ending["outcome"].startswith("the guest tolerated")
    spilled = list(rep.iter_divergences())[DETAILED:]
    assert any(d.left and d.left.get("name") == "console_io" for d in spilled)


def test_an_open_loop_replay_with_many_divergences_keeps_fifty_in_memory(trace, mute):
    from pvmon.backends.profiles import load_profile
    rep = replay_open(open_run(trace, need_guest=False), load_profile(mute))
    _walks_every_divergence_from_memory_and_spill(rep)
    spilled = list(rep.iter_divergences())[DETAILED:]
    assert any(d.left["name"] == "console_io" and d.right["ret"] == -1      # -EPERM
               for d in spilled)


def test_replay_json_lists_every_divergence_not_the_first_fifty(trace, mute):
    r = CliRunner().invoke(cli, ["replay", str(trace), "--backend", str(mute), "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)
    assert doc["total"] > DETAILED
    assert [d["n"] for d in doc["divergences"]] == list(range(1, doc["total"] + 1))


def _aligned_events(trace):
    return [ev for ev in TraceReader(trace) if ev["k"] in ALIGNED_KINDS]


class _Counted:
    """An event stream that counts how many events were taken from it."""

    def __init__(self, events):
        self.events = events
        self.taken = 0

    def __iter__(self):
        for ev in self.events:
            self.taken += 1
            yield ev


def test_stream_alignment_holds_a_bounded_window_of_each_stream(trace):
    # without the guest's run of 1,465 identical SCHEDOP_yield calls (its wait for
    # periodic ticks), where any alignment of a gap is as good as another
    rec = [ev for ev in _aligned_events(trace)
           if not (ev.get("name") == "sched_op" and ev.get("op", {}).get("cmd") == "yield")]
    left = rec * 12                       # a long recorded stream (~8,000 events)
    right = []                            # the replay: some calls missing, some extra
    for i, ev in enumerate(left):
        if i % 97 == 50:
            continue
        right.append(ev)
        if i % 131 == 7:
            right.append(dict(ev, k="fault", vec=99))
    window = 64
    a, b = _Counted(left), _Counted(right)
    done_a = done_b = 0
    out_a, out_b = [], []
    for _tag, la, rb in align_stream(a, b, window=window):
        done_a += len(la)
        done_b += len(rb)
        out_a += la
        out_b += rb
        assert a.taken - done_a <= 2 * window and b.taken - done_b <= 2 * window
    # every event of both streams, once, in order
    assert out_a == left and out_b == right
    # and as many events matched as aligning the whole lists at once
    whole = sum(a1 - a0 for tag, a0, a1, _b0, _b1 in align(left, right) if tag == "equal")
    streamed = sum(len(la) for tag, la, _rb in align_stream(left, right, window=window)
                   if tag == "equal")
    assert streamed == whole == len(left) - len(range(50, len(left), 97))


def test_stream_alignment_of_streams_within_one_window_is_the_whole_alignment(trace):
    left = _aligned_events(trace)
    right = [ev for i, ev in enumerate(left) if i % 40 != 3]
    blocks = list(align_stream(left, right, window=len(left)))
    ops = align(left, right)
    assert [(t, la, rb) for t, la, rb in blocks] == \
        [(t, left[a0:a1], right[b0:b1]) for t, a0, a1, b0, b1 in ops]
    assert {key(ev) for _t, la, _rb in blocks if _t == "delete" for ev in la}


def test_a_spill_gives_back_its_records_in_order_across_chunks():
    sp = Spill(chunk=256)
    recs = [{"seq": i, "data": bytes([i % 256]) * (i % 50), "args": [i, -i, 2**63 - 1]}
            for i in range(2000)]
    for r in recs[:1000]:
        sp.append(r)
    assert list(sp) == recs[:1000]
    for r in recs[1000:]:
        sp.append(r)
    assert len(sp) == 2000 and list(sp) == recs
    sp.close()
    assert len(sp) == 0 and list(sp) == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=400), st.lists(st.integers(0, 5), max_size=400),
       st.integers(SYNC_RUN, 40))
def test_stream_alignment_covers_both_streams_in_order_with_equal_keys_paired(xs, ys, window):
    left = [{"k": "cpuid", "leaf": x, "sub": 0, "seq": i} for i, x in enumerate(xs)]
    right = [{"k": "cpuid", "leaf": y, "sub": 0, "seq": i} for i, y in enumerate(ys)]
    out_a, out_b = [], []
    for tag, la, rb in align_stream(left, right, window=window):
        assert la or rb
        if tag == "equal":
            assert [key(e) for e in la] == [key(e) for e in rb]
        elif tag == "insert":
            assert not la
        elif tag == "delete":
            assert not rb
        out_a += la
        out_b += rb
    assert out_a == left and out_b == right
