"""Helpers for the hostile-input tests: the pvmon CLI in a subprocess, and
traces rewritten with a crafted header or crafted events."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pvmon.trace.reader import TraceReader
from pvmon.trace.writer import TraceWriter

ROOT = Path(__file__).resolve().parent.parent


def pvmon(*args: str, cwd: Path | None = None, stdin: str | None = "",
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pvmon ARGS`` with this tree first on the import path; wide
    output so that Rich does not wrap the lines a test looks for."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pvmon", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd or ROOT, env=full, check=False,
                          input=stdin)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    """The single ``pvmon: error:`` line of a refused command (exit 2, no traceback)."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvmon: error:"), p.stderr
    return lines[0]


def rewrite(src: Path, dst: Path, header: Callable[[dict], None] | None = None,
            event: Callable[[dict], None] | None = None) -> Path:
    """Copy trace ``src`` to ``dst``, letting ``header`` and ``event`` change
    the header and each event in place (what a crafted file could say)."""
    with TraceReader(src) as r:
        h = r.header
        if header is not None:
            header(h)
        with TraceWriter(dst, h) as w:
            for ev in r:
                if event is not None:
                    event(ev)
                w.append(ev)
    return dst


def set_field(dotted: str, value) -> Callable[[dict], None]:
    """A ``header`` function for :func:`rewrite` setting ``machine.memory`` etc."""
    *parents, last = dotted.split(".")

    def apply(h: dict) -> None:
        d = h
        for k in parents:
            d = d[k]
        d[last] = value
    return apply
