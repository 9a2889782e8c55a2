#!/usr/bin/env python3
"""The open-loop matrix on Dask: throughput with 1 and 2 local worker processes
(scaling efficiency, target >= 0.9 per added core), and the per-task overhead
Dask adds against the process pool the matrix used before (target: no slower on
one machine).

The corpus is the sample corpus's built-in traces (traces/pvtest-*--xen-*.pvt,
23 files) repeated --copies times, against every built-in Xen version: one task
per trace (its 7 backends in one pass; Dask runs the tasks in batches). Each
configuration runs --runs times, alternated, after one warm-up of the serial path,
and the median is reported:

- serial: every task in this process, one after another (the work itself);
- pool-N: a ProcessPoolExecutor of N processes (pvmon before Dask), pool start included;
- dask-N: the embedded cluster `pvmon replay --open-loop -j N` starts
  (matrix.start_local_cluster: N single-threaded worker processes), started and
  warmed before the clock (its start-up is reported on its own; warming = every
  worker imports the replay code and replays one trace, as the pool's workers,
  forked from this warmed process, start warm) and reached through
  run_matrix(scheduler=address), as `--scheduler` does.

Per-task overhead of a configuration with one worker = (its wall - serial wall) / tasks.
Scaling efficiency = wall(1 worker) / (2 x wall(2 workers)).
CPU: seconds of CPU of this process (scheduler, client, nannies), its pool workers and
the Dask workers during a run (the idle cluster's workers too, about 0.5 % of a core
each); on a machine shared with other load it shows whether a slower wall is more work
or less CPU.
Dask-2 balance, from the scheduler's task stream: the workers' time in tasks / (2 x
wall), and the tail (how long one worker was idle at the end while the other still
ran its last task).

    python bench/bench_matrix.py [--copies 4] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pvmon.backends.xen.versions import REGISTRY
from pvmon.replay.matrix import (
    _batches,
    _cells,
    _costs,
    _tasks,
    run_matrix,
    run_matrix_pool,
    start_local_cluster,
)


def _cpu() -> float:
    """CPU seconds so far of this process, its exited children and its live descendants."""
    t = os.times()
    live = 0.0
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = p.cpu_times()
            live += c.user + c.system
    return t.user + t.system + t.children_user + t.children_system + live


def _balance(records: list[dict], wall: float, workers: int) -> tuple[float, float]:
    """(time in tasks / (workers x wall), seconds between the workers' last task ends)
    from a run's task-stream records."""
    busy: dict[str, float] = {}
    last: dict[str, float] = {}
    for rec in records:
        for ss in rec["startstops"]:
            if ss["action"] == "compute":
                busy[rec["worker"]] = busy.get(rec["worker"], 0.0) + ss["stop"] - ss["start"]
                last[rec["worker"]] = max(last.get(rec["worker"], 0.0), ss["stop"])
    tail = max(last.values()) - min(last.values()) if len(last) == workers else wall
    return sum(busy.values()) / (workers * wall), tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=4, help="times the corpus is repeated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    corpus = sorted((ROOT / "traces").glob("pvtest-*--xen-*.pvt")) * a.copies
    backends = sorted(REGISTRY)
    tasks = len(corpus)
    os.environ["PYTHONPATH"] = str(ROOT)
    from distributed import Client
    from distributed.diagnostics.task_stream import TaskStreamPlugin
    clusters = {}
    startup = {}
    for n in (1, 2):
        t0 = time.perf_counter()
        clusters[n] = start_local_cluster(n)
        startup[n] = time.perf_counter() - t0
        with Client(clusters[n], set_as_default=False) as client:   # warm every worker
            client.run(_cells, (str(corpus[0]), backends))
    stream = TaskStreamPlugin(clusters[2].scheduler)       # the scheduler runs in this process
    clusters[2].scheduler.add_plugin(stream)
    balance: list[tuple[float, float]] = []
    configs = {
        "serial": lambda: run_matrix(corpus, backends, jobs=1),
        "pool-1": lambda: run_matrix_pool(corpus, backends, jobs=1),
        "pool-2": lambda: run_matrix_pool(corpus, backends, jobs=2),
        "dask-1": lambda: run_matrix(corpus, backends, scheduler=clusters[1].scheduler_address),
        "dask-2": lambda: run_matrix(corpus, backends, scheduler=clusters[2].scheduler_address),
    }
    run_matrix(corpus[:3], backends, jobs=1)     # warm-up: imports and tables in this process
    walls: dict[str, list[float]] = {k: [] for k in configs}
    cpus: dict[str, list[float]] = {k: [] for k in configs}
    tables = {}
    for _ in range(a.runs):
        for name, fn in configs.items():
            stream.buffer.clear()
            c0, t0 = _cpu(), time.perf_counter()
            rows = fn()
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(_cpu() - c0)
            if name == "dask-2":
                balance.append(_balance(list(stream.buffer), walls[name][-1], 2))
            tables[name] = [{k: r.get(k) for k in ("trace", "backend", "total", "calls",
                                                   "error")} for r in rows]
    for c in clusters.values():
        c.close()
    same = all(t == tables["serial"] for t in tables.values())
    med = {k: statistics.median(v) for k, v in walls.items()}
    best = {k: min(v) for k, v in walls.items()}   # least disturbed by other load
    cells = tasks * len(backends)
    out = {
        "tasks": tasks, "cells": cells, "backends": len(backends), "runs": a.runs,
        "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "median_wall_s": med, "all_walls_s": walls,
        "median_cpu_s": {k: statistics.median(v) for k, v in cpus.items()}, "all_cpus_s": cpus,
        "cells_per_s": {k: cells / v for k, v in med.items()},
        "dask_cluster_startup_s": startup,
        "dask_tasks": {n: len(_batches(_costs(_tasks(corpus, backends, n)[0]), n)) for n in (1, 2)},
        "per_task_overhead_ms": {k: 1000 * (med[k] - med["serial"]) / tasks
                                 for k in ("pool-1", "dask-1")},
        "scaling_efficiency": {"pool": med["pool-1"] / (2 * med["pool-2"]),
                               "dask": med["dask-1"] / (2 * med["dask-2"])},
        "dask-2_vs_pool-2": med["dask-2"] / med["pool-2"],
        "min_wall_s": best,
        "per_task_overhead_ms_min": {k: 1000 * (best[k] - best["serial"]) / tasks
                                     for k in ("pool-1", "dask-1")},
        "scaling_efficiency_min": {"pool": best["pool-1"] / (2 * best["pool-2"]),
                                   "dask": best["dask-1"] / (2 * best["dask-2"])},
        "dask-2_busy": statistics.median(b[0] for b in balance),
        "dask-2_tail_s": statistics.median(b[1] for b in balance),
        "tables_equal": same,
    }
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{tasks} tasks x {len(backends)} backends = {cells} cells, {a.runs} runs, "
          f"{os.cpu_count()} CPUs, load {out['load_avg_1m']:.2f}")
    for k, v in med.items():
        print(f"  {k:7s} {v:7.2f} s  {cells / v:8.1f} cells/s  CPU {out['median_cpu_s'][k]:5.2f} s"
              "   runs: " + ", ".join(f"{w:.2f}" for w in walls[k]))
    print(f"  dask cluster start-up: 1 worker {startup[1]:.2f} s, 2 workers {startup[2]:.2f} s; "
          f"Dask tasks (batches): 1 worker {out['dask_tasks'][1]}, 2 workers {out['dask_tasks'][2]}")
    print("  per-task overhead vs serial: " + ", ".join(
        f"{k} {v:+.1f} ms" for k, v in out["per_task_overhead_ms"].items()))
    print("  scaling efficiency 1 -> 2 workers: " + ", ".join(
        f"{k} {v:.2f}" for k, v in out["scaling_efficiency"].items()))
    print(f"  dask-2 / pool-2 wall: {out['dask-2_vs_pool-2']:.2f}; tables equal: {same}")
    print(f"  dask-2 workers in tasks {100 * out['dask-2_busy']:.1f} % of 2 x wall; tail "
          f"(one worker idle at the end) {out['dask-2_tail_s']:.3f} s; runs: " + ", ".join(
              f"{100 * u:.1f} % / {t:.3f} s" for u, t in balance))
    print("  from the fastest run of each (least disturbed by other load): per-task overhead "
          + ", ".join(f"{k} {v:+.1f} ms" for k, v in out["per_task_overhead_ms_min"].items())
          + "; scaling " + ", ".join(f"{k} {v:.2f}"
                                     for k, v in out["scaling_efficiency_min"].items())
          + f"; dask-2 / pool-2 {best['dask-2'] / best['pool-2']:.2f}")


if __name__ == "__main__":
    main()
