"""Stock Debian kernels boot as Xen PVH guests (--mode pvh): entered in 32-bit
protected mode at XEN_ELFNOTE_PHYS32_ENTRY with hvm_start_info, hypercalls by
vmcall, event upcalls through the guest's own IDT; recorded, verified and
replayed like PV guests; bad requests get one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pvmon.engine.machine import Stop
from pvmon.guests.initramfs import ensure_initramfs
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

pytestmark = [pytest.mark.debian, pytest.mark.slow]

BAD = ("WARNING:", "BUG:", "Oops", "general protection fault", "------------[ cut here ]")


def pvmon(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvmon", *args], capture_output=True,
                          text=True, timeout=timeout, check=False, **kw)


def _check_panic_boot(res) -> str:
    text = res.console.decode(errors="replace")
    assert "Booting kernel on Xen PVH" in text
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in text
    before = text.split("Kernel panic - not syncing: VFS")[0]
    for marker in BAD:
        assert marker not in before, marker
    assert "Grant table initialized" in text
    assert "installing Xen timer for CPU 0" in text
    assert res.exit_kind == "crash" and res.shutdown_reason == 3
    # what a PV guest needs hypercalls for, a PVH guest does natively
    for pv_only in ("mmu_update", "mmuext_op", "stack_switch", "iret", "set_trap_table"):
        assert res.hypercalls[pv_only] == 0, pv_only
    assert res.hypercalls["hvm_op"] >= 4 and res.upcalls > 0
    return text


@pytest.fixture(scope="module")
def pvh_trace(debian612, tmp_path_factory):
    """A recorded PVH boot of Debian 6.12 to the panic, and its result."""
    path = tmp_path_factory.mktemp("pvh") / "pvh.pvt"
    res = Session(debian612, mode="pvh", record=path).run(timeout=600)
    return path, res


def test_debian_6_12_boots_as_pvh_to_the_root_mount_panic(pvh_trace):
    _check_panic_boot(pvh_trace[1])


def test_debian_6_1_boots_as_pvh_to_the_root_mount_panic(debian61):
    _check_panic_boot(Session(debian61, mode="pvh").run(timeout=600))


def test_a_pvh_boot_is_recorded_byte_for_byte_the_same_twice_and_verifies(debian612, pvh_trace,
                                                                          tmp_path):
    paths = [pvh_trace[0], tmp_path / "again.pvt"]
    Session(debian612, mode="pvh", record=paths[1]).run(timeout=600)
    streams = [[ev for ev in TraceReader(p)] for p in paths]
    assert streams[0] == streams[1]
    kinds = {ev["k"] for ev in streams[0]}
    assert {"hc", "msr", "io", "mmio", "irq", "cpuid"} <= kinds
    assert TraceReader(paths[0]).header["machine"]["mode"] == "pvh"
    p = pvmon("replay", str(paths[0]))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "outcome: identical" in p.stdout


def test_a_pvh_boot_records_its_pit_calibration_as_runs_of_port_and_tsc_reads(pvh_trace):
    evs = list(TraceReader(pvh_trace[0]))
    runs = [e for e in evs if e["k"] == "io_run"]
    # Linux's quick_pit_calibrate: about 50,000 x (inb $0x42; inb $0x42; rdtsc),
    # about a hundred io_run and tsc_run events instead of 150,000 events
    assert sum(len(e["port"]) for e in runs) > 90_000 and len(runs) < 200
    assert len(evs) < 20_000


def test_a_pvh_recording_stopped_inside_a_port_and_a_tsc_run_verifies_to_its_end(
        debian612, tmp_path):
    """The stop lands while a run of port reads and a run of TSC reads are both
    open: both are written cut short, and verify cuts its own at the same reads."""
    path = tmp_path / "cut.pvt"
    sess = Session(debian612, mode="pvh", record=path)
    d = sess.dispatch

    def stop_in_the_pit_loop():
        if d._io_ports is not None and d._tsc_rips is not None and len(d._io_ports) > 300:
            return Stop("interrupted", "interrupted by SIGINT", d.cur_rip(), signal=2)
        return None
    d.exit_hook = stop_in_the_pit_loop
    assert sess.run(timeout=600).exit_kind == "interrupted"
    evs = list(TraceReader(path))
    assert evs[-1]["k"] == "exit" and {evs[-2]["k"], evs[-3]["k"]} == {"io_run", "tsc_run"}
    io_run = evs[-2] if evs[-2]["k"] == "io_run" else evs[-3]
    assert 300 < len(io_run["port"]) < 1024
    p = pvmon("replay", str(path))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "outcome: identical up to the recording's end" in p.stdout


def test_a_pvh_busybox_shell_runs_commands_and_powers_off_cleanly(debian612, tmp_path):
    ensure_initramfs("busybox")
    rec = tmp_path / "shell.pvt"
    p = pvmon("run", "debian-6.12", "--mode", "pvh", "--initramfs", "busybox",
              "--script", "uname -a\\ncat /proc/cpuinfo\\npoweroff -f", "--record", str(rec))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert "x86_64 GNU/Linux" in p.stdout
    assert "pvmon virtual CPU (Xen PVH)" in p.stdout
    assert "exit: shutdown" in p.stdout + p.stderr
    v = pvmon("replay", str(rec))
    assert v.returncode == 0 and "outcome: identical" in v.stdout, v.stdout + v.stderr


def test_a_pvh_trace_replays_on_another_xen_and_refuses_one_without_pvh(pvh_trace):
    rec = pvh_trace[0]
    p = pvmon("replay", str(rec), "--backend", "xen-4.11")
    assert p.returncode in (0, 1), p.stderr
    assert "ended as recorded" in p.stdout or "identical" in p.stdout
    p = pvmon("replay", str(rec), "--backend", "xen-4.6")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "cannot run PVH guests" in p.stderr


def test_pvmon_diff_of_pv_and_pvh_names_what_pvh_does_natively(debian612, pvh_trace,
                                                              tmp_path):
    pv, pvh = tmp_path / "pv.pvt", pvh_trace[0]
    Session(debian612, record=pv).run(timeout=600)
    p = pvmon("diff", str(pv), str(pvh))
    out = " ".join(p.stdout.split())
    assert "guest mode differs: left PV, right PVH" in out
    assert "mmu" in out.split("guest mode differs")[1].split("mechanism")[0]
    assert "the other does them natively (under 1% as many calls): mmu, batch" in out


def test_bad_pvh_requests_get_one_line_and_exit_2(tmp_path):
    p = pvmon("run", "pvtest-v2", "--mode", "pvh", timeout=120)
    assert p.returncode == 2
    assert "PHYS32_ENTRY" in p.stderr and p.stderr.strip().count("\n") == 0
    assert "Traceback" not in p.stderr
    p = pvmon("run", "debian-6.12", "--mode", "pvh", "--backend", "xen-3.4", timeout=120)
    assert p.returncode == 2 and "cannot run PVH guests" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_trace_header_naming_an_unknown_mode_is_refused(pvh_trace, tmp_path):
    rec = pvh_trace[0]
    from pvmon.trace.writer import TraceWriter
    r = TraceReader(rec)
    header = dict(r.header)
    header["machine"] = dict(header["machine"], mode="hvm-bogus")
    bad = tmp_path / "bad.pvt"
    w = TraceWriter(bad, header)
    for ev in list(r)[:10]:
        w.append(ev)
    w.close()
    p = pvmon("replay", str(bad), timeout=120)
    assert p.returncode == 2 and "machine.mode" in p.stderr
    assert "Traceback" not in p.stderr


def test_the_tui_boots_a_pvh_guest_live_and_plays_its_trace(pvh_trace):
    from pvmon.ui.app import PvmonApp
    from pvmon.ui.screens.live import LiveScreen
    from pvmon.ui.screens.player import PlayerScreen
    from pvmon.ui.widgets.console import GuestConsole
    from pvmon.ui.widgets.hypercalls import HypercallStream
    from pvmon.ui.widgets.status import StatusLine
    from tests.tui_support import drive, live_app, until

    app, live = live_app("debian-6.12", mode="pvh")

    async def watch(pilot):
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        await until(pilot, lambda: screen._finished_shown, timeout=300, what="the boot to end")
        await pilot.pause(0.05)
        assert "Booting kernel on Xen PVH" in screen.query_one(GuestConsole).text
        assert "exit: crash" in screen.query_one(StatusLine).text
        assert screen.counts["hvm_op"] >= 4

    drive(app, watch)
    assert live.result.exit_kind == "crash"

    async def play(pilot):
        await until(pilot, lambda: pilot.app.screen.index is not None, timeout=120,
                    what="the index")
        screen = pilot.app.screen
        assert isinstance(screen, PlayerScreen)
        assert screen.index.counts["hvm_op"] >= 4
        assert len(screen.query_one(HypercallStream).source) > 900
        assert "exit: crash" in screen.query_one(StatusLine).text

    drive(PvmonApp(trace=pvh_trace[0]), play)


def test_a_pvh_trace_has_canonical_operations_with_native_evidence(pvh_trace):
    p = pvmon("trace", "pvops", str(pvh_trace[0]), "--json")
    assert p.returncode == 0, p.stderr
    import json
    doc = json.loads(p.stdout)
    text = json.dumps(doc)
    assert doc["native"]["irq.eoi"] > 0             # LAPIC EOIs, done by the guest itself
    assert "mmu.set_pte" not in text
    lst = pvmon("trace", "pvops", str(pvh_trace[0]), "--list")
    assert "forced emulation" not in lst.stdout      # CPUID traps natively on PVH
