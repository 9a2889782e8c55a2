"""Grant tables v1 and v2 as Xen 4.17 keeps them for a 64-bit PV domU
(pvmon/backends/xen/grant_table.py): checked by the reference guest
pvtest-v2-rules (guests/src/checks_grants.c, each check citing its
stable-4.17 source), by what a recording of it holds and replays to, by the
versions declared for xen-3.4, and by what a Debian boot asks of them."""

import re
from pathlib import Path

import pytest

from pvmon.backends.xen import abi, builder
from pvmon.backends.xen.versions import REGISTRY
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.explain import differences
from pvmon.replay.openloop import replay_open
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[1]
XEN_ABI_H = ROOT / "guests" / "src" / "xen_abi.h"
SECTION = "rules: grant tables"


def _run(backend="xen-4.17", record=None):
    s = Session(resolve("pvtest-v2-rules"), backend=backend, record=record)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=120)
    return res, ring.decode()


def _grant_checks(text):
    """{check name: "ok" | "FAIL"} for the grant-table section of the guest's report."""
    part = text[text.index(SECTION):]
    part = part[:part.index("pvtest: # ", 1)]
    out = {}
    for m in re.finditer(r"^pvtest: (ok|FAIL) \d+ - (.*)$", part, re.MULTILINE):
        name = m.group(2)
        if m.group(1) == "FAIL":
            name = name.rpartition(" (")[0]
        out[name] = m.group(1)
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("grants") / "rules.pvt"
    res, ring = _run(record=path)
    return res, ring, path


def test_the_rules_guest_passes_every_grant_table_check_on_xen_4_17(recorded):
    res, ring, _path = recorded
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    checks = _grant_checks(ring)
    assert len(checks) == 108 and set(checks.values()) == {"ok"}
    for name in (
        "set_version 2 -> 0: v2 is allowed by default (gnttab=max-ver:2), never -EOPNOTSUPP",
        "get_status_frames, 1 frame -> GNTST_okay (2 v2 frames need one status frame)",
        ("contains_pte map at an L1 entry's machine address -> GNTST_okay, the page mapped "
         "there (PVGT create_grant_pv_mapping)"),
        ("unmap of a writable grant whose PTE was made read-only -> GNTST_general_error "
         "(XSA-234: present and writable must match)"),
        ("unmap_and_replace -> GNTST_okay: host_addr maps new_addr's page, new_addr nothing "
         "(steal_linear_address)"),
        "map sets GTF_reading|GTF_writing in the v1 entry (GT _set_status_v1)",
        ("a v2 map -> GNTST_okay, GTF_reading|GTF_writing in the status frame, the entry "
         "untouched (_set_status_v2)"),
        "map_grant_ref from a domain that does not exist -> GNTST_bad_domain",
        "setup_table for domain 0 -> GNTST_permission_denied (xsm_grant_setup)",
        "copy from a grant of a domain that does not exist -> GNTST_bad_domain",
    ):
        assert checks.get(name) == "ok", name


def test_the_rules_guest_runs_by_its_catalog_name(recorded):
    _res, _ring, path = recorded
    assert TraceReader(path).header["guest"]["name"] == "pvtest-v2-rules"


def test_a_recording_of_the_grant_checks_replays_identically_closed_and_open_loop(recorded):
    _res, _ring, path = recorded
    rep = replay_closed(open_run(path))
    assert rep.total == 0 and rep.ending["outcome"] == "identical"
    # open loop: every grant call's inputs (argument structs, entries, status
    # frames, PTEs, page tables walked) are in the recording
    rep = replay_open(open_run(path, need_guest=False), REGISTRY["xen-4.17"])
    # the divergences open loop always reports for this guest: the iret inside a
    # multicall among the grant checks, whose result is a vCPU register open loop does
    # not model; after them the PHYSDEVOP_set_iopl(4) of the privileged-operation
    # checks (in a multicall), whose argument is read without being recorded, the
    # debug-register checks' set_debugreg/get_debugreg (in multicalls, and the direct
    # ones of checks_debugreg_hc.c made with CR4.DE set: an I/O breakpoint, %dr4/%dr5),
    # whose answers depend on the guest's CR4.DE and on the #DBs its breakpoints
    # raised, neither of which open loop sees, and the page-type, descriptor-page and page-reference
    # checks, which pin, map, load as GDT pages and give back pages the guest filled
    # or mapped by plain writes that open loop does not see, and the LDT checks,
    # whose pages take their type on a guest access open loop does not replay
    # (xen-rules.md, "Privileged operations", "Debug registers", "Page types",
    # "The LDT").
    events = list(TraceReader(path).events())
    last_grant = max(e["seq"] for e in events if e.get("name") == "grant_table_op")
    names = [d.left["name"] for d in rep.divergences]
    assert names[0] == "multicall" and rep.divergences[0].left["seq"] < last_grant
    rest = rep.divergences[1:]
    debugreg = {"set_debugreg", "get_debugreg"}
    assert [d.left["op"]["calls"] for d in rest if d.left["name"] == "multicall"
            and not set(d.left["op"]["calls"]) <= debugreg] == [["physdev_op"]]
    assert all(d.left["seq"] > last_grant
               and d.left["name"] in ("multicall", "mmuext_op", "update_va_mapping",
                                      "set_gdt", "memory_op", "update_descriptor",
                                      *debugreg)
               for d in rest)


