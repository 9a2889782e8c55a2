#!/usr/bin/env python3
"""Recording cost and trace size on a Debian boot, beside QEMU's record/replay log.

pvmon: the same boot with and without ``--record`` (fresh process per run,
imports excluded, runs alternated so load drifts hit both alike); overhead is
median(recorded) / median(plain) - 1 (target <= 5 %). ``--whole`` also times
the whole command a user runs, ``pvmon run KERNEL --mode MODE --quiet`` with
and without ``--record F``, alternated, from process start to exit: wall and
CPU (user + system of the child) overhead as the median of the paired runs'
ratios (the figure; the in-process one is labelled). Trace: events, bytes,
bytes per event. QEMU: ``-icount shift=auto,rr=record`` of the same kernel to
the same panic, its rr log size (target: pvmon's trace <= 1/3 of it) and the
wall time of QEMU's own record and replay.

    python bench/bench_record.py [--kernel debian-6.12] [--mode pv|pvh] [--runs 3]
                                 [--whole] [--no-qemu] [--json]
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
s = Session(resolve({kernel!r}), record={path!r}, mode={mode!r})
t0 = time.perf_counter()
r = s.run(timeout=900)
print(json.dumps({{"wall_s": time.perf_counter() - t0, "events": r.events,
                  "hypercalls": sum(r.hypercalls.values())}}))
"""


def pvmon_run(kernel: str, path: str | None, mode: str = "pv") -> dict:
    out = subprocess.run([sys.executable, "-c", RUN.format(kernel=kernel, path=path, mode=mode)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def whole_run(kernel: str, path: str | None, mode: str) -> tuple[float, float]:
    """``pvmon run`` from process start to exit: (wall s, user + system s)."""
    cmd = [sys.executable, "-m", "pvmon", "run", kernel, "--mode", mode, "--quiet"]
    if path is not None:
        cmd += ["--record", path]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return wall, ru.ru_utime + ru.ru_stime


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
    ap.add_argument("--mode", default="pv", choices=("pv", "pvh"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--whole", action="store_true",
                    help="also time the whole pvmon run command with and without --record")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # byte-compile pvmon first, so no timed run compiles a module again when
    # PYTHONDONTWRITEBYTECODE is set (see bench_boot.py)
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parent.parent / "pvmon")],
                   check=False, capture_output=True)
    from pvmon.guests.catalog import resolve
    img = resolve(args.kernel)
    from pvmon.trace.writer import COMPILED_PACKER
    res: dict = {"kernel": args.kernel, "mode": args.mode, "loadavg_start": os.getloadavg()[0],
                 "compiled_packer": COMPILED_PACKER}
    plain, rec = [], []
    with tempfile.TemporaryDirectory() as d:
        trace = str(Path(d) / "run.pvt")
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}", file=sys.stderr)
            plain.append(pvmon_run(args.kernel, None, args.mode))
            rec.append(pvmon_run(args.kernel, trace, args.mode))
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
        if args.whole:
            wp, wr = [], []
            whole_run(args.kernel, None, args.mode)       # warm the page cache
            for i in range(args.runs):
                print(f"whole command {i + 1}/{args.runs}", file=sys.stderr)
                wp.append(whole_run(args.kernel, None, args.mode))
                wr.append(whole_run(args.kernel, trace, args.mode))
            res.update(whole_plain=wp, whole_record=wr,
                       whole_overhead_wall=statistics.median(
                           r[0] / p[0] for r, p in zip(wr, wp)) - 1,
                       whole_overhead_cpu=statistics.median(
                           r[1] / p[1] for r, p in zip(wr, wp)) - 1)
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
    print(f"kernel {args.kernel} ({args.mode}): {res['events']:,} events ({res['hypercalls']:,} hypercalls); "
          f"hypercall events packed by the "
          f"{'compiled packer' if res['compiled_packer'] else 'dict path (no compiled packer)'}")
    if "whole_plain" in res:
        print("whole command (pvmon run ... --quiet, process start to exit), wall / CPU s:")
        print("  plain   " + " ".join(f"{w:.2f}/{c:.2f}" for w, c in res["whole_plain"]))
        print("  record  " + " ".join(f"{w:.2f}/{c:.2f}" for w, c in res["whole_record"]))
        print(f"  recording overhead, median of the paired runs' ratios: wall "
              f"{100 * res['whole_overhead_wall']:+.1f} %, CPU "
              f"{100 * res['whole_overhead_cpu']:+.1f} %   (target <= 5 %)")
        print("in-process (Session.run only, labelled; not the figure):")
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
