"""`pvmon trace pvops` beside `pvmon trace stats`: the canonical view's cost.

Issue 21's figure: canonical translation costs no more than 20 % on `trace stats`.
Times the WHOLE commands, start-up included, as a user runs them:

    python -m pvmon trace pvops TRACE --json
    python -m pvmon trace stats TRACE --json

alternated A B A B ... (so a drift in the machine's speed hits both), after one
warm-up pair that is not counted; prints each command's median, min and max wall
seconds and the median of the per-pair ratios pvops/stats. Output goes to
/dev/null. Uses only the standard library (subprocess, time.perf_counter).

Run: python bench/bench_pvops.py TRACE [TRACE ...] [--runs N]
(record one with `pvmon run debian-6.12 --record /tmp/d612.pvt --quiet`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def run_once(cmd: list[str]) -> float:
    """Wall seconds of one run of ``cmd``; raises SystemExit when it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench_pvops: {' '.join(cmd)} failed ({p.returncode}): "
                 f"{p.stderr.decode(errors='replace').strip()}")
    return dt


def bench(trace: str, runs: int) -> None:
    a = [sys.executable, "-m", "pvmon", "trace", "pvops", trace, "--json"]
    b = [sys.executable, "-m", "pvmon", "trace", "stats", trace, "--json"]
    run_once(a)
    run_once(b)                        # warm-up pair: page cache, .pyc files
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        ta.append(run_once(a))
        tb.append(run_once(b))
    ratios = [x / y for x, y in zip(ta, tb)]
    print(f"trace {trace} ({os.path.getsize(trace):,} bytes), {runs} pairs A B A B, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'command':<24}{'median s':>9}{'min':>8}{'max':>8}")
    for name, ts in (("trace pvops --json", ta), ("trace stats --json", tb)):
        print(f"{name:<24}{statistics.median(ts):9.3f}{min(ts):8.3f}{max(ts):8.3f}")
    med = statistics.median(ratios)
    verdict = "ok" if med <= 1.2 else "ABOVE TARGET"
    print(f"pvops/stats, median of pair ratios: {med:.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}; target <= 1.20: {verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+", metavar="TRACE")
    ap.add_argument("--runs", type=int, default=5, help="timed pairs per trace (5)")
    args = ap.parse_args()
    for i, trace in enumerate(args.traces):
        if i:
            print()
        bench(trace, max(1, args.runs))


if __name__ == "__main__":
    main()
