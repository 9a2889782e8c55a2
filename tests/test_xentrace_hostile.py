"""Hostile xentrace files: truncated, bit-flipped, spliced and crafted inputs
give the importer a TraceError or a trace, never anything else, never a hang,
and never unbounded memory."""

from __future__ import annotations

import resource
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvmon.errors import TraceError
from pvmon.trace import TraceReader
from pvmon.trace.xentrace import records as R
from pvmon.trace.xentrace.importer import import_xentrace
from pvmon.trace.xentrace.reader import XentraceReader

SETTINGS = settings(max_examples=150, deadline=3000,
                    suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="pvmon-xt-hostile-"))


def _base() -> bytes:
    """Two CPUs, two windows each, every record class the importer reads."""
    def window(cpu: int, recs: list[bytes]) -> bytes:
        body = b"".join(recs)
        return R.cpu_change(cpu, len(body)) + body
    run = R.runstate_change(1, 0, R.RUNSTATE_RUNNABLE, R.RUNSTATE_RUNNING, 1)
    hcs = [R.pack_record(R.TRC_PV_HYPERCALL_V2, R.hypercall_words(nr, [nr, 1 << 40, 3]), 10 + nr)
           for nr in range(0, 40, 3)]
    mc = [R.pack_record(R.TRC_PV_HYPERCALL_V2, R.hypercall_words(13, [0x1000, 2]), 60),
          R.pack_record(R.TRC_PV_HYPERCALL_SUBCALL, R.hypercall_words(17, [0]), 60),
          R.pack_record(R.TRC_PV_HYPERCALL_SUBCALL, R.hypercall_words(29, [1]), 60)]
    other = [R.pack_record(R.TRC_PV_TRAP | R.TRC_64_FLAG, (1, 2, 3 | 1 << 15), 70),
             R.pack_record(R.TRC_PV_PAGE_FAULT | R.TRC_64_FLAG, (1, 2, 3, 4, 5), 71),
             R.pack_record(R.TRC_PVMON_UPCALL, (1, 2, 3), 72),
             R.pack_record(R.TRC_LOST_RECORDS, (9, 1, 0, 0), 73)]
    run1 = R.runstate_change(1, 1, R.RUNSTATE_RUNNABLE, R.RUNSTATE_RUNNING, 2)
    return (window(0, [run, *hcs]) + window(1, [run1, *other]) + window(0, mc)
            + window(1, hcs[:3]))


BASE = _base()


def exercise(data: bytes) -> None:
    """Import ``data``; only TraceError may escape, and a written trace reads back."""
    # ru_maxrss is the process's peak: compare with the peak before this case (in a
    # full run, earlier tests may have set a higher one, and then this holds trivially)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    src, dst = _DIR / "case.xt", _DIR / "case.pvt"
    src.write_bytes(data)
    dst.unlink(missing_ok=True)
    try:
        with XentraceReader(src) as r:
            for _ in r.records():
                pass
        info = import_xentrace(src, dst, domain=1)
    except TraceError as exc:
        assert "\n" not in str(exc)
        assert not dst.exists()
        return
    with TraceReader(dst) as t:
        assert len(t) == info["events"] > 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert rss - start < 200_000, "importer grew the process by more than 200 MB"


def test_the_base_file_imports():
    exercise(BASE)
    with TraceReader(_DIR / "case.pvt") as t:
        assert len(t) > 20


@SETTINGS
@given(st.integers(min_value=0, max_value=len(BASE)))
def test_every_truncation_is_a_trace_or_one_error(cut):
    exercise(BASE[:cut])


@SETTINGS
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(BASE) - 1),
                          st.integers(min_value=0, max_value=255)), min_size=1, max_size=8))
def test_flipped_bytes_are_a_trace_or_one_error(flips):
    data = bytearray(BASE)
    for pos, value in flips:
        data[pos] = value
    exercise(bytes(data))


@SETTINGS
@given(st.binary(min_size=0, max_size=512), st.integers(min_value=0, max_value=len(BASE)))
def test_spliced_garbage_is_a_trace_or_one_error(junk, at):
    exercise(BASE[:at] + junk + BASE[at:])


@SETTINGS
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=-2**31,
                                                                  max_value=2**31 - 1))
def test_any_window_header_is_a_trace_or_one_error(size, cpu):
    import struct
    exercise(struct.pack("<IiI", R.header_word(R.TRC_TRACE_CPU_CHANGE, 2, False), cpu, size)
             + BASE[12:])


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**16), st.integers(min_value=1, max_value=400),
       st.sampled_from([1, 1_000_000, 2_000_000, 3_700_000]))
def test_any_synthetic_trace_exports_and_imports_back(seed, n, khz):
    """A pvmon trace of any shape (the synthetic generator's mix, any TSC rate)
    exports to records the reader takes, and imports back to its calls, faults
    and upcalls in order."""
    from pvmon.trace import TraceWriter
    from pvmon.trace.synth import synthetic_events, synthetic_header
    from pvmon.trace.xentrace.export import export_xentrace
    pvt, xt, back = _DIR / "s.pvt", _DIR / "s.xt", _DIR / "s2.pvt"
    events = list(synthetic_events(n, seed=seed))
    with TraceWriter(pvt, synthetic_header(tsc_khz=khz), frame_events=64) as w:
        for ev in events:
            w.append(ev)
    with TraceReader(pvt) as r, xt.open("wb") as out:
        export_xentrace(r, out)
    want = [(e["k"], e.get("nr"), e.get("vec")) for e in events
            if e["k"] in ("hc", "fault", "upcall")
            or (e["k"] == "exit" and e.get("reason") in ("shutdown", "crash"))]
    if not want:
        return
    import_xentrace(xt, back, tsc_khz=khz)
    with TraceReader(back) as r:
        got = [(e["k"], e.get("nr"), e.get("vec")) for e in r]
    assert got == want
