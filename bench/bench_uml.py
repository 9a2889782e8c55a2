"""UML tracing overhead: `pvmon run uml-6.1 --record` vs the same UML boot untraced.

Both sides boot Debian's UML kernel (the cached `uml-6.1`, `pvmon guests fetch
uml-6.1`) with the busybox initramfs to the shell, type the same script at its
prompts (default `uname -a`, then `poweroff -f`) and end when UML exits:

- traced: the command a user runs, `python -m pvmon run uml-6.1 --initramfs
  busybox --quiet --script SCRIPT --record FILE`, timed from spawn to exit (the
  figure: interpreter start-up, imports, the tracer, the trace's final flush
  included; run as `python -c WRAPPER`, the same `pvmon.cli.main`, see
  below). The time pvmon prints for the traced run itself (fork of UML to
  its exit) is kept beside it, labelled in-process.
- untraced: the UML binary run directly with the same argv and environment
  pvmon gives it (`pvmon.uml.runner.uml_argv`: mem=, initrd=, con0=fd:0,fd:1
  con=null ssl=null uml_dir=), console on a pipe read by this process, which
  types the same lines at the same prompts (the rule of `pvmon.uml.runner`),
  timed from spawn to exit.

- with --pyloop, the same traced command with the tracer's stop loop in
  Python (PVMON_UML_PYLOOP=1: the fallback used when the compiled
  pvmon.uml._stoploop is missing), to see what the C loop saves.
- with --against DIR, the same traced command run from another pvmon tree
  (e.g. `git worktree add /tmp/old COMMIT` plus its compiled modules): a
  before/after comparison taken alternately on the same stretch of the host.
- with --strace, a reference: the same untraced boot under `strace -o
  /dev/null` (no -f: strace, like pvmon, must not attach UML's guest
  processes), a C tracer with the same two ptrace stops per system call.

Runs alternate (traced, untraced, traced, ...) so both sides see the same
stretch of the host; medians are reported with the ratio traced/untraced
(issue 20's target <= 2x, goal <= 1.3x) and every run's time, and the CPU
seconds (user + system) each side's processes used, which the host's load
changes less than wall time; on the traced side also split into pvmon's own
(user, system) and UML's with its guest processes (getrusage at pvmon's exit,
printed by a two-line wrapper around `pvmon.cli.main`). The host's load
average at the start and end is printed: on a shared machine say so beside
the figure.

Run: python bench/bench_uml.py [--runs 5] [--script 'uname -a\\npoweroff -f'] [--strace]
                               [--pyloop] [--against DIR] [--json]
Exit status: 0 when every run shut down cleanly, 1 when a run failed, 2 on a
setup error (uml-6.1 or the busybox initramfs not cached).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_PROMPT = re.compile(rb"[#$>] $")
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")
_INPROC = re.compile(r"passed on, ([0-9.]+) s")
# `python -m pvmon` with one addition: at exit, the CPU seconds of pvmon's own
# process and of its reaped children (UML and, through UML, its guest
# processes) on stderr, to split the traced side's CPU into tracer and traced
_WRAP = """import atexit, resource, sys
def _cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stderr.write("\\nbench_uml cpu: %f %f %f %f\\n"
                     % (s.ru_utime, s.ru_stime, c.ru_utime, c.ru_stime))
atexit.register(_cpu)
sys.argv[0] = "pvmon"
from pvmon.cli import main
main()
"""
_SPLIT = re.compile(r"bench_uml cpu: ([0-9.]+) ([0-9.]+) ([0-9.]+) ([0-9.]+)")


def _cpu() -> float:
    """CPU seconds (user + system) of this process's reaped children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_traced(script: str, out_dir: Path, timeout: float, pyloop: bool = False,
               repo: Path = REPO) -> dict:
    trace = out_dir / "uml.pvt"
    cmd = [sys.executable, "-c", _WRAP, "run", "uml-6.1", "--initramfs", "busybox", "--quiet",
           "--script", script, "--record", str(trace)]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    env.pop("PVMON_UML_PYLOOP", None)
    if pyloop:
        env["PVMON_UML_PYLOOP"] = "1"
    c0 = _cpu()
    t0 = time.perf_counter()
    # run in the tree itself: `python -c` puts the current folder first on sys.path,
    # so from anywhere else a pvmon there would be imported instead of the tree's
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                       check=False, cwd=repo)
    wall = time.perf_counter() - t0
    m = _INPROC.search(p.stderr)
    split = _SPLIT.search(p.stderr)
    return {"ok": p.returncode == 0, "wall_s": wall, "cpu_s": _cpu() - c0,
            "pvmon_user_s": float(split[1]) if split else None,
            "pvmon_sys_s": float(split[2]) if split else None,
            "uml_cpu_s": float(split[3]) + float(split[4]) if split else None,
            "inproc_s": float(m[1]) if m else None, "trace_bytes": trace.stat().st_size
            if trace.exists() else 0, "stderr": p.stderr[-400:] if p.returncode else ""}


