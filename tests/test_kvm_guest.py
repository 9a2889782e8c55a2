"""pvtest-kvm, the built-in KVM reference guest: it boots through the PVH note
on pvmon's PC, checks every part of KVM's paravirtual interface and powers
off; on an older KVM its feature-dependent checks take the path KVM gives
(#GP, -KVM_ENOSYS) and it still passes; its recording verifies byte for byte
and a closed-loop replay on another release explains what changed; the
failing variant fails the run."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvmon.backends.kvm import DEFAULT_CMDLINE
from pvmon.backends.registry import resolve_version
from pvmon.guests.catalog import BUILTIN_BACKENDS, resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "pvmon" / "guests" / "images"
SUMMARY = re.compile(r"pvtest: (\d+) passed, (\d+) failed")
CHECKS = 111
MEM = 64 << 20


def _pvmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvmon", *args], check=False,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def _run(backend: str = "kvm-6.12", **kw):
    sess = Session(resolve("pvtest-kvm"), backend=backend, memory=MEM, cmdline=DEFAULT_CMDLINE,
                   **kw)
    t0 = time.perf_counter()
    res = sess.run(timeout=60)
    return res, time.perf_counter() - t0


def _summary(res) -> tuple[int, int]:
    m = SUMMARY.search(res.console.decode())
    assert m, res.console.decode()[-2000:]
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("kvmguest") / "pvtest-kvm.pvt"
    res, wall = _run(record=path)
    return res, wall, path


def test_pvmon_run_pvtest_kvm_passes_every_check_and_exits_0_on_kvm_6_12():
    assert BUILTIN_BACKENDS["pvtest-kvm"] == "kvm-6.12"
    p = _pvmon("run", "pvtest-kvm")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    assert f"pvtest: {CHECKS} passed, 0 failed" in p.stdout
    assert "FAIL" not in p.stdout
    assert "exit: shutdown - halted with interrupts disabled (powered off)" in p.stderr


def test_the_guest_boots_and_finishes_in_under_a_second(recorded):
    res, wall, _path = recorded
    assert _summary(res) == (CHECKS, 0)
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0 and res.clean
    # the whole run, recording included (about 0.1 s on an idle machine)
    assert wall < 1.0, wall


def test_every_kvm_interface_family_reaches_the_host_and_is_recorded(recorded):
    _res, _wall, path = recorded
    events = list(TraceReader(path))
    kinds = {e["k"] for e in events}
    assert {"cpuid", "msr", "io", "mmio", "irq", "halt", "hc", "con"} <= kinds
    leaves = {e.get("leaf") for e in events if e["k"] == "cpuid"}
    assert {0x40000000, 0x40000001} <= leaves
    msrs = {(e["msr"], bool(e.get("gp"))) for e in events if e["k"] == "msr"}
    assert {(0x4B564D01, False), (0x4B564D00, False), (0x4B564D03, False),
            (0x4B564D04, False), (0x4B564D05, False), (0x6E0, False)} <= msrs
    assert {(0x4B564D03, True), (0x4B564D04, True), (0x4B564D05, True),
            (0x4B564DFF, True), (0x4B564D08, True)} <= msrs          # reserved bits, unknown
    calls = {(e["name"], e["ret"]) for e in events if e["k"] == "hc"}
    assert {("sched_yield", 0), ("send_ipi", 1), ("kick_cpu", 0), ("vapic_poll_irq", 0),
            ("kvm_hc_32767", -1000)} <= calls
    assert ("vapic_poll_irq", -1) in calls                        # from CPL 3: -KVM_EPERM
    vectors = {e["vec"] for e in events if e["k"] == "irq"}
    assert {0xE4, 0xEE, 0xEF, 0xF0, 0xF6} <= vectors


@pytest.mark.parametrize("version, adapted", [
    ("kvm-2.6.34", ["kvmclock on MSRs 0x12 and 0x11",
                    "CLOCKSOURCE2 not offered: its MSR raises #GP",
                    "PV_EOI not offered: its MSR raises #GP",
                    "KVM_HC_SEND_IPI without PV_SEND_IPI -> -KVM_ENOSYS",
                    "KVM_HC_CLOCK_PAIRING unknown to this host",
                    "CPUID 0x40000000: eax 0x0 \"KVMKVMKVM\""]),
    ("kvm-4.19", ["POLL_CONTROL not offered: its MSR raises #GP",
                  "ASYNC_PF_INT not offered: its MSR raises #GP",
                  "KVM_HC_SCHED_YIELD without PV_SCHED_YIELD -> -KVM_ENOSYS",
                  "KVM_HC_SEND_IPI to APIC id 0 returns 1"]),
])
def test_on_an_older_kvm_the_feature_checks_take_the_path_that_release_gives(version, adapted):
    res, _wall = _run(version)
    text = res.console.decode()
    assert _summary(res) == (CHECKS, 0), text[-3000:]
    for line in adapted:
        assert line in text, line
    assert res.clean


def test_a_pvtest_kvm_recording_verifies_byte_identical(recorded):
    _res, _wall, path = recorded
    rep = replay_closed(open_run(path))
    assert rep.mode == "verify" and rep.total == 0
    assert rep.compared == len(TraceReader(path))
    assert rep.ending.get("outcome") == "identical"


def test_replay_on_kvm_4_19_reports_and_explains_the_features_that_release_lacks(recorded):
    _res, _wall, path = recorded
    rep = replay_closed(open_run(path), resolve_version("kvm-4.19"))
    assert rep.total > 0
    first = rep.divergences[0]
    assert first.deltas[0].detail.startswith("cpuid 0x40000001 returned")
    whys = " ".join(f.text for d in rep.divergences for f in d.explanation)
    for feature in ("POLL_CONTROL", "PV_SCHED_YIELD", "ASYNC_PF_INT"):
        assert f"KVM_FEATURE_{feature}" in whys, feature
    assert rep.ending.get("outcome", "").startswith("the guest tolerated")


def test_the_failing_variant_fails_the_run_with_a_triple_fault():
    p = _pvmon("run", str(IMAGES / "pvtest-kvm-fail.elf"), "--backend", "kvm-6.12")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr
    assert "FAIL 13 - deliberately failing check" in p.stdout
    assert f"pvtest: {CHECKS} passed, 1 failed" in p.stdout
    assert "exit: triple_fault" in p.stderr


def test_pvmon_guests_list_shows_the_kvm_guest():
    p = _pvmon("guests", "list")
    assert p.returncode == 0, p.stderr
    assert "pvtest-kvm" in p.stdout


def test_booted_as_a_xen_pv_guest_it_says_it_is_a_kvm_guest_and_crashes():
    res = Session(resolve("pvtest-kvm"), backend="xen-4.17", memory=MEM).run(timeout=30)
    assert b"pvtest-kvm is a KVM guest with no Xen PV entry" in res.console
    assert res.exit_kind == "crash" and not res.clean


def test_the_image_carries_the_pvh_entry_note_as_a_pvh_linux_does():
    from pvmon.backends.kvm import KVM_GUEST
    kernel = KVM_GUEST.load_kernel(IMAGES / "pvtest-kvm.elf")
    symbols = resolve("pvtest-kvm").symbols()
    assert kernel.notes["GUEST_OS"] == "pvtest-kvm"
    assert kernel.notes["PHYS32_ENTRY"] == symbols.address("kvm_start") - 0xFFFFFFFF80000000


def test_open_loop_puts_each_kvm_msr_and_leaf_of_the_recording_to_kvm_3_9(recorded):
    from pvmon.replay.openloop import replay_open
    _res, _wall, path = recorded
    own = replay_open(open_run(path, need_guest=False), resolve_version("kvm-6.12"))
    # every CPUID leaf and MSR access (reserved-bit probes too) answers as recorded;
    # two calls open loop cannot model stay: the vmcall from CPL 3 (the dispatch
    # layer's -KVM_EPERM) and CLOCK_PAIRING's time of the call (docs/kvm.md)
    assert own.compared > 30
    assert [d.left["name"] for d in own.iter_divergences()] == ["clock_pairing",
                                                                 "vapic_poll_irq"]
    rep = replay_open(open_run(path, need_guest=False), resolve_version("kvm-3.9"))
    details = {x.detail for d in rep.iter_divergences() for x in d.deltas}
    assert "wrmsr KVM_PV_EOI_EN: handled vs #GP" in details, details
    assert "wrmsr KVM_POLL_CONTROL: handled vs #GP" in details, details
    assert any(x.startswith("cpuid 0x40000001") for x in details), details
    assert "1 vs -1000" in details                           # KVM_HC_SEND_IPI unknown

