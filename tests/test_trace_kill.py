"""A recorder killed with SIGKILL leaves a readable, truncated trace with every written frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pvmon.trace import TraceReader
from pvmon.trace.synth import synthetic_events

RECORDER = textwrap.dedent("""
    import sys
    from pvmon.trace import TraceWriter
    from pvmon.trace.synth import synthetic_events, synthetic_header
    w = TraceWriter(sys.argv[1], synthetic_header(), frame_events=50)
    print("started", flush=True)
    for ev in synthetic_events(10**7, seed=3):
        w.append(ev)
        if (ev["seq"] + 1) % 500 == 0:
            w.flush()
            print(ev["seq"], flush=True)
""")


@pytest.mark.parametrize("reports", [0, 1, 4, 12])
def test_sigkill_leaves_every_flushed_frame_readable(tmp_path, reports):
    path = tmp_path / "killed.pvt"
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        flushed = -1
        for _ in range(reports):
            flushed = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with TraceReader(path) as r:
        assert not r.complete
        assert r.truncated_after == len(r) - 1
        assert len(r) >= flushed + 1  # everything flushed before the kill survived
        assert all(f.count == 50 for f in r.frames)
        assert list(r) == list(synthetic_events(len(r), seed=3))
