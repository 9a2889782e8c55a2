"""FIFO event channels and runstate in SMP Xen PV domains (docs/smp.md): each
vCPU has its own FIFO control block and queues, and each vCPU's runstate
counts the time it waits for the engine as runnable (steal time), as Xen 4.17
does. Expected answers cite xen.git stable-4.17:
xen/common/event_fifo.c (evtchn_fifo_init_control, evtchn_fifo_set_pending),
xen/common/sched/core.c (vcpu_runstate_change, vcpu_runstate_get),
xen/arch/x86/domain.c (update_runstate_area), xen/common/domain.c (do_vcpu_op)."""

from __future__ import annotations

import re
import struct

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.events import Port
from pvmon.backends.xen.events_fifo import LINK_MASK, LINKED, MASKED, PENDING
from pvmon.dispatch.console_input import script_lines
from pvmon.guests.initramfs import ensure_initramfs
from pvmon.session import Session
from tests.test_smp import _ctx

EINVAL, ENOENT, ENOSYS = -abi.EINVAL, -abi.ENOENT, -abi.ENOSYS
INIT_CONTROL, EXPAND_ARRAY = 11, 12
RUNNING, RUNNABLE, BLOCKED, OFFLINE = (abi.RUNSTATE_running, abi.RUNSTATE_runnable,
                                       abi.RUNSTATE_blocked, abi.RUNSTATE_offline)


@pytest.fixture
def smp(pvtest_v2):
    return Session(pvtest_v2, vcpus=2)


def _free_frames(sess: Session, n: int) -> list[int]:
    """``n`` frames the guest has not touched (the top of its RAM)."""
    top = sess.layout.nr_pages
    return list(range(top - 16, top - 16 + n))


def _arg_va(sess: Session) -> int:
    """A scratch hypercall argument in the (unused, mapped) boot stack."""
    return sess.layout.stack_top_va - 0x400


def _init_control(sess: Session, gfn: int, vcpu: int, offset: int = 0) -> int:
    va = _arg_va(sess)
    sess.machine.write_virt(va, struct.pack("<QIIB7x", gfn, offset, vcpu, 0))
    return sess.backend.hc_event_channel_op(INIT_CONTROL, va)


def _expand(sess: Session, gfn: int) -> int:
    va = _arg_va(sess)
    sess.machine.write_virt(va, struct.pack("<Q", gfn))
    return sess.backend.hc_event_channel_op(EXPAND_ARRAY, va)


def _fifo_domain(sess: Session):
    """Both vCPUs' control blocks and one event-array page, as Linux sets
    them up: (control-block machine addresses by vCPU, event array address)."""
    cb0, cb1, arr = _free_frames(sess, 3)
    assert _init_control(sess, cb0, 0) == 0
    assert _init_control(sess, cb1, 1) == 0
    assert _expand(sess, arr) == 0
    return {0: cb0 << 12, 1: cb1 << 12}, arr << 12


def _u32(sess: Session, ma: int) -> int:
    return struct.unpack("<I", sess.machine.read_phys(ma, 4))[0]


def _word(sess: Session, arr: int, port: int) -> int:
    return _u32(sess, arr + 4 * port)


def _head(sess: Session, cb: int, prio: int = 7) -> int:
    return _u32(sess, cb + 8 + 4 * prio)


def _consume(sess: Session, cb: int, arr: int, prio: int = 7) -> int:
    """What Linux's consume_one_event does with the head of a queue: clear
    LINKED (and LINK), head = the old LINK, clear PENDING. Returns the port."""
    port = _head(sess, cb, prio)
    w = _word(sess, arr, port)
    sess.machine.write_phys_data(cb + 8 + 4 * prio, struct.pack("<I", w & LINK_MASK))
    sess.machine.write_phys_data(arr + 4 * port,
                                 struct.pack("<I", w & ~(LINKED | LINK_MASK | PENDING)))
    return port


