"""What the CLI tells users, checked through the real command in a subprocess:
diff against a truncated trace, the console printed once, profiles under one
name, unknown filter terms, the engine's one story, shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pvmon.trace import TraceReader

PVMON = [sys.executable, "-m", "pvmon.cli"]


def pvmon(*args, env=None, **kw):
    return subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def v2_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "v2.pvt"
    p = pvmon("run", "pvtest-v2", "--quiet", "--record", path)
    assert p.returncode == 0, p.stderr
    return path


# ------------------------------------------------------------------ diff
def test_diff_against_a_truncated_trace_says_so_and_counts_what_each_side_holds(
        v2_trace, tmp_path):
    cut = tmp_path / "cut.pvt"
    with TraceReader(v2_trace) as r:
        cut.write_bytes(v2_trace.read_bytes()[:r.frames[0].end + 10])
        full_calls = sum(1 for e in r if e["k"] == "hc")
    with TraceReader(cut) as r:
        last = r.truncated_after
        cut_calls = sum(1 for e in r if e["k"] == "hc")
    assert 0 < cut_calls < full_calls
    p = pvmon("diff", v2_trace, cut, env={"COLUMNS": "200"})
    assert p.returncode == 1, p.stderr
    out = p.stdout
    assert f"truncated after event {last}" in out
    assert f"the right trace is truncated after event {last}" in out
    assert f"({full_calls:,} hypercalls" in out and f"({cut_calls:,} hypercalls" in out
    assert f"mechanism: both syscall (left x{full_calls:,}, right x{cut_calls:,})" in out
    assert "after the end of the truncated right" in out
    doc = json.loads(pvmon("diff", v2_trace, cut, "--json").stdout)
    assert doc["right"]["status"] == f"truncated after event {last}"
    assert doc["right"]["hypercalls"] == cut_calls and doc["left"]["status"] == "complete"
    assert doc["runs"][-1]["past_truncated_end"] is True
