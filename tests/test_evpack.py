"""The compiled hypercall-event packer (pvmon.trace._evpack) writes exactly the bytes
of the dict path: format.hc_event packed by pack_event (ormsgpack, msgpack-python's
bytes). A trace must not depend on which path recorded it."""

from __future__ import annotations

import shutil

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvmon.session import Session
from pvmon.trace import TraceReader, TraceWriter
from pvmon.trace import format as fmt
from pvmon.trace.synth import synthetic_header
from pvmon.trace.writer import COMPILED_PACKER, pack_event

try:
    from pvmon.trace import _evpack as evpack
except ImportError:
    if shutil.which("cc") or shutil.which("gcc"):
        # pip builds it wherever there is a compiler; missing here means the build broke
        raise ImportError("pvmon.trace._evpack is not built although a C compiler is "
                          "installed: rerun pip install -e . and read its errors") from None
    pytest.skip("no C compiler: pvmon.trace._evpack is not built", allow_module_level=True)

INT_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63,
             2**64 - 1, -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]
STR_EDGES = ["", "x" * 31, "x" * 32, "y" * 255, "y" * 256, "z" * 65535, "z" * 65536, "é€😀",
             "ä" * 40]
BIN_EDGES = [b"", b"\x00" * 255, b"\x01" * 256, b"\x02" * 65535, b"\x03" * 65536]


def hc_values(**over):
    vals = {"abi": "xen", "nr": 1, "name": "mmu_update",
            "args": (0xffffffff81000000, 1, 0, 0x7ff0, 0),
            "op": {"count": 1, "cmds": {"NORMAL_PT_UPDATE": 1}, "val": 2**63 + 5},
            "ret": -22, "rip": 0xffffffff81001000, "via": "page",
            "rd": [["v", 0xffff888000000000, b"\x00" * 16]], "wr": [("p", 4096, b"\xff" * 8)],
            "ev": [3], "seq": 0, "t": 1000, "cpu": 0}
    vals.update(over)
    return vals


def packed_both_ways(vals):
    buf = bytearray(b"prefix")
    end = evpack.pack_hc(buf, *vals.values())
    assert end == len(buf)
    return bytes(buf[6:]), pack_event(fmt.hc_event(**vals))


def test_the_writer_uses_the_compiled_packer():
    assert COMPILED_PACKER


def test_key_order_is_format_hc_keys():
    vals = hc_values()
    assert list(vals) == list(fmt.HC_KEYS)
    ours, ref = packed_both_ways(vals)
    assert ours == ref
    assert list(msgpack.unpackb(ours, raw=False)) == ["k", *fmt.HC_KEYS]


@pytest.mark.parametrize("value", INT_EDGES + STR_EDGES + BIN_EDGES + [
    None, True, False, 1.5, -0.0, 1e300, bytearray(b"ab"), memoryview(b"cd"), (), [],
    list(range(15)), list(range(16)), tuple(range(65535)), list(range(65536)),
    {i: i for i in range(15)}, {str(i): i for i in range(16)}, {1: {"a": [None]}},
])
def test_every_msgpack_format_packs_as_msgpack_python_packs_it(value):
    for key in ("op", "ret", "rd", "ev"):
        ours, ref = packed_both_ways(hc_values(**{key: value}))
        assert ours == ref, (key, value)
    assert evpack.packb(value) == msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize("value, error", [
    (2**64, OverflowError), (-2**63 - 1, OverflowError), (object(), TypeError),
    ({1.5j: 1}, TypeError), ("\udc80", UnicodeEncodeError),
])
def test_a_value_msgpack_cannot_hold_raises_and_leaves_the_buffer_alone(value, error):
    buf = bytearray(b"keep")
    with pytest.raises(error):
        evpack.pack_hc(buf, *hc_values(op={"x": [1, value]}).values())
    assert buf == b"keep"


def test_nesting_is_bounded():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        evpack.packb(deep)


def test_wrong_arguments_are_type_errors():
    with pytest.raises(TypeError, match="bytearray"):
        evpack.pack_hc(b"", *hc_values().values())
    with pytest.raises(TypeError, match="arguments"):
        evpack.pack_hc(bytearray(), 1, 2)


json_leaf = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=40)
             | st.binary(max_size=300) | st.floats(allow_nan=False))
values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=20)
                      | st.dictionaries(st.text(max_size=8) | st.integers(0, 2**40), inner,
                                        max_size=20), max_leaves=60)


@settings(max_examples=300, deadline=None)
@given(op=values, rd=values, ret=st.integers(-2**63, 2**64 - 1), name=st.text(max_size=300))
def test_random_events_pack_the_same_both_ways(op, rd, ret, name):
    ours, ref = packed_both_ways(hc_values(op=op, rd=rd, ret=ret, name=name))
    assert ours == ref


def test_append_hc_falls_back_to_the_dict_path_with_its_errors(tmp_path):
    with TraceWriter(tmp_path / "x.pvt", synthetic_header()) as w:
        w.append_hc(*hc_values(seq=0).values())
        with pytest.raises(TypeError):
            w.append_hc(*hc_values(seq=1, op={"x": object()}).values())
        with pytest.raises(ValueError, match="bytes packed"):
            w.append_hc(*hc_values(seq=1, rd=[["v", 0, b"\x00" * (fmt.MAX_EVENT_RAW + 1)]]).values())
        w.append_hc(*hc_values(seq=1, ret=2).values())
    with TraceReader(tmp_path / "x.pvt") as r:
        evs = list(r)
    assert [e["seq"] for e in evs] == [0, 1]
    assert evs[0]["rip"] == 0xffffffff81001000 and evs[0]["op"]["val"] == 2**63 + 5


