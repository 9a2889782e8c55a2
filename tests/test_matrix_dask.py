"""The open-loop matrix on Dask: a real `dask scheduler` and two `dask worker`
processes on localhost run the sample corpus (21 traces x 4 backends) and give
the table the local run gives; the embedded cluster gives it too; a scheduler
that does not answer is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvmon.replay.matrix import render_matrix, run_matrix
from tests.hostile_support import one_line_error, pvmon

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "traces").glob("pvtest-*--xen-*.pvt"))
BACKENDS = ["xen-3.4", "xen-4.6", "xen-4.17", "xen-4.22"]
#: What a cell says about compatibility (not how fast it ran).
_KEYS = ("trace", "backend", "recorded_on", "total", "calls", "first", "why", "by_call",
         "error")


def _table(rows: list[dict]) -> str:
    from io import StringIO

    from rich.console import Console
    buf = StringIO()
    render_matrix(rows, Console(file=buf, width=200, color_system=None))
    return buf.getvalue()


def _cells(rows: list[dict]) -> list[dict]:
    return [{k: r.get(k) for k in _KEYS} for r in rows]


@pytest.fixture(scope="module")
def local_rows() -> list[dict]:
    assert len(CORPUS) >= 20
    return run_matrix(CORPUS, BACKENDS, jobs=1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes on localhost."""
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], env=env, cwd=tmp,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                 "--nthreads", "1", "--no-dashboard", "--local-directory", str(tmp)],
                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = distributed.Client(address, timeout="30s", set_as_default=False)
        client.wait_for_workers(2, timeout=60)
        client.close()
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_real_scheduler_and_two_workers_give_the_local_table(cluster, local_rows):
    done: list[int] = []
    rows = run_matrix(CORPUS, BACKENDS, scheduler=cluster, progress=done.append)
    assert len(rows) == len(CORPUS) * len(BACKENDS) >= 80
    assert not any(r.get("error") for r in rows)
    assert _cells(rows) == _cells(local_rows)
    assert _table(rows) == _table(local_rows)
    assert done[-1] == len(rows) and done == sorted(done)


def test_the_cli_runs_the_matrix_on_a_scheduler_with_json(cluster, local_rows):
    p = pvmon("replay", "--open-loop", *map(str, CORPUS), "--backend", ",".join(BACKENDS),
              "--scheduler", cluster, "--json")
    assert p.returncode == 1, p.stderr          # old versions diverge
    assert _cells(json.loads(p.stdout)) == _cells(local_rows)


def test_the_embedded_cluster_gives_the_local_table(local_rows):
    rows = run_matrix(CORPUS[:6], BACKENDS, jobs=2)
    assert _cells(rows) == _cells(local_rows[:6 * len(BACKENDS)])


def test_a_scheduler_that_does_not_answer_is_one_line():
    line = one_line_error(pvmon("replay", "--open-loop", str(CORPUS[0]), str(CORPUS[1]),
                                "--backend", "xen-4.17", "--scheduler", "tcp://127.0.0.1:9",
                                env={"PVMON_SCHEDULER_TIMEOUT": "1"}))
    assert "Dask scheduler tcp://127.0.0.1:9 does not answer" in line


def test_a_scheduler_without_workers_is_one_line(tmp_path):
    sched_file = tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                             "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                             str(sched_file)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        line = one_line_error(pvmon("replay", "--open-loop", str(CORPUS[0]), "--backend",
                                    "xen-4.17,xen-3.4", "--scheduler", address,
                                    env={"PVMON_SCHEDULER_TIMEOUT": "1"}))
        assert "has no workers" in line and f"dask worker {address}" in line
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_trace_by_url_is_read_through_fsspec(local_rows):
    url = f"file://{CORPUS[0]}"
    rows = run_matrix([url], BACKENDS[:2], jobs=1)
    assert [r["trace"] for r in rows] == [url, url]
    assert [r["total"] for r in rows] == [r["total"] for r in local_rows[:2]]


def test_a_worker_killed_mid_matrix_loses_no_cell(cluster, local_rows, tmp_path):
    import signal
    import threading
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", cluster, "--no-nanny",
         "--nthreads", "1", "--no-dashboard", "--local-directory", str(tmp_path)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = distributed.Client(cluster, timeout="30s", set_as_default=False)
        client.wait_for_workers(3, timeout=60)
        client.close()
        started = threading.Event()
        result: list = []
        t = threading.Thread(target=lambda: result.append(run_matrix(
            CORPUS, BACKENDS, scheduler=cluster, progress=lambda n: started.set())))
        t.start()
        assert started.wait(60)
        victim.send_signal(signal.SIGKILL)       # its task in flight goes to another worker
        t.join(120)
        assert not t.is_alive()
    finally:
        victim.kill()
        victim.wait(20)
    rows = result[0]
    assert not any(r.get("error") for r in rows)
    assert _cells(rows) == _cells(local_rows)


def test_a_trace_no_worker_can_read_is_reported_in_its_cells():
    rows = run_matrix(["nosuch://bucket/a.pvt", str(CORPUS[0])], BACKENDS[:2], jobs=2)
    assert [r["trace"] for r in rows] == ["nosuch://bucket/a.pvt"] * 2 + [str(CORPUS[0])] * 2
    assert all("nosuch://bucket/a.pvt: cannot fetch" in r["error"] for r in rows[:2])
    assert not any(r.get("error") for r in rows[2:])


def test_batches_start_with_the_largest_groups_and_end_in_single_small_ones():
    from pvmon.replay.matrix import _batches, _costs, _tasks
    tasks, _ = _tasks([str(p) for p in CORPUS] * 4, BACKENDS, 2)
    costs = _costs(tasks)
    for workers in (1, 2, 8):
        batches = _batches(costs, workers)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(tasks)))             # every group, once
        assert [costs[i] for i in flat] == sorted(costs, reverse=True)   # largest first
        assert len(batches) < len(tasks) / (4 if workers <= 2 else 1)   # fewer Dask tasks
        assert all(len(b) == 1 for b in batches[-workers:])        # the tail is fine-grained
        sums = [sum(costs[i] for i in b) for b in batches]
        assert sums[0] <= sum(costs) / (2 * workers)


def test_a_trace_given_by_url_counts_as_a_middle_sized_one():
    from pvmon.replay.matrix import _costs
    by_size = sorted({p.stat().st_size: p for p in CORPUS}.items())
    small, mid, large = by_size[0], by_size[len(by_size) // 2], by_size[-1]
    costs = _costs([(str(small[1]), ["a"]), (f"file://{large[1]}", ["a"]),
                    (str(mid[1]), ["a"]), (str(large[1]), ["a", "b"])])
    assert costs == [small[0], mid[0], mid[0], 2 * large[0]]
