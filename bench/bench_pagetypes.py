#!/usr/bin/env python3
"""CPU cost of Xen page types and counts (docs/xen-rules.md, "Page types and
reference counts") on a Debian boot and a busybox session: the same run by a
base tree (before page types, for example a checkout of main) and by this tree.

Each run is a fresh whole process, ``pvmon run KERNEL --record T`` (with
``--initramfs busybox`` and a script of commands for the session), alternated
base/this so that load drifts hit both alike. Reported: the CPU time (user +
sys, from the child's rusage) of each, the medians and their ratio, and
whether both recorded the same event stream (sha256 of every frame but the
header).

    python bench/bench_pagetypes.py --base /path/to/main [--kernel debian-6.12]
                                    [--runs 5] [--session] [--json]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SCRIPT = "uname -a\nls /proc\ncat /proc/cpuinfo\nfree\necho sum=$((6*7))\nls / | wc -l\npoweroff -f\n"


def run(tree: Path, kernel: str, trace: Path, session: bool) -> float:
    """CPU seconds (user + sys) of one whole ``pvmon run`` process of ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "pvmon", "run", kernel, "--record", str(trace), "--quiet"]
    if session:
        cmd += ["--initramfs", "busybox", "--input-file", "-"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, cwd=tree, env=env, input=SCRIPT if session else "", text=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def stream_digest(tree: Path, trace: Path) -> str:
    code = ("import hashlib,sys; from pvmon.trace.reader import TraceReader; r=TraceReader(sys.argv[1]);"
            "h=hashlib.sha256(); [h.update(r.frame_bytes(i)) for i in range(1, len(r.frames))];"
            "print(len(r), h.hexdigest())")
    out = subprocess.run([sys.executable, "-c", code, str(trace)], cwd=tree, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(tree)), check=True)
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="the tree before page types")
    ap.add_argument("--kernel", default="debian-6.12")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--session", action="store_true",
                    help="a busybox session (forks: pins and unpins) instead of the boot")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    times: dict[str, list[float]] = {"base": [], "this": []}
    digests = {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            for name, tree in (("base", a.base.resolve()), ("this", HERE)):
                trace = Path(d) / f"{name}.pvt"
                times[name].append(run(tree, a.kernel, trace, a.session))
                if i == 0:
                    digests[name] = stream_digest(tree, trace)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"kernel": a.kernel, "session": a.session, "runs": a.runs, "cpu_s": times,
           "median_cpu_s": med, "ratio": med["this"] / med["base"],
           "same_stream": digests["base"] == digests["this"], "events": digests["this"].split()[0]}
    if a.json:
        print(json.dumps(res))
        return
    what = "busybox session" if a.session else "boot"
    print(f"{a.kernel} {what}, {a.runs} runs each, whole-process CPU (user+sys):")
    for k in ("base", "this"):
        print(f"  {k}: median {med[k]:.2f} s  ({', '.join(f'{t:.2f}' for t in times[k])})")
    print(f"  this/base: {res['ratio']:.3f}; same event stream: {res['same_stream']} "
          f"({res['events']} events)")


if __name__ == "__main__":
    main()
