"""Interruptions never corrupt a recording or a replay, and a recording the guest
did not end itself verifies up to the end it recorded.

SIGINT and SIGTERM are sent to real `pvmon run debian-6.12 --record` and `pvmon
replay` processes at several points of the run; every recording keeps every event
written before the signal (a prefix of the uninterrupted recording), ends with an
``interrupted`` exit record, and verifies up to that end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvmon.cli import cli
from pvmon.engine.machine import Machine, Stop
from pvmon.engine.signals import StopOnSignals
from pvmon.errors import TraceError
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from pvmon.trace.synth import synthetic_events, synthetic_header
from pvmon.trace.writer import TraceWriter

REPO = Path(__file__).resolve().parent.parent
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
#: Where in the run the recordings are signalled: once the trace file holds this many
#: bytes (the whole 6.12 boot is about 925 KB, 54,800 events: as the run starts, at
#: about event 2,400 and at about event 24,700), whatever the host's speed.
RECORD_POINTS = (0, 150_000, 450_000)
#: Where the replays are signalled: seconds after the replay began (it runs 2-3 s).
REPLAY_DELAYS = (0.3, 1.0)
_SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _popen(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="300")
    return subprocess.Popen([sys.executable, "-m", "pvmon", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_for_handlers(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``proc`` catches SIGTERM (/proc/PID/status SigCgt): pvmon installs its
    handlers as the run starts, so a signal from now on reaches a running engine."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "the run ended before it could be signalled"
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            status = ""
        for line in status.splitlines():
            if line.startswith("SigCgt:") and int(line.split()[1], 16) & _SIGTERM_BIT:
                return
        time.sleep(0.01)
    raise AssertionError("pvmon never installed its signal handlers")


def _signal_at(proc: subprocess.Popen, sig: int, delay: float = 0.0,
               trace: Path | None = None, size: int = 0) -> tuple[str, str]:
    """Send ``sig`` ``delay`` seconds after the run began, and once ``trace``
    holds ``size`` bytes; returns stdout and stderr."""
    _wait_for_handlers(proc)
    time.sleep(delay)
    while trace is not None and size and (not trace.exists() or trace.stat().st_size < size):
        assert proc.poll() is None, "the run ended before it could be signalled"
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture(scope="module")
def full612(debian612, tmp_path_factory) -> Path:
    """The uninterrupted 6.12 boot, recorded."""
    path = tmp_path_factory.mktemp("full") / "full-6.12.pvt"
    assert Session(debian612, record=path).run(timeout=300).exit_kind == "crash"
    return path


def _is_prefix(cut: TraceReader, full: TraceReader) -> int:
    """Assert that every event of ``cut`` before its exit record is the
    uninterrupted run's (the last one may be a run of TSC reads cut short);
    returns how many events precede the exit record."""
    n = len(cut) - 1
    assert n >= 0
    got = list(cut.events(0, n))
    want = list(full.events(0, n))
    if got and got[-1]["k"] == "tsc_run":       # cut by the signal inside a TSC run
        last, ref = got.pop(), want.pop()
        k = len(last["rip"])
        assert (last["seq"], last["t"]) == (ref["seq"], ref["t"])
        assert last["rip"] == ref["rip"][:k] and last["val"] == ref["val"][:k]
    assert got == want
    return n


# ------------------------------------------------------------------ recordings


@pytest.mark.debian
@pytest.mark.slow
@pytest.mark.parametrize("point", RECORD_POINTS)
@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_recording_stopped_by_a_signal_keeps_every_event_and_verifies_up_to_its_end(
        name, point, full612, tmp_path):
    sig = SIGNALS[name]
    path = tmp_path / "cut.pvt"
    proc = _popen("run", "debian-6.12", "--record", str(path), "--quiet")
    out, err = _signal_at(proc, sig, trace=path, size=point)
    assert proc.returncode == 128 + sig, err
    assert f"exit: interrupted - interrupted by {name}" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    with TraceReader(path) as cut, TraceReader(full612) as full:
        assert cut.complete
        end = next(cut.events(len(cut) - 1))
        assert (end["k"], end["reason"], end["detail"]) == ("exit", "interrupted",
                                                            f"interrupted by {name}")
        n = _is_prefix(cut, full)
        assert n < len(full) - 1
    verdict = f"matches the recording up to its end (interrupted by {name} at event {n:,})"
    if point == RECORD_POINTS[1]:    # once each: what a user runs
        info = CliRunner().invoke(cli, ["trace", "info", str(path)])
        assert info.exit_code == 0
        assert f"interrupted: interrupted by {name} (event {n:,})" in info.output
        verify = _popen("replay", str(path))
        out, err = verify.communicate(timeout=120)
        assert verify.returncode == 0, err
        assert verdict in out.decode()
        return
    rep = replay_closed(open_run(path))
    assert rep.total == 0 and rep.exit_code == 0, rep.verdict
    assert rep.compared == n
    assert verdict in rep.verdict


@pytest.mark.debian
@pytest.mark.slow
@pytest.mark.parametrize("delay", REPLAY_DELAYS)
@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_replay_stopped_by_a_signal_says_where_and_gives_no_verdict(name, delay, full612):
    sig = SIGNALS[name]
    proc = _popen("replay", str(full612), "--json")
    out, err = _signal_at(proc, sig, delay)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    rep = json.loads(out)
    assert rep["exit_status"] == 128 + sig
    assert not rep["diverged"] and rep["total"] == 0
    assert rep["verdict"].startswith(f"replay interrupted by {name} at event ")
    assert rep["ending"]["right"].startswith(f"interrupted: interrupted by {name}")
    assert not rep["notes"], rep["notes"]          # the streams agreed up to the stop
    assert 0 < rep["compared"] < rep["stats"]["events_recorded"]


@pytest.mark.debian
@pytest.mark.slow
def test_a_shell_waiting_for_piped_input_stops_on_a_signal_and_verifies(debian61, tmp_path):
    """At the prompt, with its input pipe open and silent, the run waits in wall
    time inside a hypercall hook; SIGTERM still ends it there, at once, with an
    exit record."""
    from pvmon.guests.initramfs import ensure_initramfs
    ensure_initramfs("busybox")
    path = tmp_path / "pipe.pvt"
    proc = _popen("run", "debian-6.1", "--initramfs", "busybox", "--record", str(path),
                  stdin=subprocess.PIPE)
    os.set_blocking(proc.stdout.fileno(), False)
    seen, end = b"", time.monotonic() + 300
    while b"~ # " not in seen:
        assert time.monotonic() < end and proc.poll() is None, seen[-300:]
        seen += proc.stdout.read() or b""
        time.sleep(0.05)
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].decode()
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 143 and "exit: interrupted - interrupted by SIGTERM" in err, err
    with TraceReader(path) as r:      # (verifying it costs a whole shell boot again)
        assert r.complete
        end = next(r.events(len(r) - 1))
        assert (end["k"], end["detail"]) == ("exit", "interrupted by SIGTERM")


def test_a_guest_running_without_any_hook_still_stops_on_a_signal():
    """No hypercall, TSC read or fault: no Python runs in the main thread, so only
    the wakeup-fd watcher can stop it. `jmp $` at CPL 0, flat memory."""
    m = Machine(1 << 20)
    m.write_phys(0x1000, b"\xeb\xfe")              # jmp $
    m.set_reg("rip", 0x1000)
    old = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    with StopOnSignals(m) as guard:
        timer.start()
        t0 = time.monotonic()
        stop = m.run()
        took = time.monotonic() - t0
    timer.join()
    assert stop.kind == "interrupted" and stop.signal == signal.SIGINT
    assert stop.detail == "interrupted by SIGINT" and stop.rip == 0x1000
    assert guard.signum == signal.SIGINT
    assert took < 2.0
    assert signal.getsignal(signal.SIGINT) is old       # the previous handler is back


def test_a_pvtest_run_under_the_signal_guard_records_what_it_records_without_it(
        pvtest_v2, tmp_path):
    plain, guarded = tmp_path / "plain.pvt", tmp_path / "guarded.pvt"
    Session(pvtest_v2, record=plain).run()
    Session(pvtest_v2, record=guarded).run(stop_on_signals=True)
    with TraceReader(plain) as a, TraceReader(guarded) as b:
        assert [a.frame_bytes(i) for i in range(len(a.frames))] == \
            [b.frame_bytes(i) for i in range(len(b.frames))]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# ------------------------------------------------- recordings the guest did not end


@pytest.mark.debian
@pytest.mark.slow
def test_a_recording_stopped_by_its_wall_clock_timeout_verifies_up_to_its_end(
        debian612, tmp_path):
    path = tmp_path / "timeout.pvt"
    res = Session(debian612, record=path).run(timeout=1.0)
    assert res.exit_kind == "limit"
    rep = replay_closed(open_run(path))
    assert rep.total == 0 and rep.exit_code == 0
    assert f"(timed out at event {res.events - 1:,})" in rep.verdict
    assert "hung" not in rep.ending["outcome"]


@pytest.mark.debian
@pytest.mark.slow
def test_a_replay_out_of_time_says_where_it_stopped_not_that_the_guest_hung(full612):
    rep = replay_closed(open_run(full612), timeout=0.5)
    assert rep.exit_code == 124 and rep.total == 0
    assert rep.verdict.startswith("replay timed out at event ")
    assert "hung" not in rep.ending["outcome"]


def _verify(path: Path):
    rep = replay_closed(open_run(path))
    assert rep.total == 0 and rep.exit_code == 0, rep.verdict
    return rep


def test_a_recording_cut_after_a_frame_verifies_up_to_its_end(pvtest_v2, tmp_path):
    full, cut = tmp_path / "full.pvt", tmp_path / "cut.pvt"
    Session(pvtest_v2, record=full).run()
    with TraceReader(full) as r:
        first = r.frames[0]
    cut.write_bytes(full.read_bytes()[:first.end + 10])   # a torn second frame
    rep = _verify(cut)
    assert rep.compared == first.count
    assert f"(truncated at event {first.count:,})" in rep.verdict


def test_a_recording_killed_before_its_first_event_verifies(pvtest_v2, tmp_path):
    path, copy = tmp_path / "early.pvt", tmp_path / "zero.pvt"
    sess = Session(pvtest_v2, record=path)
    copy.write_bytes(path.read_bytes())                 # what a kill now would leave
    sess.writer.close()
    rep = _verify(copy)
    assert rep.compared == 0 and "(truncated at event 0)" in rep.verdict


def test_a_recording_stopped_while_the_run_went_on_verifies_up_to_its_end(pvtest_v2, tmp_path):
    """The TUI's `r`: the trace is closed at a hypercall, the guest runs on."""
    path = tmp_path / "stopped.pvt"
    sess = Session(pvtest_v2, record=path)

    def listener(ev: dict) -> None:
        if ev["seq"] >= 200 and sess.writer is not None:
            sess.stop_recording()
    sess.dispatch.call_listeners.append(listener)
    assert sess.run().clean
    with TraceReader(path) as r:
        end = next(r.events(len(r) - 1))
        n = len(r) - 1
    assert end["k"] == "exit" and end["detail"].startswith("recording stopped")
    rep = _verify(path)
    assert rep.compared == n and f"(recording stopped at event {n:,})" in rep.verdict