# ------------------------------------------------------------- FIFO set-up
def test_each_vcpu_registers_its_own_fifo_control_block(smp):
    """evtchn_fifo_init_control: any vCPU of the domain, once each (-EINVAL
    again: map_control_block), -ENOENT beyond the domain's vCPUs, -EINVAL for
    an offset not 8-byte aligned or crossing the page; link_bits 17 back."""
    f0, f1 = _free_frames(smp, 2)
    assert _init_control(smp, f0, 2) == ENOENT
    assert _init_control(smp, f0, 0, offset=4) == EINVAL
    assert _init_control(smp, f0, 0, offset=4096 - 64) == EINVAL
    assert smp.backend.events.fifo is None            # still the 2-level ABI
    assert _init_control(smp, f0, 0) == 0
    assert smp.machine.read_virt(_arg_va(smp) + 16, 1) == bytes((17,))
    assert _init_control(smp, f1, 1, offset=8) == 0
    assert _init_control(smp, f1, 1) == EINVAL
    assert smp.backend.events.fifo.control == {0: f0 << 12, 1: (f1 << 12) + 8}


def test_xen_3_4_has_no_fifo_abi_in_an_smp_domain_either(pvtest_v2):
    """FIFO event channels came with Xen 4.4: xen-3.4 answers init_control
    -ENOSYS, so Linux keeps the 2-level ABI, with one vCPU or more."""
    sess = Session(pvtest_v2, vcpus=2, backend="xen-3.4")
    assert _init_control(sess, _free_frames(sess, 1)[0], 0) == ENOSYS
    assert sess.backend.events.fifo is None


# ------------------------------------------------------- per-vCPU queues
def test_an_ipi_is_queued_on_the_target_vcpus_control_block_only(smp):
    """evtchn_fifo_set_pending acts on the notified vCPU's queue: its head,
    its READY bit, its evtchn_upcall_pending; vCPU 0's stay clear."""
    cbs, arr = _fifo_domain(smp)
    b = smp.backend
    ev = b.events
    port = ev.alloc(Port("ipi", vcpu=1))
    assert ev.send(port) == 0
    assert _word(smp, arr, port) & (PENDING | LINKED) == PENDING | LINKED
    assert _head(smp, cbs[1]) == port and _u32(smp, cbs[1]) == 1 << 7
    assert _head(smp, cbs[0]) == 0 and _u32(smp, cbs[0]) == 0
    assert b.vcpus[1].upcall_pending() and not b.vcpus[0].upcall_pending()


def test_a_second_event_links_behind_the_tail_and_leaves_ready_alone(smp):
    """A non-empty queue: the new port goes in the tail word's LINK (BUSY
    clear, try_set_link) and READY is not touched (only an empty queue sets
    it: 'if ( !linked && !guest_test_and_set_bit(... ready) )')."""
    cbs, arr = _fifo_domain(smp)
    ev = smp.backend.events
    a, c = (ev.alloc(Port("ipi", vcpu=1)) for _ in range(2))
    ev.send(a)
    smp.machine.write_phys_data(cbs[1], struct.pack("<I", 0))   # the guest took READY
    ev.send(c)
    assert _word(smp, arr, a) & LINK_MASK == c
    assert _head(smp, cbs[1]) == a
    assert _u32(smp, cbs[1]) == 0


def test_bind_vcpu_moves_a_ports_next_event_to_the_other_vcpus_queue(smp):
    """EVTCHNOP_bind_vcpu changes notify_vcpu_id; the next event is linked on
    the new vCPU's queue, and the old queue, whose tail it was, is empty
    again: a later event there becomes the head instead of linking behind
    the moved port (the fifo_lastq check 'if ( old_q->tail == port )')."""
    cbs, arr = _fifo_domain(smp)
    ev = smp.backend.events
    moved = ev.alloc(Port("unbound", remote_dom=0))
    other = ev.alloc(Port("unbound", remote_dom=0))
    ev.set_pending(moved)
    assert _head(smp, cbs[0]) == moved
    assert _consume(smp, cbs[0], arr) == moved           # vCPU 0 handles it
    ev.ports[moved].vcpu = 1                             # EVTCHNOP_bind_vcpu
    ev.set_pending(moved)
    assert _head(smp, cbs[1]) == moved and _u32(smp, cbs[1]) == 1 << 7
    ev.set_pending(other)                                # still on vCPU 0
    assert _head(smp, cbs[0]) == other
    assert _word(smp, arr, moved) & LINK_MASK == 0       # not linked behind it


