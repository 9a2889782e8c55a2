"""Stock Debian kernels boot as KVM guests on pvmon's minimal PC: to the
root-mount panic on ttyS0 with kvm-clock, to a busybox shell that powers
off, record and verify byte for byte, and fall back on an old KVM."""

from __future__ import annotations

import pytest

from pvmon.backends.kvm import DEFAULT_CMDLINE
from pvmon.backends.registry import resolve_version
from pvmon.dispatch.console_input import script_lines
from pvmon.guests.initramfs import ensure_initramfs
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session

pytestmark = [pytest.mark.debian, pytest.mark.slow]

SCRIPT = "uname -r\ncat /proc/cpuinfo\necho sum=$((6*7))\npoweroff -f\n"


def _boot(img, backend="kvm-6.12", **kw):
    s = Session(img, backend=backend, cmdline=DEFAULT_CMDLINE, **kw)
    return s, s.run(timeout=600)


def _check_panic(text: str, msrs=("4b564d01", "4b564d00")) -> None:
    assert "Hypervisor detected: KVM" in text
    assert f"kvm-clock: Using msrs {msrs[0]} and {msrs[1]}" in text
    assert "clocksource: Switched to clocksource kvm-clock" in text
    assert "ttyS0 at I/O 0x3f8" in text and "is a 16550A" in text
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in text
    before = text.split("Kernel panic - not syncing: VFS")[0]
    for marker in ("WARNING:", "BUG:", "Oops", "general protection fault", "cut here"):
        assert marker not in before, marker


def test_debian_6_12_boots_as_a_kvm_guest_to_the_root_mount_panic(debian612):
    s, res = _boot(debian612)
    _check_panic(res.console.decode(errors="replace"))
    # panic=-1 reboots at once, through the i8042 (reboot=k)
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 1, res.detail
    assert "i8042" in res.detail
    assert s.dispatch.ioapic.delivered > 0   # the 8250 startup test raises IRQ 4
    exits = res.extra["exits"]                # what `pvmon run` prints as "guest exits"
    assert exits["msr"] > 10 and exits["port I/O"] > 1000 and exits["hypercalls"] == 0


def test_debian_6_1_boots_as_a_kvm_guest_to_the_root_mount_panic(debian61):
    _, res = _boot(debian61, backend="kvm-6.1")
    _check_panic(res.console.decode(errors="replace"))


def test_on_kvm_before_clocksource2_the_guest_uses_the_old_msrs(debian612):
    _, res = _boot(debian612, backend="kvm-2.6.34")
    _check_panic(res.console.decode(errors="replace"), msrs=("12", "11"))


@pytest.fixture(scope="module")
def shell612(debian612, tmp_path_factory):
    trace = tmp_path_factory.mktemp("kvm") / "kvm-shell.pvt"
    initrd = ensure_initramfs("busybox").read_bytes()
    s, res = _boot(debian612, initrd=initrd, initrd_info={"name": "busybox"},
                   script=script_lines(SCRIPT), record=trace)
    return s, res, trace


def test_debian_6_12_busybox_shell_on_ttys0_powers_off_cleanly(shell612):
    s, res, _ = shell612
    text = res.console.decode(errors="replace")
    user = text.split("Run /init as init process", 1)[1]
    assert "sum=42" in user and "pvmon virtual CPU (KVM)" in user
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0 and res.clean
    for marker in ("BUG:", "Oops", "general protection fault", "Kernel panic"):
        assert marker not in text, marker
    # the shell read its input through the UART's interrupt (IRQ 4 via the I/O APIC)
    assert s.dispatch.ioapic.delivered > 0 and s.dispatch.uart.rx_bytes == len(SCRIPT)
    # KVM 6.12 offers PV EOI: the guest acknowledged its interrupts through it
    assert s.dispatch.pv_eois > 0


def test_a_recorded_kvm_shell_session_verifies_byte_for_byte(shell612):
    _, _, trace = shell612
    rep = replay_closed(open_run(trace))
    assert rep.total == 0, [d.summary for d in rep.divergences[:3]]


