"""Progress on long work: Rich's display on stderr when it is a terminal
(replays, the open-loop matrix, exports), nothing at all when it is piped."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest

PVMON = [sys.executable, "-m", "pvmon.cli"]
ENV = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}


def _on_a_terminal(args, timeout=300):
    """Run pvmon with stderr on a pseudo-terminal; returns (exit status, stdout,
    what the terminal showed)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(PVMON + [str(a) for a in args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=ENV)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            p.kill()
            raise AssertionError("pvmon hung")
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        shown += data
    out = p.stdout.read().decode()
    os.close(master)
    return p.wait(), out, shown.decode(errors="replace")


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "v2.pvt"
    p = subprocess.run(PVMON + ["run", "--quiet", "--record", str(path)], env=ENV,
                       capture_output=True, timeout=120, check=False)
    assert p.returncode == 0
    return path


def _cases(trace, tmp):
    return [
        (["replay", trace, "--json"], "replaying v2.pvt"),
        (["replay", trace, "--open-loop", "--backend", "xen-4.21", "--json"],
         "open-loop replay of v2.pvt"),
        (["replay", "--open-loop", trace, trace, "--backend", "xen-3.4,xen-4.21", "-j", "1",
          "--json"], "open-loop matrix"),
        (["trace", "export", trace, "--format", "jsonl", "-o", tmp / "x.jsonl"],
         "exporting v2.pvt"),
    ]


def test_long_work_shows_rich_progress_on_a_terminal_and_leaves_stdout_alone(v2, tmp_path):
    for args, what in _cases(v2, tmp_path):
        status, out, shown = _on_a_terminal(args)
        assert status in (0, 1), (args, shown)
        assert what in shown, (args, shown)
        assert "\x1b[" in shown                      # drawn, then cleared (transient)
        if "--json" in args:
            json.loads(out)                          # stdout is still plain JSON


def test_progress_is_silent_when_stderr_is_piped(v2, tmp_path):
    for args, what in _cases(v2, tmp_path):
        p = subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                           env=ENV, timeout=300, check=False)
        assert p.returncode in (0, 1), (args, p.stderr)
        assert what not in p.stderr and "\x1b[" not in p.stderr, (args, p.stderr)


@pytest.mark.debian
@pytest.mark.slow
def test_a_closed_loop_replay_shows_how_far_it_got(debian612, tmp_path):
    trace = tmp_path / "d612.pvt"
    p = subprocess.run(PVMON + ["run", "debian-6.12", "--quiet", "--record", str(trace)],
                       env=ENV, capture_output=True, timeout=300, check=False)
    assert p.returncode in (0, 1)
    status, _, shown = _on_a_terminal(["replay", trace])
    assert status == 0, shown
    counts = [int(a.replace(",", "")) for a, _ in re.findall(r"(\d[\d,]*)/(\d[\d,]*)", shown)]
    assert any(0 < c for c in counts), shown        # the poll saw the replay move


@pytest.mark.debian
def test_a_fetch_shows_its_current_step_on_a_terminal(debian612):
    status, out, shown = _on_a_terminal(["guests", "fetch", "debian-6.12"])
    assert status == 0, shown
    assert "debian-6.12: resolving the newest package" in shown
    assert "debian-6.12: " in out and "resolving" not in out
