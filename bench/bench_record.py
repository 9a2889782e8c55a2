#!/usr/bin/env python3
"""Recording cost and trace size on a Debian boot, beside QEMU's record/replay log.

pvmon: the same boot with and without ``--record`` (fresh process per run,
imports excluded, runs alternated so load drifts hit both alike); overhead is
median(recorded) / median(plain) - 1 (target <= 5 %). Trace: events, bytes,
bytes per event. QEMU: ``-icount shift=auto,rr=record`` of the same kernel to
the same panic, its rr log size (target: pvmon's trace <= 1/3 of it) and the
wall time of QEMU's own record and replay.

    python bench/bench_record.py [--kernel debian-6.12] [--runs 3] [--no-qemu] [--json]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = """
import json, time
from pvmon.guests.catalog import resolve
from pvmon.session import Session
s = Session(resolve({kernel!r}), record={path!r})
t0 = time.perf_counter()
r = s.run(timeout=900)
print(json.dumps({{"wall_s": time.perf_counter() - t0, "events": r.events,
                  "hypercalls": sum(r.hypercalls.values())}}))
"""


def pvmon_run(kernel: str, path: str | None) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN.format(kernel=kernel, path=path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def qemu(vmlinuz: str, d: Path, mode: str) -> float:
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none",
           "-monitor", "none", "-no-reboot", "-serial", f"file:{d / (mode + '.log')}",
           "-icount", f"shift=auto,rr={mode},rrfile={d / 'rr.bin'}",
           "-kernel", vmlinuz, "-append", "console=ttyS0 panic=-1"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    wall = time.perf_counter() - t0
    log = (d / (mode + ".log")).read_text(errors="replace")
    if "VFS: Unable to mount root fs" not in log:
        raise SystemExit(f"QEMU {mode} did not reach the VFS panic")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.12")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from pvmon.guests.catalog import resolve
    img = resolve(args.kernel)
    from pvmon.trace.writer import COMPILED_PACKER
    res: dict = {"kernel": args.kernel, "loadavg_start": os.getloadavg()[0],
                 "compiled_packer": COMPILED_PACKER}
    plain, rec = [], []
    with tempfile.TemporaryDirectory() as d:
        trace = str(Path(d) / "run.pvt")
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", file=sys.stderr)
            plain.append(pvmon_run(args.kernel, None))
            rec.append(pvmon_run(args.kernel, trace))
        size = Path(trace).stat().st_size
        res.update(plain_s=[r["wall_s"] for r in plain], record_s=[r["wall_s"] for r in rec],
                   events=rec[0]["events"], hypercalls=rec[0]["hypercalls"], trace_bytes=size)
        pm = statistics.median(res["plain_s"])
        rm = statistics.median(res["record_s"])
        pairs = sorted(r / p for r, p in zip(res["record_s"], res["plain_s"]))
        res.update(plain_median_s=pm, record_median_s=rm, overhead=rm / pm - 1,
                   overhead_paired=statistics.median(pairs) - 1,
                   overhead_fastest=min(res["record_s"]) / min(res["plain_s"]) - 1,
                   bytes_per_event=size / rec[0]["events"])
        # `pvmon trace stats` read throughput on this real trace (best of 3, the
        # CLI's worker processes).
        from pvmon.trace.reader import TraceReader
        from pvmon.trace.stats import TraceStats, default_jobs
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            with TraceReader(trace) as r:
                n = TraceStats.of(r, jobs=default_jobs()).events
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        res.update(stats_jobs=default_jobs(), stats_events_per_s=n / best)
        if not args.no_qemu and img.vmlinuz and shutil.which("qemu-system-x86_64"):
            print("QEMU record / replay", file=sys.stderr)
            qd = Path(d)
            res["qemu_record_s"] = qemu(str(img.vmlinuz), qd, "record")
            res["qemu_rr_bytes"] = (qd / "rr.bin").stat().st_size
            res["qemu_replay_s"] = qemu(str(img.vmlinuz), qd, "replay")
            res["trace_over_qemu_rr"] = size / res["qemu_rr_bytes"]
    res["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"kernel {args.kernel}: {res['events']:,} events ({res['hypercalls']:,} hypercalls); "
          f"hypercall events packed by the "
          f"{'compiled packer' if res['compiled_packer'] else 'dict path (no compiled packer)'}")
    print(f"plain   median {pm:6.2f} s   runs " + " ".join(f"{x:.2f}" for x in res["plain_s"]))
    print(f"record  median {rm:6.2f} s   runs " + " ".join(f"{x:.2f}" for x in res["record_s"]))
    print(f"recording overhead {100 * res['overhead']:+.1f} %   (target <= 5 %); median of "
          f"the {len(res['plain_s'])} paired runs' ratios {100 * res['overhead_paired']:+.1f} %, "
          f"fastest vs fastest {100 * res['overhead_fastest']:+.1f} %")
    print(f"trace {size:,} bytes, {res['bytes_per_event']:.1f} bytes/event")
    print(f"trace stats read {res['stats_events_per_s']:,.0f} events/s with "
          f"{res['stats_jobs']} process(es) (target >= 500,000)")
    if "qemu_rr_bytes" in res:
        print(f"QEMU rr log {res['qemu_rr_bytes']:,} bytes; trace/QEMU = "
              f"{res['trace_over_qemu_rr']:.3f} (target <= 0.333)")
        print(f"QEMU record {res['qemu_record_s']:.2f} s, replay {res['qemu_replay_s']:.2f} s "
              f"(replay/record {res['qemu_replay_s'] / res['qemu_record_s']:.2f})")
    print(f"load average {res['loadavg_start']:.2f} at start, {res['loadavg_end']:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
