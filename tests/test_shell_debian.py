"""Stock Debian kernels boot to a busybox shell on hvc0, run typed commands,
power off through SCHEDOP_shutdown, and a recorded session replays event for
event from its recorded console input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.dispatch.console_input import script_lines
from pvmon.guests.initramfs import ensure_initramfs, initrd_from_header
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

pytestmark = [pytest.mark.debian, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent

#: Each command and a piece of the output it must print.
COMMANDS = [
    ("uname -a", "x86_64 GNU/Linux"),
    ("ls /proc", "cpuinfo"),
    ("cat /proc/cpuinfo", "pvmon virtual CPU (Xen PV)"),
    ("dmesg | tail -3", "with environment"),
    ("free", "Mem:"),
    ("echo sum=$((6*7))", "sum=42"),
    ("poweroff -f", ""),
]
SCRIPT = "".join(c + "\n" for c, _ in COMMANDS)


@pytest.fixture(scope="session")
def busybox_initrd() -> bytes:
    return ensure_initramfs("busybox").read_bytes()


def _shell(img, initrd: bytes, record: Path | None = None):
    sess = Session(img, initrd=initrd, initrd_info={"name": "busybox"},
                   script=script_lines(SCRIPT), record=record)
    return sess.run(timeout=600)


def _check_session(res, release: str) -> str:
    text = res.console.decode(errors="replace")
    assert "Run /init as init process" in text
    user = text.split("Run /init as init process", 1)[1]
    assert f"busybox v1.35.0 on {release}" in user
    for cmd, want in COMMANDS:
        assert f"# \x1b[6n{cmd}\r\n" in user or f"# {cmd}\r\n" in user, cmd
        assert want in user, (cmd, want)
    assert release in user.split("uname -a", 1)[1]
    for marker in ("BUG:", "Oops", "general protection fault", "segfault", "Kernel panic"):
        assert marker not in text, marker
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0, (res.exit_kind, res.detail)
    assert res.clean
    return user


@pytest.fixture(scope="session")
def shell612(debian612, busybox_initrd, tmp_path_factory):
    trace = tmp_path_factory.mktemp("shell") / "shell-6.12.pvt"
    return _shell(debian612, busybox_initrd, trace), trace


def test_debian_6_12_runs_a_scripted_busybox_session(shell612, debian612):
    res, _ = shell612
    _check_session(res, debian612.release)


def test_debian_6_12_shell_session_is_deterministic(shell612, debian612, busybox_initrd,
                                                    tmp_path):
    """Same kernel, initrd and typed lines: the same event stream, byte for byte."""
    _, first = shell612
    second = tmp_path / "again.pvt"
    _shell(debian612, busybox_initrd, second)
    _same_events(first, second)


@pytest.fixture(scope="session")
def shell61_cli(debian61, tmp_path_factory):
    """`pvmon run debian-6.1 --initramfs busybox --record T` with the commands on stdin."""
    ensure_initramfs("busybox")
    trace = tmp_path_factory.mktemp("shell") / "shell-6.1.pvt"
    p = subprocess.run([sys.executable, "-m", "pvmon", "run", "debian-6.1", "--initramfs",
                        "busybox", "--record", str(trace)], input=SCRIPT.encode(),
                       capture_output=True, cwd=REPO, timeout=600, check=False)
    return p, trace


def test_debian_6_1_runs_commands_piped_into_pvmon_run(shell61_cli, debian61):
    p, trace = shell61_cli
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert b"exit: shutdown - SCHEDOP_shutdown(poweroff)" in p.stderr

    class Res:
        console = p.stdout
        exit_kind, shutdown_reason, clean, detail = "shutdown", 0, True, ""
    _check_session(Res, debian61.release)
    with TraceReader(trace) as r:
        typed = [e["data"] for e in r if e["k"] == "con" and e["dir"] == "in"]
    assert typed == [c.encode() + b"\n" for c, _ in COMMANDS]


def test_a_recorded_shell_session_replays_event_for_event(shell61_cli, debian61, busybox_initrd,
                                                          tmp_path):
    """Replay (verify): rerun the recorded guest, feeding each recorded console
    input back at its recorded event seq, and get the same event stream."""
    _, trace = shell61_cli
    with TraceReader(trace) as r:
        header = r.header
        inputs = [(e["seq"], e["data"], e.get("at")) for e in r
                  if e["k"] == "con" and e["dir"] == "in"]
    assert header["machine"]["initrd"]["sha256"] and len(inputs) == len(COMMANDS)
    replayed = tmp_path / "replay.pvt"
    initrd = initrd_from_header(header["machine"]["initrd"])
    assert initrd == busybox_initrd
    sess = Session(debian61, initrd=initrd, initrd_info=header["machine"]["initrd"],
                   cmdline=header["machine"]["cmdline"], record=replayed,
                   idle_limit_ns=header["machine"]["idle_limit_ns"])
    for seq, data, at in inputs:
        sess.dispatch.schedule_input(seq, data, at)
    res = sess.run(timeout=600)
    assert res.clean
    _same_events(trace, replayed)
    # and the same through pvmon replay's own path (finds the initrd by the header)
    from pvmon.replay.closed import replay_closed
    from pvmon.replay.source import open_run
    rep = replay_closed(open_run(trace))
    assert rep.total == 0 and rep.compared == len(TraceReader(trace))


def _same_events(a: Path, b: Path) -> None:
    with TraceReader(a) as ra, TraceReader(b) as rb:
        n = 0
        for ea, eb in zip(ra, rb, strict=True):
            assert ea == eb, f"event {n} differs:\n{ea}\n{eb}"
            n += 1
        assert n > 50_000   # a boot plus a shell session: ~94,000 events (TSC reads in runs)


def test_keys_typed_on_a_terminal_reach_the_guest_and_ctrl_bracket_leaves(debian61, tmp_path):
    """`pvmon run` on a terminal: raw keys go to hvc0 as typed; Ctrl-] ends the run,
    and the recording verifies up to that end."""
    import os
    import pty
    import select
    import time

    ensure_initramfs("busybox")
    trace = tmp_path / "tty.pvt"
    pid, fd = pty.fork()
    if pid == 0:   # the child: pvmon with the pty as its terminal
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "pvmon", "run", "debian-6.1",
                                  "--initramfs", "busybox", "--record", str(trace)])
    seen = bytearray()

    def read_until(needle: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        while needle not in seen:
            left = end - time.monotonic()
            assert left > 0, f"no {needle!r} on the terminal; tail: {bytes(seen[-500:])!r}"
            if select.select([fd], [], [], min(left, 1.0))[0]:
                try:
                    seen.extend(os.read(fd, 4096))
                except OSError:
                    break

    try:
        read_until(b"~ # ", 300)
        os.write(fd, b"echo typed-$((40+2))\r")
        read_until(b"typed-42", 120)
        os.write(fd, b"\x1d")
        read_until(b"detached by the user", 120)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 1   # not a clean guest shutdown
    assert b"Ctrl-] leaves" in seen
    from pvmon.replay.closed import replay_closed
    from pvmon.replay.source import open_run
    run = open_run(trace)
    assert run.header["machine"]["idle_limit_ns"] is None   # a terminal never runs out
    rep = replay_closed(run)
    assert rep.total == 0 and rep.exit_code == 0, rep.verdict
    assert "matches the recording up to its end (detached at event" in rep.verdict
