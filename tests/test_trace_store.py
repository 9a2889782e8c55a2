"""The .pvt trace store: round trips, seeking, truncation, corruption, zstd compatibility."""

from __future__ import annotations

import shutil
import subprocess

import msgpack
import pytest

from pvmon.errors import TraceError
from pvmon.trace import TraceReader, TraceWriter
from pvmon.trace import format as fmt
from pvmon.trace.synth import synthetic_events, synthetic_header


def write(path, events, **kw):
    with TraceWriter(path, synthetic_header(), **kw) as w:
        for ev in events:
            w.append(ev)
    return path


@pytest.fixture
def events():
    return list(synthetic_events(5000, seed=7))


@pytest.fixture
def trace(tmp_path, events):
    return write(tmp_path / "run.pvt", events, frame_events=256)


def test_events_and_header_read_back_exactly_as_written(trace, events):
    with TraceReader(trace) as r:
        assert r.complete and r.truncated_after is None
        assert r.header == {**synthetic_header()}
        assert r.version == fmt.FORMAT_VERSION
        assert len(r) == len(events)
        assert list(r) == events
        assert [f.count for f in r.frames] == [256] * 19 + [136]


@pytest.mark.parametrize("background", [True, False])
def test_inline_and_background_writers_produce_the_same_file(tmp_path, events, background):
    a = write(tmp_path / "a.pvt", events, background=background)
    b = write(tmp_path / "b.pvt", events, background=not background)
    assert a.read_bytes() == b.read_bytes()


def test_a_frame_is_cut_when_its_msgpack_reaches_frame_bytes(tmp_path, events):
    path = write(tmp_path / "big.pvt", events, frame_events=100_000, frame_bytes=64 << 10)
    with TraceReader(path) as r:
        assert len(r.frames) > 10
        assert all(f.raw_len < (64 << 10) + 4096 for f in r.frames)
        assert list(r) == events


def test_an_empty_trace_is_complete_with_no_events(tmp_path):
    path = write(tmp_path / "empty.pvt", [])
    with TraceReader(path) as r:
        assert r.complete and len(r) == 0 and list(r) == [] and r.frames == []
        assert r.seek_time(123) == 0


def test_seeking_by_seq_decompresses_only_the_frames_needed(trace, events):
    with TraceReader(trace) as r:
        assert list(r.events(1000, 1010)) == events[1000:1010]
        assert r.frames_decompressed == 1
        assert list(r.events(1010, 1020)) == events[1010:1020]  # same frame: cached
        assert r.frames_decompressed == 1
        assert list(r.events(500, 800)) == events[500:800]  # spans frames 1..3
        assert r.frames_decompressed == 4
        assert list(r.events(4990)) == events[4990:]
        assert list(r.events(10_000)) == [] and list(r.events(10, 5)) == []


def test_seeking_by_time_decompresses_at_most_one_frame(trace, events):
    with TraceReader(trace) as r:
        for probe in (events[0]["t"] - 1, events[0]["t"], events[2500]["t"],
                      events[2500]["t"] + 1, events[-1]["t"], events[-1]["t"] + 1):
            before = r.frames_decompressed
            seq = r.seek_time(probe)
            expected = next((e["seq"] for e in events if e["t"] >= probe), len(events))
            assert seq == expected
            assert r.frames_decompressed - before <= 1


def test_the_writer_refuses_events_out_of_sequence_or_back_in_time(tmp_path):
    with TraceWriter(tmp_path / "x.pvt", synthetic_header()) as w:
        w.append({"seq": 0, "t": 10, "cpu": 0, "k": "tsc"})
        with pytest.raises(ValueError, match="expected 1"):
            w.append({"seq": 2, "t": 10, "cpu": 0, "k": "tsc"})
        with pytest.raises(ValueError, match="backwards"):
            w.append({"seq": 1, "t": 9, "cpu": 0, "k": "tsc"})
        w.append({"seq": 1, "t": 10, "cpu": 0, "k": "tsc"})
    with TraceReader(tmp_path / "x.pvt") as r:
        assert len(r) == 2


