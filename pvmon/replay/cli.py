"""``pvmon replay``, ``pvmon diff`` and ``pvmon backends``.

Exit status: 0 no divergence, 1 divergence, 2 error (missing guest image,
unreadable trace, unknown backend: one line on stderr); a closed-loop replay
also 124 when ``--timeout`` ran out and 130 / 143 when SIGINT / SIGTERM
stopped it (no verdict either way).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pvmon.completion import backend_names, guest_names
from pvmon.errors import PvmonError
from pvmon.units import Seconds


def _emit(report, as_json: bool) -> None:
    if as_json:
        report.write_json(sys.stdout)   # every divergence, streamed from its spill
    else:
        from pvmon.replay.report import render_text
        render_text(report)


def _versions(spec: str | None) -> list:
    """The version records of ``--backend`` (``NAME[:MODE]``, comma-separated;
    the mode is a cross-ABI replay's target guest mode, see crossabi)."""
    from pvmon.backends.registry import require_version
    return [require_version(name.strip().partition(":")[0])
            for name in (spec.split(",") if spec else [])]


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--backend", "backend", default=None, shell_complete=backend_names,
              help="Backend(s) to replay against (default: the recorded one = verify). "
                   "Comma-separated for an --open-loop matrix.")
@click.option("--guest", default=None, shell_complete=guest_names,
              help="Guest image to use instead of the trace's.")
@click.option("--open-loop", is_flag=True,
              help="Feed recorded calls to the backend without running the guest.")
@click.option("--jobs", "-j", default=0, type=click.IntRange(min=0),
              help="Worker processes of an --open-loop matrix's embedded Dask cluster "
                   "(default: CPUs; 1 runs in this process).")
@click.option("--timeout", default=None, type=Seconds(), metavar="SECONDS",
              help="Wall seconds before giving up (0: no limit, the default): the report "
                   "says where the replay stopped, with no verdict (exit status 124).")
@click.option("--json", "as_json", is_flag=True, help="JSON report for CI.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run an --open-loop matrix on this Dask scheduler (tcp://host:8786) "
                   "instead of an embedded local cluster; workers read the traces by path "
                   "or URL (docs/matrix.md).")
@click.option("--coverage", is_flag=True,
              help="Run nothing: say which of the trace's calls and sub-ops --backend lacks "
                   "or answers differently by its declarations (imported xentrace traces too).")
@click.option("--tui", is_flag=True, help="Show the divergences side by side in the TUI "
              "(needs a terminal; not with --json or a matrix).")
@click.option("--gdb", "gdb_address", default=None, metavar="HOST:PORT",
              help="Replay under gdb (one trace, verify or closed loop): wait for gdb on "
                   "HOST:PORT, stop before the first instruction; reverse execution and "
                   "monitor goto-event work here. See docs/gdb.md.")
