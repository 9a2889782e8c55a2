"""Open-loop replay of a corpus of traces against several backends, and the
compatibility table.

The cells run on Dask's distributed scheduler: an embedded local cluster of
worker processes by default, or a running cluster given by its scheduler
address (``tcp://host:8786``). Each task replays one trace against a group of
backends in one pass. Workers read traces by path (a path every worker can
read: a shared file system) or by URL (anything fsspec opens: ``s3://``,
``http://``, ...; copied to a local temporary file first). A task whose
worker dies is retried once on another worker; a task that still fails is
reported in its cells' ``error``, never left out. See docs/matrix.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pvmon.errors import PvmonError
from pvmon.literal import console as plain_console
from pvmon.literal import markup as escape  # Rich escaping + visible control characters
from pvmon.literal import text

#: Seconds to wait for a scheduler to answer (and to have a worker) before giving
#: up; the environment variable PVMON_SCHEDULER_TIMEOUT overrides it.
CONNECT_TIMEOUT_S = 5


def _connect_timeout() -> float:
    try:
        t = float(os.environ.get("PVMON_SCHEDULER_TIMEOUT", CONNECT_TIMEOUT_S))
    except ValueError:
        return CONNECT_TIMEOUT_S
    return t if 0 < t <= 3600 else CONNECT_TIMEOUT_S
#: Times Dask reruns a task whose worker died (or that raised) before reporting it.
RETRIES = 1


def is_url(path: str) -> bool:
    """Whether ``path`` names a trace by URL (``scheme://...``) rather than a file."""
    head, sep, _ = str(path).partition("://")
    return bool(sep) and head.isalnum() and len(head) > 1


@contextlib.contextmanager
def _local(path: str) -> Iterator[str]:
    """A local file holding trace ``path``: the path itself, or a temporary
    copy of a URL fetched through fsspec."""
    if not is_url(path):
        yield path
        return
    try:
        import fsspec
    except ImportError as exc:
        raise PvmonError(f"{path}: reading traces by URL needs fsspec "
                         "(pip install fsspec)") from exc
    fd, tmp = tempfile.mkstemp(suffix=".pvt", prefix="pvmon-matrix-")
    try:
        with os.fdopen(fd, "wb") as out, fsspec.open(path, "rb") as src:
            while block := src.read(1 << 20):
                out.write(block)
        yield tmp
    except (OSError, ValueError) as exc:
        raise PvmonError(f"{path}: cannot fetch: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _cells(args: tuple[str, list[str | None]]) -> list[dict]:
    """One trace against several backends, in one pass over the trace."""
    path, backends = args
    from pvmon.replay.source import open_run
    rows: list[dict] = [{"trace": path, "backend": b} for b in backends]
    with contextlib.ExitStack() as stack:
        try:
            run = open_run(stack.enter_context(_local(path)), need_guest=False)
        except PvmonError as exc:
            for row in rows:
                row["error"] = str(exc)
            return rows
        stack.callback(run.reader.close)
        return _replay_cells(run, rows, backends)


def _replay_cells(run: Any, rows: list[dict], backends: list[str | None]) -> list[dict]:
    from pvmon.backends.registry import require_version
    from pvmon.replay.crossabi import canonical_route, cross_cell, split_spec
    from pvmon.replay.openloop import replay_open_many
    todo = []
    for row, backend in zip(rows, backends, strict=True):
        try:
            if backend and canonical_route(run, backend):   # pvmon.replay.crossabi
                row["recorded_on"] = run.version.name
                row.update(cross_cell(run, backend))
                continue
            version = require_version(split_spec(backend)[0]) if backend else run.version
        except PvmonError as exc:
            row["error"] = str(exc)
            continue
        row["backend"] = version.name
        row["recorded_on"] = run.version.name
        todo.append((row, version))
    if not todo:
        return rows
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


def _tasks(traces: list[Path] | list[str], names: list[str | None],
           jobs: int) -> tuple[list[tuple[str, list[str | None]]], int]:
    """The tasks of a matrix and how many tasks each trace is split into: a
    task replays one trace against a group of backends in one pass (the trace
    is decoded once per group); with fewer traces than workers, a trace's
    backends are dealt round-robin to several tasks so every worker has work."""
    per_trace = max(1, min(len(names), jobs // max(1, len(traces))))
    # column c is row c // per_trace of task c % per_trace; one trace's tasks are consecutive
    tasks = [(t if is_url(str(t)) else str(t), names[i::per_trace])
             for t in traces for i in range(per_trace)]
    return tasks, per_trace


def _assemble(parts: list[list[dict]], n_tasks: int, per_trace: int,
              n_names: int, shown: list[str]) -> list[dict]:
    """The cells trace-major, each trace named as the user gave it."""
    rows = [parts[k + c % per_trace][c // per_trace]
            for k in range(0, n_tasks, per_trace) for c in range(n_names)]
    for i, row in enumerate(rows):
        row["trace"] = shown[i // n_names]
    return rows


def run_matrix(traces: list[Path] | list[str], backends: list[str] | None,
               jobs: int | None = None,
               progress: Callable[[int], None] | None = None, *,
               scheduler: str | None = None) -> list[dict]:
    """Replay every trace against every backend (None: each trace's own
    recorded backend) on Dask. ``scheduler``: the address of a running Dask
    scheduler (``tcp://host:8786``); None starts an embedded local cluster of
    ``jobs`` worker processes (default: CPUs), or runs in this process when
    there is only one task or ``jobs`` is 1. Traces are paths every worker can
    read, or URLs (fsspec). Returns one dict per cell, trace-major: trace,
    backend, total divergences, calls, calls_per_s, backend_calls_per_s, first
    divergence and its explanation, or ``error`` (also for a task that failed
    on the cluster after :data:`RETRIES` retries). ``progress``: called with
    the number of cells done whenever a task finishes (:func:`matrix_cells`
    is the total). Raises PvmonError when the scheduler does not answer."""
    names: list[str | None] = list(backends) if backends else [None]
    if scheduler is None:
        jobs = max(1, jobs or os.cpu_count() or 1)
    else:
        jobs = max(1, jobs or 0)
    shown = [str(t) for t in traces]
    paths = [t if is_url(str(t)) else Path(t).resolve() for t in traces]
    client: Any = None
    close: Callable[[], None] | None = None
    if scheduler is not None:
        client, close = _connect(scheduler)
    try:
        if client is not None:
            jobs = max(jobs, _worker_threads(client))
        tasks, per_trace = _tasks(paths, names, jobs)   # trace groups; Dask runs them in batches
        parts: list[list[dict]] = [[] for _ in tasks]
        if client is None and min(jobs, len(tasks)) == 1:
            done = 0
            for i, task in enumerate(tasks):
                parts[i] = _cells(task)
                done += len(task[1])
                if progress is not None:
                    progress(done)
        else:
            if client is None:
                client, close = _local_cluster(min(jobs, len(tasks)))
            _run_batches(client, tasks, parts, jobs, progress)
    finally:
        if close is not None:
            close()
    return _assemble(parts, len(tasks), per_trace, len(names), shown)


def _run_batches(client: Any, tasks: list[tuple[str, list[str | None]]],
                 parts: list[list[dict]], workers: int,
                 progress: Callable[[int], None] | None) -> None:
    """Run ``tasks`` on ``client`` in batches, filling ``parts`` (one list of
    cells per task) as they finish; a batch that failed fills its tasks' cells
    with the error."""
    from distributed import as_completed as dask_completed
    futures = {client.submit(_cells_batch, [tasks[i] for i in b], pure=False,
                             retries=RETRIES): b
               for b in _batches(_costs(tasks), workers)}
    done = 0
    for fut in dask_completed(futures, loop=client.loop):
        b = futures[fut]
        if fut.status == "finished":
            for i, part in zip(b, fut.result(), strict=True):
                parts[i] = part
        else:
            why = _task_error(fut)
            for i in b:
                parts[i] = [{"trace": tasks[i][0], "backend": n,
                             "error": f"the task failed on the cluster: {why}"}
                            for n in tasks[i][1]]
        done += sum(len(tasks[i][1]) for i in b)
        if progress is not None:
            progress(done)


#: How finely the matrix is cut into Dask tasks: each batch takes about
#: 1 / (TAIL_SPLIT x worker threads) of the work still left, largest trace
#: groups first. Early batches are large (Dask's cost per task, a few ms of
#: scheduling and serialising, is paid rarely) and the last ones are single
#: small groups, so workers finish within about one small group of each other.
TAIL_SPLIT = 2


def _costs(tasks: list[tuple[str, list[str | None]]]) -> list[float]:
    """The expected cost of each task, in bytes of trace x backends: open-loop
    replay time grows with the trace's size (about 1 us per byte per pass on
    the sample corpus) and the pass's backends. A trace given by URL, or one
    that cannot be read (its task fails fast), counts as the median size of
    the others."""
    sizes: list[float | None] = []
    for path, _ in tasks:
        try:
            sizes.append(None if is_url(path) else float(os.stat(path).st_size))
        except OSError:
            sizes.append(None)
    known = sorted(s for s in sizes if s)
    default = known[len(known) // 2] if known else 1.0
    return [(s or default) * max(1, len(group))
            for s, (_, group) in zip(sizes, tasks, strict=True)]


def _batches(costs: list[float], workers: int) -> list[list[int]]:
    """Task indices in batches, one Dask task each, in the order to submit
    them (Dask starts them in that order): largest expected cost first, each
    batch about 1 / (:data:`TAIL_SPLIT` x ``workers``) of the cost still
    left (guided self-scheduling), at least one task."""
    order = sorted(range(len(costs)), key=lambda i: -costs[i])
    left = float(sum(costs))
    share = TAIL_SPLIT * max(1, workers)
    batches: list[list[int]] = []
    k = 0
    while k < len(order):
        target, batch, cost = left / share, [order[k]], costs[order[k]]
        k += 1
        while k < len(order) and cost + costs[order[k]] <= target:
            batch.append(order[k])
            cost += costs[order[k]]
            k += 1
        batches.append(batch)
        left -= cost
    return batches


def _cells_batch(tasks: list[tuple[str, list[str | None]]]) -> list[list[dict]]:
    """Several trace groups, one after another (one Dask task)."""
    return [_cells(t) for t in tasks]


def _task_error(fut: Any) -> str:
    try:
        exc = fut.exception(timeout=CONNECT_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - a cancelled or lost future says so itself
        exc = e
    text_ = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text_[0] if text_ else ''}".rstrip(": ")


def _quiet_dask() -> None:
    """Dask logs to stderr at INFO/WARNING; pvmon prints its own one-line errors."""
    for name in ("distributed", "distributed.client", "distributed.worker",
                 "distributed.scheduler", "distributed.nanny", "distributed.core",
                 "distributed.comm", "distributed.batched", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _connect(address: str) -> tuple[Any, Callable[[], None]]:
    """A client of the scheduler at ``address``, or PvmonError in one line."""
    _quiet_dask()
    try:
        from distributed import Client
    except ImportError as exc:
        raise PvmonError("--scheduler needs dask.distributed (pip install "
                         "'dask[distributed]')") from exc
    wait = _connect_timeout()
    try:
        client = Client(address, timeout=f"{wait}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        raise PvmonError(f"Dask scheduler {address} does not answer within "
                         f"{wait:g} s ({first[0] if first else type(exc).__name__})") from None
    try:
        client.wait_for_workers(1, timeout=wait)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise PvmonError(f"Dask scheduler {address} has no workers (waited {wait:g} s): "
                         f"start some with `dask worker {address}`") from exc
    return client, client.close


def _worker_threads(client: Any) -> int:
    """Threads across the cluster's workers (at least 1)."""
    try:
        info = client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))
    except Exception:  # noqa: BLE001 - sizing only: fall back to one task per trace
        return 1


#: Dask settings of the embedded cluster. Its workers' background work shares
#: the cores with the replay (on 2 cores, 2 workers and the scheduler in the
#: pvmon process): by default each worker's event loop wakes every 10 ms to
#: sample a profile for the dashboard and every 20 ms to measure its own
#: responsiveness, which cost about 3.5 % of a worker's CPU in a task (0.3-1 %
#: with these), and the nannies poll memory 10 times a second. Nothing reads the
#: profile or the loop-health warnings (no dashboard; Dask's logs are silenced).
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def start_local_cluster(workers: int) -> Any:
    """An embedded Dask ``LocalCluster`` of ``workers`` single-threaded worker
    processes with :data:`LOCAL_CLUSTER_CONFIG` (what ``pvmon replay
    --open-loop`` starts; ``bench/bench_matrix.py`` starts the same). The caller
    closes it. Raises PvmonError without dask.distributed."""
    _quiet_dask()
    try:
        import dask
        from distributed import LocalCluster
    except ImportError as exc:
        raise PvmonError("the matrix needs dask.distributed (pip install "
                         "'dask[distributed]')") from exc
    # the scheduler and nannies read these when created; the nannies hand them to the workers
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                            silence_logs=logging.CRITICAL)


def _local_cluster(workers: int) -> tuple[Any, Callable[[], None]]:
    """A client of a new :func:`start_local_cluster` and how to close both."""
    cluster = start_local_cluster(workers)
    from distributed import Client
    client = Client(cluster, set_as_default=False)

    def close() -> None:
        client.close()
        cluster.close()
    return client, close


def run_matrix_pool(traces: list[Path], backends: list[str] | None,
                    jobs: int | None = None) -> list[dict]:
    """The matrix on a plain process pool, as pvmon ran it before Dask: kept
    for ``bench/bench_matrix.py``'s comparison of the per-task overhead."""
    names: list[str | None] = list(backends) if backends else [None]
    jobs = max(1, jobs or os.cpu_count() or 1)
    shown = [str(t) for t in traces]
    tasks, per_trace = _tasks([Path(t).resolve() for t in traces], names, jobs)
    parts: list[list[dict]] = [[] for _ in tasks]
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        futures = {pool.submit(_cells, task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            parts[futures[fut]] = fut.result()
    return _assemble(parts, len(tasks), per_trace, len(names), shown)


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
            elif r.get("cross") is not None:        # across ABIs: canonical operations
                x = r["cross"]["by_how"]
                line.append(f"{'[green]' if not r['total'] else '[yellow]'}{r['calls']:,} ops"
                            f"[/]: {x['call']:,} call, {x['native']:,} native, "
                            f"{x['inexpressible']:,} inexpr., "
                            f"{r['total'] - x['inexpressible']:,} differ")
            elif not r["total"]:
                line.append(f"[green]same[/] ({r['calls']:,} calls)")
            else:
                line.append(f"[yellow]{r['total']:,} diverge[/]")
        t.add_row(*line)
    con.print(t)
    for r in rows:
        if r.get("error"):
            con.print(f"[red]{escape(Path(r['trace']).name)}[/]: {escape(r['error'])}")
        elif r.get("cross") is not None:
            con.print(f"{escape(Path(r['trace']).name)} on {escape(r['backend'])} (across "
                      f"ABIs): {escape(r['first'] or '')}")
        elif r.get("total"):
            why = f" ({escape(r['why'][0])})" if r.get("why") else ""
            con.print(f"{escape(Path(r['trace']).name)} on {escape(r['backend'])}: first "
                      f"{escape(r['first'] or '')}{why}")
