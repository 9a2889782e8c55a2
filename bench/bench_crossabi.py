"""Cross-ABI open-loop replay speed, and the canonical view's cost on `trace stats`.

Issue 21's figures:

1. cross-ABI open-loop replay >= 100 k canonical operations/s per core: each
   TRACE replayed onto each target ABI in this one process (one core), the
   target's domain built first (not timed: ``Target``); the time is the pass
   over the trace (reading, deriving canonical operations, expressing each in
   the target ABI, feeding its calls to the real target backend) as
   ``pvmon.replay.crossabi.replay_cross`` measures it (``wall_s``), best of
   ``--runs``; ops/s = canonical operations / that time. One whole command is
   timed beside it: ``python -m pvmon replay TRACE --backend vmi-3.0 --open-loop
   --json`` (start-up and the target's build included).
2. canonical translation costs no more than 20 % on `trace stats`: the WHOLE
   commands ``python -m pvmon trace stats TRACE --json`` and ``python -m pvmon
   trace stats --pvops TRACE --json``, alternated A B A B after one warm-up
   pair; the median of the per-pair ratios.

Run: python bench/bench_crossabi.py TRACE [TRACE ...] [--runs N] [--label TEXT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ("xen-4.17:pv", "xen-4.17:pvh", "kvm-6.12", "vmi-3.0", "lguest-4.13")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pvmon", *args]


def run_once(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
    """Wall seconds of one run of ``cmd``; SystemExit when its exit status is not in ``ok``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode not in ok:
        sys.exit(f"bench_crossabi: {' '.join(cmd)} failed ({p.returncode}): "
                 f"{p.stderr.decode(errors='replace').strip()}")
    return dt


def replay_speed(traces: list[str], runs: int) -> None:
    from pvmon.replay.crossabi import Target, domain_memory, open_cross, replay_cross
    print(f"{'trace':<34}{'target':<14}{'ops':>9}{'best s':>9}{'ops/s':>11}")
    tot_ops = tot_s = 0.0
    for tr in traces:
        for spec in TARGETS:
            run = open_cross(Path(tr))
            best = None
            for _ in range(runs):
                target = Target(spec, domain_memory(run.header))   # a fresh domain each run
                rep = replay_cross(open_cross(Path(tr)), spec, target=target)
                best = rep if best is None or rep.wall_s < best.wall_s else best
            tot_ops += best.ops
            tot_s += best.wall_s
            print(f"{Path(tr).name:<34}{spec:<14}{best.ops:>9,}{best.wall_s:>9.3f}"
                  f"{best.ops / best.wall_s:>11,.0f}")
    rate = tot_ops / tot_s
    print(f"all pairs: {tot_ops:,.0f} operations in {tot_s:.3f} s = {rate:,.0f} ops/s on one "
          f"core (target >= 100,000: {'ok' if rate >= 100_000 else 'BELOW TARGET'})")
    tr = traces[0]
    cmd = _cmd("replay", tr, "--backend", "vmi-3.0", "--open-loop", "--json")
    ts = [run_once(cmd, (0, 1)) for _ in range(runs)]
    print(f"whole command `pvmon replay {Path(tr).name} --backend vmi-3.0 --open-loop --json`: "
          f"median {statistics.median(ts):.3f} s (min {min(ts):.3f}, max {max(ts):.3f})")


def stats_cost(trace: str, runs: int) -> None:
    a = _cmd("trace", "stats", "--pvops", trace, "--json")
    b = _cmd("trace", "stats", trace, "--json")
    run_once(a)
    run_once(b)                        # warm-up pair: page cache, .pyc files
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        ta.append(run_once(a))
        tb.append(run_once(b))
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    print(f"trace {trace} ({os.path.getsize(trace):,} bytes), {runs} pairs A B A B")
    print(f"{'command':<30}{'median s':>9}{'min':>8}{'max':>8}")
    for name, ts in (("trace stats --pvops --json", ta), ("trace stats --json", tb)):
        print(f"{name:<30}{statistics.median(ts):9.3f}{min(ts):8.3f}{max(ts):8.3f}")
    med = statistics.median(ratios)
    print(f"--pvops/plain, median of pair ratios: {med:.2f}x (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}; target <= 1.20: {'ok' if med <= 1.2 else 'ABOVE TARGET'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--label", default="", help="a note printed first (the machine's state)")
    args = ap.parse_args()
    if args.label:
        print(args.label)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("\n== cross-ABI open-loop replay, one process (one core)")
    replay_speed(args.traces, args.runs)
    print("\n== trace stats beside trace stats --pvops (whole commands)")
    for tr in args.traces:
        stats_cost(tr, args.runs)


if __name__ == "__main__":
    main()