def replay(traces, backend, guest, open_loop, jobs, timeout, as_json, scheduler, coverage,
           tui, gdb_address=None) -> None:
    """Replay TRACES: verify (no --backend), against another backend, or open loop.

    \b
    pvmon replay run.pvt                         verify: rerun, every event must match
    pvmon replay run.pvt --backend xen-3.4       closed loop on another backend
    pvmon replay run.pvt --backend xen-3.4 --open-loop
    pvmon replay --open-loop a.pvt b.pvt --backend xen-3.4,xen-4.21
    pvmon replay run.pvt --backend vmi-3.0 --open-loop    across ABIs
    pvmon replay --open-loop a.pvt b.pvt --backend xen-4.17,xen-4.17:pvh,kvm-6.12,vmi-3.0,lguest-4.13

    A recording the guest did not end itself (stopped by a signal, --timeout,
    Ctrl-], the TUI, or a file cut short) is replayed to its recorded end and
    compared up to there: "matches the recording up to its end".

    \b
    Exit status: 0 no divergence, 1 divergence, 2 error, 124 the replay ran
    out of --timeout, 130 / 143 SIGINT / SIGTERM stopped it (128 + the signal's
    number; no verdict in these three cases)."""
    _refuse_native(traces)
    if coverage:
        _coverage(traces, backend, as_json)
        return
    if tui:
        from pvmon.replay.tui import prepare
        prepare(as_json=as_json, matrix=len(traces) > 1 or bool(backend and "," in backend))
    versions = _versions(backend)
    if len(traces) > 1 or len(versions) > 1 or scheduler:
        if not open_loop:
            raise PvmonError("--scheduler runs an open-loop matrix, which needs --open-loop"
                             if scheduler and len(traces) == 1 and len(versions) <= 1 else
                             "several traces or backends make a matrix, which needs "
                             "--open-loop")
        from pvmon.progress import progress
        from pvmon.replay.matrix import matrix_cells, render_matrix, run_matrix
        paths = [Path(t) for t in traces]
        names = [n.strip() for n in backend.split(",")] if backend else None
        with progress("open-loop matrix", matrix_cells(paths, names), unit="cells") as task:
            rows = run_matrix(paths, names, jobs or None, progress=task.update,
                              scheduler=scheduler)
        if as_json:
            click.echo(json.dumps(rows, indent=1))
        else:
            render_matrix(rows)
        sys.exit(2 if any(r.get("error") for r in rows) else
                 1 if any(r.get("total") for r in rows) else 0)
    path = Path(traces[0])
    if gdb_address:
        if open_loop:
            raise PvmonError("--gdb needs a closed-loop replay (the guest runs); not --open-loop")
        from pvmon.gdb.attach import replay_under_gdb
        report, run = replay_under_gdb(path, guest, versions[0] if versions else None,
                                       gdb_address, timeout=timeout)
        _emit(report, as_json)
        sys.stdout.flush()
        replay_under_gdb.finish(report.exit_code)
        sys.exit(report.exit_code)
    from pvmon.progress import progress
    from pvmon.replay.source import open_run
    if open_loop:
        from pvmon.replay.openloop import replay_open
        run = open_run(path, guest, need_guest=False)
        from pvmon.replay.crossabi import is_cross
        if backend and is_cross(run, backend):
            _cross(run, backend, as_json)
        if guest is None:
            try:   # symbols and disassembly for the report, when the image is here
                from pvmon.replay.source import find_guest
                run.guest = find_guest(run.header, path, None)
            except PvmonError:
                run.guest = None
        with progress(f"open-loop replay of {path.name}", len(run.reader)) as task:
            report = replay_open(run, versions[0] if versions else run.version,
                                 progress=task.update)
    else:
        from pvmon.replay.closed import replay_closed
        run = open_run(path, guest)
        live: list = []      # the replay's session, which the progress display polls
        with progress(f"replaying {path.name}", len(run.reader),
                      poll=lambda: live[0].dispatch.seq if live else 0):
            report = replay_closed(run, versions[0] if versions else None, timeout=timeout,
                                   on_session=live.append, stop_on_signals=True)
    if tui:
        from pvmon.replay.tui import show
        show(report, run)
    else:
        _emit(report, as_json)
    sys.exit(report.exit_code)


def _refuse_native(traces) -> None:
    """A trace recorded natively (UML, docs/uml.md) has no backend to replay it
    on: one line, exit 2. Unreadable files are left to the replay's own error."""
    from pvmon.trace.reader import TraceReader
    for t in traces:
        try:
            with TraceReader(t) as reader:
                backend = reader.header.get("backend")
        except (PvmonError, OSError):
            continue
        if isinstance(backend, dict) and backend.get("abi") == "uml":
            from pvmon.uml.runner import NO_REPLAY
            raise PvmonError(f"{t}: {NO_REPLAY}")


def _cross(run, spec: str, as_json: bool) -> None:
    """``replay --open-loop`` onto another ABI (pvmon.replay.crossabi): the
    report, then exit 0 (every operation expressed and answered alike) or 1."""
    from pvmon.progress import progress
    from pvmon.replay.crossabi import render_cross, replay_cross
    with progress(f"cross-ABI replay of {run.path.name}", len(run.reader)) as task:
        rep = replay_cross(run, spec, progress=task.update)
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=1))
    else:
        render_cross(rep)
    sys.exit(rep.exit_code)


def _coverage(traces, backend, as_json) -> None:
    """``replay --coverage``: one table (or JSON object) per trace and backend."""
    from pvmon.replay.coverage import coverage, render_coverage
    if not backend:
        raise PvmonError("--coverage needs --backend: the backend whose declarations to "
                         "check the trace against")
    covs = [coverage(Path(t), name.strip()) for t in traces for name in backend.split(",")]
    if as_json:
        out = [c.as_dict() for c in covs]
        click.echo(json.dumps(out[0] if len(out) == 1 else out, indent=1))
    else:
        for c in covs:
            render_coverage(c)
    sys.exit(max(c.exit_code for c in covs))


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
    from pvmon.backends.profiles import search_dirs
    from pvmon.backends.registry import list_backends
    from pvmon.literal import console
    from pvmon.literal import markup as escape
    items = list_backends()
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    con = console()
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
    con.print(f"\nprofiles are read from: {escape(', '.join(str(d) for d in search_dirs()))} "
              "(or pass --backend path/to/profile.toml)")
