"""The live view hosts the gdb stub (``pvmon boot GUEST --gdb``): the real gdb
in batch mode drives pvtest-v2 while Textual's Pilot reads the status line."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

from pvmon.guests.catalog import resolve
from pvmon.ui.widgets.status import StatusLine
from tests.gdb_support import ROOT, needs_gdb, run_gdb
from tests.tui_support import drive, live_app, reference_calls, until

ELF = resolve("pvtest-v2").vmlinux


def _gate(path) -> str:
    """A gdb command that waits until the test creates ``path``."""
    return f"shell while [ ! -e {path} ]; do sleep 0.02; done"


@needs_gdb
def test_the_status_line_follows_gdb_listening_attached_stopped_running_and_the_run_is_unchanged(
        tmp_path):
    app, live = live_app(gdb="127.0.0.1:0")
    port = live.gdb.server.port
    seen: list[str] = []
    out: list[str] = []
    calls: list[tuple] = []

    async def script(pilot):
        screen = app.screen

        def status() -> str:
            text = screen.query_one(StatusLine).text
            if not seen or seen[-1] != text:
                seen.append(text)
            return text

        await until(pilot, lambda: f"gdb: listening on 127.0.0.1:{port}" in status(), timeout=60,
                    what="the stub to listen")
        assert "WAITING" in status() and live.hypercalls == 0
        gdb = asyncio.create_task(asyncio.to_thread(lambda: out.append(run_gdb(port, [
            _gate(tmp_path / "go1"), "break checks_events", "continue",
            _gate(tmp_path / "go2"), "stepi", _gate(tmp_path / "go3"),
            "delete", "continue"], file=ELF))))
        await until(pilot, lambda: "stopped at _start (attached)" in status(), timeout=60,
                    what="gdb to attach")
        assert re.search(r"gdb attached from 127\.0\.0\.1:\d+ · stopped at _start", status())
        assert "STOPPED" in status()
        # the TUI's own pause still works while gdb lets the guest run
        await pilot.press("space")
        (tmp_path / "go1").touch()
        await until(pilot, lambda: live.phase == "paused", timeout=60, what="the TUI's pause")
        await until(pilot, lambda: "· running" in status(), timeout=60, what="running under gdb")
        assert "PAUSED" in status() and "paused after #" in status()
        await pilot.press("space")
        await until(pilot, lambda: "stopped at checks_events (breakpoint)" in status(), timeout=60,
                    what="the breakpoint")
        await until(pilot, lambda: "registers at #" in str(screen.query_one("#regs")
                                                             .border_title))
        (tmp_path / "go2").touch()
        await until(pilot, lambda: "stopped at checks_events+0x2 (step)" in status(), timeout=60,
                    what="the single step")
        (tmp_path / "go3").touch()
        await until(pilot, lambda: live.phase == "finished", timeout=60)
        await until(pilot, lambda: screen._finished_shown)
        await gdb
        assert "gdb" not in status() and "exit: shutdown" in status()
        calls.extend((ev["seq"], ev["name"], ev["ret"], ev["t"]) for ev in screen.rows.all)

    drive(app, script, size=(160, 30))
    assert "Breakpoint 1, 0xffffffff80201810 in checks_events ()" in out[0]
    assert "exited normally" in out[0]
    assert live.result.exit_kind == "shutdown"
    assert live.gdb_status.state == "detached" and live.gdb_status.stops == 3
    # attaching, stopping and stepping never change what the guest sees
    assert calls == reference_calls()


def test_quitting_while_nobody_attached_closes_the_listener_and_ends_the_run():
    app, live = live_app(gdb="127.0.0.1:0")

    async def script(pilot):
        await until(pilot, lambda: "gdb: listening" in app.screen.query_one(StatusLine).text
                    and app.screen._worker is not None)
        await pilot.pause(0.3)
        await pilot.press("q")

    drive(app, script)
    assert live.phase == "finished" and live.result.exit_kind == "interrupted"


def test_boot_gdb_without_a_terminal_says_so_in_one_line() -> None:
    res = subprocess.run([sys.executable, "-m", "pvmon", "boot", "pvtest-v2", "--gdb", ":0"],
                         cwd=ROOT, capture_output=True, timeout=60, check=False,
                         stdin=subprocess.DEVNULL)
    err = res.stderr.decode()
    assert res.returncode == 2 and "no terminal" in err and len(err.strip().splitlines()) == 1


@needs_gdb
def test_quitting_while_gdb_holds_the_guest_detaches_it_and_ends_the_run(tmp_path):
    app, live = live_app(gdb="127.0.0.1:0")
    port = live.gdb.server.port
    out: list[str] = []

    async def script(pilot):
        status = app.screen.query_one(StatusLine)
        await until(pilot, lambda: "gdb: listening" in status.text)
        gdb = asyncio.create_task(asyncio.to_thread(lambda: out.append(run_gdb(port, [
            "break checks_events", "continue", _gate(tmp_path / "go")], file=ELF))))
        await until(pilot, lambda: "stopped at checks_events (breakpoint)" in status.text, timeout=60,
                    what="the breakpoint")
        await pilot.press("q")
        (tmp_path / "go").touch()
        await gdb

    drive(app, script)
    assert live.phase == "finished" and live.result.exit_kind == "interrupted"
    assert live.gdb_status.state == "detached"
    assert "Breakpoint 1, 0xffffffff80201810 in checks_events ()" in out[0]
