#!/usr/bin/env python3
"""Trace frame size: what it costs to write and what it saves to read.

Records the boot once, rewrites that trace with each frame size (events per
frame), then in fresh processes, alternating the sizes round by round:
open-loop replay against the recorded backend and a serial ``trace stats``
(CPU seconds of the process, ``time.process_time``: steadier than wall time on
a shared host), and, with ``--record``, the boot recorded with each size (wall
seconds). Prints the file size and every run.

    python bench/bench_frames.py [--kernel debian-6.12] [--sizes 256,1024,4096] [--rounds 3] [--record]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RECORD = """
import json, time
import pvmon.trace.writer as W
from pvmon.guests.catalog import resolve
from pvmon.session import Session
size = {size!r}
if size:
    init = W.TraceWriter.__init__
    def patched(self, path, header, **kw):
        kw["frame_events"] = size
        init(self, path, header, **kw)
    W.TraceWriter.__init__ = patched
s = Session(resolve({kernel!r}), record={path!r})
t0 = time.perf_counter()
s.run(timeout=900)
print(json.dumps({{"wall_s": time.perf_counter() - t0}}))
"""

READ = """
import json, time
from pvmon.replay.openloop import replay_open
from pvmon.replay.source import open_run
from pvmon.trace.reader import TraceReader
from pvmon.trace.stats import TraceStats
run = open_run({path!r}, need_guest=False)
c = time.process_time()
rep = replay_open(run, run.version)
open_loop = time.process_time() - c
c = time.process_time()
TraceStats.of(TraceReader({path!r}), 1)
stats = time.process_time() - c
print(json.dumps({{"open_loop_cpu_s": open_loop, "stats_cpu_s": stats, "total": rep.total}}))
"""

REWRITE = """
from pvmon.trace.reader import TraceReader
from pvmon.trace.writer import TraceWriter
r = TraceReader({src!r})
with TraceWriter({dst!r}, dict(r.header), frame_events={size!r}) as w:
    for ev in r.events():
        w.append(ev)
"""


def py(snippet: str) -> dict:
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()
    return json.loads(out[-1]) if out else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.12")
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="also time recording with each size")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        base = str(Path(d) / "base.pvt")
        print("recording the boot", file=sys.stderr)
        py(RECORD.format(size=0, kernel=args.kernel, path=base))
        files = {}
        for size in sizes:
            files[size] = str(Path(d) / f"f{size}.pvt")
            py(REWRITE.format(src=base, dst=files[size], size=size))
        runs: dict[int, list[dict]] = {size: [] for size in sizes}
        for i in range(args.rounds):
            for size in sizes:
                print(f"round {i + 1}/{args.rounds}: {size}-event frames", file=sys.stderr)
                res = py(READ.format(path=files[size]))
                if args.record:
                    res.update(py(RECORD.format(size=size, kernel=args.kernel,
                                                path=str(Path(d) / "rec.pvt"))))
                runs[size].append(res)
        print(f"kernel {args.kernel}, {args.rounds} alternated rounds, {os.cpu_count()} CPUs")
        print(f"{'frame events':>12} {'file bytes':>11}  open-loop CPU s (median; runs)"
              f"   serial trace-stats CPU s (median; runs)"
              + ("   record wall s (median; runs)" if args.record else ""))
        for size in sizes:
            rs = runs[size]
            line = f"{size:>12} {os.path.getsize(files[size]):>11,}"
            for key in ("open_loop_cpu_s", "stats_cpu_s") + (("wall_s",) if args.record else ()):
                vals = [r[key] for r in rs]
                line += (f"  {statistics.median(vals):.3f}; "
                         + " ".join(f"{v:.3f}" for v in vals))
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