def test_grant_calls_record_their_statuses_and_the_entries_they_touch(recorded):
    _res, _ring, path = recorded
    calls = [e for e in TraceReader(path).events()
             if e["k"] == "hc" and e["name"] == "grant_table_op"]
    by_cmd = {}
    for e in calls:
        by_cmd.setdefault(e["op"]["cmd"], []).append(e)
    assert {"map_grant_ref", "unmap_grant_ref", "unmap_and_replace", "copy", "set_version",
            "get_status_frames", "swap_grant_ref", "cache_flush", "transfer"} <= set(by_cmd)
    first_map = by_cmd["map_grant_ref"][0]
    assert first_map["ret"] == 0 and first_map["op"]["status"] == [abi.GNTST_okay]
    # the v1 entry's GTF_reading|GTF_writing were written in the shared grant frame,
    # which lies in the grant frames the layout reserves
    lay = TraceReader(path).header["layout"]
    frames = range(lay["grant_ma"], lay["grant_ma"] + builder.GRANT_FRAMES * 4096)
    assert any(sp == "p" and addr in frames for sp, addr, _d in first_map["wr"])
    copies = [e for e in by_cmd["copy"] if e["op"]["count"] == 3]
    assert copies and copies[0]["op"]["status"] == [abi.GNTST_okay, abi.GNTST_bad_copy_arg,
                                                    abi.GNTST_okay]
    assert not any(e["ret"] == -abi.ENOSYS and e["op"]["cmd"] not in ("dump_table", 13)
                   for e in calls)


def test_xen_3_4_declares_what_its_grant_tables_lacked_each_with_a_source():
    facts = differences(REGISTRY["xen-4.17"], REGISTRY["xen-3.4"])
    grant = {(f.subop, f.source) for f in facts if f.hypercall == "grant_table_op"}
    subs = {s for s, _src in grant}
    assert {"set_version", "get_status_frames", "get_version", "swap_grant_ref",
            "unmap_grant_ref", "unmap_and_replace", "copy"} <= subs
    sources = " ".join(src for _s, src in grant)
    for fact in ("a98dc13703", "04b9829949", "XSA-234", "16b1414de9", "3c72f8c2cf",
                 "grant_table.c@3.4.0-rc3"):
        assert fact in sources, fact
    # the 512-entry limit is declared too, though it explains only batches over 512
    limit = [c for c in REGISTRY["xen-3.4"].changes if c.feature == "gnttab_unlimited_batches"]
    assert limit and "1c4e651d3f" in limit[0].source
    assert not {"gnttab_unlimited_batches", "gnttab_unmap_checks_pte_flags",
                "gnttab_copy_claims_first"} & REGISTRY["xen-3.4"].capabilities
    for name in ("xen-4.17-release", "xen-4.21", "xen-4.22"):
        assert {"gnttab_unlimited_batches", "gnttab_unmap_checks_pte_flags",
                "gnttab_copy_claims_first"} <= REGISTRY[name].capabilities


