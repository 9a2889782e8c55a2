#!/usr/bin/env python3
"""Replay peak memory on long traces: the peak RSS of the whole `pvmon replay`
command, as a user runs it, on a ~1M- and a ~3M-event recording.

The traces are made once with public tools only and kept in a cache directory
(default ~/.cache/pvmon-bench, not the repository): Debian 6.12 with the
busybox initramfs, a --script running a shell loop that makes many syscalls
(`cat /proc/version` in a `while` loop), then `poweroff -f`:

    pvmon run debian-6.12 --initramfs busybox --quiet --record T \\
        --script 'i=0; while [ $i -lt N ]; do i=$((i+1)); cat /proc/version >/dev/null; done; echo done\\npoweroff -f'

Each trace is then replayed by separate `python -m pvmon replay` processes:
verify (`pvmon replay T`), closed loop on xen-3.4 (`--backend xen-3.4`: the
guest runs on an older host and takes another path, so nearly every event
after the first differences is a divergence) and open loop on xen-3.4. Peak RSS
is the process's own maximum resident set (wait4's ru_maxrss). For reference
the table also shows the recording's peak RSS and `pvmon trace info`'s.

--src PATH measures another pvmon source tree (put first on PYTHONPATH), for
a before/after comparison; a command whose RSS passes --cap-mb is stopped
(shown as "> cap") so a replay that grows without bound cannot take the
machine down.

    python bench/bench_replay_memory.py [--cache DIR] [--src PATH] [--cap-mb 6144]
                                        [--only 1M,3M] [--json]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Loop iterations giving about 1M and 3M events (the boot to the prompt is about
# 140k events; each iteration about 1,000).
TRACES = {"1M": 850, "3M": 2840}
SCRIPT = ("i=0; while [ $i -lt {n} ]; do i=$((i+1)); cat /proc/version >/dev/null; done; "
          "echo done\\npoweroff -f")

REPLAYS = [("verify", []),
           ("closed loop xen-3.4", ["--backend", "xen-3.4"]),
           ("open loop xen-3.4", ["--backend", "xen-3.4", "--open-loop"])]


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: list[str], env: dict, cap_mb: int) -> dict:
    """Run ``cmd``; its wall time, peak RSS (KiB, from wait4), exit code, the
    first line and the last 2,000 characters of its output, and whether it was
    stopped at the RSS cap."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        # run outside the checkout: `python -m` puts the working directory first on
        # sys.path, ahead of PYTHONPATH (--src)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=tempfile.gettempdir())
        done, capped = threading.Event(), threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                if _rss_kb(proc.pid) > cap_mb * 1024:
                    capped.set()
                    try:
                        proc.kill()
                    except ProcessLookupError:
                        pass
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        done.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return {"cmd": cmd, "wall_s": round(wall, 2), "peak_rss_kb": usage.ru_maxrss,
            "rc": proc.returncode, "first_line": lines[0] if lines else "",
            "tail": text[-2000:], "capped": capped.is_set()}


def make_trace(name: str, iterations: int, cache: Path, env: dict, cap_mb: int) -> dict:
    """The cached trace ``name`` and what recording it measured; records it
    first if it is not in ``cache``."""
    path = cache / f"busybox-loop-{iterations}.pvt"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    tmp = path.with_suffix(".part.pvt")
    print(f"recording the {name} trace ({iterations} loop iterations) into {path}",
          file=sys.stderr)
    cmd = [sys.executable, "-m", "pvmon", "run", "debian-6.12", "--initramfs", "busybox",
           "--quiet", "--record", str(tmp), "--script", SCRIPT.format(n=iterations)]
    m = measure(cmd, env, cap_mb)
    found = re.search(r"trace: .* \((\d+) events\)", m["tail"])
    if m["rc"] != 0 or not found:
        raise SystemExit(f"recording failed (exit {m['rc']}):\n{m['tail']}")
    tmp.replace(path)
    meta = {"name": name, "path": str(path), "iterations": iterations,
            "events": int(found.group(1)), "size_bytes": path.stat().st_size,
            "record_wall_s": m["wall_s"], "record_peak_rss_kb": m["peak_rss_kb"],
            "recorded": time.strftime("%Y-%m-%d %H:%M")}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "pvmon-bench")
    ap.add_argument("--src", type=Path, default=REPO,
                    help="pvmon source tree to measure (default: this checkout)")
    ap.add_argument("--cap-mb", type=int, default=6144,
                    help="stop a command whose RSS passes this (MiB)")
    ap.add_argument("--only", default=",".join(TRACES), help="traces to run: 1M,3M")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(args.src.resolve()))
    gen_env = dict(os.environ, PYTHONPATH=str(REPO))     # traces: this checkout records
    res: dict = {"src": str(args.src.resolve()), "cpus": os.cpu_count(),
                 "loadavg_start": os.getloadavg()[0], "cap_mb": args.cap_mb, "traces": []}
    for name in args.only.split(","):
        meta = make_trace(name, TRACES[name], args.cache, gen_env, args.cap_mb)
        rows = []
        info = measure([sys.executable, "-m", "pvmon", "trace", "info", meta["path"]], env,
                       args.cap_mb)
        rows.append({"what": "trace info", **info})
        for label, extra in REPLAYS:
            print(f"{name}: pvmon replay {' '.join(extra) or '(verify)'}", file=sys.stderr)
            m = measure([sys.executable, "-m", "pvmon", "replay", meta["path"], *extra], env,
                        args.cap_mb)
            rows.append({"what": label, **m})
        res["traces"].append({**meta, "rows": rows})
    res["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        for t in res["traces"]:
            for r in t["rows"]:
                r.pop("tail", None)
        print(json.dumps(res, indent=1))
        return 0
    print(f"pvmon source: {res['src']}")
    print(f"{'trace':<22} {'command':<22} {'wall s':>8} {'peak RSS MB':>12}  result")
    for t in res["traces"]:
        label = f"{t['name']}: {t['events']:,} ev"
        print(f"{label:<22} {'record (cached)':<22} {t['record_wall_s']:>8.1f} "
              f"{mb(t['record_peak_rss_kb']):>12}  {t['size_bytes'] / 2**20:.1f} MiB trace, "
              f"recorded {t['recorded']}")
        for r in t["rows"]:
            peak = f"> {args.cap_mb:,}" if r["capped"] else mb(r["peak_rss_kb"])
            if r["capped"]:
                result = "stopped at the RSS cap"
            elif r["what"] == "trace info":
                result = f"exit {r['rc']} (reads the header and seek table)"
            else:
                result = f"exit {r['rc']}: {r['first_line'][:60]}"
            print(f"{'':<22} {r['what']:<22} {r['wall_s']:>8.1f} {peak:>12}  {result}")
    print(f"load average {res['loadavg_start']:.2f} at start, {res['loadavg_end']:.2f} at end "
          f"({res['cpus']} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
