"""User-Mode Linux recorded natively: Debian's UML kernel boots to the busybox
shell under pvmon's ptrace tracer, and the trace holds its host system calls
and the guest processes' own system calls (and their results) recovered from
its ptrace requests.
Real UML kernel (fetched with apt-get download), real host kernel, no mocks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvmon.guests.initramfs import ensure_initramfs
from pvmon.trace.reader import TraceReader
from pvmon.uml import guest as uml
from pvmon.uml.runner import NO_REPLAY

pytestmark = [pytest.mark.debian, pytest.mark.slow]

PVMON = [sys.executable, "-m", "pvmon.cli"]
SCRIPT = "uname -a\\npoweroff -f"


def pvmon(*args, env=None, timeout=120, **kw):
    return subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def uml_guest():
    if uml.read_meta("uml-6.1") is None:
        uml.fetch_uml("uml-6.1")
    ensure_initramfs("busybox")
    return uml.resolve("uml-6.1")


@pytest.fixture(scope="module")
def shell_trace(uml_guest, tmp_path_factory):
    path = tmp_path_factory.mktemp("uml") / "shell.pvt"
    p = pvmon("run", "uml-6.1", "--initramfs", "busybox", "--script", SCRIPT, "--record", path)
    assert p.returncode == 0, p.stderr
    return path, p


def test_a_uml_boot_to_the_busybox_shell_runs_the_script_and_powers_off(shell_trace):
    _, p = shell_trace
    assert "Run /init as init process" in p.stdout
    assert "Linux (none) 6.1" in p.stdout          # the guest's `uname -a`
    assert "shutdown: the UML kernel exited with status 0" in p.stderr


def test_the_trace_holds_host_syscalls_and_the_guests_own_execve_and_uname(shell_trace):
    path, _ = shell_trace
    with TraceReader(path) as r:
        h = r.header
        events = list(r)
        complete = r.complete
    assert complete
    assert h["backend"]["abi"] == "uml" and h["machine"]["platform"] == "uml"
    assert h["machine"]["deterministic"] is False
    assert h["guest"]["package"] == "user-mode-linux" and h["guest"]["release"].startswith("6.1")
    assert "con0=fd:0,fd:1" in h["machine"]["cmdline"]
    hcs = [e for e in events if e["k"] == "hc"]
    assert all(e["abi"] == "uml" for e in hcs)
    names = {e["name"] for e in hcs}
    assert {"ptrace", "wait4", "mmap", "clone"} <= names
    # UML runs its guest processes with PTRACE_SYSEMU and reads their calls with GETREGS
    reqs = {e["op"].get("cmd") for e in hcs if e["name"] == "ptrace"}
    assert {"sysemu", "getregs", "setregs"} <= reqs
    guest = [e for e in events if e["k"] == "syscall"]
    gnames = {e["name"] for e in guest}
    assert {"execve", "uname", "reboot"} <= gnames
    # each recovered call follows the host ptrace(GETREGS) it was read from
    by_seq = {e["seq"]: e for e in events}
    for e in guest[:50]:
        before = by_seq[e["seq"] - 1]
        assert before["name"] == "ptrace" and before["op"]["cmd"] == "getregs"
        assert before["op"]["pid"] == e["proc"]
    # and each result comes back with UML's PTRACE_SETREGS: the guest's uname succeeded
    rets = [e for e in events if e["k"] == "sysret"]
    assert rets and all(by_seq[e["seq"] - 1]["op"]["cmd"] == "setregs" for e in rets)
    assert any(e["name"] == "uname" and e["ret"] == 0 for e in rets)
    assert any(e["ret"] < 0 for e in rets)              # an -ENOENT or two on the way
    out = b"".join(e["data"] for e in events if e["k"] == "con" and e["dir"] == "out")
    assert b"x86_64 GNU/Linux" in out
    assert events[-1]["k"] == "exit" and events[-1]["reason"] == "shutdown"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(events)))


def _shape(path: Path) -> dict:
    """What a UML recording holds regardless of timing: event kinds, each kind's
    field names, each host call's ``op`` keys, the guest calls recovered and the
    threads seen."""
    with TraceReader(path) as r:
        events = list(r)
    return {"kinds": {e["k"] for e in events},
            "fields": {(e["k"], tuple(sorted(e))) for e in events},
            "ops": {(e["name"], tuple(sorted(e["op"]))) for e in events if e["k"] == "hc"},
            "guest": {e["name"] for e in events if e["k"] == "syscall"},
            "returns": {e["name"] for e in events if e["k"] == "sysret"},
            "cpus": {e["cpu"] for e in events},
            "uname": b"x86_64 GNU/Linux" in b"".join(
                e["data"] for e in events if e["k"] == "con" and e["dir"] == "out")}


def test_the_c_stop_loop_and_the_python_fallback_record_the_same_events(shell_trace,
                                                                        tmp_path):
    """The shared fixture's recording ran the compiled stop loop
    (pvmon/uml/_stoploop.c); PVMON_UML_PYLOOP=1 forces the Python loop. A UML
    boot is not deterministic (times, pids, timer signals), so the two are
    compared by what they hold: the same kinds, fields, ptrace/wait4 decodings,
    the core of the recovered guest calls and console output."""
    from pvmon.uml import tracer
    if tracer._StopLoop is None:
        if shutil.which("cc") or shutil.which("gcc"):
            # pip builds it wherever there is a compiler; missing here means the build broke
            pytest.fail("pvmon.uml._stoploop is not built although a C compiler is installed: "
                        "rerun pip install -e . (or python setup.py build_ext --inplace)")
        pytest.skip("no C compiler: pvmon.uml._stoploop is not built")
    path, _ = shell_trace
    other = tmp_path / "pyloop.pvt"
    p = pvmon("run", "uml-6.1", "--initramfs", "busybox", "--quiet", "--script", SCRIPT,
              "--record", other, env={"PVMON_UML_PYLOOP": "1"})
    assert p.returncode == 0, p.stderr
    a, b = _shape(path), _shape(other)
    assert a["kinds"] == b["kinds"] == {"hc", "syscall", "sysret", "con", "exit"}
    assert a["fields"] == b["fields"]
    shared = {name for name, _ in a["ops"]} & {name for name, _ in b["ops"]}
    assert {"ptrace", "wait4", "read", "write"} <= shared
    assert {o for o in a["ops"] if o[0] in shared} == {o for o in b["ops"] if o[0] in shared}
    # the guest's own calls depend on timing (busybox reads its input as it comes:
    # an lseek one run, none the next), so the two boots share the core, not every call
    core = {"execve", "uname", "mount", "clone", "read", "write", "wait4"}
    for key, want in (("guest", core | {"reboot"}), ("returns", core)):   # reboot never returns
        assert want <= a[key] and want <= b[key], (key, want - a[key], want - b[key])
        assert len(a[key] ^ b[key]) <= 4, (key, a[key] ^ b[key])
    assert a["cpus"] == b["cpus"] and a["uname"] and b["uname"]


def test_trace_tools_read_a_uml_trace(shell_trace):
    path, _ = shell_trace
    info = pvmon("trace", "info", path)
    assert info.returncode == 0, info.stderr
    shown = " ".join(info.stdout.split())      # rich wraps long values
    assert "uml-6.1" in shown and "not deterministic" in shown
    stats = pvmon("trace", "stats", path)
    assert stats.returncode == 0 and "ptrace" in stats.stdout and "getregs" in stats.stdout
    cat = pvmon("trace", "cat", path, "--filter", "syscall")
    assert cat.returncode == 0 and "(execve)" in cat.stdout


def test_a_uml_trace_reads_as_canonical_operations(shell_trace):
    """UML's host calls in the one canonical vocabulary (pvmon/uml/pvops.py):
    resuming a guest process is cpu.iret, the POSIX timer time.oneshot, the
    host's stdout console.write, the power-off power.shutdown."""
    from pvmon.pvops import count, derive
    from pvmon.trace import TraceReader
    path, _ = shell_trace
    with TraceReader(path) as r:
        ops = count(derive(r, abi="uml", header=r.header))
    for op in ("cpu.iret", "time.oneshot", "console.write", "sched.block"):
        assert ops[op] > 0, (op, ops)
    stats = pvmon("trace", "stats", "--pvops", path)
    assert stats.returncode == 0, stats.stderr
    assert "cpu.iret" in stats.stdout and "ptrace(SYSEMU)" in stats.stdout


