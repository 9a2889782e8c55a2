"""The gdb stub on a live run: the real gdb in batch mode against the built-in
pvtest-v2, and the remote protocol by hand for bad input."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from pvmon.gdb import rsp, target
from pvmon.guests.catalog import resolve
from tests.gdb_support import ROOT, Pvmon, RawClient, needs_gdb, run_gdb

ELF = resolve("pvtest-v2").vmlinux


# --------------------------------------------------------------- framing
def test_packets_split_anywhere_parse_the_same() -> None:
    wire = rsp.frame(b"qSupported:x}y#z$") + b"+\x03" + rsp.frame(b"g")
    whole = rsp.PacketReader().feed(wire)
    r = rsp.PacketReader()
    pieces = [it for i in range(len(wire)) for it in r.feed(wire[i:i + 1])]
    assert whole == pieces
    assert [(i.kind, i.data) for i in whole] == [
        ("packet", b"qSupported:x}y#z$"), ("ack", b""), ("interrupt", b""), ("packet", b"g")]


def test_a_bad_checksum_or_an_oversized_packet_is_reported_not_raised() -> None:
    r = rsp.PacketReader()
    assert [i.kind for i in r.feed(b"$g#00")] == ["bad"]
    assert [i.kind for i in r.feed(b"$" + b"a" * (rsp.MAX_PACKET + 10) + b"#00")] == ["bad"]
    assert [i.data for i in r.feed(rsp.frame(b"?"))] == [b"?"]


def test_target_description_lists_the_amd64_core_sse_and_segment_registers() -> None:
    xml = target.target_xml()
    for name in ("rax", "rip", "eflags", "st7", "fop", "xmm15", "mxcsr", "fs_base", "gs_base"):
        assert f'name="{name}"' in xml
    assert "<architecture>i386:x86-64</architecture>" in xml
    assert target.REGS[target.REG_INDEX["rip"]].size == 8


# ------------------------------------------------------------- real gdb
@needs_gdb
def test_gdb_breaks_at_a_symbol_reads_registers_and_memory_steps_and_the_guest_finishes() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    out = run_gdb(pv.port, [
        "info registers rip", "break checks_events", "continue", "bt",
        "info registers rip rsp cs fs_base gs_base", "p (int)npassed", "stepi",
        "x/2i $pc", "p $pc", "continue"], file=ELF)
    status, _, err = pv.wait()
    assert "0xffffffff80200000 in _start ()" in out              # stopped before the first insn
    assert "Breakpoint 1, 0xffffffff80201810 in checks_events ()" in out
    assert "#1  0xffffffff802005ca in pvtest_main ()" in out
    assert "fs_base        0xffffffff80207008" in out
    assert "$1 = " in out and "checks_events+2" in out
    assert "exited normally" in out
    assert status == 0, err
    assert "gdb attached" in err


@needs_gdb
def test_a_hardware_watchpoint_stops_after_the_write_with_old_and_new_values() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    out = run_gdb(pv.port, ["break checks_events", "continue", "delete",
                            "watch *(int *)&npassed", "continue", "delete", "continue"], file=ELF)
    status, _, _ = pv.wait()
    assert "Hardware watchpoint 2: *(int *)&npassed" in out
    assert "Old value = 62" in out and "New value = 63" in out
    assert status == 0


@needs_gdb
def test_memory_writes_go_through_the_page_tables_and_unmapped_reads_fail() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    out = run_gdb(pv.port, ["break checks_events", "continue", "set var *(int *)&nchecks = 4242",
                            "p *(int *)&nchecks", "x/2x 0", "kill"], file=ELF)
    status, _, err = pv.wait()
    assert "$1 = 4242" in out
    assert "Cannot access memory at address 0x0" in out
    assert status == 1 and "killed by the debugger" in err      # k ends the run


@needs_gdb
def test_detach_lets_the_guest_run_to_its_clean_shutdown() -> None:
    pv = Pvmon("run", "pvtest-v2")
    out = run_gdb(pv.port, ["break checks_events", "continue", "detach"], file=ELF)
    status, stdout, err = pv.wait()
    assert "Detaching from program" in out or "detached" in out
    assert status == 0 and "gdb detached; the guest continues" in err
    assert "pvtest-v2" in stdout


@needs_gdb
def test_a_recording_made_under_gdb_replays_event_for_event(tmp_path) -> None:
    trace = tmp_path / "dbg.pvt"
    pv = Pvmon("run", "pvtest-v2", "--quiet", "--record", str(trace))
    out = run_gdb(pv.port, ["break checks_events", "break printk", "continue", "stepi", "stepi",
                            "continue", "delete", "watch *(int *)&npassed", "continue",
                            "delete", "continue"], file=ELF)
    status, _, _ = pv.wait()
    assert status == 0 and "exited normally" in out
    plain = tmp_path / "plain.pvt"
    subprocess.run([sys.executable, "-m", "pvmon", "run", "pvtest-v2", "--quiet", "--record",
                    str(plain)], cwd=ROOT, check=True, capture_output=True)
    rep = subprocess.run([sys.executable, "-m", "pvmon", "replay", str(trace)], cwd=ROOT,
                         capture_output=True, check=False)
    assert rep.returncode == 0, rep.stdout.decode()
    cat = [subprocess.run([sys.executable, "-m", "pvmon", "trace", "cat", str(p)], cwd=ROOT,
                          capture_output=True, check=True).stdout for p in (trace, plain)]
    assert cat[0] == cat[1]


# ------------------------------------------------------------ bad input
def test_unknown_packets_get_the_empty_reply_and_malformed_ones_an_error() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    c = RawClient(pv.port)
    try:
        assert c.ask(b"qFrobnicate") == b""
        assert c.ask(b"m zz,4") == b"E01"
        assert c.ask(b"p 999") == b"E00"
        assert c.ask(b"Z0,nothex,1") == b"E01"
        c.send_raw(b"$g#00")                          # wrong checksum: asked again
        assert c.reply() == b"-"
        assert c.ask(b"?").startswith(b"S05")
        regs = c.ask(b"g")
        assert len(regs) == 2 * sum(r.size for r in target.REGS)
        assert c.ask(b"m ffffffff80200000,1") == b"fc"   # cld
        assert c.ask(b"m 0,4") == b"E14"
        assert c.ask(b"bc").startswith(b"E.")           # reverse needs a replay
        c.send_raw(rsp.frame(b"c"))
        assert c.reply() == b"W00"
    finally:
        c.close()
    status, _, _ = pv.wait()
    assert status == 0


def test_a_second_client_is_refused_with_a_message() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    first = RawClient(pv.port)
    try:
        assert first.ask(b"?").startswith(b"S05")
        second = RawClient(pv.port)
        msg = second.reply()
        assert msg is not None and msg.startswith(b"E.") and b"another debugger" in msg
        second.close()
        first.send_raw(rsp.frame(b"D"))
        assert first.reply() == b"OK"
    finally:
        first.close()
    status, _, _ = pv.wait()
    assert status == 0


def test_ctrl_c_interrupts_a_running_guest() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    c = RawClient(pv.port)
    try:
        c.ask(b"Z0,ffffffff80202c70,1")                  # printk
        c.send_raw(rsp.frame(b"c"))
        assert c.reply() == b"T05thread:01;swbreak:;"
        c.ask(b"z0,ffffffff80202c70,1")
        # interrupt the guest right after resuming: a SIGINT stop, or the exit if it won
        c.send_raw(rsp.frame(b"c") + b"\x03")
        reply = c.reply()
        assert reply in (b"T02thread:01;", b"W00")
        if reply.startswith(b"T02"):
            assert len(c.ask(b"g")) > 100                # stopped: registers readable
            c.send_raw(rsp.frame(b"D"))
    finally:
        c.close()
    pv.wait()


def test_a_port_in_use_is_one_clear_line_and_exit_2() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        res = subprocess.run([sys.executable, "-m", "pvmon", "run", "pvtest-v2", "--gdb",
                              f":{port}"], cwd=ROOT, capture_output=True, timeout=60, check=False)
    finally:
        s.close()
    assert res.returncode == 2
    err = res.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"pvmon: error: --gdb: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize("bad", ["nonsense", ":99999", "host:"])
def test_a_bad_gdb_address_is_one_line_and_exit_2(bad) -> None:
    res = subprocess.run([sys.executable, "-m", "pvmon", "run", "pvtest-v2", "--gdb", bad],
                         cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert res.returncode == 2
    assert len(res.stderr.decode().strip().splitlines()) == 1


def test_any_bytes_from_a_client_parse_without_raising() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=64), max_size=8))
    def feed(chunks) -> None:
        r = rsp.PacketReader()
        for c in chunks:
            for item in r.feed(c):
                assert item.kind in ("packet", "bad", "interrupt", "ack", "nak")
    feed()


def test_register_writes_reach_the_guest_and_read_only_ones_are_refused() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet")
    c = RawClient(pv.port)
    try:
        rax = target.REG_INDEX["rax"]
        assert c.ask(b"P%x=%s" % (rax, (0x1122334455667788).to_bytes(8, "little").hex()
                                  .encode())) == b"OK"
        assert c.ask(b"p%x" % rax) == b"8877665544332211"
        cs = target.REG_INDEX["cs"]
        assert c.ask(b"P%x=00000000" % cs) == b"E01"               # selectors stay
        regs = c.ask(b"g")
        assert c.ask(b"G" + regs) == b"OK"                            # same values: fine
        assert c.ask(b"G00") == b"E01"                                # wrong length
        c.send_raw(rsp.frame(b"k"))
    finally:
        c.close()
    status, _, _ = pv.wait()
    assert status == 1


@needs_gdb
def test_break_hypercall_stops_a_live_run_after_the_call() -> None:
    pv = Pvmon("run", "pvtest-v2", "--quiet", "--record", "/dev/null")
    out = run_gdb(pv.port, ["monitor break-hypercall set_trap_table", "continue",
                            "monitor info event", "x/2i $pc - 2", "monitor delete-hypercall",
                            "continue"], file=ELF)
    status, _, _ = pv.wait()
    assert "the guest stops after each set_trap_table call" in out
    assert re.search(r"=> 0x[0-9a-f]+ <HYPERVISOR_set_trap_table\+\d+>|syscall", out)
    assert "exited normally" in out and status == 0


@needs_gdb
def test_boot_headless_serves_gdb_like_run() -> None:
    pv = Pvmon("boot", "pvtest-v2", "--headless")
    out = run_gdb(pv.port, ["break checks_events", "continue", "continue"], file=ELF)
    status, _, _ = pv.wait()
    assert "Breakpoint 1, 0xffffffff80201810 in checks_events ()" in out
    assert status == 0
