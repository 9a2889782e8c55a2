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
    assert "118 passed, 0 failed" in p.stdout
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
