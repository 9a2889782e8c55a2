"""Hostile input: truncated, bit-flipped and crafted files give a TraceError, never anything
else, never a hang, and never unbounded memory."""

from __future__ import annotations

import io
import resource
import tempfile
from pathlib import Path

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvmon.errors import TraceError
from pvmon.trace import TraceReader, TraceWriter
from pvmon.trace import format as fmt
from pvmon.trace.export import export_jsonl, export_perfetto
from pvmon.trace.format import FrameInfo
from pvmon.trace.render import format_line, jsonable
from pvmon.trace.stats import TraceStats
from pvmon.trace.synth import synthetic_events, synthetic_header

SETTINGS = settings(max_examples=150, deadline=3000,
                    suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="pvmon-hostile-"))


def _base() -> tuple[bytes, list[FrameInfo]]:
    path = _DIR / "base.pvt"
    with TraceWriter(path, synthetic_header(), frame_events=40) as w:
        for ev in synthetic_events(200, seed=11):
            w.append(ev)
    with TraceReader(path) as r:
        return path.read_bytes(), r.frames


BASE, FRAMES = _base()
START_RSS = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def exercise(data: bytes) -> None:
    """Open ``data`` as a trace and use every reader entry point; only TraceError may escape."""
    path = _DIR / "case.pvt"
    path.write_bytes(data)
    try:
        with TraceReader(path) as r:
            n = len(r)
            for t in (0, 1 << 62, -1, r.last_t or 0):
                assert 0 <= r.seek_time(t) <= n
            list(r.events(n // 2, n // 2 + 3))
            stats = TraceStats()
            for i in range(len(r.frames)):
                evs = r.frame_events(i)
                stats.add(evs)
                for ev in evs:
                    format_line(ev, show_cpu=True)
                    jsonable(ev)
            export_perfetto(r, io.StringIO())
            export_jsonl(r, io.StringIO())
    except TraceError:
        pass


def forge(header: object, frames: list[tuple[bytes, int, int, int]], *, seek: bool = True,
          first_seq: int = 0) -> bytes:
    """A well-checksummed file from raw msgpack payloads ``(raw, count, first_t, last_t)``."""
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    raw_header = msgpack.packb(header)
    comp_header = cctx.compress(raw_header)
    out = bytearray(fmt.pack_preamble(len(comp_header), len(raw_header)) + comp_header)
    infos, seq = [], first_seq
    for i, (raw, count, first_t, last_t) in enumerate(frames):
        comp = cctx.compress(raw)
        infos.append(FrameInfo(i, len(out), seq, count, first_t, last_t, len(comp), len(raw)))
        out += fmt.pack_descriptor(len(comp), len(raw), count, seq, first_t, last_t) + comp
        seq += count
    if seek:
        out += fmt.pack_seek_table(infos, seq)
    return bytes(out)


HEADER = {"format": "pvmon-trace", "version": fmt.FORMAT_VERSION}


@SETTINGS
@given(st.integers(0, len(BASE)))
def test_truncated_files(cut):
    exercise(BASE[:cut])


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 7)), min_size=1,
                max_size=8), st.booleans())
def test_bit_flipped_files(flips, drop_seek_table):
    data = bytearray(BASE)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    exercise(bytes(data[:FRAMES[-1].end] if drop_seek_table else data))


@SETTINGS
@given(st.integers(0, len(BASE) - 1), st.binary(min_size=1, max_size=64))
def test_overwritten_slices(pos, junk):
    exercise(BASE[:pos] + junk + BASE[pos + len(junk):])


HOSTILE_INTS = st.one_of(st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1]),
                         st.integers(0, 2**32 - 1))


@SETTINGS
@given(st.integers(0, len(FRAMES) - 1), st.integers(0, 5), HOSTILE_INTS, st.booleans())
def test_descriptors_with_valid_checksums_and_hostile_fields(index, field, value, seek):
    f = FRAMES[index]
    fields = [f.comp_len, f.raw_len, f.count, f.first_seq, f.first_t, f.last_t]
    fields[field] = value if field < 3 else value * 2**31
    data = bytearray(BASE if seek else BASE[:FRAMES[-1].end])
    data[f.offset:f.offset + fmt.DESC_SIZE] = fmt.pack_descriptor(*fields)
    exercise(bytes(data))


