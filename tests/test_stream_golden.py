"""A refactor of session, dispatch or backend contract changes nothing a
recording holds: each built-in guest records the same event stream, byte for
byte, as pvmon did when the streams below were taken (main at 861b515, before
the dispatch core was split from the Xen PV module).

``tests/data/golden-pvtest-v2.pvt`` is that recording of pvtest-v2 (compared
frame by frame; the header differs only in host, time and format version);
pvtest-v1 and pvtest-v2-rules are compared by the sha256 of their frames'
bytes.

A change that is *meant* to change what a built-in guest records (a new Xen
rule, a rebuilt guest) regenerates them: ``python tests/test_stream_golden.py``
rewrites the file and prints the digests to paste below; say why in the commit.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from pvmon.guests.catalog import resolve
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from pvmon.trace.render import describe

GOLDEN_V2 = Path(__file__).parent / "data" / "golden-pvtest-v2.pvt"

#: guest -> (events, sha256 of every frame's msgpack bytes in order), xen-4.17.
DIGESTS = {
    "pvtest-v1": (3605, "35bd22c072c31af57aee2f8965100282bf2c2ca7420d1cd26ac210505cbd66b8"),
    "pvtest-v2": (3605, "f94b187b00e0fc788aad393069a6e7e9438c37a39e50564d6e5b531f88345057"),
    "pvtest-v2-rules": (6956,
                        "a1fd47b67d545e87d0bc7dcf79811fba18721b00b03729b0d6e48d87fa6de2ad"),
}


def _record(guest: str, path: Path) -> TraceReader:
    result = Session(resolve(guest), record=path, keep_console=False).run()
    assert result.exit_kind == "shutdown", (result.exit_kind, result.detail)
    return TraceReader(path)


def _digest(r: TraceReader) -> tuple[int, str]:
    h = hashlib.sha256()
    for i in range(len(r.frames)):
        h.update(r.frame_bytes(i))
    return len(r), h.hexdigest()


def _first_difference(golden: TraceReader, fresh: TraceReader) -> str:
    for i, (a, b) in enumerate(zip(golden.events(), fresh.events(), strict=False)):
        if a != b:
            return f"event {i}: recorded {describe(a)!r}, now {describe(b)!r}"
    return f"{len(golden)} events recorded, {len(fresh)} now"


def test_pvtest_v2_records_the_golden_event_stream_frame_for_frame(tmp_path):
    golden = TraceReader(GOLDEN_V2)
    fresh = _record("pvtest-v2", tmp_path / "v2.pvt")
    assert len(fresh.frames) == len(golden.frames), _first_difference(golden, fresh)
    for i in range(len(golden.frames)):
        assert fresh.frame_bytes(i) == golden.frame_bytes(i), \
            f"frame {i} differs; {_first_difference(golden, fresh)}"
    # the format version too: version 4 (io_run) changed no Xen PV event
    skip = ("host", "recorded_at", "version")
    assert {k: v for k, v in fresh.header.items() if k not in skip} == \
        {k: v for k, v in golden.header.items() if k not in skip}


@pytest.mark.parametrize("guest", sorted(DIGESTS))
def test_each_builtin_guest_records_the_same_stream_as_before(guest, tmp_path):
    assert _digest(_record(guest, tmp_path / f"{guest}.pvt")) == DIGESTS[guest]


if __name__ == "__main__":      # regenerate (see the module docstring)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for g in sorted(DIGESTS):
            p = Path(d) / f"{g}.pvt"
            print(f'    "{g}": {_digest(_record(g, p))},')
            if g == "pvtest-v2":
                GOLDEN_V2.write_bytes(p.read_bytes())
    sys.exit(0)