def test_replay_of_a_uml_trace_is_one_line_and_exit_2(shell_trace):
    path, _ = shell_trace
    for extra in ([], ["--open-loop"]):
        p = pvmon("replay", path, *extra)
        assert p.returncode == 2
        assert p.stderr.strip().splitlines() == [f"pvmon: error: {path}: {NO_REPLAY}"]


def test_two_uml_recordings_diff(shell_trace, tmp_path):
    path, _ = shell_trace
    other = tmp_path / "other.pvt"
    # the second one by `pvmon run --uml` (the spelling): uml-6.1 as well
    p = pvmon("run", "--uml", "--initramfs", "busybox", "--quiet", "--script",
              "ls /bin\\npoweroff -f", "--record", other)
    assert p.returncode == 0, p.stderr
    d = pvmon("diff", path, other)
    assert d.returncode in (0, 1), d.stderr
    assert "uml-6.1" in d.stdout and "ptrace" in d.stdout


def test_sigint_during_a_uml_recording_keeps_every_event_and_the_trace_reads(
        uml_guest, tmp_path):
    path = tmp_path / "int.pvt"
    proc = subprocess.Popen(PVMON + ["run", "uml-6.1", "--initramfs", "busybox", "--quiet",
                                     "--record", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:        # until the first frames are on disk
            if path.exists() and path.stat().st_size > 4096:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "every event before the stop is kept" in err
    with TraceReader(path) as r:
        events = list(r)
        assert r.complete
    assert len(events) > 100
    assert events[-1]["k"] == "exit" and events[-1]["reason"] == "interrupted"
    assert events[-1]["detail"] == "interrupted by SIGINT"
    # UML's own clean-up on pvmon's SIGTERM took its guest processes with it (a
    # process SIGKILLed a moment ago may take that moment to go)
    deadline = time.monotonic() + 3
    while _processes_of(uml_guest.binary) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(uml_guest.binary) == []


def _processes_of(binary: Path) -> list[int]:
    """Pids whose executable is ``binary`` (UML's guest processes are clones of it)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if Path(os.readlink(d / "exe")) == binary:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_a_missing_uml_binary_is_one_line_naming_the_package(tmp_path):
    p = pvmon("run", "uml-6.1", "--initramfs", "busybox", env={"PVMON_CACHE": str(tmp_path)})
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "user-mode-linux" in lines[0]
    assert "pvmon guests fetch uml-6.1" in lines[0]


def test_options_that_do_not_apply_to_uml_are_one_line(uml_guest):
    for opts in (["--gdb", ":1234"], ["--mode", "pvh"], ["--backend", "xen-4.17"]):
        p = pvmon("run", "uml-6.1", *opts)
        assert p.returncode == 2
        assert len(p.stderr.strip().splitlines()) == 1 and "does not apply" in p.stderr
    p = pvmon("run", "pvtest-v2", "--uml")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "--uml runs a User-Mode Linux kernel" in p.stderr


def test_backends_lists_uml_with_replay_out_of_scope():
    p = pvmon("backends")
    assert p.returncode == 0
    assert "uml  native" in p.stdout and "replay against another host is out of scope" in \
        " ".join(p.stdout.split())


def test_guests_list_shows_uml(uml_guest):
    p = pvmon("guests", "list")
    assert p.returncode == 0 and "uml-6.1" in p.stdout


def test_the_syscall_table_matches_the_host_headers():
    from pvmon.uml.syscalls import SYSCALLS
    hdr = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not hdr.is_file():
        pytest.skip("no kernel UAPI headers here")
    import re
    for line in hdr.read_text().splitlines():
        m = re.match(r"#define __NR_(\w+) (\d+)", line)
        if m:
            assert SYSCALLS[int(m[2])] == m[1]
