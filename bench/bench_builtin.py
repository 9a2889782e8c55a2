#!/usr/bin/env python3
"""Wall time of the built-in reference guests from start to their final line.

Each run is a fresh process (imports excluded from the timing, machine set-up
and boot included). Prints the median over --runs. Target (issue 3): < 1 s.

    python bench/bench_builtin.py [--runs 5]
"""

import argparse
import json
import statistics
import subprocess
import sys

SNIPPET = """
import json, time
t0 = time.perf_counter()
from pvmon.guests.catalog import resolve
from pvmon.session import Session
t1 = time.perf_counter()
r = Session(resolve({name!r})).run(timeout=60)
t2 = time.perf_counter()
ok = b" passed, 0 failed" in r.console and r.clean
print(json.dumps({{"wall_s": t2 - t1, "imports_s": t1 - t0, "ok": ok,
                   "vtime_ns": r.vtime_ns, "hypercalls": sum(r.hypercalls.values())}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"{'guest':12} {'median s':>9} {'hypercalls':>10}  runs")
    bad = False
    for name in ("pvtest-v1", "pvtest-v2"):
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", SNIPPET.format(name=name)],
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        bad |= not all(r["ok"] for r in runs)
        walls = [r["wall_s"] for r in runs]
        print(f"{name:12} {statistics.median(walls):9.3f} {runs[0]['hypercalls']:10d}  "
              + " ".join(f"{w:.3f}" for w in walls))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