def test_a_live_console_session_records_no_idle_limit(pvtest_v2, tmp_path):
    """A TUI session with a userland and no script waits for the user for ever;
    its header says so, so a replay does not idle out where the run went on."""
    from pvmon.ui.live_session import BootSpec, LiveSession
    live = LiveSession.create(BootSpec(pvtest_v2, initrd=b"\0" * 4096, record=tmp_path / "l.pvt"))
    scripted = LiveSession.create(BootSpec(pvtest_v2, initrd=b"\0" * 4096, script=[b"ls\n"],
                                           record=tmp_path / "s.pvt"))
    for ls in (live, scripted):
        ls.session.writer.close()
    assert TraceReader(tmp_path / "l.pvt").header["machine"]["idle_limit_ns"] is None
    assert TraceReader(tmp_path / "s.pvt").header["machine"]["idle_limit_ns"] == 10_000_000_000


# ------------------------------------------------------------------- full disk


@pytest.fixture
def small_fs(tmp_path):
    """A 300 KiB tmpfs (needs root; skipped without)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
            check=False, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)   # lazily: a reader may be open


def test_a_full_disk_never_raises_from_append_and_keeps_every_complete_frame(small_fs):
    errors: list[BaseException] = []
    path = small_fs / "w.pvt"
    w = TraceWriter(path, synthetic_header(), frame_events=200, level=1,
                    on_error=errors.append)
    for ev in synthetic_events(200_000, seed=5):    # far more than 300 KiB
        w.append(ev)
    with pytest.raises(TraceError, match="No space left on device; the trace is truncated"):
        w.close()
    assert len(errors) == 1 and w.failed
    with TraceReader(path) as r:
        assert not r.complete
        assert len(r) == w.kept_events > 0
        assert list(r) == list(synthetic_events(len(r), seed=5))
        assert r.frames[-1].end == path.stat().st_size     # cut at a frame boundary


@pytest.mark.debian
@pytest.mark.slow
def test_a_recording_onto_a_full_disk_ends_with_one_line_and_a_truncated_trace(small_fs):
    path = small_fs / "x.pvt"
    proc = _popen("run", "debian-6.12", "--record", str(path), "--quiet")
    err = proc.communicate(timeout=300)[1].decode()
    assert proc.returncode == 2
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "exit: error - writing the trace failed: No space left on device" in err
    lines = [ln for ln in err.splitlines() if ln.startswith("pvmon: error:")]
    assert len(lines) == 1 and "the trace is truncated after its first" in lines[0]
    with TraceReader(path) as r:
        assert not r.complete and len(r) > 1000
    rep = _verify(path)
    assert f"(truncated at event {rep.compared:,})" in rep.verdict


# ----------------------------------------------------------- the stop request


def test_a_stop_request_lands_between_slices_with_the_rip_it_stopped_at(pvtest_v2):
    sess = Session(pvtest_v2, keep_console=False)
    calls = []

    def listener(ev: dict) -> None:
        calls.append(ev["seq"])
        if len(calls) == 50:
            sess.machine.request_stop(Stop("interrupted", "asked"))
    sess.dispatch.call_listeners.append(listener)
    res = sess.run()
    assert res.exit_kind == "interrupted" and res.detail == "asked"
    assert len(calls) == 50          # the hook that asked ran to its end, no call after it
    assert res.rip == sess.machine.reg("rip")
