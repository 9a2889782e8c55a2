"""Trace store benchmark: write cost, size and `trace stats` read throughput.

Synthesizes a boot-like trace of 200k events (mmu_update/mmuext_op heavy, see
pvmon.trace.synth), then prints:

- write cost per event of TraceWriter.append (+ close), background and inline
  compression, next to the cost of msgpack-packing alone;
- bytes per event on disk;
- read throughput of a full pass (iteration) and of `pvmon trace stats`'s
  aggregation (target >= 500k events/s), and of a seek (`--from`, `--time`).

Run: python bench/bench_trace_read.py [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import msgpack

from pvmon.trace import TraceReader, TraceWriter
from pvmon.trace.stats import TraceStats, default_jobs
from pvmon.trace.synth import synthetic_events, synthetic_header


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, repeat = args.events, args.repeat
    events = list(synthetic_events(n, seed=1))
    header = synthetic_header()
    tmp = tempfile.mkdtemp(prefix="pvmon-bench-")
    path = os.path.join(tmp, "bench.pvt")

    pack = msgpack.Packer().pack
    t_pack = best_of(repeat, lambda: [pack(e) for e in events])
    print(f"events: {n:,} ({sum(e['k'] == 'hc' for e in events):,} hypercalls)")
    print(f"msgpack pack alone:          {t_pack / n * 1e6:6.2f} us/event")

    for background in (True, False):
        def write(background: bool = background) -> None:
            with TraceWriter(path, header, background=background) as w:
                for e in events:
                    w.append(e)
        t = best_of(repeat, write)
        mode = "background" if background else "inline    "
        print(f"write ({mode}):       {t / n * 1e6:6.2f} us/event  ({n / t:,.0f} events/s)")

    size = os.path.getsize(path)
    with TraceReader(path) as r:
        frames = len(r.frames)
        raw = sum(f.raw_len for f in r.frames)
    print(f"file: {size:,} bytes, {size / n:.1f} bytes/event ({raw / n:.1f} raw msgpack),"
          f" {frames} frames")

    def iterate() -> None:
        with TraceReader(path) as r:
            for _ in r:
                pass

    jobs = default_jobs()

    def stats() -> None:
        with TraceReader(path) as r:
            TraceStats.of(r, jobs=jobs)

    t_iter = best_of(repeat, iterate)
    t_stats = best_of(repeat, stats)
    print(f"read (iterate all):          {n / t_iter:,.0f} events/s")
    verdict = "ok" if n / t_stats >= 500_000 else "BELOW TARGET"
    print(f"read (trace stats, {jobs} proc):  {n / t_stats:,.0f} events/s  (target 500,000: {verdict})")

    with TraceReader(path) as r:
        t0 = time.perf_counter()
        mid = list(r.events(n // 2, n // 2 + 20))
        seq = r.seek_time(mid[0]["t"])
        dt = time.perf_counter() - t0
        print(f"seek to the middle + 20 events: {dt * 1e3:.2f} ms, {r.frames_decompressed}"
              f" frame(s) decompressed (seek_time -> #{seq})")
    os.remove(path)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
