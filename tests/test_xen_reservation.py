"""A page a 64-bit PV domain gives back (XENMEM_decrease_reservation) and
takes again (XENMEM_populate_physmap, increase_reservation) as Xen 4.17
hands it out: with the contents it had when it was freed.

free_domheap_pages (xen/common/page_alloc.c@stable-4.17) scrubs a freed page
only when its domain is dying, with ``scrub-domheap`` or on a
CONFIG_SCRUB_DEBUG build; real Xen 4.17.7 (release) gave check 547 of
pvtest-v2-rules its own page back with the old contents (docs/xen-oracle.md,
difference 19). The memory_op hypercall of pvmon's Xen backend is called on
a real attached pvtest-v2 domain (the engine built, the guest not yet run).
"""

import struct

import pytest

from pvmon.backends.xen import abi
from pvmon.guests.catalog import resolve
from pvmon.session import Session

MEMORY_OP = abi.HYPERCALL_NUMBERS["memory_op"]
INCREASE, DECREASE, CURRENT, POPULATE = 0, 1, 3, 6
FRAME = 1024          # a frame of the domain nothing maps (above the builder's tree)
OLD = b"\x5a" * 4096


@pytest.fixture
def b():
    """The Xen backend of an attached pvtest-v2 session."""
    return Session(resolve("pvtest-v2")).backend


def _reservation(b, cmd: int, frame: int) -> tuple[int, int]:
    """One-extent XENMEM ``cmd`` (struct xen_memory_reservation on the boot
    stack, its extent after it): (return value, the extent afterwards)."""
    arg = b.layout.stack_top_va - 0x100
    ext = arg + 0x40
    b._write(ext, struct.pack("<Q", frame))
    b._write(arg, struct.pack("<QQIIH", ext, 1, 0, 0, abi.DOMID_SELF))
    rc = b.call(MEMORY_OP, (cmd, arg, 0, 0, 0))
    return rc, struct.unpack("<Q", b._read(ext, 8))[0]


def _current(b) -> int:
    arg = b.layout.stack_top_va - 0x100
    b._write(arg, struct.pack("<H", abi.DOMID_SELF))
    return b.call(MEMORY_OP, (CURRENT, arg, 0, 0, 0))


@pytest.mark.parametrize("take", [POPULATE, INCREASE])
def test_a_page_given_back_and_taken_again_keeps_its_contents(b, take):
    b.m.write_phys(FRAME << 12, OLD)
    cur = _current(b)
    assert _reservation(b, DECREASE, FRAME)[0] == 1 and _current(b) == cur - 1
    rc, frame = _reservation(b, take, 0)
    assert (rc, frame) == (1, FRAME) and _current(b) == cur
    assert b.m.read_phys(FRAME << 12, 4096) == OLD