def test_on_xen_3_4_the_guest_meets_v1_only_and_the_unmap_check_before_xsa_234():
    res, ring = _run("xen-3.4")
    checks = _grant_checks(ring)
    # set_version did not exist: -ENOSYS, the table stays v1
    assert checks[("set_version 2 -> 0: v2 is allowed by default (gnttab=max-ver:2), "
                   "never -EOPNOTSUPP")] == "FAIL"
    assert "(rc -38, version 2)" in ring      # nothing written back either
    # before XSA-234 unmap looked at the frame only, so a read-only PTE unmapped fine
    assert checks[("unmap of a writable grant whose PTE was made read-only -> "
                   "GNTST_general_error (XSA-234: present and writable must match)")] == "FAIL"
    # before 4.6 a copy from a foreign frame was GNTST_general_error, not bad_page
    assert checks[("copy from a frame not this domain's -> GNTST_bad_page "
                   "(get_paged_frame)")] == "FAIL"
    # what both versions share still holds
    assert checks["map sets GTF_reading|GTF_writing in the v1 entry (GT _set_status_v1)"] == "ok"
    # the run ends later, where 3.4 loads %dr7 bits 32-63 into the hardware: a host
    # crash before XSA-12's fix (the debug-register checks, tests/test_xen_xsa12.py)
    assert res.exit_kind == "crash" and res.detail.startswith("XSA-12: ")


def test_the_status_frame_lies_above_the_frames_the_m2p_describes():
    for mib in (32, 64, 256, 1024):
        ram = mib << 20
        phys = ram + builder.extra_bytes_for(ram)
        # the M2P's size as before the status frame existed (what machphys_mapping reports)
        fixed = 5 + builder.GDT_PAGES + builder.GRANT_FRAMES
        total = ram // 4096 + fixed
        for _ in range(4):
            m2p_pages = -(-total * 8 // 4096)
            total = ram // 4096 + fixed + m2p_pages + -(-m2p_pages // 512)
        assert builder.m2p_frames(phys) == total
        assert builder.grant_status_ma(phys) == total * 4096
        assert builder.GRANT_STATUS_FRAMES == 1


def _header_defines(prefixes):
    out = {}
    for m in re.finditer(r"^#define\s+(\w+)\s+\(?\s*(-?(?:0x[0-9a-fA-F]+|\d+))U?"
                         r"(?:\s*<<\s*(\d+))?\s*\)?", XEN_ABI_H.read_text(), re.MULTILINE):
        name, val, shift = m.groups()
        if name.startswith(prefixes):
            v = int(val, 0)
            out[name] = v << int(shift) if shift else v
    return out


def test_the_guests_grant_table_numbers_agree_with_abi_py():
    defs = _header_defines(("GNTTABOP_", "GNTST_", "GTF_", "GNTMAP_", "GNTCOPY_",
                            "GNTTAB_CACHE_", "GNTTAB_NR_"))
    assert len(defs) >= 40
    for name, value in defs.items():
        assert getattr(abi, name) == value, name


@pytest.mark.debian
@pytest.mark.slow
@pytest.mark.parametrize("series", ["debian-6.12", "debian-6.1"])
def test_a_debian_boot_sets_up_its_v1_table_as_on_xen_and_ends_in_the_same_panic(series,
                                                                               tmp_path):
    s = Session(resolve(series), record=tmp_path / "boot.pvt")
    res = s.run(timeout=600)
    calls = [e for e in TraceReader(tmp_path / "boot.pvt").events()
             if e["k"] == "hc" and e["name"] == "grant_table_op"]
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in res.console.decode()
    assert [(e["op"]["cmd"], e["ret"]) for e in calls] == [
        ("set_version", 0), ("query_size", 0), ("query_size", 0), ("query_size", 0),
        ("setup_table", 0), ("query_size", 0)]
    # set_version 1 on a v1 table: 0, and Xen writes the version in force back
    assert calls[0]["wr"] == [["v", calls[0]["args"][1], (1).to_bytes(4, "little")]]
    # query_size reads its whole struct (the domain it names) and answers one frame of four
    for e in calls[1:4] + calls[5:]:
        (sp, addr, data), = e["rd"]
        assert (sp, addr, len(data), data[:2]) == ("v", e["args"][1], 16, b"\xf0\x7f")
        assert e["wr"][0][2] == (1).to_bytes(4, "little") + (4).to_bytes(4, "little") + \
            b"\x00\x00"
    # setup_table of the one frame in use hands out the first reserved grant frame
    frame = int.from_bytes(calls[4]["wr"][0][2], "little")
    assert frame == s.layout.grant_ma >> 12 and calls[4]["wr"][1][2] == b"\x00\x00"