def test_a_write_error_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="writing trace failed"):
        TraceWriter("/dev/full", synthetic_header())
    with pytest.raises(TraceError, match="cannot create"):
        TraceWriter(tmp_path / "no" / "such" / "dir.pvt", synthetic_header())


def test_a_file_cut_at_any_byte_keeps_every_complete_frame(tmp_path, events):
    full = write(tmp_path / "full.pvt", events[:600], frame_events=100).read_bytes()
    with TraceReader(tmp_path / "full.pvt") as r:
        frames = r.frames
        header_end = frames[0].offset
    cut_path = tmp_path / "cut.pvt"
    cuts = sorted({header_end, len(full) - 1, len(full) - fmt.SEEK_FOOTER.size}
                  | set(range(header_end, len(full), 97))
                  | {f.offset + d for f in frames for d in (0, 1, fmt.DESC_SIZE, -1)})
    for cut in (c for c in cuts if c >= header_end):
        cut_path.write_bytes(full[:cut])
        with TraceReader(cut_path) as r:
            intact = [f for f in frames if f.end <= cut]
            assert not r.complete
            assert len(r) == sum(f.count for f in intact)
            assert r.truncated_after == len(r) - 1
            assert list(r) == events[:len(r)]
    cut_path.write_bytes(full[:header_end - 1])
    with pytest.raises(TraceError, match="truncated inside the header"):
        TraceReader(cut_path)


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("seek_table", [True, False])
def test_a_corrupt_frame_is_reported_with_its_byte_offset(tmp_path, events, seek_table):
    path = write(tmp_path / "c.pvt", events[:1000], frame_events=100)
    with TraceReader(path) as r:
        bad = r.frames[4]
        size = r.file_size
    if not seek_table:  # a truncated file: the index comes from scanning
        path.write_bytes(path.read_bytes()[:size - 10])
    _flip(path, bad.offset + fmt.DESC_SIZE + bad.comp_len // 2)
    with TraceReader(path) as r:
        assert r.complete is seek_table
        assert list(r.events(0, 400)) == events[:400]  # frames before it are fine
        with pytest.raises(TraceError, match=f"at byte {bad.offset}:"):
            list(r)


def test_a_corrupt_descriptor_is_reported_not_taken_for_a_truncation(tmp_path, events):
    path = write(tmp_path / "d.pvt", events[:1000], frame_events=100)
    with TraceReader(path) as r:
        bad = r.frames[3]
        size = r.file_size
    path.write_bytes(path.read_bytes()[:size - 10])
    _flip(path, bad.offset + 12)
    with pytest.raises(TraceError, match=f"at byte {bad.offset}: frame descriptor checksum"):
        TraceReader(path)


def test_a_corrupt_seek_table_is_reported(trace):
    data = bytearray(trace.read_bytes())
    data[-fmt.SEEK_FOOTER.size - 5] ^= 1
    trace.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="seek table checksum"):
        TraceReader(trace)


def test_an_unknown_format_version_is_refused_by_name(trace):
    data = bytearray(trace.read_bytes())
    data[fmt.SKIP_HDR.size + 8] = 99  # the version field every format version keeps in place
    trace.write_bytes(bytes(data))
    with pytest.raises(TraceError, match="version 99 is not supported"):
        TraceReader(trace)


def test_a_file_that_is_not_a_trace_is_refused(tmp_path):
    (tmp_path / "x.pvt").write_bytes(b"hello world, not a trace at all")
    with pytest.raises(TraceError, match="not a pvmon trace"):
        TraceReader(tmp_path / "x.pvt")
    with pytest.raises(TraceError, match="cannot open"):
        TraceReader(tmp_path / "missing.pvt")


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
def test_zstd_dc_yields_the_header_then_the_events_as_plain_msgpack(trace, events):
    out = subprocess.run(["zstd", "-dcq", str(trace)], capture_output=True, check=True).stdout
    unpacker = msgpack.Unpacker(None, raw=False, strict_map_key=False,
                                max_buffer_size=len(out) + 1)
    unpacker.feed(out)
    objs = list(unpacker)
    assert objs[0] == synthetic_header()
    assert objs[1:] == events


