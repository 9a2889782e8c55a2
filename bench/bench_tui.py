#!/usr/bin/env python3
"""Wall time of a boot with the TUI open vs headless.

Each run is a fresh process. ``headless`` times ``Session(resolve(GUEST)).run()``
(what ``pvmon run`` does, console not printed); ``run_test`` opens the live
view with Textual's headless driver (``App.run_test``, full layout and
rendering at the TUI's refresh rate, no terminal); ``tmux`` runs
``python3 -m pvmon boot GUEST`` in a real terminal (tmux, 120x36), waits for
the run to finish, quits with ``q`` and reads the wall time from the summary
``pvmon boot`` prints; ``tmux_keys`` does the same and also presses ``f``
about every 1.5 s during the boot, timing until the filter prompt is on
screen (key latency; then Escape). The figure is the run's own wall time (``RunResult.wall_s``:
from the first instruction to the stop), so interpreter start-up and the
TUI's own start-up are excluded in every mode.

    python bench/bench_tui.py                       # debian-6.12, 3 runs, headless vs run_test vs tmux
    python bench/bench_tui.py --guest pvtest-v2 --runs 5 --modes headless,run_test
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
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_HEADLESS = """
import sys
from pvmon.guests.catalog import resolve
from pvmon.session import Session
res = Session(resolve(sys.argv[1])).run()
print(f"WALL {res.wall_s:.6f} {res.exit_kind}")
"""

_RUN_TEST = """
import asyncio, sys
from pvmon.guests.catalog import resolve
from pvmon.ui.app import PvmonApp
from pvmon.ui.live_session import BootSpec, LiveSession

async def main():
    live = LiveSession.create(BootSpec(resolve(sys.argv[1])))
    app = PvmonApp(live=live)
    async with app.run_test(size=(120, 36)) as pilot:
        while live.phase != "finished":
            await asyncio.sleep(0.1)
        await pilot.pause(0.2)
    res = live.result
    print(f"WALL {res.wall_s:.6f} {res.exit_kind}")
asyncio.run(main())
"""


KEY_LATENCIES_MS: list[float] = []


def _py(code: str, guest: str, timeout: float) -> float:
    out = subprocess.run([sys.executable, "-c", code, guest], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, check=False)
    m = re.search(r"^WALL ([0-9.]+) (\w+)", out.stdout, re.MULTILINE)
    if not m:
        raise RuntimeError(f"run failed: {out.stderr[-2000:]}")
    return float(m.group(1))


def _tmux(guest: str, timeout: float, keys: bool = False) -> float:
    name = f"pvbench-{uuid.uuid4().hex[:8]}"
    cmd = f"cd {ROOT} && {sys.executable} -m pvmon boot {guest}; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "36", cmd],
                   check=True)
    try:
        deadline = time.monotonic() + timeout
        next_key = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            screen = _capture(name)
            if "FINISHED" in screen:
                break
            if keys and time.monotonic() >= next_key and "RUNNING" in screen:
                KEY_LATENCIES_MS.append(_key_latency(name))
                next_key = time.monotonic() + 1.5
            time.sleep(0.25)
        else:
            raise RuntimeError("the boot did not finish in time")
        subprocess.run(["tmux", "send-keys", "-t", name, "q"], check=True)
        while time.monotonic() < deadline:
            m = re.search(r"wall time:\s*([0-9.]+) s", _capture(name))
            if m:
                return float(m.group(1))
            time.sleep(0.2)
        raise RuntimeError("no summary after quitting")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False,
                       capture_output=True)


def _key_latency(name: str) -> float:
    """ms from sending ``f`` until the filter prompt is on screen (then Escape).
    Includes tmux's own delivery and capture, so it is an upper bound."""
    t0 = time.monotonic()
    subprocess.run(["tmux", "send-keys", "-t", name, "f"], check=True)
    while "Show only" not in _capture(name):
        if time.monotonic() - t0 > 10:
            break
        time.sleep(0.002)
    ms = (time.monotonic() - t0) * 1000
    subprocess.run(["tmux", "send-keys", "-t", name, "Escape"], check=True)
    while "Show only" in _capture(name) and time.monotonic() - t0 < 20:
        time.sleep(0.01)
    return ms


def _capture(name: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", name, "-S", "-60"],
                          capture_output=True, text=True, check=False).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", default="debian-6.12")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="headless,run_test,tmux,tmux_keys")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not shutil.which("tmux"):
        dropped = [m for m in modes if m.startswith("tmux")]
        if dropped:
            print("tmux not installed: skipping " + ", ".join(dropped), file=sys.stderr)
        modes = [m for m in modes if not m.startswith("tmux")]
    results: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(args.runs):
        for m in modes:   # interleaved, so that load changes hit every mode alike
            if m == "headless":
                t = _py(_HEADLESS, args.guest, args.timeout)
            elif m == "run_test":
                t = _py(_RUN_TEST, args.guest, args.timeout)
            elif m in ("tmux", "tmux_keys"):
                t = _tmux(args.guest, args.timeout, keys=m == "tmux_keys")
            else:
                raise SystemExit(f"unknown mode {m}")
            results[m].append(t)
            print(f"run {i + 1}/{args.runs} {m:<9} {t:7.3f} s", file=sys.stderr)
    load = os.getloadavg()
    base = statistics.median(results["headless"]) if results.get("headless") else None
    print(f"guest {args.guest}, {args.runs} runs per mode, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    print(f"{'mode':<10}{'median s':>9}{'ratio':>7}  runs")
    for m, ts in results.items():
        med = statistics.median(ts)
        ratio = f"{med / base:.3f}" if base else "-"
        print(f"{m:<10}{med:9.3f}{ratio:>7}  " + " ".join(f"{t:.3f}" for t in ts))
    if KEY_LATENCIES_MS:
        k = sorted(KEY_LATENCIES_MS)
        print(f"key latency during the boot (tmux: key sent -> prompt on screen): "
              f"median {statistics.median(k):.0f} ms, max {k[-1]:.0f} ms, {len(k)} presses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
