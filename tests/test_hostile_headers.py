"""A crafted trace header is refused by replay with one line naming the field:
every field replay uses is held to the bounds ``pvmon run`` applies to its
options, never passed on to the engine (OSError, ValueError tracebacks)."""

from __future__ import annotations

import pytest

from pvmon.errors import PvmonError, TraceError
from pvmon.guests.catalog import resolve
from pvmon.replay.source import open_run
from pvmon.session import Session
from tests.hostile_support import one_line_error, pvmon, rewrite, set_field


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    p = tmp_path_factory.mktemp("headers") / "good.pvt"
    assert Session(resolve("pvtest-v2"), record=p).run().clean
    return p


@pytest.mark.parametrize("memory", [2 ** 50, -1])
@pytest.mark.parametrize("mode", [(), ("--open-loop",)])
def test_replay_of_a_header_asking_for_impossible_memory_is_one_line(good, tmp_path, memory,
                                                                     mode):
    bad = rewrite(good, tmp_path / "bad.pvt", header=set_field("machine.memory", memory))
    line = one_line_error(pvmon("replay", *mode, str(bad)))
    assert "machine.memory" in line and "32 MiB to 8 GiB" in line


@pytest.mark.parametrize("field, value, says", [
    ("machine.memory", (256 << 20) + 1, "4 KiB pages"),
    ("machine.memory", "256M", "whole number of bytes"),
    ("machine.memory", True, "whole number of bytes"),
    ("machine.cmdline", "a\x00b", "NUL"),
    ("machine.cmdline", "x" * 1024, "at most 1023"),
    ("machine.cmdline", 7, "not text"),
    ("machine.idle_limit_ns", -1, "out of range"),
    ("machine.idle_limit_ns", 0, "out of range"),
    ("machine.idle_limit_ns", 2 ** 62, "out of range"),
    ("machine.idle_limit_ns", 1.5, "nanoseconds"),
    ("machine.vcpus", 33, "vCPU count from 1 to 32"),
    ("machine.vcpus", 0, "vCPU count from 1 to 32"),
    ("machine.tsc_khz", 0, "TSC rate"),
    ("tsc_khz", 2_000_000, "TSC rate"),
    ("machine.initrd", {"name": "busybox", "size": -5}, "machine.initrd.size"),
    ("machine.initrd", {"name": "", "size": 5}, "machine.initrd.name"),
    ("machine.initrd", {"name": "busybox", "size": 5, "sha256": "xyz"},
     "machine.initrd.sha256"),
    ("guest.name", "pvtest\x00v2", "usable name"),
    ("guest.sha256", "zz", "SHA-256"),
    ("backend.name", 5, "not a name"),
    ("layout.nr_pages", 5, "65536 pages"),
    ("layout.shared_info_ma", 0, "hypervisor area"),
    ("layout.m2p_ma", 1 << 40, "hypervisor area"),
    ("layout.store_pfn", 1 << 30, "guest frame"),
    ("layout.console_evtchn", 99_999, "event channel"),
    ("layout.virt_base", -1, "64-bit address"),
    ("layout.gdt_ma", "0x1000", "not an integer"),
])
@pytest.mark.parametrize("need_guest", [True, False])
def test_each_header_field_replay_uses_is_checked(good, tmp_path, field, value, says,
                                                  need_guest):
    bad = rewrite(good, tmp_path / "bad.pvt", header=set_field(field, value))
    with pytest.raises(TraceError) as exc:
        open_run(bad, need_guest=need_guest)
    msg = str(exc.value)
    assert f"trace header field {field}" in msg and says in msg and "\n" not in msg


def test_an_initrd_file_of_another_size_than_recorded_is_refused_before_reading(good,
                                                                                tmp_path):
    f = tmp_path / "initrd.img"
    f.write_bytes(b"\x00" * 4096)
    bad = rewrite(good, tmp_path / "bad.pvt", header=set_field(
        "machine.initrd", {"name": str(f), "size": 8192, "sha256": "0" * 64}))
    with pytest.raises(PvmonError, match="is 4,096 bytes, but bad.pvt was recorded with one "
                                         "of 8,192 bytes"):
        open_run(bad)


def test_a_well_formed_header_still_opens_for_both_replays(good):
    for need_guest in (True, False):
        run = open_run(good, need_guest=need_guest)
        assert run.memory == 256 << 20 and run.session_args()["idle_limit_ns"] == 10 ** 10
