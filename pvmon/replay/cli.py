"""``pvmon replay``, ``pvmon diff`` and ``pvmon backends``.

Exit status: 0 no divergence, 1 divergence, 2 error (missing guest image,
unreadable trace, unknown backend: one line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pvmon.errors import PvmonError


def _emit(report, as_json: bool) -> None:
    if as_json:
        report.write_json(sys.stdout)   # every divergence, streamed from its spill
    else:
        from pvmon.replay.report import render_text
        render_text(report)


def _versions(spec: str | None) -> list:
    from pvmon.backends.registry import require_version
    return [require_version(name.strip()) for name in (spec.split(",") if spec else [])]


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--backend", "backend", default=None,
              help="Backend(s) to replay against (default: the recorded one = verify). "
                   "Comma-separated for an --open-loop matrix.")
@click.option("--guest", default=None, help="Guest image to use instead of the trace's.")
@click.option("--open-loop", is_flag=True,
              help="Feed recorded calls to the backend without running the guest.")
@click.option("--jobs", "-j", default=0, type=int,
              help="Parallel processes for an open-loop matrix (default: CPUs).")
@click.option("--timeout", default=None, type=float, help="Wall seconds before giving up.")
@click.option("--json", "as_json", is_flag=True, help="JSON report for CI.")
@click.option("--tui", is_flag=True, help="Show the divergence side by side in the TUI.")
def replay(traces, backend, guest, open_loop, jobs, timeout, as_json, tui) -> None:
    """Replay TRACES: verify (no --backend), against another backend, or open loop.

    \b
    pvmon replay run.pvt                         verify: rerun, every event must match
    pvmon replay run.pvt --backend xen-3.4       closed loop on another backend
    pvmon replay run.pvt --backend xen-3.4 --open-loop
    pvmon replay --open-loop a.pvt b.pvt --backend xen-3.4,xen-4.21

    Exit status: 0 no divergence, 1 divergence, 2 error."""
    versions = _versions(backend)
    if len(traces) > 1 or len(versions) > 1:
        if not open_loop:
            raise PvmonError("several traces or backends make a matrix, which needs "
                             "--open-loop")
        from pvmon.replay.matrix import render_matrix, run_matrix
        rows = run_matrix([Path(t) for t in traces], [v.name for v in versions] or None,
                          jobs or None)
        if as_json:
            click.echo(json.dumps(rows, indent=1))
        else:
            render_matrix(rows)
        sys.exit(2 if any(r.get("error") for r in rows) else
                 1 if any(r.get("total") for r in rows) else 0)
    path = Path(traces[0])
    from pvmon.replay.source import open_run
    if open_loop:
        from pvmon.replay.openloop import replay_open
        run = open_run(path, guest, need_guest=False)
        if guest is None:
            try:   # symbols and disassembly for the report, when the image is here
                from pvmon.replay.source import find_guest
                run.guest = find_guest(run.header, path, None)
            except PvmonError:
                run.guest = None
        report = replay_open(run, versions[0] if versions else run.version)
    else:
        from pvmon.replay.closed import replay_closed
        run = open_run(path, guest)
        report = replay_closed(run, versions[0] if versions else None, timeout=timeout)
    if tui:
        from pvmon.replay.tui import show
        show(report, run)
    else:
        _emit(report, as_json)
    sys.exit(report.exit_code)


@click.command()
@click.argument("left", type=click.Path(dir_okay=False))
@click.argument("right", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="JSON report for CI.")
@click.option("--all", "show_all", is_flag=True, help="List every aligned difference.")
def diff(left, right, as_json, show_all) -> None:
    """Compare two traces (typically two kernels on one backend): aligned call
    sequences, per-hypercall count deltas, calls only one side makes, argument
    and result differences at aligned points, mechanism differences.

    Exit status: 0 same calls, 1 differences, 2 error."""
    from pvmon.replay.diff import diff_traces, render_diff
    result = diff_traces(Path(left), Path(right))
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
    else:
        render_diff(result, show_all=show_all)
    sys.exit(result.exit_code)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def backends(as_json) -> None:
    """List every backend and profile with its declared differences."""
    from rich.console import Console
    from rich.markup import escape

    from pvmon.backends.profiles import search_dirs
    from pvmon.backends.registry import list_backends
    items = list_backends()
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    con = Console(highlight=False)
    for b in items:
        base = f" (based on {b['base']})" if b.get("base") else ""
        con.print(f"[bold]{escape(b['name'])}[/]  {b['kind']} {escape(b.get('version') or '')}"
                  f"{escape(base)}")
        if b.get("error"):
            con.print(f"  [red]error[/]: {escape(b['error'])}")
            continue
        if b.get("description"):
            con.print(f"  {escape(b['description'])}")
        if b.get("path"):
            con.print(f"  file: {escape(b['path'])}")
        for d in b["differences"]:
            con.print(f"  - {escape(d['what'])}" + (f" [dim]({escape(d['source'])})[/]"
                                                    if d.get("source") else ""))
    con.print(f"\nprofiles are read from: {', '.join(str(d) for d in search_dirs())} "
              "(or pass --backend path/to/profile.toml)")
