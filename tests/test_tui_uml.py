"""The live view of a User-Mode Linux run (docs/uml.md, "The live view"): Debian's
UML kernel under pvmon's ptrace tracer on the TUI's worker thread, its host
system calls in the stream, its console in the console pane, typed input
reaching its shell, pause holding the tracee."""

from __future__ import annotations

import pytest

from pvmon.guests.initramfs import ensure_initramfs
from pvmon.trace.reader import TraceReader
from pvmon.ui.app import PvmonApp
from pvmon.ui.families import family_of
from pvmon.ui.screens.live import LiveScreen
from pvmon.ui.uml_live import UmlBootSpec, UmlLiveSession
from pvmon.ui.widgets.console import GuestConsole
from pvmon.ui.widgets.hypercalls import HypercallStream
from pvmon.ui.widgets.status import StatusLine
from pvmon.uml import cli as uml_cli
from pvmon.uml import guest as uml
from tests.tui_support import drive, until

pytestmark = [pytest.mark.debian, pytest.mark.slow]


@pytest.fixture(scope="module")
def uml_ready():
    if uml.read_meta("uml-6.1") is None:
        uml.fetch_uml("uml-6.1")
    ensure_initramfs("busybox")


def _app(record=None, paused=False):
    a = uml_cli.prepare("uml-6.1", cmdline=None, memory="256M", backend=None, record=record,
                        initramfs="busybox", initrd=None, script=None, input_file=None)
    live = UmlLiveSession.create(UmlBootSpec(a, idle_s=None, timeout=120, paused=paused),
                                 clock=lambda: 0.0)
    return PvmonApp(live=live), live


def test_a_uml_boot_is_watched_live_typed_into_and_paused(uml_ready, tmp_path):
    out = tmp_path / "uml.pvt"
    app, live = _app(record=out, paused=True)

    async def script(pilot):
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        assert not screen.query_one("#regs").display and not screen.query_one("#code").display
        assert screen.query_one(HypercallStream).border_title == "host system calls"
        # paused after UML's first host system call: the tracee is held
        await until(pilot, lambda: live.phase == "paused", timeout=30, what="the first pause")
        first = live.paused_at
        assert first["k"] == "hc" and first["abi"] == "uml"
        await pilot.pause(0.3)
        assert live.hypercalls == 1            # nothing ran while paused
        await pilot.press("n")
        await until(pilot, lambda: live.phase == "paused" and live.paused_at is not first,
                    what="the step")
        assert live.hypercalls == 2
        await pilot.press("space")
        console = screen.query_one(GuestConsole)
        await until(pilot, lambda: "# " in console.text[-200:], timeout=60,
                    what="the busybox prompt")
        live.send_console(b"uname -a\n")
        await until(pilot, lambda: "Linux" in console.text.split("uname -a")[-1], timeout=30,
                    what="uname's answer")
        rows = screen.rows.all
        assert {"ptrace", "wait4", "mmap"} <= {e.get("name") for e in rows}
        assert any(e["k"] == "syscall" for e in rows)     # the guest's own calls
        assert family_of(next(e for e in rows if e.get("name") == "ptrace")) == "cpu"
        await pilot.press("p")              # canonical operations, by the UML mapping
        assert screen.query_one(HypercallStream).show_pvops
        ops = {o for names in screen.rows.pvops.values() for o in names}
        assert "memory.map" in ops, sorted(ops)
        status = screen.query_one(StatusLine).text
        assert "uml-6.1" in status and "syscalls" in status and "rec uml.pvt" in status
        live.send_console(b"poweroff -f\n")
        await until(pilot, lambda: screen._finished_shown, timeout=60, what="the power-off")
        assert "exit: shutdown" in screen.query_one(StatusLine).text

    drive(app, script, size=(120, 32))
    assert live.result.exit_kind == "shutdown"
    with TraceReader(out) as r:
        names = [e.get("name") for e in r if e["k"] == "hc"]
    assert len(names) == live.hypercalls        # the recording holds what the view showed


def test_quitting_the_live_view_ends_the_uml_run(uml_ready):
    app, live = _app()

    async def script(pilot):
        await until(pilot, lambda: live.hypercalls > 100, timeout=30, what="UML running")
        await pilot.press("q")

    drive(app, script)
    assert live.result.exit_kind == "interrupted"
    assert live.tracer is not None


def test_boot_of_uml_with_options_that_do_not_apply_is_one_line(uml_ready):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "pvmon", "boot", "uml-6.1", "--gdb", ":1234"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "--gdb does not apply to uml-6.1" in p.stderr
