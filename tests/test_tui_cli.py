"""`pvmon boot` and `pvmon view` on the command line: bad input is one readable
line and exit status 2, before any screen opens; `boot --headless` stays a
scriptable run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pvmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvmon", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvmon: error:")
    return lines[0]


def test_boot_headless_streams_the_console_and_prints_the_summary():
    p = pvmon("boot", "--headless")
    assert p.returncode == 0, p.stderr
    assert "119 passed, 0 failed" in p.stdout
    assert "exit: shutdown - SCHEDOP_shutdown(poweroff)" in p.stderr


@pytest.mark.parametrize("args, says", [
    (("boot", "no-such-guest"), "no-such-guest"),
    (("boot", "pvtest-v2", "--backend", "xen-9.99"), "unknown backend"),
    (("boot", "pvtest-v2", "--memory", "12"), "memory size"),
])
def test_boot_with_bad_input_fails_before_the_tui_opens(args, says):
    assert says in one_line_error(pvmon(*args))


def test_view_of_a_missing_or_corrupt_trace_is_one_line(tmp_path):
    assert "cannot open trace" in one_line_error(pvmon("view", str(tmp_path / "none.pvt")))
    bad = tmp_path / "bad.pvt"
    bad.write_bytes(b"this is not a trace" * 10)
    assert "not a pvmon trace" in one_line_error(pvmon("view", str(bad)))


# -- without a terminal -------------------------------------------------------------------
# Textual reads keys from stdin and draws on stderr; at end of file on stdin it
# used to spin at 100 % of a core forever. Every TUI command now says "no
# terminal" in one line and exits 2 at once, before anything is created or run.

@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    from tests.tui_support import record
    return record("pvtest-v2", tmp_path_factory.mktemp("cli") / "v2.pvt")


def no_tty(*args: str) -> subprocess.CompletedProcess[str]:
    """Run pvmon with stdin at end of file and stdout/stderr piped, as cron or CI would."""
    return subprocess.run([sys.executable, "-m", "pvmon", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def test_view_without_a_terminal_says_so_and_exits_2(trace):
    line = one_line_error(no_tty("view", str(trace)))
    assert "no terminal" in line and "pvmon trace cat" in line


def test_boot_without_a_terminal_points_to_headless_and_creates_no_trace(tmp_path):
    out = tmp_path / "never.pvt"
    line = one_line_error(no_tty("boot", "--record", str(out)))
    assert "no terminal" in line and "pvmon boot --headless" in line and "pvmon run" in line
    assert not out.exists()
    # bad input is still reported as such, not as a missing terminal
    assert "unknown backend" in one_line_error(no_tty("boot", "--backend", "xen-9.99"))


def test_replay_tui_without_a_terminal_says_so_before_replaying(trace):
    line = one_line_error(no_tty("replay", str(trace), "--tui"))
    assert "no terminal" in line and "--json" in line


@pytest.mark.parametrize("args, says", [
    (("--tui", "--json"), "--tui and --json are exclusive"),
    (("--tui", "--open-loop", "--backend", "xen-3.4,xen-4.21"), "--tui shows one replay"),
])
def test_replay_tui_with_options_it_cannot_honour_is_refused(trace, args, says):
    assert says in one_line_error(no_tty("replay", str(trace), *args))


def test_view_with_stdin_at_eof_on_a_real_terminal_exits_at_once(trace):
    """The reported case: a terminal on stdout and stderr (a pty here), stdin
    from /dev/null. Before, the TUI drew its screen and spun forever."""
    import os
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "pvmon", "view", str(trace)],
                             stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT)
        os.close(slave)
        rc = p.wait(timeout=60)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:          # EIO: the child's side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    text = out.decode(errors="replace")
    assert rc == 2, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "no terminal (stdin is not one)" in lines[0], text
    assert "\x1b[" not in text      # no screen was drawn