def test_a_recorded_boot_is_the_same_with_and_without_the_dict(tmp_path, pvtest_v2):
    """The recorder's fast path (no call listener) and the dict path (a listener
    attached, as in the TUI) record the same event stream, frame for frame."""
    fast = Session(pvtest_v2, record=tmp_path / "fast.pvt")
    assert fast.run(timeout=120).clean
    slow = Session(pvtest_v2, record=tmp_path / "dict.pvt")
    seen = []
    slow.dispatch.call_listeners.append(seen.append)
    assert slow.run(timeout=120).clean
    assert seen and all(list(ev) == ["k", *fmt.HC_KEYS] for ev in seen)
    with TraceReader(tmp_path / "fast.pvt") as a, TraceReader(tmp_path / "dict.pvt") as b:
        assert len(a) == len(b) > 0
        assert list(a) == list(b)
        raw_a = (tmp_path / "fast.pvt").read_bytes()
        raw_b = (tmp_path / "dict.pvt").read_bytes()
        assert ([raw_a[f.offset:f.end] for f in a.frames]
                == [raw_b[f.offset:f.end] for f in b.frames])


def _write_mixed(path, events):
    """Dict events through append, hypercall events through append_hc, errors noted."""
    from pvmon.trace.synth import synthetic_header
    errors = []
    with TraceWriter(path, synthetic_header(), frame_events=100, frame_bytes=8 << 10) as w:
        for ev in events:
            try:
                if ev["k"] == "hc":
                    w.append_hc(*(ev[k] for k in fmt.HC_KEYS))
                else:
                    w.append(ev)
            except (TypeError, ValueError, OverflowError) as exc:
                errors.append((ev["seq"], type(exc).__name__, str(exc)))
    return errors


def test_the_python_open_frame_writes_the_same_file(tmp_path, monkeypatch):
    """Installs without the compiled module use writer.PyOpenFrame: same bytes,
    same refusals."""
    import pvmon.trace.writer as W
    from pvmon.trace.synth import synthetic_events
    events = []
    for i, ev in enumerate(synthetic_events(3000, seed=11)):
        if i % 3 == 0:
            ev = {"k": "hc", **hc_values(seq=ev["seq"], t=ev["t"], nr=i, ret=-i,
                                         rd=[["v", i, bytes(i % 300)]])}
        events.append(ev)
    bad = [dict(events[-1], seq=3000, t=-1), dict(events[-1], seq=3001),
           {**hc_values(seq=3000, t=2**63), "k": "hc"},
           {**hc_values(seq=3000, t=events[-1]["t"], op={"x": object()}), "k": "hc"}]
    compiled = _write_mixed(tmp_path / "c.pvt", events + bad)
    monkeypatch.setattr(W, "OpenFrame", W.PyOpenFrame)
    python = _write_mixed(tmp_path / "p.pvt", events + bad)
    assert compiled == python and len(compiled) == 4
    assert (tmp_path / "c.pvt").read_bytes() == (tmp_path / "p.pvt").read_bytes()
    with TraceReader(tmp_path / "c.pvt") as r:
        assert len(r) == 3000 and len(r.frames) > 30


IO_KEYS = ("k", "dir", "port", "size", "val", "seq", "t", "cpu")


@pytest.mark.parametrize("frame_class", ["compiled", "python"])
@settings(max_examples=200, deadline=None)
@given(vals=st.lists(st.tuples(st.sampled_from(["in", "out", "rd", "wr"]),
                               st.integers(0, 2**64 - 1), st.sampled_from([1, 2, 4, 8]),
                               st.integers(-2**63, 2**64 - 1)), max_size=40))
def test_append_ev_packs_a_small_event_as_the_dict_path_does(frame_class, vals):
    """``OpenFrame.ev`` (the recorder's path for port I/O and MMIO events) writes
    the bytes ``pack_event`` writes for the same dict, in the compiled packer and
    in its Python stand-in."""
    from pvmon.trace.writer import OpenFrame, PyOpenFrame
    cls = OpenFrame if frame_class == "compiled" else PyOpenFrame
    f = cls(10**6, 1 << 30, fmt.MAX_EVENT_RAW, lambda: None, lambda *a: None)
    ref = b""
    for seq, (d, port, size, val) in enumerate(vals):
        values = ("io", d, port, size, val, seq, seq * 7, 0)
        assert f.ev(IO_KEYS, *values) is True
        ref += pack_event(dict(zip(IO_KEYS, values)))
    taken = f.take()
    assert (bytes(taken[0]) if taken else b"") == ref


def test_append_ev_refuses_what_append_would_refuse_and_writes_nothing(tmp_path):
    """Out of sequence, back in time or unpackable: False and nothing written, so
    the caller's dict path raises the error."""
    with TraceWriter(tmp_path / "x.pvt", synthetic_header()) as w:
        assert w.append_ev(IO_KEYS, "io", "in", 0x42, 1, 0xFF, 0, 100, 0)
        assert not w.append_ev(IO_KEYS, "io", "in", 0x42, 1, 0xFF, 5, 200, 0)     # seq gap
        assert not w.append_ev(IO_KEYS, "io", "in", 0x42, 1, 0xFF, 1, 50, 0)      # back in time
        assert not w.append_ev(IO_KEYS, "io", "in", 0x42, 1, object(), 1, 200, 0)
        with pytest.raises(ValueError, match="expected 1"):
            w.append(dict(zip(IO_KEYS, ("io", "in", 0x42, 1, 0xFF, 5, 200, 0))))
        assert w.append_ev(IO_KEYS, "io", "out", 0x43, 1, 0x34, 1, 200, 0)
    with TraceReader(tmp_path / "x.pvt") as r:
        evs = list(r)
    assert [(e["seq"], e["dir"]) for e in evs] == [(0, "in"), (1, "out")]