def test_bind_vcpu_through_the_hypercall_moves_an_interdomain_port(smp):
    """EVTCHNOP_bind_vcpu (event_channel.c): -ENOENT beyond the domain's
    vCPUs; an IPI port cannot move (-EINVAL); an unbound port can."""
    b = smp.backend
    ev = b.events
    ipi = ev.alloc(Port("ipi", vcpu=0))
    unbound = ev.alloc(Port("unbound", remote_dom=0))
    va = _arg_va(smp)
    for port, vcpu, rc in ((unbound, 2, ENOENT), (ipi, 1, EINVAL), (unbound, 1, 0)):
        smp.machine.write_virt(va, struct.pack("<II", port, vcpu))
        assert b.hc_event_channel_op(8, va) == rc
    assert ev.port_vcpu(unbound) == 1


def test_an_event_for_a_vcpu_without_a_control_block_stays_pending_unlinked(smp):
    """'Control block not mapped ... we can just drop the event': PENDING is
    set, nothing is linked; the guest's unmask after init_control links it."""
    f0, f1, arr = _free_frames(smp, 3)
    assert _init_control(smp, f0, 0) == 0 and _expand(smp, arr) == 0
    ev = smp.backend.events
    port = ev.alloc(Port("ipi", vcpu=1))
    word = (arr << 12) + 4 * port
    smp.machine.write_phys_data(word, struct.pack("<I", MASKED))   # Linux binds masked
    ev.send(port)
    assert _u32(smp, word) == PENDING | MASKED
    assert _init_control(smp, f1, 1) == 0
    assert ev.unmask(port) == 0
    assert _u32(smp, word) == PENDING | LINKED
    assert _head(smp, f1 << 12) == port and smp.backend.vcpus[1].upcall_pending()


def test_expand_array_raises_earlier_events_on_the_vcpu_each_notifies(smp):
    """add_page_to_event_array re-raises ports pending before their page
    existed, with evtchn_fifo_set_pending on notify_vcpu_id's vCPU."""
    f0, f1, arr = _free_frames(smp, 3)
    assert _init_control(smp, f0, 0) == 0 and _init_control(smp, f1, 1) == 0
    ev = smp.backend.events
    port = ev.alloc(Port("ipi", vcpu=1))
    ev.send(port)
    assert ev.pending(port) and _head(smp, f1 << 12) == 0
    assert _expand(smp, arr) == 0
    assert _head(smp, f1 << 12) == port and _head(smp, f0 << 12) == 0


def test_a_fifo_port_becoming_pending_wakes_the_vcpu_polling_it(smp):
    """evtchn_fifo_set_pending ends with evtchn_check_pollers when the port
    was not pending before, masked or not."""
    _cbs, arr = _fifo_domain(smp)
    b = smp.backend
    ev = b.events
    kicker = ev.alloc(Port("ipi", vcpu=1))
    smp.machine.write_phys_data(arr + 4 * kicker, struct.pack("<I", MASKED))
    b.smp.state[1] = "polling"
    b.smp.polls[1] = (frozenset({kicker}), None)
    ev.send(kicker)
    assert b.smp.state[1] == "runnable" and 1 not in b.smp.polls
    assert not b.vcpus[1].upcall_pending()           # masked: no upcall


# ------------------------------------------------------------- runstate
def _bring_up_vcpu1(sess: Session) -> None:
    b = sess.backend
    assert b.smp.initialise(b.vcpus[1], bytes(_ctx(sess))) == 0
    assert b.smp.up(1) == 0


def _area(sess: Session, va: int) -> tuple:
    """(state, state_entry_time, time[4]) of a registered runstate area."""
    return struct.unpack("<i4xQQQQQ", sess.machine.read_virt(va, abi.VCPU_RUNSTATE_INFO_SIZE))


