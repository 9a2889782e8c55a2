"""The sample corpus under traces/ still verifies against the current engine:
a format or engine change that breaks old traces fails here. Built-in guests
always (seconds); the Debian ones are marked slow and debian."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.trace import TraceReader
from pvmon.trace.xentrace.reader import XentraceReader

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "traces"
sys.path.insert(0, str(ROOT / "scripts"))
from make_corpus import BUILTIN_GUESTS, builtin_path, xen_versions

BUILTIN = [builtin_path(g, v) for v in xen_versions() for g in BUILTIN_GUESTS]
#: the other built-in guests' traces (PVH, KVM, lguest, VMI), as make_corpus.py writes them
OTHER_BUILTIN = sorted(set(TRACES.glob("pvtest-*--*.pvt")) - set(BUILTIN))
DEBIAN = sorted(TRACES.glob("debian-*.pvt"))


def _verify(path: Path) -> None:
    run = open_run(path)
    try:
        report = replay_closed(run)
    finally:
        run.reader.close()
    assert report.exit_code == 0, (path.name, report.divergences[:1])


def test_the_corpus_holds_every_built_in_guest_on_every_xen_version():
    missing = [p.name for p in BUILTIN if not p.is_file()]
    assert not missing, f"run scripts/make_corpus.py --builtin: missing {missing}"
    assert len(BUILTIN) >= 20
    for p in BUILTIN:
        with TraceReader(p) as r:
            assert r.complete and r.header["backend"]["name"] == p.stem.split("--")[1]


@pytest.mark.parametrize("path", BUILTIN + OTHER_BUILTIN, ids=lambda p: p.stem)
def test_a_built_in_corpus_trace_verifies_on_the_current_engine(path):
    _verify(path)


def test_the_xentrace_sample_reads_back():
    with XentraceReader(TRACES / "pvtest-v2--xen-4.17.xt", strict=True) as r:
        assert r.cpus == [0] and sum(1 for _ in r.records()) > 300


@pytest.mark.slow
@pytest.mark.debian
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: p.stem)
def test_a_debian_corpus_trace_verifies_on_the_current_engine(path):
    _verify(path)
