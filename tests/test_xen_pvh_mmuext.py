"""mmuext_op from a PVH domain as Xen 4.17 answers it (do_mmuext_op,
xen/arch/x86/mm.c@stable-4.17): the page owner must be a PV domain before any
entry is read, so a PVH guest's own MMUEXT_SET_LDT or pin is -EINVAL with nothing
done, as real Xen 4.17.7 answered a PVH dom0 (docs/xen-oracle.md, difference 26;
pvmon/backends/xen/pvh/hvm.py hc_mmuext_op_hvm)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.guests.catalog import resolve
from pvmon.session import Session

IMAGES = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images"
MMUEXT_OP = 26                     # __HYPERVISOR_mmuext_op (xen.h)


@pytest.fixture(scope="module")
def pvh():
    s = Session(resolve(str(IMAGES / "pvtest-v2-pvh.elf")), mode="pvh")
    res = s.run(timeout=120)
    assert res.exit_kind == "shutdown"
    return s


def _mmuext(s, cmd: int, foreigndom: int) -> tuple[int, int]:
    """One mmuext_op through the PVH domain's hypercall table, with the entry and
    a done counter (preset to 7) in a free page of guest memory; (rc, done)."""
    b = s.backend
    va = 0xFFFFFFFF80000000 + 0x1F0000          # kernel map, below the image
    ops, done = va, va + 0x100
    b._write(ops, struct.pack("<I4xQQ", cmd, 0, 0))
    b._write(done, struct.pack("<I", 7))
    rc = b.table[MMUEXT_OP](ops, 1, done, foreigndom, 0, 0)
    return rc, struct.unpack("<I", b._read(done, 4))[0]


def test_a_pvh_domain_gets_einval_for_its_own_set_ldt_and_pins(pvh):
    assert _mmuext(pvh, 13, abi.DOMID_SELF) == (-abi.EINVAL, 7)   # MMUEXT_SET_LDT
    assert _mmuext(pvh, 0, abi.DOMID_SELF) == (-abi.EINVAL, 7)    # MMUEXT_PIN_L1_TABLE
    assert _mmuext(pvh, 4, abi.DOMID_SELF) == (-abi.EINVAL, 7)    # MMUEXT_UNPIN_TABLE


def test_a_pvh_domain_naming_another_page_owner_gets_get_pg_owner_s_answer(pvh):
    assert _mmuext(pvh, 0, abi.DOMID_IO)[0] == -abi.EINVAL        # dom_io is not PV
    assert _mmuext(pvh, 0, abi.DOMID_XEN)[0] == -abi.EINVAL
    assert _mmuext(pvh, 0, pvh.backend.domid)[0] == -abi.ESRCH    # itself by id
    assert _mmuext(pvh, 0, 0)[0] == -abi.EPERM                    # xsm_mmuext_op
    assert _mmuext(pvh, 0, 77)[0] == -abi.ESRCH                   # no such domain
