"""Open-loop replay of a corpus of traces against several backends, in
parallel processes (each replays one trace against a group of backends in one
pass), and the compatibility table."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pvmon.errors import PvmonError
from pvmon.literal import console as plain_console
from pvmon.literal import markup as escape  # Rich escaping + visible control characters
from pvmon.literal import text


def _cells(args: tuple[str, list[str | None]]) -> list[dict]:
    """One trace against several backends, in one pass over the trace."""
    path, backends = args
    from pvmon.backends.registry import require_version
    from pvmon.replay.openloop import replay_open_many
    from pvmon.replay.source import open_run
    rows: list[dict] = [{"trace": path, "backend": b} for b in backends]
    try:
        run = open_run(path, need_guest=False)
    except PvmonError as exc:
        for row in rows:
            row["error"] = str(exc)
        return rows
    todo = []
    for row, backend in zip(rows, backends, strict=True):
        try:
            version = require_version(backend) if backend else run.version
        except PvmonError as exc:
            row["error"] = str(exc)
            continue
        row["backend"] = version.name
        row["recorded_on"] = run.version.name
        todo.append((row, version))
    try:
        reports = replay_open_many(run, [v for _, v in todo])
    except PvmonError as exc:
        for row, _ in todo:
            row["error"] = str(exc)
        return rows
    for (row, _), rep in zip(todo, reports, strict=True):
        row.update(total=rep.total, calls=rep.stats.get("calls"),
                   calls_per_s=rep.stats.get("calls_per_s"),
                   backend_calls_per_s=rep.stats.get("backend_calls_per_s"),
                   first=rep.divergences[0].summary if rep.divergences else None,
                   why=[f.text for f in rep.divergences[0].explanation]
                   if rep.divergences else [],
                   by_call=[{"call": k, "what": w, "count": n}
                            for (k, w), n in rep.by_call.most_common(5)])
    return rows


def run_matrix(traces: list[Path], backends: list[str] | None,
               jobs: int | None = None,
               progress: Callable[[int], None] | None = None) -> list[dict]:
    """Replay every trace against every backend (None: each trace's own
    recorded backend) in up to ``jobs`` processes (default: CPUs). A process
    replays one trace against a group of backends in one pass (the trace is
    decoded once per group); with fewer traces than processes, a trace's
    backends are split into groups so every process has work. Returns one
    dict per cell, trace-major: trace, backend, total divergences, calls,
    calls_per_s, backend_calls_per_s, first divergence and its explanation, or
    ``error``. ``progress``: called with the number of cells done whenever a
    process finishes its group (:func:`matrix_cells` is the total)."""
    names: list[str | None] = list(backends) if backends else [None]
    jobs = max(1, jobs or os.cpu_count() or 1)
    per_trace = max(1, min(len(names), jobs // max(1, len(traces))))
    # A trace's backend columns are dealt round-robin to its per_trace tasks: column c
    # is row c // per_trace of task c % per_trace, and one trace's tasks are consecutive.
    tasks = [(str(t), names[i::per_trace]) for t in traces for i in range(per_trace)]
    done = 0
    parts: list[list[dict]] = [[] for _ in tasks]
    if min(jobs, len(tasks)) == 1:
        for i, task in enumerate(tasks):
            parts[i] = _cells(task)
            done += len(task[1])
            if progress is not None:
                progress(done)
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
            futures = {pool.submit(_cells, task): i for i, task in enumerate(tasks)}
            for fut in as_completed(futures):
                i = futures[fut]
                parts[i] = fut.result()
                done += len(tasks[i][1])
                if progress is not None:
                    progress(done)
    return [parts[k + c % per_trace][c // per_trace]
            for k in range(0, len(tasks), per_trace) for c in range(len(names))]


def matrix_cells(traces: list[Path], backends: list[str] | None) -> int:
    """How many cells :func:`run_matrix` computes: traces x backends."""
    return len(traces) * max(1, len(backends or []))


def render_matrix(rows: list[dict], console: Console | None = None) -> None:
    """The compatibility table: traces down, backends across."""
    con = console or plain_console()
    traces = list(dict.fromkeys(r["trace"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] or "?" for r in rows))
    t = Table(title="open-loop compatibility", show_edge=False)
    t.add_column("trace")
    for b in backends:
        t.add_column(text(b))
    cells = {(r["trace"], r["backend"] or "?"): r for r in rows}
    for tr in traces:
        line = [text(Path(tr).name)]
        for b in backends:
            r = cells.get((tr, b))
            if r is None:
                line.append("")
            elif r.get("error"):
                line.append("[red]error[/]")
            elif not r["total"]:
                line.append(f"[green]same[/] ({r['calls']:,} calls)")
            else:
                line.append(f"[yellow]{r['total']:,} diverge[/]")
        t.add_row(*line)
    con.print(t)
    for r in rows:
        if r.get("error"):
            con.print(f"[red]{escape(Path(r['trace']).name)}[/]: {escape(r['error'])}")
        elif r.get("total"):
            why = f" ({escape(r['why'][0])})" if r.get("why") else ""
            con.print(f"{escape(Path(r['trace']).name)} on {escape(r['backend'])}: first "
                      f"{escape(r['first'] or '')}{why}")
