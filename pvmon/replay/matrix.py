"""Open-loop replay of a corpus of traces against several backends, one
process per (trace, backend) cell, and the compatibility table."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pvmon.errors import PvmonError


def _cell(args: tuple[str, str | None]) -> dict:
    path, backend = args
    from pvmon.backends.registry import require_version
    from pvmon.replay.openloop import replay_open
    from pvmon.replay.source import open_run
    row: dict = {"trace": path, "backend": backend}
    try:
        run = open_run(path, need_guest=False)
        version = require_version(backend) if backend else run.version
        row["backend"] = version.name
        row["recorded_on"] = run.version.name
        rep = replay_open(run, version)
        row.update(total=rep.total, calls=rep.stats.get("calls"),
                   calls_per_s=rep.stats.get("calls_per_s"),
                   first=rep.divergences[0].summary if rep.divergences else None,
                   why=[f.text for f in rep.divergences[0].explanation]
                   if rep.divergences else [],
                   by_call=[{"call": k, "what": w, "count": n}
                            for (k, w), n in rep.by_call.most_common(5)])
    except PvmonError as exc:
        row["error"] = str(exc)
    return row


def run_matrix(traces: list[Path], backends: list[str] | None,
               jobs: int | None = None) -> list[dict]:
    """Replay every trace against every backend (None: each trace's own
    recorded backend) in up to ``jobs`` processes (default: CPUs). Returns one
    dict per cell: trace, backend, total divergences, calls, calls_per_s,
    first divergence and its explanation, or ``error``."""
    cells = [(str(t), b) for t in traces for b in (backends or [None])]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(cells)))
    if jobs == 1:
        return [_cell(c) for c in cells]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_cell, cells))


def render_matrix(rows: list[dict], console: Console | None = None) -> None:
    """The compatibility table: traces down, backends across."""
    con = console or Console(highlight=False)
    traces = list(dict.fromkeys(r["trace"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] or "?" for r in rows))
    t = Table(title="open-loop compatibility", show_edge=False)
    t.add_column("trace")
    for b in backends:
        t.add_column(b)
    cells = {(r["trace"], r["backend"] or "?"): r for r in rows}
    for tr in traces:
        line = [Path(tr).name]
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
