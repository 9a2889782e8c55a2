"""The gdb stub on a stock Debian 6.12 kernel: the real gdb with the symbol
file pvmon writes from the kernel's kallsyms."""

from __future__ import annotations

import time

import pytest

from pvmon.gdb import rsp
from pvmon.gdb.symfile import symbol_file_for
from tests.gdb_support import Pvmon, RawClient, needs_gdb, run_gdb

pytestmark = [pytest.mark.debian, pytest.mark.slow]


@needs_gdb
def test_gdb_breaks_at_start_kernel_backtraces_steps_and_reads_jiffies(debian612) -> None:
    syms = symbol_file_for(debian612)
    pv = Pvmon("run", "debian-6.12", "--quiet")
    out = run_gdb(pv.port, [
        "break start_kernel", "continue", "bt", "info registers rip rsp cs",
        "stepi", "p $pc", "p/x (long)jiffies", "delete", "break do_one_initcall", "continue",
        "bt 2", "delete", "continue"], file=syms)
    status, _, _ = pv.wait()
    assert "Breakpoint 1, 0xffffffff83316a80 in start_kernel ()" in out
    assert "in x86_64_start_reservations ()" in out and "in xen_start_kernel ()" in out
    assert "<start_kernel+4>" in out
    assert "$2 = 0xfffedb08" in out                 # INITIAL_JIFFIES before the first tick
    assert "in do_one_initcall ()" in out and "in kernel_init_freeable ()" in out
    assert "exited with code 01" in out
    assert status == 1                              # as unattached: no root file system


def test_ctrl_c_stops_a_booting_kernel_and_detach_lets_it_go_on(debian612) -> None:
    pv = Pvmon("run", "debian-6.12", "--quiet")
    c = RawClient(pv.port)
    try:
        c.send_raw(rsp.frame(b"c"))
        time.sleep(1.0)
        c.send_raw(b"\x03")
        assert c.reply() == b"T02thread:01;"
        rip = int.from_bytes(bytes.fromhex(c.ask(b"p 10").decode()), "little")
        assert rip >= 0xFFFF_FFFF_8000_0000          # in the kernel
        c.send_raw(rsp.frame(b"D"))
        assert c.reply() == b"OK"
    finally:
        c.close()
    status, _, err = pv.wait()
    assert "gdb detached; the guest continues" in err
    assert status == 1


@pytest.fixture(scope="module")
def debian_trace(tmp_path_factory, debian612):
    import subprocess
    import sys

    from tests.gdb_support import ROOT
    path = tmp_path_factory.mktemp("gdbdeb") / "d612.pvt"
    subprocess.run([sys.executable, "-m", "pvmon", "run", "debian-6.12", "--quiet", "--record",
                    str(path)], cwd=ROOT, check=False, capture_output=True, timeout=300)
    return path


@needs_gdb
def test_a_debian_replay_reverse_continues_and_reverse_steps_and_still_verifies(
        debian612, debian_trace) -> None:
    import re
    syms = symbol_file_for(debian612)
    pv = Pvmon("replay", str(debian_trace))
    out = run_gdb(pv.port, [
        "break start_kernel", "continue", "break do_one_initcall", "continue",
        "monitor info event", "continue", "monitor info event", "reverse-continue",
        "monitor info event", "reverse-stepi", "x/i $pc", "stepi", "p $pc",
        "delete", "watch *(long *)&jiffies", "continue", "p/x (long)jiffies", "delete",
        "continue"], file=syms)
    status, stdout, _ = pv.wait()
    events = [int(m.replace(",", "")) for m in re.findall(r"after event ([\d,]+) of", out)]
    assert len(events) == 3 and events[0] < events[1] and events[2] == events[0]
    assert re.search(r"<kernel_init_freeable\+\d+>:\s+call\s+0xffffffff81002b80 "
                     r"<do_one_initcall>", out)
    assert "<do_one_initcall>" in out.split("call ")[-1]
    old, new = (int(v) for v in re.search(r"Old value = (\d+)\nNew value = (\d+)", out).groups())
    assert "Hardware watchpoint 3" in out and new == old + 1        # the next jiffy
    assert status == 0 and "no divergence" in stdout, stdout