def test_diff_of_a_kvm_and_a_xen_pv_trace_compares_the_interface_by_family(shell612, tmp_path):
    from pvmon.guests.catalog import resolve
    from pvmon.replay.diff import diff_traces
    _, _, kvm_trace = shell612
    xen_trace = tmp_path / "xen.pvt"
    Session(resolve("pvtest-v2"), record=xen_trace, keep_console=False).run(timeout=120)
    d = diff_traces(xen_trace, kvm_trace)
    assert d.shows_surface
    fams = {f for f, _ in d.right.surface}
    assert {"msr", "port I/O", "MMIO", "cpuid", "interrupt", "idle"} <= fams
    assert d.left.surface[("hypercall", "xen sched_op")] > 0
    assert d.right.surface[("msr", "KVM_SYSTEM_TIME_NEW wr")] >= 1
    assert d.right.surface[("port I/O", "COM1 8250 UART (0x3f8-0x3ff)")] > 1000
    rows = {(r["family"], r["item"]): r for r in d.as_dict()["interface"]}
    assert rows[("hypercall", "xen sched_op")]["right"] == 0


def test_the_tui_live_view_boots_a_kvm_guest_to_its_end(debian612):
    from pvmon.ui.app import PvmonApp
    from pvmon.ui.live_session import BootSpec, LiveSession
    from pvmon.ui.screens.live import LiveScreen
    from pvmon.ui.widgets.console import GuestConsole
    from pvmon.ui.widgets.status import StatusLine
    from tests.tui_support import drive, until

    live = LiveSession.create(BootSpec(debian612, backend="kvm-6.12", cmdline=DEFAULT_CMDLINE),
                              clock=lambda: 0.0)
    app = PvmonApp(live=live)

    async def script(pilot):
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        await until(pilot, lambda: screen._finished_shown, what="the boot to end", timeout=300)
        await pilot.pause(0.05)
        assert "VFS: Unable to mount root fs" in screen.query_one(GuestConsole).text
        assert "reset through the i8042" in screen.query_one(StatusLine).text

    drive(app, script)
    assert live.result.exit_kind == "shutdown"


def test_closed_loop_on_kvm_before_clocksource2_explains_the_leaf_and_the_msrs(shell612):
    _, _, trace = shell612
    rep = replay_closed(open_run(trace), resolve_version("kvm-2.6.34"))
    whys = [f.text for d in rep.divergences for f in d.explanation]
    assert any("CPUID 0x40000000 EAX" in w for w in whys)
    assert rep.ending.get("outcome", "").startswith("the guest tolerated")


def test_open_loop_on_kvm_3_9_puts_each_kvm_leaf_and_msr_to_the_older_host(shell612):
    from pvmon.replay.openloop import replay_open
    _, _, trace = shell612
    own = replay_open(open_run(trace, need_guest=False), resolve_version("kvm-6.12"))
    assert own.total == 0 and own.compared > 10
    rep = replay_open(open_run(trace, need_guest=False), resolve_version("kvm-3.9"))
    details = {x.detail for d in rep.iter_divergences() for x in d.deltas}
    assert any("wrmsr KVM_PV_EOI_EN: handled vs #GP" in x for x in details), details
    assert any(x.startswith("cpuid 0x40000001") for x in details)


def test_the_player_shows_a_kvm_trace_console_and_its_exits(shell612):
    from pvmon.ui.app import PvmonApp
    from pvmon.ui.widgets.console import GuestConsole
    from pvmon.ui.widgets.hypercalls import HypercallStream
    from tests.tui_support import drive, until
    _, _, trace = shell612
    app = PvmonApp(trace=trace)

    async def script(pilot):
        await until(pilot, lambda: pilot.app.screen.index is not None, what="the index",
                    timeout=60)
        screen = pilot.app.screen
        stream = screen.query_one(HypercallStream)
        rows = [stream.source.row(i) for i in range(len(stream.source))]
        assert {"msr", "irq", "halt", "exit"} <= {ev["k"] for ev in rows}
        screen.seek_seq(rows[-1]["seq"])
        await pilot.pause(0.2)
        assert "sum=42" in screen.query_one(GuestConsole).text

    drive(app, script)


def test_the_divergence_view_opens_a_kvm_closed_loop_report(shell612):
    from pvmon.replay.openloop import replay_open
    from pvmon.ui.app import PvmonApp
    from pvmon.ui.report_view import divergence_from_report
    from pvmon.ui.widgets.hypercalls import HypercallStream
    from tests.tui_support import drive, until
    _, _, trace = shell612
    run = open_run(trace, need_guest=False)
    report = replay_open(run, resolve_version("kvm-3.9"))
    d = divergence_from_report(report, run)
    assert d.differs and "KVM_FEATURE_PV_EOI" in " ".join(
        f.text for x in report.divergences for f in x.explanation)

    async def script(pilot):
        left = pilot.app.screen.query_one("#left", HypercallStream)
        await until(pilot, lambda: left.cursor == d.first and left.has_focus)

    drive(PvmonApp(divergence=d), script)
