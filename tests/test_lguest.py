"""lguest (final mainline ABI, backend lguest-4.13) with its 32-bit reference
guest pvtest-lguest: a ring-1 kernel entered the way lguest's Launcher
entered Linux, calling the host with int $0x1f. It passes every check and
powers off with LHCALL_SHUTDOWN; its recording verifies byte-identical; the
trace tools name LHCALL_* calls; the host's reactions to bad calls are
lguest's (the guest is killed with the host's message, never a traceback)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.backends.lguest import abi
from pvmon.backends.registry import get_backend, guest_kind
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "pvmon" / "guests" / "images"
SUMMARY = re.compile(r"pvtest: (\d+) passed, (\d+) failed")
MEM = 64 << 20


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("lguest") / "pvtest-lguest.pvt"
    sess = Session(resolve("pvtest-lguest"), backend="lguest-4.13", memory=MEM, record=path)
    calls = []
    sess.dispatch.call_listeners.append(calls.append)
    return sess.run(timeout=60), path, calls


def _pvmon(*args):
    return subprocess.run([sys.executable, "-m", "pvmon", *args], check=False,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_pvtest_lguest_passes_every_check_and_powers_off(recorded):
    res, _path, _calls = recorded
    text = res.console.decode()
    m = SUMMARY.search(text)
    assert m, text[-2000:]
    assert int(m.group(1)) >= 50 and m.group(2) == "0", text[-2000:]
    assert "FAIL" not in text and "pvtest-lguest booting" in text
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0 and res.clean


def test_calls_go_through_int_0x1f_and_the_async_ring_with_lhcall_names(recorded):
    res, _path, calls = recorded
    assert calls[0]["name"] == "LHCALL_LGUEST_INIT" and calls[-1]["name"] == "LHCALL_SHUTDOWN"
    assert {c["abi"] for c in calls} == {"lguest"}
    assert {c["via"] for c in calls} == {"int0x1f", "ring"}
    ring = [c for c in calls if c["via"] == "ring"]
    assert [c["name"] for c in ring] == ["LHCALL_SET_PTE", "LHCALL_SET_PTE"]
    names = {c["name"] for c in calls}
    assert {"LHCALL_NEW_PGTABLE", "LHCALL_SET_PTE", "LHCALL_SET_PGD", "LHCALL_FLUSH_TLB",
            "LHCALL_LOAD_IDT_ENTRY", "LHCALL_LOAD_GDT_ENTRY", "LHCALL_LOAD_TLS",
            "LHCALL_SET_STACK", "LHCALL_TS", "LHCALL_SET_CLOCKEVENT", "LHCALL_HALT",
            "LHCALL_SEND_INTERRUPTS", "LHCALL_FLUSH_ASYNC"} <= names
    init = calls[0]
    assert init["op"]["syscall_vec"] == 0x80 and init["args"][0] == init["op"]["lguest_data"]
    # the clock event is IRQ 0 on vector 32; #UD, #GP, #NM, #PF were reflected
    assert res.upcalls == 3
    assert {"#UD", "#NM", "#GP", "#PF"} <= set(res.faults)


def test_a_pvtest_lguest_recording_verifies_identical(recorded):
    _res, path, _calls = recorded
    rep = replay_closed(open_run(path))
    assert rep.mode == "verify" and rep.total == 0
    assert rep.compared == len(TraceReader(path))


def test_trace_tools_name_the_lhcalls(recorded):
    _res, path, _calls = recorded
    cat = _pvmon("trace", "cat", str(path))
    assert cat.returncode == 0, cat.stderr
    assert "LHCALL_LGUEST_INIT(lguest_data=" in cat.stdout
    stats = _pvmon("trace", "stats", str(path))
    assert stats.returncode == 0 and "LHCALL_SET_CLOCKE" in stats.stdout


def test_pvmon_run_pvtest_lguest_runs_on_lguest_by_default():
    p = _pvmon("run", "pvtest-lguest")
    out = p.stdout + p.stderr
    assert p.returncode == 0, p.stderr
    assert "exit: shutdown - LHCALL_SHUTDOWN power off: Power down" in out
    assert "59 passed, 0 failed" in out


def test_the_failing_variant_makes_the_run_fail():
    p = _pvmon("run", str(IMAGES / "pvtest-lguest-fail.elf"), "--backend", "lguest-4.13")
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-2000:]
    assert "FAIL" in out and "lguest: CRASH: pvtest: checks failed" in out


def test_wrong_image_for_the_abi_is_one_line():
    p = _pvmon("run", "pvtest-v2", "--backend", "lguest-4.13")
    assert p.returncode == 2 and "32-bit" in p.stderr and "Traceback" not in p.stderr
    p = _pvmon("run", "pvtest-lguest", "--backend", "xen-4.17")
    assert p.returncode == 2 and "Traceback" not in p.stderr


# ------------------------------------------------------------- bad calls
def _attached():
    """A built, attached (not yet run) pvtest-lguest domain: (session, backend)."""
    sess = Session(resolve("pvtest-lguest"), backend="lguest-4.13", memory=MEM)
    return sess, sess.backend


def _init(sess, b, syscall_vec=0x80, pa=0x200000):
    sess.machine.write_phys(pa + abi.LD_SYSCALL_VEC, syscall_vec.to_bytes(4, "little"))
    b.call(1, (pa, 0, 0, 0))


@pytest.mark.parametrize("calls, message", [
    ([(4, (0x10000, 0, 0, 0))], "hypercall 4 before INIT"),
    (["init", (99, (0, 0, 0, 0))], "Bad hypercall 99"),
    (["init", (13, (0x10000, 0, 0, 0))], "Bad hypercall 13"),
    (["init", (6, (40, 0x00610000, 0x8C00, 0))], "bad IDT type 12"),
    (["init", (6, (256, 0x00610000, 0x8F00, 0))], "Setting idt entry 256"),
    (["init", (7, (0x68, 0x1000, 1, 0))], "bad stack segment 104"),
    (["init", (7, (0x69, 0x1000, 3, 0))], "bad stack pages 3"),
    (["init", (14, (0x10000, 0xFFC00000, 0, 0))], "attempt to set pte into Switcher pages"),
    (["init", (14, (0x10000, 0x1000, 0x7FFFF003, 0))], "bad page table entry"),
    (["init", (4, (0x7FFFF000, 0, 0, 0))], "bad page table 0x7ffff000"),
    (["init", (18, (32, 0, 0, 0))], "too many gdt entries 32"),
    (["init", (15, (0x10000, 1025, 0, 0))], "Attempt to set pgd 1025/1024"),
    (["init", (1, (0x200000, 0, 0, 0))], "already have lguest_data"),
    ([(1, (0xFFFFF000, 0, 0, 0))], "bad guest page 0xfffff000"),
])
def test_lguest_kills_the_guest_for_bad_calls_with_its_message(calls, message):
    sess, b = _attached()
    for c in calls:
        if c == "init":
            _init(sess, b)
            assert sess.machine.stop_reason is None
        else:
            b.call(*c)
    stop = sess.machine.stop_reason
    assert stop is not None and stop.kind == "crash"
    assert f"lguest killed the guest: {message}" in stop.detail


def test_a_bad_syscall_vector_at_init_kills_the_guest():
    sess, b = _attached()
    _init(sess, b, syscall_vec=0x40)
    assert "bad syscall vector" in sess.machine.stop_reason.detail


def test_a_hypercall_before_init_in_a_running_guest_names_the_call_and_rip():
    sess, _b = _attached()
    entry = sess.layout.entry
    # the guest's first instructions: mov $0x90000, %esp; mov $4, %eax; int $0x1f
    sess.machine.write_phys(entry, bytes([0xBC, 0, 0, 9, 0, 0xB8, 4, 0, 0, 0, 0xCD, 0x1F]))
    res = sess.run(timeout=20)
    assert res.exit_kind == "crash"
    stop = sess.machine.stop_reason
    assert "hypercall 4 before INIT (LHCALL_NEW_PGTABLE)" in stop.detail
    assert stop.rip == entry + 12


def test_the_lguest_guest_kind_and_backend_are_registered():
    b = get_backend("lguest-4.13")
    assert b.abi == "lguest" and guest_kind(b).name == "lguest"
    assert abi.hypercall_name(9) == "LHCALL_SET_CLOCKEVENT"


def test_trace_pvops_maps_the_lhcalls_onto_canonical_operations(recorded):
    from pvmon.pvops import count, derive
    _res, path, _calls = recorded
    reader = TraceReader(path)
    ops = list(derive(iter(reader), "lguest", reader.header))
    c = count(ops)
    assert c["cpu.set_trap"] == 8 and c["mmu.new_root"] == 1 and c["power.shutdown"] == 1
    assert c["time.oneshot"] == 3 and c["time.stop"] == 1 and c["sched.block"] == 1
    assert c["mmu.invlpg"] == 1 and "unmapped" not in c
    ring = [o for o in ops if o.batch]
    assert [o.call for o in ring] == ["LHCALL_SET_PTE", "LHCALL_SET_PTE"]
    p = _pvmon("trace", "pvops", str(path))
    assert p.returncode == 0 and "memory.share_area" in p.stdout


def test_a_trap_the_guest_has_no_handler_for_kills_it_as_lguest_does():
    sess, _b = _attached()
    entry = sess.layout.entry
    # mov $0x90000, %esp; ud2   (no IDT entry for #UD)
    sess.machine.write_phys(entry, bytes([0xBC, 0, 0, 9, 0, 0x0F, 0x0B]))
    res = sess.run(timeout=20)
    assert res.exit_kind == "crash"
    assert sess.machine.stop_reason.detail == \
        f"lguest killed the guest: unhandled trap 6 at {entry + 5:#x} (0x0)"


def test_the_tui_plays_an_lguest_trace_and_boots_pvtest_lguest_live(recorded):
    import asyncio

    from pvmon.ui.app import PvmonApp
    from tests.tui_support import live_app, until
    _res, path, _calls = recorded

    async def player():
        app = PvmonApp(trace=path)
        async with app.run_test(size=(110, 32)) as pilot:
            await until(pilot, lambda: app.screen.index is not None)
            app.screen.seek_seq(app.screen.index.seqs[5])
            await pilot.pause(0.2)

    async def live():
        app, _live = live_app("pvtest-lguest", backend="lguest-4.13")
        async with app.run_test(size=(110, 32)) as pilot:
            await until(pilot, lambda: app.screen._finished_shown)
            assert "59 passed, 0 failed" in _live.session.console.decode()

    asyncio.run(player())
    asyncio.run(live())


# ------------------------------------------------------------- the 4.0 era
def test_pvtest_lguest_passes_on_lguest_4_0_printing_through_notify():
    sess = Session(resolve("pvtest-lguest"), backend="lguest-4.0", memory=MEM)
    calls = []
    sess.dispatch.call_listeners.append(calls.append)
    res = sess.run(timeout=60)
    text = res.console.decode()
    assert "console: LHCALL_NOTIFY" in text and ", 0 failed" in text, text[-1500:]
    assert res.clean and res.hypercalls["LHCALL_NOTIFY"] > 50
    assert {c["name"] for c in calls if c["nr"] == 17} == {"LHCALL_NOTIFY"}


def test_notify_is_a_bad_hypercall_on_4_13_and_beyond_ram_the_4_0_launcher_exits():
    sess, b = _attached()
    _init(sess, b)
    b.call(17, (0x1000, 0, 0, 0))
    assert "Bad hypercall 17" in sess.machine.stop_reason.detail
    sess = Session(resolve("pvtest-lguest"), backend="lguest-4.0", memory=MEM)
    _init(sess, sess.backend)
    sess.backend.call(17, (MEM + 0x1000, 0, 0, 0))
    assert sess.machine.stop_reason.detail == \
        f"the Launcher exited: Bad NOTIFY {MEM + 0x1000:#x}"


def test_a_4_13_recording_replayed_on_lguest_4_0_diverges_with_the_declared_reasons(recorded):
    _res, path, _calls = recorded
    p = _pvmon("replay", str(path), "--backend", "lguest-4.0")
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 1, out[-2000:]
    assert "lguest:LHCALL_NOTIFY" in out and "NOTIFY went with the lguest bus in 4.1" in out
    assert "the guest tolerated every difference and ended as recorded" in out
    assert "Traceback" not in out


def test_random_calls_never_raise_in_the_host():
    """Hostile arguments: every call either works or kills the guest the lguest
    way; nothing escapes as a Python exception."""
    import random
    rng = random.Random(20)
    interesting = [0, 1, 0x1000, 0x200000, MEM - 4, MEM, MEM + 0x3000, 0xFFC00000,
                   0xFFFFFFFF, 0x80000000]
    for _round in range(12):
        sess, b = _attached()
        _init(sess, b)
        for _ in range(40):
            nr = rng.choice([*abi.HYPERCALLS, 3, 11, 12, 17, 20, 99, 0xFFFFFFFF])
            if nr in (10, 2):
                continue      # HALT and SHUTDOWN end or idle the run: covered elsewhere
            args = tuple(rng.choice(interesting + [rng.getrandbits(32)]) for _ in range(4))
            b.call(nr, args)
            stop = sess.machine.stop_reason
            if stop is not None:
                assert stop.kind == "crash" and stop.detail.startswith(
                    ("lguest killed the guest: ", "the Launcher exited: ")), stop
                break


def test_replays_an_lguest_trace_cannot_do_are_refused_in_one_line(recorded):
    _res, path, _calls = recorded
    p = _pvmon("replay", str(path), "--backend", "lguest-4.0", "--open-loop")
    assert p.returncode == 2 and "replay it closed loop" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    p = _pvmon("replay", str(path), "--backend", "xen-4.17")
    assert p.returncode == 2 and "is a backend of the xen ABI" in p.stderr
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------ PAE
def test_pvtest_lguest_pae_runs_on_a_pae_host_and_its_recording_verifies(tmp_path):
    path = tmp_path / "pae.pvt"
    img = resolve("pvtest-lguest-pae")
    assert img.mode == "pae" and img.backend == "lguest-4.13"
    sess = Session(img, backend="lguest-4.13", memory=MEM, record=path, mode="pae")
    calls = []
    sess.dispatch.call_listeners.append(calls.append)
    res = sess.run(timeout=60)
    text = res.console.decode()
    assert ", PAE;" in text and "60 passed, 0 failed" in text, text[-1500:]
    assert res.clean
    assert "LHCALL_SET_PMD" in {c["name"] for c in calls}
    pte = next(c for c in calls if c["name"] == "LHCALL_SET_PTE")
    assert pte["op"]["pte"] == pte["args"][2] | pte["args"][3] << 32
    assert TraceReader(path).header["machine"]["mode"] == "pae"
    rep = replay_closed(open_run(path))
    assert rep.mode == "verify" and rep.total == 0


def test_pae_hosts_check_pdpt_alignment_and_the_pgd_index_of_four():
    sess = Session(resolve("pvtest-lguest-pae"), backend="lguest-4.13", memory=MEM, mode="pae")
    b = sess.backend
    _init(sess, b)
    b.call(15, (0x10000, 5, 0, 0))
    assert "Attempt to set pgd 5/4" in sess.machine.stop_reason.detail
    sess = Session(resolve("pvtest-lguest-pae"), backend="lguest-4.13", memory=MEM, mode="pae")
    _init(sess, sess.backend)
    sess.backend.call(4, (0x10010, 0, 0, 0))
    assert "bad page table 0x10010" in sess.machine.stop_reason.detail


def test_pvmon_diff_names_the_lguest_guest_modes(recorded, tmp_path):
    _res, path, _calls = recorded
    pae = tmp_path / "pae.pvt"
    Session(resolve("pvtest-lguest-pae"), backend="lguest-4.13", memory=MEM, record=pae,
            mode="pae").run(timeout=60)
    p = _pvmon("diff", str(path), str(pae))
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr
    assert "left NONPAE, right PAE" in p.stdout and "LHCALL_SET_PMD" in p.stdout
