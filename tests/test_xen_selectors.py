"""Guest-visible selectors are Xen's (issue 19): FLAT_RING3_CS32 runs 32-bit
user code, whose syscall enters the syscall32 callback; the kernel sees
FLAT_KERNEL_CS64/SS64 and its own IRETQ and far returns to them are
same-privilege returns, while the engine runs it at CPL 0. The reference
guest pvtest-v2-rules checks each rule (guests/src/checks_selectors.c); these
tests run it, and look at what its recording holds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.engine import hvm
from pvmon.guests.catalog import resolve
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

RULES_IMAGE = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images" / \
    "pvtest-v2-rules.elf"

pytestmark = pytest.mark.skipif(not hvm.rings_available(),
                                reason="needs pvmon's patched engine (pvmon engine build)")


def _run(record=None):
    s = Session(resolve(str(RULES_IMAGE)), record=record)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=120)
    return res, ring.decode()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("selectors") / "rules.pvt"
    res, ring = _run(record=path)
    return res, ring, path


def _section(ring: str) -> dict[str, str]:
    body = ring.split("# selectors:", 1)[1].split("pvtest: #", 1)[0]
    return {m.group(2): m.group(1)
            for m in re.finditer(r"^pvtest: (ok|FAIL) \d+ - (.*)$", body, re.MULTILINE)}


def test_every_selector_check_of_the_rules_guest_passes(recorded):
    res, ring, _path = recorded
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    checks = _section(ring)
    assert len(checks) == 18 and set(checks.values()) == {"ok"}, checks
    names = "\n".join(checks)
    for words in ("%cs = FLAT_KERNEL_CS64 0xe033", "sync_core's iret_to_self",
                  "-> #GP(0xe030)", "runs the process in compatibility mode",
                  "-> the syscall32 callback", "no syscall32 callback -> #UD",
                  "int $0x80 from 32-bit user code"):
        assert words in names, words


def test_a_32_bit_process_runs_and_its_syscall_is_recorded_from_its_own_code(recorded):
    _res, _ring, path = recorded
    evs = list(TraceReader(path).events())
    # the user page's 32-bit code sits at 0x400800-0x40082f (rules_user_run; from
    # 0x400840 on, checks_selectors2.c's code, whose sysenters are recorded too)
    sys32 = [e for e in evs if e["k"] == "syscall" and 0x400800 <= e["rip"] < 0x400840]
    assert len(sys32) == 3 and {e["nr"] & 0xFFFF for e in sys32} <= {0x1234, 0}
    irets = [e for e in evs if e["k"] == "hc" and e["name"] == "iret"
             and e["op"]["cs"] == abi.FLAT_RING3_CS32 and e["op"]["rip"] < 0x400840]
    # one per 32-bit excursion (five in checks_selectors.c), and one more back to
    # 32-bit code after each event upcall that arrived while it ran
    upcalls = {e["seq"] for e in evs if e["k"] == "upcall"}
    assert len([e for e in irets if e["seq"] - 1 not in upcalls]) == 5


def test_an_iretq_to_an_rpl0_selector_in_the_kernel_is_recorded_as_the_gp_xen_delivers(recorded):
    _res, _ring, path = recorded
    gps = [e for e in TraceReader(path).events()
           if e["k"] == "fault" and e["vec"] == abi.TRAP_gp_fault
           and e["err"] == abi.FLAT_KERNEL_CS64 & ~3]
    assert len(gps) == 1 and gps[0]["rip"] >= 1 << 63


def test_without_the_engines_ring_switch_the_kernels_own_iretq_is_a_privileged_one(monkeypatch):
    # Why pvmon_pv_ring3 exists: with Xen's RPL-3 kernel selectors showing, QEMU
    # takes the CPL-0 kernel's IRETQ to them as a return to CPL 3 that may load
    # IF (CPL 0 <= IOPL), where a ring-3 kernel's IRETQ cannot; the guest notices
    # and does not end cleanly. (Linux 6.12 faults on its next fetch there.)
    orig = hvm.PvHooks.set_ring3
    monkeypatch.setattr(hvm.PvHooks, "set_ring3", lambda self, on: orig(self, False))
    res, ring = _run()
    checks = _section(ring)
    failed = [name for name, verdict in checks.items() if verdict == "FAIL"]
    assert len(failed) == 1 and "loads CF from the frame but not IF" in failed[0]
    assert res.exit_kind == "crash"
