"""The selector rules of issue 19 that checks_selectors.c leaves out, as Xen
4.17 enforces them (docs/xen-rules.md "Segment selectors"): a HYPERVISOR_iret
that stays in kernel mode loads ``cs | 3``/``ss | 3``; a selector naming no
usable descriptor is the IRETQ's exception at the iret's target (pv/iret.c,
x86_64/entry.S iret_exit_to_guest); MOV/POP to DS/ES/FS/GS in the kernel is
checked as at CPL 3; sysenter enters the sysenter callback with Xen's frame;
the SYSENTER MSRs are #GP. The reference guest pvtest-v2-rules checks each
(guests/src/checks_selectors2.c); these tests run it, look at its recording,
and at :class:`pvmon.backends.xen.pv.segments.Segments` on a built domain."""
from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.pv.segments import Segments
from pvmon.engine import hvm
from pvmon.guests.catalog import resolve
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

RULES_IMAGE = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images" / \
    "pvtest-v2-rules.elf"

needs_rings = pytest.mark.skipif(not hvm.rings_available(),
                                 reason="needs pvmon's patched engine (pvmon engine build)")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("selectors2") / "rules.pvt"
    s = Session(resolve(str(RULES_IMAGE)), record=path)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=120)
    return res, ring.decode(), path


def _section(ring: str) -> dict[str, str]:
    body = ring.split("# selectors: iret selectors", 1)[1].split("pvtest: #", 1)[0]
    return {m.group(2): m.group(1)
            for m in re.finditer(r"^pvtest: (ok|FAIL) \d+ - (.*)$", body, re.MULTILINE)}


@needs_rings
def test_every_check_of_the_second_selector_family_passes(recorded):
    res, ring, _path = recorded
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    checks = _section(ring)
    assert len(checks) == 30 and set(checks.values()) == {"ok"}, checks
    names = "\n".join(checks)
    for words in ("the kernel runs with %cs 0x1b", "-> #NP(0x20) at the iret's target",
                  "-> #SS(0x30)", "-> #GP(0x28), not #NP", "-> the sysenter callback",
                  "sysenter with no sysenter callback -> #GP(0)", "rdmsr SYSENTER_EIP"):
        assert words in names, words


@needs_rings
def test_a_faulting_iret_is_recorded_as_the_call_then_its_exception_at_the_target(recorded):
    _res, _ring, path = recorded
    evs = list(TraceReader(path).events())
    # the iret to a not-present code segment (GDT entry 4, selector 0x20) from the
    # kernel: one call event, then the guest's #NP handler at the iret's target
    bad = [i for i, e in enumerate(evs) if e["k"] == "hc" and e["name"] == "iret"
           and e["op"]["cs"] == 0x20]
    assert len(bad) == 1
    after = evs[bad[0] + 1:bad[0] + 4]
    assert not any(e["k"] == "fault" for e in after)      # not a separate event
    np_iret = next(e for e in evs[bad[0] + 1:] if e["k"] == "hc" and e["name"] == "iret")
    assert np_iret["op"]["cs"] & 0xFFFF == abi.FLAT_KERNEL_CS64 & ~3   # the handler's return


@needs_rings
def test_a_user_sysenter_is_recorded_as_a_system_call_of_the_process(recorded):
    _res, _ring, path = recorded
    sysenters = [e for e in TraceReader(path).events()
                 if e["k"] == "syscall" and 0x400840 <= e["rip"] < 0x401000]
    # checks_selectors2.c: twice from 64-bit code (callback, no callback), once from
    # 32-bit code; each at its sysenter (the engine hook reads its address)
    assert [e["rip"] - 0x400840 for e in sysenters] == [0x16, 0x25, 0x16]


def _segments():
    s = Session(resolve("pvtest-v2"))
    vcpu = s.backend.vcpu
    return vcpu, Segments(s.machine, vcpu.layout, s.backend, vcpu)


def _gdt(vcpu, entries: dict[int, int]) -> None:
    """Give ``vcpu`` a one-frame GDT holding ``entries`` (index -> descriptor),
    written into pvmon's copy as set_gdt leaves it."""
    m = vcpu.m
    page = bytearray(4096)
    for i, d in entries.items():
        struct.pack_into("<Q", page, i * 8, d)
    m.write_phys_data(vcpu.layout.gdt_ma, bytes(page))
    vcpu.gdt_frames, vcpu.gdt_ents = [1], 512


