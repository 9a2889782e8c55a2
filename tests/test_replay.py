"""Replay, divergence reports, backends and profiles, trace diff: real guests
recorded on the real engine, replayed on real backends."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pvmon.backends.profiles import load_profile
from pvmon.backends.registry import get_backend, list_backends, resolve_version
from pvmon.cli import cli
from pvmon.errors import BackendError
from pvmon.replay.closed import replay_closed
from pvmon.replay.diff import diff_traces
from pvmon.replay.openloop import replay_open
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader


def record(guest, path, backend="xen-4.17"):
    res = Session(guest, record=path, backend=backend).run(timeout=120)
    return res


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    from pvmon.guests.catalog import resolve
    d = tmp_path_factory.mktemp("traces")
    out = {}
    for name in ("pvtest-v1", "pvtest-v2"):
        p = d / f"{name}.pvt"
        assert record(resolve(name), p).clean
        out[name] = p
    return out


def pvmon(*args):
    return subprocess.run([sys.executable, "-m", "pvmon", *args], check=False,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ verify
@pytest.mark.parametrize("name", ["pvtest-v1", "pvtest-v2"])
def test_verify_builtin_recordings(traces, name):
    rep = replay_closed(open_run(traces[name]))
    assert rep.mode == "verify"
    assert rep.total == 0
    assert rep.compared == len(TraceReader(traces[name]))
    assert rep.ending["outcome"] == "identical"


def test_verify_cli_exit_zero_and_json(traces):
    r = CliRunner().invoke(cli, ["replay", str(traces["pvtest-v2"]), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["diverged"] is False and doc["mode"] == "verify"


# ---------------------------------------------------- profile breaking a call
PROFILE = """
name = "acme-4.17"
base = "xen-4.17"
version = "4.17.7-acme"
description = "ACME build whose one-shot timer is broken"
[[fail]]
hypercall = "vcpu_op"
subop = "set_singleshot_timer"
error = "EINVAL"
reason = "ticket 1234"
"""


def test_profile_breaking_one_call_fails_at_exactly_that_call(traces, tmp_path):
    prof = tmp_path / "acme-4.17.toml"
    prof.write_text(PROFILE)
    trace = traces["pvtest-v2"]
    first = next(ev["seq"] for ev in TraceReader(trace)
                 if ev["k"] == "hc" and ev["name"] == "vcpu_op"
                 and ev["op"].get("cmd") == "set_singleshot_timer")
    rep = replay_closed(open_run(trace), load_profile(prof))
    assert rep.total >= 1
    d = rep.divergences[0]
    assert d.left["seq"] == first
    assert d.left["name"] == "vcpu_op" and d.right["ret"] == -22
    assert d.deltas[0].what == "result"
    assert any("fails vcpu_op(set_singleshot_timer) with -EINVAL" in f.text
               and "ticket 1234" in f.source for f in d.explanation)
    # the CLI says the same and exits 1
    r = CliRunner().invoke(cli, ["replay", str(trace), "--backend", str(prof)])
    assert r.exit_code == 1
    assert "fails vcpu_op(set_singleshot_timer) with -EINVAL" in r.output


def test_trace_recorded_on_a_profile_verifies_without_the_file(tmp_path, pvtest_v2):
    prof = tmp_path / "acme-4.17.toml"
    prof.write_text(PROFILE)
    trace = tmp_path / "acme.pvt"
    record(pvtest_v2, trace, backend=str(prof))
    prof.unlink()   # the header carries the profile
    rep = replay_closed(open_run(trace))
    assert rep.total == 0 and rep.left.endswith("(recorded)")
    assert "acme-4.17" in rep.left


# ------------------------------------------------------- other backends
def test_closed_loop_on_xen_3_4_explains_the_version(traces):
    rep = replay_closed(open_run(traces["pvtest-v2"]), resolve_version("xen-3.4"))
    assert rep.mode == "closed-loop" and rep.total > 0
    texts = [f.text for d in rep.divergences for f in d.explanation]
    assert any("xen-3.4 is 3.4.4" in t for t in texts)
    assert rep.ending["outcome"].startswith("the guest tolerated")
    assert any("uprev the host" in n for n in rep.notes)


@pytest.mark.parametrize("name", ["pvtest-v1", "pvtest-v2"])
def test_open_loop_against_own_backend_is_identical(traces, name):
    run = open_run(traces[name], need_guest=False)
    rep = replay_open(run, run.version)
    assert rep.total == 0, [d.summary for d in rep.divergences]
    assert rep.stats["calls"] > 300


def test_open_loop_matrix_cli(traces):
    r = CliRunner().invoke(cli, ["replay", "--open-loop", str(traces["pvtest-v1"]),
                                 str(traces["pvtest-v2"]), "--backend",
                                 "xen-3.4,xen-4.17", "--json", "-j", "2"])
    assert r.exit_code == 1, r.output
    rows = json.loads(r.output)
    assert len(rows) == 4
    cells = {(r["trace"].rsplit("/", 1)[1], r["backend"]): r for r in rows}
    assert cells[("pvtest-v1.pvt", "xen-4.17")]["total"] == 0
    assert cells[("pvtest-v2.pvt", "xen-3.4")]["total"] > 0


def test_one_pass_against_several_backends_reports_what_separate_passes_report(traces):
    from pvmon.replay.openloop import replay_open_many
    names = ["xen-3.4", "xen-4.17", "xen-4.22"]
    versions = [resolve_version(n) for n in names]
    together = replay_open_many(open_run(traces["pvtest-v2"], need_guest=False), versions)
    for version, rep in zip(versions, together, strict=True):
        alone = replay_open(open_run(traces["pvtest-v2"], need_guest=False), version)
        assert rep.total == alone.total
        assert [d.summary for d in rep.divergences] == [d.summary for d in alone.divergences]
        assert rep.stats["calls"] == alone.stats["calls"]
        assert rep.stats["backends_in_pass"] == 3
    assert together[0].total > 0 and together[1].total == 0


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_the_matrix_keeps_trace_and_backend_order_however_it_splits_work(traces, jobs):
    r = CliRunner().invoke(cli, ["replay", "--open-loop", str(traces["pvtest-v2"]),
                                 "--backend", "xen-4.17,xen-3.4,xen-4.22", "--json",
                                 "-j", jobs])
    rows = json.loads(r.output)
    assert [row["backend"] for row in rows] == ["xen-4.17", "xen-3.4", "xen-4.22"]
    assert [row["total"] == 0 for row in rows] == [True, False, False]   # 3.4, 4.22 differ


# ---------------------------------------------------------------- diff
def test_diff_of_the_two_builtin_versions_finds_their_designed_differences(traces):
    d = diff_traces(traces["pvtest-v1"], traces["pvtest-v2"])
    assert (d.left.mechanism, d.right.mechanism) == ("page", "syscall")
    assert d.mechanism_differs
    assert set(d.left.via) == {"page"} and set(d.right.via) == {"syscall"}
    names = lambda keys: {k for k in keys if ":" not in k}
    assert names(d.only_left) == {"event_channel_op_compat", "sched_op_compat",
                                  "set_callbacks", "set_timer_op"}
    assert names(d.only_right) == {"callback_op", "event_channel_op", "sched_op"}
    assert "event_channel_op_compat:bind_ipi" in d.only_left
    assert {"event_channel_op:alloc_unbound", "event_channel_op:bind_interdomain",
            "vcpu_op:set_singleshot_timer"} <= set(d.only_right)
    ops = {x["operation"] for x in d.drift}
    assert {"sched_op:block", "sched_op:shutdown", "event_channel_op:send",
            "callback_op:register", "vcpu_op:set_singleshot_timer"} <= ops
    # iret "returns" the interrupted context's RAX: an upcall taken in the
    # guests' running wait for periodic ticks interrupts different loop values
    assert set(d.ret_diffs) <= {"xen:iret"}
    assert d.exit_code == 1


def test_diff_of_a_trace_with_itself_is_empty(traces):
    d = diff_traces(traces["pvtest-v2"], traces["pvtest-v2"])
    assert d.exit_code == 0 and not d.runs and not d.drift


# ------------------------------------------------ backends and profiles
def test_backends_lists_versions_and_profiles(tmp_path, monkeypatch):
    (tmp_path / "acme-4.17.toml").write_text(PROFILE)
    (tmp_path / "broken.toml").write_text("name = 'broken'\nbase = 'xen-9.9'\n")
    monkeypatch.setenv("PVMON_PROFILES", str(tmp_path))
    items = {b["name"]: b for b in list_backends()}
    assert {"xen-3.4", "xen-4.17", "xen-4.21", "xen-4.22", "acme-4.17"} <= set(items)
    assert "error" in items["broken"]
    assert any(d["kind"] == "failure" for d in items["acme-4.17"]["differences"])
    assert all(d["source"] for d in items["xen-3.4"]["differences"])
    assert get_backend("acme-4.17").ver.version_string == "4.17.7-acme"
    r = CliRunner().invoke(cli, ["backends"])
    assert r.exit_code == 0 and "init_control" in r.output


@pytest.mark.parametrize("text,msg", [
    ("base = 'xen-4.17'\nbogus = 1\n", "unknown key 'bogus'"),
    ("base = 'xen-9.9'\n", "unknown base"),
    ("base = 'xen-4.17'\n[remove]\nhypercalls = ['frobnicate']\n", "unknown hypercall"),
    ("base = 'xen-4.17'\n[remove]\nsubops = {vcpu_op = ['nope']}\n", "unknown sub-op"),
    ("base = 'xen-4.17'\n[[fail]]\nhypercall = 'vcpu_op'\nerror = 'EWHAT'\n", "errno"),
    ("base = = \n", "not valid TOML"),
])
def test_bad_profiles_get_one_clear_error(tmp_path, text, msg):
    p = tmp_path / "p.toml"
    p.write_text(text)
    with pytest.raises(BackendError, match=msg):
        load_profile(p)


# ------------------------------------------------------ errors: exit 2
def test_replay_errors_exit_2_with_one_line(traces, tmp_path):
    bad = tmp_path / "bad.pvt"
    bad.write_bytes(b"not a trace at all")
    prof = tmp_path / "x.toml"
    prof.write_text("base = 'xen-4.17'\nwhat = 1\n")
    cases = [
        (["replay", str(tmp_path / "missing.pvt")], "cannot open trace"),
        (["replay", str(bad)], "not a pvmon trace"),
        (["replay", str(traces["pvtest-v2"]), "--backend", "xen-9.9"], "unknown backend"),
        (["replay", str(traces["pvtest-v2"]), "--backend", str(prof)], "unknown key"),
        (["replay", str(traces["pvtest-v2"]), "--guest", "pvtest-v1"], "sha256"),
        (["replay", str(traces["pvtest-v1"]), str(traces["pvtest-v2"])], "--open-loop"),
        (["diff", str(traces["pvtest-v2"]), str(bad)], "not a pvmon trace"),
    ]
    for args, msg in cases:
        p = pvmon(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pvmon: error:"), (args, p.stderr)
        assert msg in lines[0], (args, lines)
        assert "Traceback" not in p.stderr


# ------------------------------------------------------- Debian kernels
@pytest.mark.debian
@pytest.mark.slow
@pytest.mark.parametrize("series", ["debian-6.12", "debian-6.1"])
def test_verify_debian_boot(series, tmp_path):
    from pvmon.guests.catalog import debian_guest
    trace = tmp_path / f"{series}.pvt"
    res = record(debian_guest(series), trace)
    assert res.exit_kind == "crash"   # the root-mount panic
    rep = replay_closed(open_run(trace))
    assert rep.total == 0, [d.summary for d in rep.divergences[:3]]
    assert rep.compared == len(TraceReader(trace))
    if series == "debian-6.12":
        # the same trace, closed loop on Xen 3.4: Linux falls back and reaches the panic
        old = replay_closed(open_run(trace), resolve_version("xen-3.4"))
        assert old.total > 0
        assert old.ending["outcome"].startswith("the guest tolerated")
        calls = {k for (k, _w) in old.by_call}
        assert "xen:xenpmu_op" in calls or "xen:xenpmu_op:init" in calls
        op = replay_open(open_run(trace, need_guest=False), resolve_version("xen-4.17"))
        assert op.total == 0
