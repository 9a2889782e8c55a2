"""Issue 21: every ABI's mapping is complete for the calls its backend
implements: each call gives canonical operations other than ``unmapped``, or
is an explicit "no operation" of its mapping (ROM protocol entries,
native-equivalent register accesses). Xen PV and KVM: tests/test_pvops.py."""

from __future__ import annotations

import pytest

from pvmon.backends.lguest import abi as lguest_abi
from pvmon.backends.lguest import pvops as lguest_pvops
from pvmon.backends.vmi import abi as vmi_abi
from pvmon.backends.vmi import pvops as vmi_pvops


def _ops(mod, name: str, nr: int) -> list[str]:
    ev = {"k": "hc", "abi": mod.__name__.split(".")[2], "nr": nr, "name": name,
          "args": [1, 2, 3, 4, 5], "ret": 0, "seq": 1, "t": 1, "cpu": 0}
    return [o.op for o in mod.translate(ev, mod.new_state(None))]


@pytest.mark.parametrize("nr, name", sorted(lguest_abi.HYPERCALLS_4_0.items()))
def test_every_lguest_hypercall_has_a_canonical_operation(nr, name):
    ops = _ops(lguest_pvops, name, nr)
    assert ops and "unmapped" not in ops, (name, ops)


@pytest.mark.parametrize("nr, name", sorted(vmi_abi.HYPERCALLS.items()))
def test_every_vmi_call_has_a_canonical_operation_or_is_an_explicit_none(nr, name):
    ops = _ops(vmi_pvops, name, nr)
    assert "unmapped" not in ops, (name, ops)
    if not ops:     # no operation: the mapping must say so by name, not by accident
        assert name in vmi_pvops.NO_OPERATION, name