def test_iret_selectors_fault_in_the_sdm_order_for_a_return_to_ring_3():
    vcpu, segs = _segments()
    _gdt(vcpu, {1: 0x00CFF2000000FFFF, 3: 0x00AFFA000000FFFF, 4: 0x00AF7A000000FFFF,
                5: 0x00CF12000000FFFF, 6: 0x00CF72000000FFFF, 7: 0x00CFFA000000FFFF,
                8: 0x00AFFE000000FFFF})
    f = segs.iret_fault
    assert f(0xE033, 0xE02B, 0x1000) is None and f(0xE023, 0xE02B, 0xFFFF_FFFF) is None
    assert f(0x1B, 0x0B, 0x1000) is None                     # guest GDT code and data
    assert f(3, 0xE02B, 0) == (13, 0)                        # null CS
    assert f(0xE02B, 0xE02B, 0) == (13, 0xE028)              # data as CS
    assert f(0xE00B, 0xE02B, 0) == (13, 0xE008)              # Xen's ring-0 code: DPL 0
    assert f(0xF00B, 0xE02B, 0) == (13, 0xF008)              # beyond the GDT limit
    assert f(0x0F, 0xE02B, 0) == (13, 0x0C)                  # an LDT selector, no LDT
    assert f(0x12C3, 0xE02B, 0) == (13, 0x12C0)              # past the guest's frame: zero
    assert f(0x23, 0x2B, 0) == (11, 0x20)                    # not present: #NP before SS
    assert f(0x43, 0x0B, 0) is None                          # conforming code, DPL 3
    assert f(0xE033, 3, 0) == (13, 0)                        # null SS
    assert f(0xE033, 0xE033, 0) == (13, 0xE030)              # code as SS
    assert f(0xE033, 0x2B, 0) == (13, 0x28)                  # DPL 0 (not present: DPL first)
    assert f(0xE033, 0x33, 0) == (12, 0x30)                  # not present
    assert f(0xE033, 0xE02B, 1 << 47) == (13, 0)             # non-canonical RIP
    assert f(0x3B, 0xE02B, 1 << 32) == (13, 0)               # beyond a 32-bit limit


def test_xen_reserved_gdt_entries_other_than_the_flat_ring_3_ones_never_load():
    _vcpu, segs = _segments()
    for sel in (0xE008, 0xE010, 0xE018, 0xE038, 0xE040, 0xE050, 0xE060):
        assert segs.descriptor(sel, code=True) is None
        assert segs.descriptor(sel, code=False) is None
        assert segs.iret_fault(sel | 3, 0xE02B, 0)[0] == 13


def _iret_with(backend: str, cs: int, ss: int, failsafe: int | None,
               gp_handler: int | None = None):
    """A built pvtest-v2 domain on ``backend`` that makes an iret from its boot
    stack to RIP 0x1000 with ``cs``/``ss`` (RPL 0: stays in kernel mode), the
    failsafe callback at ``failsafe`` (None: none) and the trap table's #GP
    handler at ``gp_handler``. Returns (session, rsp)."""
    s = Session(resolve("pvtest-v2"), backend=backend)
    v, m = s.backend.vcpu, s.machine
    if gp_handler is not None:
        v.trap_table[abi.TRAP_gp_fault] = (0, abi.FLAT_KERNEL_CS64, gp_handler)
    rsp = m.reg("rsp")
    m.write_virt(rsp, struct.pack("<9Q", 0, 0x11, 0x22, 0, 0x1000, cs, 0x202, rsp, ss))
    v.callbacks.pop(abi.CALLBACKTYPE_failsafe, None)
    if failsafe is not None:
        v.callbacks[abi.CALLBACKTYPE_failsafe] = (failsafe, abi.CALLBACKF_mask_events)
    s.dispatch.enter(0)
    v.iret()
    return s, rsp


def test_before_xen_4_7_a_faulting_iret_enters_the_failsafe_callback_with_the_segments():
    s, rsp = _iret_with("xen-4.6", 0xE008, 0xE02B, failsafe=0xFFFF_FFFF_8000_2000)
    m = s.machine
    assert s.dispatch.cur_rip() == 0xFFFF_FFFF_8000_2000
    sp = m.reg("rsp")
    frame = struct.unpack("<11Q", m.read_virt(sp, 88))
    ds, es, fs, gs = m.regs("ds", "es", "fs", "gs")
    # RCX, R11, DS, ES, FS, GS, RIP, CS (RPL cleared, mask in 32-39), RFLAGS, RSP, SS
    assert frame[:6] == (0x22, 0x11, ds, es, fs, gs)
    assert frame[6] == 0x1000 and frame[7] & 0xFFFF == 0xE008 and frame[9] == rsp
    assert frame[10] == 0xE02B and sp == (rsp & ~0xF) - 88
    assert s.backend.vcpu.upcall_mask() == 1                 # CALLBACKF_mask_events


def test_before_xen_4_7_a_faulting_iret_without_a_failsafe_callback_crashes_the_domain():
    s, _rsp = _iret_with("xen-4.6", 0xE008, 0xE02B, failsafe=None)
    stop = s.machine.stop_reason or getattr(s.dispatch, "stop", None)
    assert stop is not None and stop.kind == "crash"
    assert "no failsafe callback" in stop.detail and "before 4.7" in stop.detail


def test_from_xen_4_7_a_faulting_iret_is_the_exception_at_its_target_whatever_the_failsafe():
    s, rsp = _iret_with("xen-4.11", 0xE008, 0xE02B, failsafe=0xFFFF_FFFF_8000_2000,
                        gp_handler=0xFFFF_FFFF_8000_3000)
    m = s.machine
    assert s.dispatch.cur_rip() == 0xFFFF_FFFF_8000_3000
    frame = struct.unpack("<8Q", m.read_virt(m.reg("rsp"), 64))
    # RCX, R11, error code, RIP, CS, RFLAGS, RSP, SS
    assert frame[2] == 0xE008 and frame[3] == 0x1000 and frame[4] & 0xFFFF == 0xE008
    assert frame[6] == rsp and frame[7] == 0xE02B