def test_a_vcpu_waiting_for_the_engine_accrues_runnable_time(smp):
    """Round robin on one engine: while vCPU 1 holds it for a quantum, vCPU 0
    is runnable, and the reverse (vcpu_runstate_change at each switch; the
    time spent down before VCPUOP_up is offline). Steal time is runnable +
    offline (Linux's xen_steal_clock)."""
    b = smp.backend
    sched, clock = b.smp, smp.machine.clock
    t0 = clock.now_ns
    _bring_up_vcpu1(smp)
    sched.reschedule(expired=True)          # vCPU 0's quantum ends: vCPU 1 runs
    q = sched.quantum_ns
    assert sched.current == 1
    v0, v1 = b.vcpus
    assert (v1.rs_state, v1.rs_entry) == (RUNNING, t0 + q)
    assert v1.rs_time == [0, q, 0, t0]
    sched.reschedule(expired=True)          # and back
    assert sched.current == 0
    assert v0.rs_time == [t0 + q, q, 0, 0] and v0.rs_state == RUNNING
    assert v1.rs_state == RUNNABLE and v1.rs_time == [q, q, 0, t0]


def test_runstate_areas_are_written_at_each_switch_out_and_in(smp):
    """update_runstate_area runs for prev and next in context_switch: vCPU 0's
    area says runnable once vCPU 1 has the engine, and running again, with
    time[running] counted up to state_entry_time only, after it is back."""
    b = smp.backend
    sched = b.smp
    va = smp.layout.stack_top_va - 0x800
    b.vcpus[0].register_runstate_area(va, current=True)
    _bring_up_vcpu1(smp)
    t0 = smp.machine.clock.now_ns
    sched.reschedule(expired=True)
    q = sched.quantum_ns
    assert _area(smp, va) == (RUNNABLE, t0 + q, t0 + q, 0, 0, 0)
    smp.machine.clock.advance(5000)         # vCPU 1 runs on: the area stays
    assert _area(smp, va) == (RUNNABLE, t0 + q, t0 + q, 0, 0, 0)
    sched.reschedule(expired=True)
    now = t0 + 5000 + 2 * q
    assert _area(smp, va) == (RUNNING, now, t0 + q, q + 5000, 0, 0)


def test_block_and_poll_count_as_blocked_and_down_as_offline(smp):
    """SCHEDOP_block and SCHEDOP_poll set VPF_blocked: runstate blocked from
    the call to the wake-up (vcpu_wake: runnable); VCPUOP_down: offline."""
    b = smp.backend
    sched, clock = b.smp, smp.machine.clock
    _bring_up_vcpu1(smp)
    sched.reschedule(expired=True)          # vCPU 1 on the engine
    v1 = b.vcpus[1]
    t = clock.now_ns
    assert sched.block(v1) == 0 and v1.rs_state == BLOCKED
    sched.reschedule(expired=False)         # vCPU 0 runs
    clock.advance(7000)
    sched.kick(1)
    assert v1.rs_state == RUNNABLE and v1.rs_time[BLOCKED] == 7000
    assert v1.rs_entry == t + 7000
    assert sched.down(1) == 0 and v1.rs_state == OFFLINE


def test_register_runstate_area_copies_the_caller_as_is_another_vcpu_up_to_now(smp):
    """VCPUOP_register_runstate_memory_area (do_vcpu_op): for the calling
    vCPU a copy of v->runstate, for another vcpu_runstate_get's (the current
    state's time up to now). VCPUOP_get_runstate_info: vcpu_runstate_get."""
    b = smp.backend
    clock = smp.machine.clock
    clock.advance(3000)
    now = clock.now_ns
    va0, va1 = smp.layout.stack_top_va - 0x800, smp.layout.stack_top_va - 0x780
    b.vcpus[0].register_runstate_area(va0, current=True)
    b.vcpus[1].register_runstate_area(va1, current=False)
    assert _area(smp, va0) == (RUNNING, 0, 0, 0, 0, 0)
    assert _area(smp, va1) == (OFFLINE, 0, 0, 0, 0, now)
    assert struct.unpack("<i4xQQQQQ", b.vcpus[0].runstate_bytes()) == \
        (RUNNING, 0, now, 0, 0, 0)