def run_untraced(argv: list[str], env: dict, lines: list[bytes], timeout: float) -> dict:
    c0 = _cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    pending = list(lines)
    since = bytearray()
    deadline = time.monotonic() + timeout
    assert p.stdout is not None and p.stdin is not None
    while time.monotonic() < deadline:
        data = os.read(p.stdout.fileno(), 65536)
        if not data:
            break
        since += data
        del since[:-4096]
        if pending and _PROMPT.search(_ESCAPES.sub(b"", bytes(since[-64:]))):
            p.stdin.write(pending.pop(0))
            p.stdin.flush()
            since.clear()
    rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    wall = time.perf_counter() - t0
    p.stdin.close()
    p.stdout.close()
    return {"ok": rc == 0, "wall_s": wall, "cpu_s": _cpu() - c0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--script", default="uname -a\\npoweroff -f")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--strace", action="store_true",
                    help="also the untraced boot under strace -o /dev/null (a reference)")
    ap.add_argument("--pyloop", action="store_true",
                    help="also pvmon with its stop loop in Python (PVMON_UML_PYLOOP=1)")
    ap.add_argument("--against", type=Path, metavar="DIR",
                    help="also the traced command from another pvmon tree (before/after)")
    args = ap.parse_args()
    if args.against is not None and not (args.against / "pvmon" / "cli.py").is_file():
        print(f"bench_uml: --against {args.against}: not a pvmon tree", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from pvmon.errors import PvmonError
    from pvmon.guests.initramfs import initramfs_path
    from pvmon.uml.guest import resolve
    from pvmon.uml.runner import script_lines, uml_argv
    try:
        guest = resolve("uml-6.1")
        initrd = initramfs_path("busybox")
    except PvmonError as exc:
        print(f"bench_uml: {exc}", file=sys.stderr)
        return 2
    lines = script_lines(args.script.replace("\\n", "\n"))
    load0 = os.getloadavg()
    traced, plain, straced, pylooped, other = [], [], [], [], []
    strace = shutil.which("strace") if args.strace else None
    if args.strace and strace is None:
        print("bench_uml: --strace: strace is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-uml-") as tmp_s:
        tmp = Path(tmp_s)
        for i in range(args.runs):
            traced.append(run_traced(args.script, tmp, args.timeout))
            if args.pyloop:
                pylooped.append(run_traced(args.script, tmp, args.timeout, pyloop=True))
            if args.against is not None:
                other.append(run_traced(args.script, tmp, args.timeout,
                                        repo=args.against.resolve()))
            run_dir = tmp / f"plain{i}"
            run_dir.mkdir()
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(run_dir),
                   "HOME": str(run_dir), "LANG": "C"}
            argv = uml_argv(guest, 256 << 20, initrd, run_dir, None)
            plain.append(run_untraced(argv, env, lines, args.timeout))
            if strace:
                straced.append(run_untraced([strace, "-o", "/dev/null", *argv], env, lines,
                                            args.timeout))
            shutil.rmtree(run_dir, ignore_errors=True)
    load1 = os.getloadavg()
    failed = [r for r in traced + plain + straced + pylooped + other if not r["ok"]]
    med_o = statistics.median(r["wall_s"] for r in other) if other else None
    cpu_o = statistics.median(r["cpu_s"] for r in other) if other else None
    inproc_o = [r["inproc_s"] for r in other if r["inproc_s"] is not None]
    med_io = statistics.median(inproc_o) if inproc_o else None
    med_y = statistics.median(r["wall_s"] for r in pylooped) if pylooped else None
    cpu_y = statistics.median(r["cpu_s"] for r in pylooped) if pylooped else None
    inproc_y = [r["inproc_s"] for r in pylooped if r["inproc_s"] is not None]
    med_iy = statistics.median(inproc_y) if inproc_y else None
    med_s = statistics.median(r["wall_s"] for r in straced) if straced else None
    cpu_t = statistics.median(r["cpu_s"] for r in traced)
    cpu_p = statistics.median(r["cpu_s"] for r in plain)
    med_t = statistics.median(r["wall_s"] for r in traced)
    med_p = statistics.median(r["wall_s"] for r in plain)
    inproc = [r["inproc_s"] for r in traced if r["inproc_s"] is not None]
    med_i = statistics.median(inproc) if inproc else None
    result = {"guest": f"{guest.name} {guest.package} {guest.version}", "runs": args.runs,
              "script": args.script, "traced_median_s": med_t, "untraced_median_s": med_p,
              "ratio": med_t / med_p, "traced_inproc_median_s": med_i,
              "ratio_inproc": med_i / med_p if med_i else None,
              "strace_median_s": med_s, "pyloop_median_s": med_y,
              "pyloop_inproc_median_s": med_iy, "pyloop_cpu_median_s": cpu_y, "traced_cpu_median_s": cpu_t,
              "untraced_cpu_median_s": cpu_p, "ratio_cpu": cpu_t / cpu_p,
              "load_before": load0, "load_after": load1,
              "traced": traced, "untraced": plain, "strace": straced,
              "pyloop": pylooped,
              "against": str(args.against) if args.against else None, "other": other,
              "other_median_s": med_o, "other_inproc_median_s": med_io,
              "other_cpu_median_s": cpu_o,
              "failed_runs": len(failed)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"UML boot to the busybox shell, `{args.script}`, {args.runs} run(s) each, "
              f"alternating; {result['guest']}")
        print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
              f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
        print(f"{'':34} {'median s':>9}  runs")
        print(f"{'untraced (UML binary directly)':34} {med_p:9.2f}  "
              + " ".join(f"{r['wall_s']:.2f}" for r in plain))
        print(f"{'pvmon run --record (whole command)':34} {med_t:9.2f}  "
              + " ".join(f"{r['wall_s']:.2f}" for r in traced))
        if med_i is not None:
            print(f"{'  of which traced UML (in-process)':34} {med_i:9.2f}  "
                  + " ".join(f"{x:.2f}" for x in inproc))
        if med_y is not None:
            print(f"{'pvmon, stop loop in Python (whole)':34} {med_y:9.2f}  "
                  + " ".join(f"{r['wall_s']:.2f}" for r in pylooped))
            if med_iy is not None:
                print(f"{'  of which traced UML (in-process)':34} {med_iy:9.2f}  "
                      + " ".join(f"{x:.2f}" for x in inproc_y))
        if med_o is not None:
            print(f"{'pvmon from --against (whole)':34} {med_o:9.2f}  "
                  + " ".join(f"{r['wall_s']:.2f}" for r in other))
            if med_io is not None:
                print(f"{'  of which traced UML (in-process)':34} {med_io:9.2f}  "
                      + " ".join(f"{x:.2f}" for x in inproc_o))
        if med_s is not None:
            print(f"{'strace -o /dev/null (reference)':34} {med_s:9.2f}  "
                  + " ".join(f"{r['wall_s']:.2f}" for r in straced))
        print(f"ratio traced/untraced: {result['ratio']:.2f}x whole command"
              + (f", {result['ratio_inproc']:.2f}x in-process" if med_i else "")
              + " (target <= 2x, goal <= 1.3x)"
              + (f"; strace/untraced {med_s / med_p:.2f}x" if med_s else "")
              + (f"; Python stop loop/untraced {med_y / med_p:.2f}x whole"
                 + (f", {med_iy / med_p:.2f}x in-process" if med_iy else "") if med_y else "")
              + (f"; --against/untraced {med_o / med_p:.2f}x whole"
                 + (f", {med_io / med_p:.2f}x in-process" if med_io else "") if med_o else ""))
        print(f"CPU seconds (user + system, every process of the run; less sensitive to "
              f"the host's load): untraced {cpu_p:.2f}, pvmon run --record {cpu_t:.2f}, "
              f"ratio {cpu_t / cpu_p:.2f}x"
              + (f"; with the Python stop loop {cpu_y:.2f}, {cpu_y / cpu_p:.2f}x" if cpu_y
                 else "")
              + (f"; --against {cpu_o:.2f}, {cpu_o / cpu_p:.2f}x" if cpu_o else ""))
        for label, runs in (("this tree", traced), ("Python stop loop", pylooped),
                            ("--against", other)):
            split = [r for r in runs if r.get("pvmon_user_s") is not None]
            if split:
                print(f"CPU of the traced side, {label} (medians): pvmon user "
                      f"{statistics.median(r['pvmon_user_s'] for r in split):.2f} + system "
                      f"{statistics.median(r['pvmon_sys_s'] for r in split):.2f}, UML and its "
                      f"processes {statistics.median(r['uml_cpu_s'] for r in split):.2f} "
                      f"(untraced: {cpu_p:.2f} in all)")
        for r in failed:
            print(f"FAILED run: {r}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
