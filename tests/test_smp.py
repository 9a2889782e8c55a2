"""SMP Xen PV guests (--vcpus N, docs/smp.md): the option's bounds, the
VCPUOPs that bring a vCPU up as Xen 4.17 checks them, and Debian kernels
booting with several vCPUs, deterministically and replayable."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.dispatch.console_input import script_lines
from pvmon.guests.initramfs import ensure_initramfs
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

REPO = Path(__file__).resolve().parent.parent
O = abi.VCPU_GUEST_CONTEXT
EINVAL, EEXIST, ENOENT = -abi.EINVAL, -abi.EEXIST, -abi.ENOENT


def _pvmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvmon", *args], capture_output=True,
                          cwd=REPO, timeout=120, check=False)


@pytest.mark.parametrize("value", ["0", "1000", "two"])
def test_a_bad_vcpu_count_is_one_line_and_exit_2(value):
    p = _pvmon("run", "--vcpus", value)
    err = p.stderr.decode()
    assert p.returncode == 2
    assert err.count("\n") == 1 and "--vcpus" in err and "Traceback" not in err


def test_more_than_one_vcpu_on_the_hvm_platform_is_refused_in_one_line():
    p = _pvmon("run", "pvtest-v2-pvh", "--vcpus", "2")
    err = p.stderr.decode()
    assert p.returncode == 2 and err.count("\n") == 1
    assert "only Xen PV guests run more than one vCPU" in err


def test_one_vcpu_records_no_switch_and_every_event_on_cpu_0(pvtest_v2, tmp_path):
    trace = tmp_path / "one.pvt"
    Session(pvtest_v2, record=trace).run(timeout=120)
    with TraceReader(trace) as r:
        assert r.header["machine"]["vcpus"] == 1
        assert {e["cpu"] for e in r} == {0}
        assert not [e for e in r if e["k"] == "vcpu_switch"]


# ------------------------------------------------------------ VCPUOP_initialise
def _ctx(sess: Session, **over) -> bytearray:
    """A vcpu_guest_context as Linux's cpu_initialize_context fills it: kernel
    mode, a RIP and stack in the kernel, the builder's L4 as CR3."""
    lay = sess.layout
    c = bytearray(abi.VCPU_GUEST_CONTEXT_SIZE)
    ur = O["user_regs"]
    vals = {"flags": abi.VGCF_in_kernel, "rip": lay.virt_base + 0x1000,
            "rsp": lay.stack_top_va - 0x100, "kernel_sp": lay.stack_top_va - 0x100,
            "cr3": lay.pt_base_pfn << 12, "ldt_base": 0, "ldt_ents": 0, "gdt_ents": 0,
            "trap0": 0, "event": lay.virt_base + 0x2000}
    vals.update(over)
    struct.pack_into("<Q", c, O["flags"], vals["flags"])
    struct.pack_into("<Q", c, ur + 128, vals["rip"])
    struct.pack_into("<H", c, ur + 136, abi.FLAT_KERNEL_CS64)
    struct.pack_into("<QQ", c, ur + 144, 0x1000, vals["rsp"])
    struct.pack_into("<Q", c, O["trap_ctxt"] + 8, vals["trap0"])   # vector 0's handler
    struct.pack_into("<QQ", c, O["ldt_base"], vals["ldt_base"], vals["ldt_ents"])
    struct.pack_into("<Q", c, O["gdt_ents"], vals["gdt_ents"])
    struct.pack_into("<QQ", c, O["kernel_ss"], abi.FLAT_KERNEL_SS64, vals["kernel_sp"])
    struct.pack_into("<Q", c, O["ctrlreg"] + 3 * 8, vals["cr3"])
    struct.pack_into("<Q", c, O["event_callback_eip"], vals["event"])
    return c


@pytest.fixture
def smp_session(pvtest_v2):
    return Session(pvtest_v2, vcpus=2)


NONCANON = 0x0000_8000_0000_0000


@pytest.mark.parametrize("field, value", [
    ("rip", NONCANON), ("rsp", NONCANON), ("kernel_sp", NONCANON), ("event", NONCANON),
    ("trap0", NONCANON), ("ldt_base", 0x1234), ("gdt_ents", 14 * 512 + 1),
    ("cr3", 1 << 40),
])
def test_vcpuop_initialise_refuses_what_arch_set_info_guest_refuses(smp_session, field, value):
    """Non-canonical addresses, an unaligned LDT, a GDT reaching Xen's reserved
    entries, a CR3 frame outside the domain: -EINVAL, and the vCPU stays
    uninitialised (xen/arch/x86/domain.c arch_set_info_guest@stable-4.17)."""
    over = {field: value}
    if field == "ldt_base":
        over["ldt_ents"] = 1
    b = smp_session.backend
    v1 = b.vcpus[1]
    assert b.smp.initialise(v1, bytes(_ctx(smp_session, **over))) == EINVAL
    assert not v1.initialised


def test_vcpuop_initialise_wants_cr3_to_be_a_root_table(smp_session):
    """A frame pinned as an L1 cannot take the root type (get_page_type)."""
    b = smp_session.backend
    l1 = smp_session.layout.pt_base_pfn + 3
    b.pinned[l1] = 1
    assert b.smp.initialise(b.vcpus[1], bytes(_ctx(smp_session, cr3=l1 << 12))) == EINVAL


