#!/usr/bin/env python3
"""What trapping a Xen PV kernel's privileged instructions costs a Debian boot.

Runs ``pvmon run KERNEL --record`` (whole process) from two source trees,
alternating, and reports the median CPU time (user + sys of the child) of each
and whether their recordings hold the same event stream. ``--before`` is a
tree without the privileged-operation hooks (for example main before the
merge, or ``git worktree add /tmp/before <commit>``), ``--after`` one with
them; each runs on the engine library its own patch set selects (build both
with ``pvmon engine build`` from each tree first).

    python bench/bench_privops.py --before /tmp/before --after . [--kernel debian-6.12] [--runs 5]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def one_run(tree: Path, kernel: str, trace: Path) -> float:
    """CPU seconds (user + sys) of one recorded boot run from ``tree``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("LIBUNICORN_PATH", None)
    p = subprocess.run([sys.executable, "-m", "pvmon", "run", kernel, "--record", str(trace)],
                       check=False, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not trace.is_file():
        sys.exit(f"bench_privops: the run from {tree} recorded nothing: "
                 f"{(p.stderr or '').strip().splitlines()[-1:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def events(tree: Path, trace: Path) -> list:
    code = ("import sys, pickle\nfrom pvmon.trace.reader import TraceReader\n"
            "sys.stdout.buffer.write(pickle.dumps(list(TraceReader(sys.argv[1]).events())))")
    out = subprocess.run([sys.executable, "-c", code, str(trace)], capture_output=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(tree)}).stdout
    import pickle
    return pickle.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--kernel", default="debian-6.12")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    times: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        traces = {side: Path(tmp) / f"{side}.pvt" for side in times}
        for i in range(a.runs):
            for side, tree in (("before", a.before), ("after", a.after)):
                traces[side].unlink(missing_ok=True)
                t = one_run(tree.resolve(), a.kernel, traces[side])
                times[side].append(t)
                print(f"run {i + 1} {side}: {t:.2f} s CPU", file=sys.stderr)
        same = events(a.after.resolve(), traces["before"]) == \
            events(a.after.resolve(), traces["after"])
    b, c = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"{a.kernel} --record, {a.runs} runs each, CPU time (user+sys), median:")
    print(f"  before {b:.2f} s   after {c:.2f} s   after/before {c / b:.3f}")
    print(f"  every run: before {[round(t, 2) for t in times['before']]}, "
          f"after {[round(t, 2) for t in times['after']]}")
    print(f"  event streams {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
