"""How `pvmon run` ends its process: after the summary it skips the
interpreter's teardown, with the run's exit status, everything printed and
the trace complete; under a profiler it exits as any program does, so the
profiler's report is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pvmon
from pvmon.trace import TraceReader


def test_a_run_ends_with_its_status_its_whole_summary_and_a_complete_trace(tmp_path):
    path = tmp_path / "v2.pvt"
    p = subprocess.run([sys.executable, "-m", "pvmon", "run", "--record", str(path)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    assert "pvtest" in p.stdout
    assert p.stderr.rstrip().endswith(" events)") and "trace:" in p.stderr
    with TraceReader(path) as r:
        events = list(r)
    assert events[-1]["k"] == "exit" and f"({len(events)} events)" in p.stderr


def test_a_crashed_guest_still_exits_1():
    image = Path(pvmon.__file__).parent / "guests" / "images" / "pvtest-v2-fail.elf"
    p = subprocess.run([sys.executable, "-m", "pvmon", "run", str(image), "--quiet"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 1 and "event upcalls:" in p.stderr


def test_a_profiled_run_exits_normally_so_the_profile_is_written(tmp_path):
    prof = tmp_path / "run.prof"
    p = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "pvmon", "run",
                        "--quiet"], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    assert prof.stat().st_size > 0