def test_vcpuop_initialise_once_then_eexist_and_up_runs_it(smp_session):
    b = smp_session.backend
    smp = b.smp
    v1 = b.vcpus[1]
    assert smp.is_up(1) == 0
    assert smp.up(1) == EINVAL                    # not initialised yet
    ctx = bytes(_ctx(smp_session))
    assert smp.initialise(v1, ctx) == 0
    assert v1.initialised and v1.kernel_cr3 == smp_session.layout.pt_base_pfn
    assert v1.callbacks[abi.CALLBACKTYPE_event][0] == smp_session.layout.virt_base + 0x2000
    assert smp.initialise(v1, ctx) == EEXIST      # v->is_initialised
    assert smp.up(1) == 0 and smp.is_up(1) == 1
    assert smp.state[1] == "runnable"


def test_vcpu_ops_on_a_vcpu_the_domain_lacks_are_enoent(smp_session):
    b = smp_session.backend
    assert b.hc_vcpu_op(abi.VCPUOP["is_up"], 2, 0) == ENOENT
    assert b.hc_vcpu_op(abi.VCPUOP["is_up"], 1, 0) == 0
    assert b.hc_vcpu_op(abi.VCPUOP["is_up"], 0, 0) == 1


def test_per_vcpu_virqs_and_ipis_bind_on_any_vcpu_global_ones_on_vcpu_0(smp_session):
    ev = smp_session.backend.events
    assert ev.bind_virq(abi.VIRQ_TIMER, 1) > 0
    assert ev.bind_virq(abi.VIRQ_TIMER, 1) == EEXIST
    assert ev.bind_virq(abi.VIRQ_TIMER, 2) == ENOENT
    assert ev.bind_virq(2, 1) == EINVAL           # VIRQ_CONSOLE is global
    port = ev.bind_virq(abi.VIRQ_TIMER, 0)
    assert ev.port_vcpu(port) == 0


def test_an_ipi_marks_the_target_vcpu_not_the_sender(smp_session):
    b = smp_session.backend
    from pvmon.backends.xen.events import Port
    ev = b.events
    port = ev.alloc(Port("ipi", vcpu=1))
    ev.unmask(port)
    mask = abi.SHARED_INFO["evtchn_mask"]
    ev._clear_bit(mask, port)
    ev.send(port)
    assert b.vcpus[1].upcall_pending() and not b.vcpus[0].upcall_pending()


# ------------------------------------------------------------------- Debian
@pytest.mark.debian
@pytest.mark.slow
def test_debian_6_12_with_2_vcpus_boots_to_the_panic_and_replays_identically(debian612,
                                                                             tmp_path):
    trace = tmp_path / "smp2.pvt"
    res = Session(debian612, vcpus=2, record=trace).run(timeout=600)
    text = res.console.decode(errors="replace")
    assert "smp: Brought up 1 node, 2 CPUs" in text
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in text
    for marker in ("BUG:", "Oops", "general protection fault", "------------[ cut here ]"):
        assert marker not in text, marker
    assert res.exit_kind == "crash" and res.shutdown_reason == abi.SHUTDOWN_crash
    with TraceReader(trace) as r:
        assert r.header["machine"]["vcpus"] == 2
        kinds = {(e["k"], e["cpu"]) for e in r}
        switches = [e for e in r if e["k"] == "vcpu_switch"]
    assert ("hc", 1) in kinds and ("hc", 0) in kinds
    assert {s["why"] for s in switches} >= {"block", "quantum"}
    # verify replay: the same guest and configuration give the same events
    from pvmon.replay.closed import replay_closed
    from pvmon.replay.source import open_run
    rep = replay_closed(open_run(trace))
    assert rep.total == 0 and rep.compared == len(TraceReader(trace))


@pytest.mark.debian
@pytest.mark.slow
@pytest.mark.parametrize("vcpus", [2, 4])
def test_debian_6_12_busybox_nproc_says_the_vcpu_count(debian612, vcpus):
    initrd = ensure_initramfs("busybox").read_bytes()
    res = Session(debian612, vcpus=vcpus, initrd=initrd, initrd_info={"name": "busybox"},
                  script=script_lines("nproc\npoweroff -f\n")).run(timeout=600)
    text = res.console.decode(errors="replace")
    assert f"smp: Brought up 1 node, {vcpus} CPUs" in text
    user = text.split("Run /init as init process", 1)[1]
    assert f"nproc\r\n{vcpus}\r\n" in user
    for marker in ("BUG:", "Oops", "general protection fault", "Kernel panic"):
        assert marker not in text, marker
    assert res.exit_kind == "shutdown" and res.clean


def test_a_port_sent_to_wakes_the_vcpu_polling_it_even_masked(smp_session):
    """evtchn_check_pollers: a poller wakes when a port it polls becomes
    pending, whatever its mask; a masked port it does not poll leaves it
    polling."""
    b = smp_session.backend
    smp, ev = b.smp, b.events
    from pvmon.backends.xen.events import Port
    kicker = ev.alloc(Port("ipi", vcpu=1))
    other = ev.alloc(Port("ipi", vcpu=1))
    for port in (kicker, other):                  # Linux masks its kicker IRQ
        ev._set_bit(abi.SHARED_INFO["evtchn_mask"], port)
    smp.state[1] = "polling"
    smp.polls[1] = (frozenset({kicker}), None)
    ev.send(other)
    assert smp.state[1] == "polling"
    ev.send(kicker)
    assert smp.state[1] == "runnable" and 1 not in smp.polls
    assert not b.vcpus[1].upcall_pending()        # masked: no upcall, just the wake-up


def test_an_event_marked_for_a_blocked_vcpu_wakes_it(smp_session):
    b = smp_session.backend
    smp, ev = b.smp, b.events
    from pvmon.backends.xen.events import Port
    port = ev.alloc(Port("ipi", vcpu=1))
    ev._clear_bit(abi.SHARED_INFO["evtchn_mask"], port)
    smp.state[1] = "blocked"
    ev.send(port)
    assert b.vcpus[1].upcall_pending() and smp.state[1] == "runnable"