@SETTINGS
@given(HOSTILE_INTS, HOSTILE_INTS)
def test_preambles_with_valid_checksums_and_hostile_lengths(comp_len, raw_len):
    exercise(fmt.pack_preamble(comp_len, raw_len) + BASE[fmt.PREAMBLE_SIZE:])


@SETTINGS
@given(st.lists(st.tuples(HOSTILE_INTS, HOSTILE_INTS, HOSTILE_INTS), min_size=1, max_size=4),
       HOSTILE_INTS)
def test_seek_tables_with_valid_checksums_and_hostile_entries(entries, n_events):
    frames = [FrameInfo(i, a * 7, b, c, a, b, c, a) for i, (a, b, c) in enumerate(entries)]
    exercise(BASE[:FRAMES[-1].end] + fmt.pack_seek_table(frames, n_events))


HOSTILE_MSGPACK = [
    b"\xdd\xff\xff\xff\xff",  # array32 claiming 4G elements
    b"\xdf\xff\xff\xff\xff",  # map32 claiming 4G pairs
    b"\xc6\xff\xff\xff\xff",  # bin32 claiming 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\x91" * 5000 + b"\x90",  # deep nesting
    b"\xc1",  # never-used byte
    b"\x90" * 4000,  # many tiny objects
]

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12)
odd_events = st.fixed_dictionaries(
    {"k": st.sampled_from(["hc", "fault", "con", "upcall", "tsc", "tsc_run", "cpuid", "exit",
                           "?"])},
    optional={key: msgpack_values for key in ("name", "op", "args", "ret", "ev", "vec", "err",
                                              "rip", "cr2", "data", "ports", "out", "leaf",
                                              "cpu", "dir", "ch", "val")})


@SETTINGS
@given(st.sampled_from(HOSTILE_MSGPACK), st.integers(1, 5000), st.booleans())
def test_frames_with_hostile_msgpack(payload, count, seek):
    exercise(forge(HEADER, [(payload, count, 0, 0)], seek=seek))
    exercise(forge(payload, [], seek=seek))  # as the header


@SETTINGS
@given(st.lists(odd_events, min_size=1, max_size=20))
def test_well_formed_frames_of_oddly_shaped_events_read_and_render(events):
    evs = [{**ev, "seq": i, "t": i} for i, ev in enumerate(events)]
    raw = b"".join(msgpack.packb(ev) for ev in evs)
    exercise(forge(HEADER, [(raw, len(evs), 0, len(evs) - 1)]))


def test_a_zip_bomb_frame_stays_within_the_frame_limit():
    bomb = b"\x90" * fmt.MAX_FRAME_RAW  # 4 MiB of empty arrays, compresses to a few hundred bytes
    exercise(forge(HEADER, [(bomb, fmt.MAX_FRAME_EVENTS, 0, 0)]))
    with pytest.raises(TraceError, match="exceeds the limit"):
        TraceReader(_write(forge(HEADER, [(bomb + b"\x90", 1, 0, 0)])))


def _write(data: bytes) -> Path:
    path = _DIR / "one.pvt"
    path.write_bytes(data)
    return path


def test_memory_stayed_bounded_over_all_hostile_cases():
    """Run every other hostile case in a fresh process and bound its peak RSS.
    The peak is the child's own VmHWM (/proc/self/status), read at its end:
    getrusage's ru_maxrss would also count the parent's high-water mark, which
    Linux carries across fork+exec (and the suite's guest boots make large)."""
    import subprocess
    import sys
    code = ("import sys, pytest\n"
            f"rc = pytest.main(['-q', '-p', 'no:cacheprovider', {str(Path(__file__))!r}, "
            "'-k', 'not memory_stayed_bounded'])\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print('PEAK', hwm.split()[1])\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    peak_kib = int(proc.stdout.rsplit("PEAK", 1)[1].split()[0])
    # A crafted 4 MiB frame of tiny msgpack objects can expand ~60x as Python objects
    # (docs/trace-format.md, limits); the bound is what keeps it from growing further.
    assert peak_kib / 1024 < 1024
