"""XSA-12 (CVE-2012-3494, xen.git e89c6d0573, first in 4.2) on pvmon's
xen-3.4: before the fix DR_CONTROL_RESERVED_ZERO was 0xd800
(xen/include/asm-x86/debugreg.h@3.4.0-rc3), so set_debugreg kept bits 32-63
of %dr7. A vCPU initialised with them (VCPUOP_initialise, not the running
vCPU: the value is only stored) reads them back; loading them into the
hardware %dr7 (set_debugreg on the running vCPU; the context switch to a
vCPU whose %dr7 enables a breakpoint, paravirt_ctxt_switch_to in
xen/arch/x86/domain.c@3.4.0-rc3) is a #GP inside Xen, a host crash, which
pvmon shows as the run ending "crash". The backend is called on real
attached pvtest-v2 domains; the guests run on the engine."""

import re
import struct

import pytest

from pvmon.backends.xen import abi as E
from pvmon.backends.xen.explain import xen_differences
from pvmon.backends.xen.versions import REGISTRY
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session
from tests.test_smp import O, _ctx

HIGH = (1 << 32) | E.X86_DR7_DEFAULT


def _initialised(backend: str, dr7: int):
    """vCPU 1 of a 2-vCPU pvtest-v2 domain on ``backend`` after VCPUOP_initialise
    with ``dr7`` in its context (arch_set_info_guest -> set_debugreg(v, 7, ...))."""
    sess = Session(resolve("pvtest-v2"), vcpus=2, backend=backend)
    b, v1 = sess.backend, sess.backend.vcpus[1]
    ctx = _ctx(sess)
    struct.pack_into("<8Q", ctx, O["debugreg"], 0x1000, 0, 0, 0, 0, 0, 0, dr7)
    assert b.smp.initialise(v1, bytes(ctx)) == 0
    return sess, v1


@pytest.mark.parametrize("backend, seen", [("xen-3.4", HIGH), ("xen-4.6", 0x400),
                                           ("xen-4.11", 0x400), ("xen-4.17", 0x400)])
def test_a_vcpu_initialised_with_dr7_bits_above_31_reads_them_back_only_before_xsa_12(
        backend, seen):
    _sess, v1 = _initialised(backend, HIGH)
    assert v1.get_debugreg(7) == seen


def test_before_xsa_12_switching_to_a_vcpu_whose_high_dr7_enables_a_breakpoint_ends_the_run():
    sess, v1 = _initialised("xen-3.4", HIGH | 1)
    assert v1.dr7 == HIGH | 1 and sess.machine.stop_reason is None
    v1.activate_debugregs()          # what the SMP switch does when vCPU 1 goes on
    stop = sess.machine.stop_reason
    assert stop.kind == "crash" and "XSA-12" in stop.detail and "context switch" in stop.detail
    # fixed: the bits never reach the vCPU
    sess, v1 = _initialised("xen-4.6", HIGH | 1)
    assert v1.dr7 == E.X86_DR7_DEFAULT | 1


def test_on_xen_3_4_the_rules_guests_set_debugreg_of_high_dr7_bits_crashes_the_host():
    s = Session(resolve("pvtest-v2-rules"), backend="xen-3.4")
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=600)
    assert res.exit_kind == "crash" and "XSA-12: set_debugreg(7) on the running vCPU" in \
        res.detail and "0x100000400" in res.detail, res.detail
    last = re.findall(r"^pvtest: (?:ok|FAIL) \d+ - (.*)$", ring.decode(errors="replace"),
                      re.MULTILINE)[-1]
    assert last.startswith("set_debugreg(6, 0x1001) -> 0")   # the check before it


def test_xsa_12_names_its_fix_for_the_calls_it_changes():
    facts = [f for f in xen_differences(REGISTRY["xen-4.17"], REGISTRY["xen-3.4"])
             if "xsa12" in f.text]
    assert {(f.hypercall, f.subop) for f in facts} == {
        ("get_debugreg", None), ("set_debugreg", None), ("vcpu_op", "initialise")}
    assert all("e89c6d0573" in f.source and "XSA-12" in f.source for f in facts)
    assert not [f for f in xen_differences(REGISTRY["xen-4.17"], REGISTRY["xen-4.6"])
                if "xsa12" in f.text]


def test_a_2_vcpu_poc_recording_replayed_on_xen_3_4_diverges_at_vcpu_1s_dr7_read(tmp_path):
    path = tmp_path / "poc2.pvt"
    res = Session(resolve("pvtest-v2-poc"), vcpus=2, record=path).run(timeout=120)
    assert res.exit_kind == "shutdown"
    rep = replay_closed(open_run(path), REGISTRY["xen-3.4"])
    dr7 = [d for d in rep.divergences if d.left and d.left.get("name") == "get_debugreg"]
    assert len(dr7) == 1 and (dr7[0].left["ret"], dr7[0].right["ret"]) == (0x400, HIGH)
    assert dr7[0].left["cpu"] == 1
    assert any(f.text.startswith("xsa12_dr7_high_bits_dropped:") for f in dr7[0].explanation)