def test_stats_read_in_parallel_equal_the_serial_read(trace, monkeypatch):
    from pvmon.trace import stats
    from pvmon.trace.stats import TraceStats
    monkeypatch.setattr(stats, "PARALLEL_MIN_EVENTS", 0)   # this small trace too
    with TraceReader(trace) as r:
        assert len(r.frames) >= 16
        serial = TraceStats.of(r)
        parallel = TraceStats.of(r, jobs=3)
    assert parallel.to_dict() == serial.to_dict()
    assert (parallel.first_t, parallel.last_t) == (serial.first_t, serial.last_t)


def test_a_corrupt_frame_fails_a_parallel_stats_read_by_its_offset(tmp_path, events,
                                                                   monkeypatch):
    from pvmon.trace import stats
    from pvmon.trace.stats import TraceStats
    monkeypatch.setattr(stats, "PARALLEL_MIN_EVENTS", 0)
    path = write(tmp_path / "c.pvt", events, frame_events=100)
    with TraceReader(path) as r:
        bad = r.frames[40]
    _flip(path, bad.offset + fmt.DESC_SIZE + bad.comp_len // 2)
    with TraceReader(path) as r, pytest.raises(TraceError, match=f"at byte {bad.offset}:"):
        TraceStats.of(r, jobs=2)


def test_the_fast_packer_writes_the_bytes_msgpack_writes(events):
    """The writer packs with ormsgpack; a trace must not depend on which packer ran."""
    import msgpack
    import ormsgpack
    pack = msgpack.Packer(use_bin_type=True).pack
    odd = [{"seq": 0, "t": 0, "k": "x", "m": {3: 1, "s": b"\x00"}, "n": [-1, 2**64 - 1, -2**63],
            "f": 1.5, "b": True, "z": None, "ba": bytearray(b"ab"), "tu": (1, 2)}]
    for ev in events + odd:
        assert ormsgpack.packb(ev, option=ormsgpack.OPT_NON_STR_KEYS) == pack(ev)



def test_the_fast_frame_decoder_reads_what_msgpack_reads_or_declines(events):
    """Frames are decoded with ormsgpack when it can vouch for the result; whatever
    it declines goes to msgpack-python, so a trace reads the same either way."""
    from pvmon.trace.reader import _fast_events, _unpacker
    from pvmon.trace.writer import pack_event

    def reference(raw):
        u = _unpacker(len(raw))
        u.feed(raw)
        return list(u)
    raw = b"".join(pack_event(ev) for ev in events)
    assert _fast_events(raw, len(events)) == reference(raw) == events
    one = pack_event(events[0])
    assert _fast_events(raw + one, len(events)) is None          # an object too many
    assert _fast_events(raw[:-1], len(events)) is None           # ends inside an event
    assert _fast_events(raw, len(events) + 1) is None            # one too few
    assert _fast_events(raw + b"\xa3end", len(events)) is None   # bytes left over
    int_keys = msgpack.packb({"seq": 0, "t": 0, "k": "x", "m": {3: 1}})
    assert _fast_events(int_keys, 1) is None and reference(int_keys)[0]["m"] == {3: 1}


def test_a_frame_the_fast_decoder_declines_still_reads(tmp_path):
    evs = [{"k": "x", "m": {3: "int key"}, "seq": i, "t": i, "cpu": 0} for i in range(3)]
    with TraceReader(write(tmp_path / "k.pvt", evs)) as r:
        assert list(r.events()) == evs
