"""A guest run with gdb attached and continuing, beside the same run without.

Issue 22's figures: a Debian 6.12 boot with gdb attached and continuing costs
<= 1.2x an unattached run; reverse-continue across the whole boot answers in
<= 3 s; snapshot memory <= 2x guest RAM. Times the WHOLE processes as a user
runs them:

    A: python -m pvmon run GUEST --quiet --gdb 127.0.0.1:0
       + gdb -batch -ex 'target remote ...' -ex continue        (until the guest ends)
    B: python -m pvmon run GUEST --quiet

alternated A B A B ... after one warm-up pair that is not counted; prints each
side's median, min and max wall seconds and the median of the per-pair ratios
A/B. With --replay TRACE it also times, on `pvmon replay TRACE --gdb`, one
reverse-continue from the run's last call but one back to the first hit of a
breakpoint (--break, default start_kernel; the snapshot segments between
whose code held the breakpoint are re-executed, docs/gdb.md) and reports the
wall time gdb saw, the CPU time pvmon's processes spent on it, and the
snapshot memory, as gdb's `monitor info snapshots` prints them. Uses only the
standard library and the real gdb.

Run: python bench/bench_gdb.py [GUEST] [--runs N] [--replay TRACE --break SYMBOL --symbols FILE]
(e.g. python bench/bench_gdb.py debian-6.12 --runs 5;
 record a trace with `pvmon run debian-6.12 --record /tmp/d612.pvt --quiet`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

GDB = shutil.which("gdb")


def _start(args: list[str]) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, "-m", "pvmon", *args, "--gdb", "127.0.0.1:0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = p.stderr.readline().decode(errors="replace")
    found = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not found:
        sys.exit(f"bench_gdb: pvmon did not listen: {line.strip()}")
    return p, int(found.group(1))


def _gdb(port: int, cmds: list[str], symbols: str | None = None) -> str:
    cmd = [GDB, "-batch", "-nx", "-ex", "set pagination off",
           "-ex", "set architecture i386:x86-64"]
    if symbols:
        cmd.append(symbols)
    cmd += ["-ex", f"target remote 127.0.0.1:{port}"]
    for c in cmds:
        cmd += ["-ex", c]
    res = subprocess.run(cmd, capture_output=True, check=False)
    return (res.stdout + res.stderr).decode(errors="replace")


def attached_once(guest: str) -> float:
    """Wall seconds from starting pvmon to its exit, gdb attached and continuing."""
    t0 = time.perf_counter()
    p, port = _start(["run", guest, "--quiet"])
    _gdb(port, ["continue"])
    p.wait()
    return time.perf_counter() - t0


def plain_once(guest: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pvmon", "run", guest, "--quiet"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_attached(guest: str, runs: int) -> None:
    attached_once(guest)
    plain_once(guest)                    # warm-up pair: page cache, .pyc files
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        ta.append(attached_once(guest))
        tb.append(plain_once(guest))
    ratios = [x / y for x, y in zip(ta, tb)]
    print(f"pvmon run {guest} --quiet, {runs} pairs A B A B, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    print(f"{'':<34}{'median s':>9}{'min':>8}{'max':>8}")
    for name, ts in (("A: gdb attached, continue", ta), ("B: no gdb", tb)):
        print(f"{name:<34}{statistics.median(ts):9.3f}{min(ts):8.3f}{max(ts):8.3f}")
    med = statistics.median(ratios)
    print(f"A/B, median of pair ratios: {med:.2f}x (min {min(ratios):.2f}, max "
          f"{max(ratios):.2f}; target <= 1.20: {'ok' if med <= 1.2 else 'ABOVE TARGET'})")


def bench_reverse(trace: str, symbol: str, symbols: str | None) -> None:
    """One replay under gdb: stop at SYMBOL's first hit, go on to the run's
    last call but one (monitor goto-event), set the breakpoint again and time
    reverse-continue back to that first hit (every snapshot segment between is
    re-executed); then print gdb's snapshot summary and memory."""
    from pvmon.trace.reader import TraceReader
    calls = [ev["seq"] for ev in TraceReader(trace).events() if ev.get("k") == "hc"]
    n = calls[-2]              # the last call but one (the last one may end the run)
    p, port = _start(["replay", trace])
    script = [f"break {symbol}", "continue", "delete", f"monitor goto-event {n}", "continue",
              "monitor info event", "monitor info snapshots", f"break {symbol}",
              "python import time; t0 = time.perf_counter()", "reverse-continue",
              "python print(f'REVERSE-CONTINUE {time.perf_counter() - t0:.3f} s')",
              "monitor info event", "monitor info snapshots", "delete", "continue"]
    out = _gdb(port, script, symbols)
    p.wait()
    rc = re.search(r"REVERSE-CONTINUE ([\d.]+) s", out)
    mems = re.findall(r"snapshot memory: .*", out)
    infos = re.findall(r"gdb reverse execution: .*", out)
    events = re.findall(r"after event ([\d,]+) of", out)
    cpu = re.search(r"last going back .*: ([\d.]+) s wall, ([\d.]+) s CPU", out)
    print(f"replay {trace} under gdb: reverse-continue from event {events[0] if events else '?'}"
          f" back to {symbol} (event {events[1] if len(events) > 1 else '?'}): "
          f"{rc.group(1) if rc else '?'} s as gdb saw it (target <= 3 s); "
          f"{cpu.group(2) if cpu else '?'} s CPU in pvmon's processes")
    for when, i in (("at the end, before going back", 0), ("after going back", 1)):
        if i < len(infos) and i < len(mems):
            print(f"{when}: {infos[i]}; {mems[i]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("guest", nargs="?", default="debian-6.12")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--replay", metavar="TRACE", default=None)
    ap.add_argument("--break", dest="symbol", default="start_kernel")
    ap.add_argument("--symbols", default=None, help="symbol file for gdb "
                    "(pvmon guests path GUEST --symbols)")
    args = ap.parse_args()
    if GDB is None:
        sys.exit("bench_gdb: gdb is not installed")
    if args.runs:
        bench_attached(args.guest, args.runs)
    if args.replay:
        bench_reverse(args.replay, args.symbol, args.symbols)


if __name__ == "__main__":
    main()