def test_the_runstate_update_flag_brackets_the_copy(smp):
    """update_runstate_area with VMASST_TYPE_runstate_update_flag: the top
    byte of state_entry_time with XEN_RUNSTATE_UPDATE first, the whole struct
    with it, the top byte without it last; without the assist one copy."""
    b = smp.backend
    v = b.vcpus[0]
    v.rs_entry = 0x1234
    raw = struct.pack("<i4xQQQQQ", RUNNING, 0x1234, 0, 0, 0, 0)
    assert v.runstate_area_writes(False) == [(0, raw)]
    flagged = struct.pack("<i4xQQQQQ", RUNNING, 0x1234 | abi.XEN_RUNSTATE_UPDATE, 0, 0, 0, 0)
    assert v.runstate_area_writes(True) == [(15, b"\x80"), (0, flagged), (15, b"\x00")]
    va = smp.layout.stack_top_va - 0x800
    v.runstate_va = va
    b.vm_assist |= 1 << 5
    v.update_runstate()
    assert smp.machine.read_virt(va, 48) == raw      # the flag does not stay


def test_a_one_vcpu_domain_is_never_runnable_or_offline(pvtest_v2):
    """One vCPU on the engine: its idle time is blocked, and it has no steal
    time (runnable + offline stay 0)."""
    sess = Session(pvtest_v2)
    v = sess.backend.vcpu
    now = sess.machine.clock.now_ns
    v.idle_until(now + 5000)
    assert v.rs_state == RUNNING and v.rs_time == [now, 0, 5000, 0]


# ------------------------------------------------- the SMP reference guest
def test_pvtest_v2_smp_passes_its_smp_checks_with_2_vcpus_and_replays(tmp_path):
    """pvtest-v2-smp (guests/src/checks_smp.c): vCPU bring-up, runnable time
    while the other vCPU holds the engine, per-vCPU FIFO queues; every check
    passes and verify replay repeats the run event for event."""
    from pvmon.guests.catalog import resolve
    from pvmon.replay.closed import replay_closed
    from pvmon.replay.source import open_run
    from pvmon.trace.reader import TraceReader
    trace = tmp_path / "smp.pvt"
    res = Session(resolve("pvtest-v2-smp"), vcpus=2, record=trace).run(timeout=120)
    text = res.console.decode(errors="replace")
    assert "SMP: FIFO event channels per vCPU" in text and "FAIL" not in text, text
    assert re.search(r"pvtest: \d+ passed, 0 failed", text)
    assert res.exit_kind == "shutdown" and res.clean
    rep = replay_closed(open_run(trace))
    assert rep.total == 0 and rep.compared == len(TraceReader(trace))


def test_pvtest_v2_smp_skips_its_smp_checks_with_one_vcpu():
    from pvmon.guests.catalog import resolve
    res = Session(resolve("pvtest-v2-smp")).run(timeout=120)
    text = res.console.decode(errors="replace")
    assert "SMP checks # SKIP one vCPU" in text and res.clean


# ------------------------------------------------------------------ Debian
@pytest.mark.debian
@pytest.mark.slow
def test_debian_6_12_with_2_vcpus_uses_fifo_events_and_sees_steal_time(debian612):
    """Linux tries FIFO first (xen_evtchn_fifo_init, a control block for each
    CPU as it comes up) and reads steal time from runstate: /proc/stat's
    eighth column is non-zero for both CPUs."""
    initrd = ensure_initramfs("busybox").read_bytes()
    res = Session(debian612, vcpus=2, initrd=initrd, initrd_info={"name": "busybox"},
                  script=script_lines("cat /proc/stat\npoweroff -f\n")).run(timeout=600)
    text = res.console.decode(errors="replace")
    assert "xen:events: Using FIFO-based ABI" in text
    assert "smp: Brought up 1 node, 2 CPUs" in text
    for marker in ("BUG:", "Oops", "general protection fault", "Kernel panic"):
        assert marker not in text, marker
    steal = {}
    for line in text.splitlines():
        m = re.match(r"cpu(\d+) ((?:\d+ ?)+)$", line.strip())
        if m:
            steal[int(m.group(1))] = int(m.group(2).split()[7])
    assert set(steal) == {0, 1} and all(s > 0 for s in steal.values()), steal
    assert res.exit_kind == "shutdown" and res.clean
