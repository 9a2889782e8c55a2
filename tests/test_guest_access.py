"""The recording guest access (pvmon/dispatch/access.py): what a backend's
machine-memory access records, and what it answers outside the machine."""

import pytest

from pvmon.backends.base import GuestFault
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.engine.machine import Machine

MiB = 1 << 20


@pytest.fixture
def access():
    return RecordingGuestAccess(Machine(2 * MiB), record=True)


def test_a_machine_write_and_read_inside_ram_are_recorded_with_their_bytes(access):
    access.begin()
    access.write_machine(0x1ff8, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    access.write_machine(0x3000, bytearray(b"ab"))
    assert access.read_machine(0x1ff8, 8) == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert access.writes == [["p", 0x1ff8, b"\x01\x02\x03\x04\x05\x06\x07\x08"],
                             ["p", 0x3000, b"ab"]]
    assert type(access.writes[1][2]) is bytes
    assert access.reads == [["p", 0x1ff8, b"\x01\x02\x03\x04\x05\x06\x07\x08"]]


@pytest.mark.parametrize("ma", [-8, 2 * MiB - 7, 2 * MiB, 1 << 52])
def test_a_machine_access_outside_ram_is_a_guest_fault_and_records_nothing(access, ma):
    access.begin()
    with pytest.raises(GuestFault) as exc:
        access.write_machine(ma, b"\xff" * 8)
    assert exc.value.address == ma and exc.value.write
    with pytest.raises(GuestFault):
        access.read_machine(ma, 8)
    assert access.reads == [] and access.writes == []
    assert access.read_machine(2 * MiB - 8, 8) == bytes(8)     # nothing written at the end
