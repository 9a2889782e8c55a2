"""Writable-page-table emulation accounts exactly the entries a write
changed: the run-by-run comparison finds the same (slot, old, new) triples,
in slot order, as comparing all 512 entries one by one."""

from __future__ import annotations

import random
import struct

from pvmon.backends.xen.pv.ptwr import _changed_entries

_TABLE = struct.Struct("<512Q")


def _one_by_one(before: bytes, after: bytes) -> list[tuple[int, int, int]]:
    olds, news = _TABLE.unpack(before), _TABLE.unpack(after)
    return [(i, olds[i], news[i]) for i in range(512) if olds[i] != news[i]]


def test_changed_entries_are_found_in_slot_order_whatever_the_write_changed():
    rng = random.Random(19)
    for _ in range(2000):
        before = bytearray(rng.randbytes(4096))
        after = bytearray(before)
        for _ in range(rng.choice([0, 1, 1, 2, 3, 8, 64, 600])):
            after[rng.randrange(4096)] = rng.randrange(256)
        if rng.random() < 0.1:                       # a whole run, or the table, rewritten
            start = rng.choice([0, 504, 512, 4088])
            after[start:start + rng.choice([8, 16, 512])] = rng.randbytes(8) * 64
            del after[4096:]
        assert _changed_entries(bytes(before), bytes(after)) == \
            _one_by_one(bytes(before), bytes(after))
