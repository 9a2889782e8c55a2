"""UML versions: a UML binary of a newer Debian suite than the host's runs with
that suite's C library and loader kept in pvmon's cache (its PT_INTERP
rewritten to the relative ``lib64/ld-linux-x86-64.so.2``), boots to the
busybox shell under pvmon's tracer, and diffs against bookworm's uml-6.1.
Real binaries, real host kernel, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.errors import FetchError
from pvmon.trace.reader import TraceReader
from pvmon.uml import guest as uml

PVMON = [sys.executable, "-m", "pvmon.cli"]
SCRIPT = "uname -a\\npoweroff -f"
NEWER = "uml-6.12"
#: The host's C library, as an unpacked libc6 would hold it.
HOST_LIB = next((d for d in (Path("/usr/lib/x86_64-linux-gnu"), Path("/lib/x86_64-linux-gnu"))
                 if (d / "libc.so.6").is_file()), None)


def pvmon(*args, env=None, timeout=120):
    return subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})


def _host_elf() -> Path:
    true = Path(shutil.which("true") or "/bin/true")
    if HOST_LIB is None or not true.is_file():
        pytest.skip("no glibc x86-64 host (libc.so.6 and /bin/true) to build the test from")
    return true


def test_the_interpreter_rewrite_makes_the_loader_relative_to_the_working_folder(tmp_path):
    prog = tmp_path / "true"
    shutil.copyfile(_host_elf(), prog)
    prog.chmod(0o755)
    assert uml.rewrite_interp(prog) == uml.INTERP
    here = tmp_path / "with"
    (here / "lib64").mkdir(parents=True)
    (here / uml.REL_INTERP).symlink_to(uml.INTERP)
    # the kernel opens a relative PT_INTERP from the exec's working folder
    assert subprocess.run([str(prog)], cwd=here, check=False).returncode == 0
    with pytest.raises(FileNotFoundError):
        subprocess.run([str(prog)], cwd=tmp_path, check=False)
    with pytest.raises(FetchError, match="does not fit"):
        uml.rewrite_interp(prog, "/a/path/much/longer/than/the/interp/segment/ld.so")


def test_the_kept_c_library_is_the_binarys_needed_closure_and_the_loader(tmp_path):
    true = _host_elf()
    tree = tmp_path / "libc6"
    lib = tree / "usr" / uml.LIB_SUBDIR
    lib.mkdir(parents=True)
    for so in ("libc.so.6", "ld-linux-x86-64.so.2", "libm.so.6"):
        shutil.copyfile(HOST_LIB / so, lib / so)
    out = tmp_path / "libc"
    files = uml.keep_suite_libc(true, tree, out, "libc6_test.deb")
    assert files == ["ld-linux-x86-64.so.2", "libc.so.6"]        # not libm: nobody needs it
    assert (out / uml.REL_INTERP).resolve() == (out / uml.LIB_SUBDIR /
                                               "ld-linux-x86-64.so.2").resolve()
    (lib / "libc.so.6").unlink()
    with pytest.raises(FetchError, match="needs libc.so.6, which libc6_test.deb does not carry"):
        uml.keep_suite_libc(true, tree, tmp_path / "again", "libc6_test.deb")


def test_a_newer_uml_fetched_without_its_c_library_is_one_line_naming_the_fix(tmp_path):
    d = tmp_path / "guests" / "uml-9.9"
    d.mkdir(parents=True)
    (d / "linux").write_bytes(b"\x7fELF not really, but it names GLIBC_2.999\0")
    (d / "meta.json").write_text('{"name": "uml-9.9", "package": "user-mode-linux", '
                                 '"version": "9.9um1", "suite": "sid"}')
    p = pvmon("run", "uml-9.9", env={"PVMON_CACHE": str(tmp_path)})
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs glibc 2.999" in lines[0], p.stderr
    assert "pvmon guests fetch uml-9.9 --force" in lines[0]


# ------------------------------------------------------ the newer UML, fetched

@pytest.fixture(scope="module")
def newer():
    meta = uml.read_meta(NEWER)
    if meta is None:
        pytest.skip(f"{NEWER} is not fetched: `pvmon guests fetch {NEWER}` (trixie's "
                    "user-mode-linux and libc6, about 38 MB; not in scripts/setup.sh)")
    from pvmon.guests.initramfs import ensure_initramfs
    ensure_initramfs("busybox")
    return uml.resolve(NEWER)


@pytest.fixture(scope="module")
def newer_trace(newer, tmp_path_factory):
    path = tmp_path_factory.mktemp("uml612") / "612.pvt"
    p = pvmon("run", NEWER, "--initramfs", "busybox", "--script", SCRIPT, "--record", path)
    assert p.returncode == 0, p.stderr
    return path, p



@pytest.mark.debian
@pytest.mark.slow
def test_the_newer_uml_boots_to_the_shell_with_its_suites_c_library(newer, newer_trace):
    path, p = newer_trace
    assert f"Linux (none) {newer.release}" in p.stdout          # the guest's `uname -a`
    assert "shutdown: the UML kernel exited with status 0" in p.stderr
    assert "3 traced thread(s)" in p.stderr      # UML's helper threads (clone) were followed
    with TraceReader(path) as r:
        h = r.header
        events = list(r)
        assert r.complete
    if newer.libc is not None:
        assert h["guest"]["libc"]["package"] == "libc6"
        assert h["guest"]["libc"]["interp"] == uml.REL_INTERP
    assert h["guest"]["name"] == NEWER and h["guest"]["release"] == newer.release
    hcs = [e for e in events if e["k"] == "hc"]
    names = {e["name"] for e in hcs}
    assert {"ptrace", "wait4", "clone"} <= names
    assert "execve" not in names             # UML does not exec itself: it only clones
    assert {"execve", "uname", "reboot"} <= {e["name"] for e in events if e["k"] == "syscall"}


@pytest.mark.debian
@pytest.mark.slow
def test_a_diff_of_two_uml_versions_reports_the_host_calls_that_differ(newer_trace, tmp_path):
    path, _ = newer_trace
    if uml.read_meta("uml-6.1") is None:
        uml.fetch_uml("uml-6.1")
    old = tmp_path / "61.pvt"
    p = pvmon("run", "uml-6.1", "--initramfs", "busybox", "--quiet", "--script", SCRIPT,
              "--record", old)
    assert p.returncode == 0, p.stderr
    d = pvmon("diff", old, path)
    assert d.returncode in (0, 1), d.stderr
    out = " ".join(d.stdout.split())
    assert "uml-6.1" in out and NEWER in out
    assert "hypercall counts" in out and "ptrace" in out and "wait4" in out
    assert "calls only the left makes" in out and "calls only the right makes" in out


@pytest.mark.debian
@pytest.mark.slow
def test_the_newer_uml_is_watched_live_in_the_tui_to_its_shell(newer):
    from pvmon.ui.app import PvmonApp
    from pvmon.ui.uml_live import UmlBootSpec, UmlLiveSession
    from pvmon.ui.widgets.console import GuestConsole
    from pvmon.ui.widgets.status import StatusLine
    from pvmon.uml import cli as uml_cli
    from tests.tui_support import drive, until

    a = uml_cli.prepare(NEWER, cmdline=None, memory="256M", backend=None, record=None,
                        initramfs="busybox", initrd=None, script=None, input_file=None)
    live = UmlLiveSession.create(UmlBootSpec(a, idle_s=None, timeout=120, paused=False),
                                 clock=lambda: 0.0)
    app = PvmonApp(live=live)

    async def script(pilot):
        screen = app.screen
        console = screen.query_one(GuestConsole)
        await until(pilot, lambda: "# " in console.text[-200:], timeout=60,
                    what="the busybox prompt")
        live.send_console(b"uname -r\n")
        await until(pilot, lambda: newer.release in console.text.split("uname -r")[-1],
                    timeout=30, what="uname's answer")
        assert NEWER in screen.query_one(StatusLine).text
        live.send_console(b"poweroff -f\n")
        await until(pilot, lambda: screen._finished_shown, timeout=60, what="the power-off")

    drive(app, script, size=(120, 32))
    assert live.result.exit_kind == "shutdown"
