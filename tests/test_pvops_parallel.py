"""`pvmon trace pvops` counts in parallel (issue 21's cost figure): the same
counts, in the same order, as the serial derivation. Real traces only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvmon.backends.xen import pvops as xen_pvops
from pvmon.pvops import derive
from pvmon.pvops.render import OpCounts
from pvmon.trace import stats
from pvmon.trace.reader import TraceReader

GOLDEN_V2 = Path(__file__).parent / "data" / "golden-pvtest-v2.pvt"


@pytest.fixture
def split_small_traces(monkeypatch):
    """Read even the 3-frame stored recording as one run per frame."""
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES", 0)
    monkeypatch.setattr(stats, "PARALLEL_MIN_EVENTS", 0)
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES_PER_JOB", 1)


def test_counting_in_parallel_gives_the_serial_counts_in_the_serial_order(split_small_traces):
    with TraceReader(GOLDEN_V2) as r:
        assert len(r.frames) >= 3
        serial = OpCounts.of(derive(r, "xen", r.header))
        parallel = OpCounts.of_trace(r, "xen", r.header, jobs=3)
    assert json.dumps(parallel.to_dict()) == json.dumps(serial.to_dict())
    assert parallel.total == serial.total > 0


def test_a_send_on_a_port_bound_for_ipis_before_a_run_makes_the_merge_give_up():
    earlier = xen_pvops.XenState(ipi_ports={5, 6})
    later = xen_pvops.resume_state()
    later.unknown.add(5)                 # the run counted a send on port 5 as irq.notify
    assert xen_pvops.continue_state(earlier, later) is None


def test_ports_bound_or_closed_in_a_run_carry_to_the_next():
    earlier = xen_pvops.XenState(ipi_ports={5, 6})
    later = xen_pvops.resume_state()
    later.touched.update({6: False, 9: True})
    later.unknown.add(7)                 # not an IPI port before the run: irq.notify is right
    after = xen_pvops.continue_state(earlier, later)
    assert after is not None and after.ipi_ports == {5, 9}
