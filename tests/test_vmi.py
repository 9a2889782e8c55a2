"""VMI API 3.0 (backend vmi-3.0) with its 32-bit reference guest pvtest-vmi:
the guest finds pvmon's option ROM as Linux's probe_vmi_rom did, fetches its
calls with get_reloc, makes them with regparm(3), takes alarms on IRQ0 through
its own IDT and returns through the ROM's IRET; its recording verifies; bad
calls stop the run as the guest's fault, never a traceback."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.backends.vmi import abi
from pvmon.backends.vmi.builder import ROM_PA, ROM_SIZE, rom_bytes
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
    path = tmp_path_factory.mktemp("vmi") / "pvtest-vmi.pvt"
    sess = Session(resolve("pvtest-vmi"), backend="vmi-3.0", memory=MEM, record=path)
    calls = []
    sess.dispatch.call_listeners.append(calls.append)
    return sess.run(timeout=60), path, calls


def _pvmon(*args):
    return subprocess.run([sys.executable, "-m", "pvmon", *args], check=False,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_rom_header_is_what_linux_and_the_2006_spec_check():
    rom = rom_bytes()
    assert len(rom) == ROM_SIZE and ROM_PA % 2048 == 0 and 0xC8000 <= ROM_PA < 0xE0000
    assert rom[:2] == b"\x55\xaa" and rom[8:12] == b"cVmi" and (rom[0xD], rom[0xC]) == (3, 0)
    lic = int.from_bytes(rom[0x16:0x18], "little")
    assert rom[lic:lic + 7] == b"GPL v2\0"
    pci = int.from_bytes(rom[0x18:0x1A], "little")
    assert rom[pci:pci + 8] == b"PCIR\xad\x15\x01\x08"
    assert sum(rom[:rom[2] * 512]) % 256 == 0


def test_pvtest_vmi_passes_every_check_and_shuts_down(recorded):
    res, _path, _calls = recorded
    text = res.console.decode()
    m = SUMMARY.search(text)
    assert m and int(m.group(1)) >= 45 and m.group(2) == "0", text[-2000:]
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0 and res.clean


def test_calls_go_through_the_rom_with_their_names(recorded):
    res, _path, calls = recorded
    assert {c["abi"] for c in calls} == {"vmi"} and {c["via"] for c in calls} == {"rom"}
    names = [c["name"] for c in calls]
    assert names[0] == "vmi_init" and names[1:75] == ["get_reloc"] * 74
    assert {"CPUID", "SetGDT", "WriteIDTEntry", "SetIDT", "EnableInterrupts", "IRET",
            "SetPxE", "AllocatePage", "SetCR3", "InvalPage", "FlushTLB", "SetAlarm", "Halt",
            "CancelAlarm", "GetCycleCounter", "Shutdown"} <= set(names)
    alarms = [c for c in calls if c["name"] == "SetAlarm"]
    assert alarms[0]["op"]["period"] == 0 and alarms[1]["op"]["period"] == 100000
    assert res.upcalls == 3


def test_a_pvtest_vmi_recording_verifies_identical(recorded):
    _res, path, _calls = recorded
    rep = replay_closed(open_run(path))
    assert rep.mode == "verify" and rep.total == 0
    assert rep.compared == len(TraceReader(path))


def test_pvmon_run_and_trace_tools(recorded):
    _res, path, _calls = recorded
    p = _pvmon("run", "pvtest-vmi")
    assert p.returncode == 0 and "VMI Shutdown" in p.stdout + p.stderr
    cat = _pvmon("trace", "cat", str(path))
    assert cat.returncode == 0 and "SetAlarm(" in cat.stdout
    ops = _pvmon("trace", "pvops", str(path))
    assert ops.returncode == 0 and "time.periodic" in ops.stdout and "unmapped" not in ops.stdout


def test_the_failing_variant_makes_the_run_fail():
    p = _pvmon("run", str(IMAGES / "pvtest-vmi-fail.elf"), "--backend", "vmi-3.0")
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "FAIL" in out and "triple fault" in out, out[-1500:]


def _attached():
    sess = Session(resolve("pvtest-vmi"), backend="vmi-3.0", memory=MEM)
    return sess, sess.backend


def test_a_call_with_no_entry_in_the_table_stops_the_guest():
    sess, b = _attached()
    b.call(50, (0, 0, 0, 0, 0))
    stop = sess.machine.stop_reason
    assert stop.kind == "crash" and stop.detail == "VMI call 50 has no entry in the ROM"
    assert b.unsupported == {"vmi_50": 1}


def test_a_bad_pointer_stops_the_guest_naming_the_call():
    sess, b = _attached()
    b.call(abi.HYPERCALL_NUMBERS["SetGDT"], (MEM + 0x5000, 0, 0, 0, 0))
    stop = sess.machine.stop_reason
    assert stop.kind == "crash" and stop.detail == f"VMI SetGDT: bad pointer {MEM + 0x5000:#x}"


def test_a_call_between_rom_entries_is_the_guests_crash():
    sess, _b = _attached()
    entry = sess.layout.entry
    # mov $0x90000, %esp; call ROM+0x104 (inside CPUID's 16-byte entry, not its start)
    target = ROM_PA + 0x104 + 0x100
    code = bytes([0xBC, 0, 0, 9, 0, 0xE8]) + ((target - (entry + 10)) & 0xFFFFFFFF).to_bytes(
        4, "little")
    sess.machine.write_phys(entry, code)
    sess.machine.write_phys(target, b"\x0f\x01\xc1")
    res = sess.run(timeout=20)
    assert res.exit_kind == "crash" and "VMI ROM at +0x204, where no entry is" in res.detail


def test_the_tui_plays_a_vmi_trace_and_boots_pvtest_vmi_live(recorded):
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
        app, lv = live_app("pvtest-vmi", backend="vmi-3.0")
        async with app.run_test(size=(110, 32)) as pilot:
            await until(pilot, lambda: app.screen._finished_shown)
            assert ", 0 failed" in lv.session.console.decode()

    asyncio.run(player())
    asyncio.run(live())


def test_random_rom_calls_never_raise_in_the_host():
    import random
    rng = random.Random(30)
    values = [0, 1, 0x200, 0x1000, 0x200000, MEM - 4, MEM, 0xC8000, 0xFFFFFFFF, 0x80000000]
    for _round in range(10):
        sess, b = _attached()
        for _ in range(40):
            nr = rng.choice([*abi.HYPERCALLS, 49, 72, 74, 200])
            if nr in (35, 36, 37):
                continue          # Halt, Reboot, Shutdown end or idle the run
            args = tuple(rng.choice(values + [rng.getrandbits(32)]) for _ in range(5))
            b.call(nr, args)
            stop = sess.machine.stop_reason
            if stop is not None:
                assert stop.kind == "crash" and stop.detail.startswith("VMI "), stop
                break


def test_an_alarm_wired_to_lvtt_raises_the_vector_apicwrite_put_there():
    """Linux with a local APIC wires its alarm to the LVT timer entry
    (vmiclock_32.c vmi_time_bsp_init: APICWrite(APIC_LVTT, vector), then
    SetAlarm(... | VMI_ALARM_WIRED_LVTT)): the alarm raises that vector, not
    IRQ0; APICRead gives the entry back; a masked entry drops the interrupt."""
    sess, b = _attached()
    v = b.vcpu
    nr = abi.HYPERCALL_NUMBERS
    b.call(nr["APICWrite"], (0x320, 0xEF, 0, 0, 0))
    b.call(nr["APICRead"], (0x320, 0, 0, 0, 0))
    assert b.out["eax"] == 0xEF
    now = sess.machine.clock.now_ns
    flags = abi.COUNTER_REAL | abi.ALARM_WIRED_LVTT
    b.call(nr["SetAlarm"], (flags, (now + 5000) & 0xFFFFFFFF, (now + 5000) >> 32, 0, 0))
    v.vif = 0x200
    v.idle_until(now + 5000)
    assert v.due_vector() == 0xEF
    sess2, b2 = _attached()
    b2.call(nr["APICWrite"], (0x320, 0x100EF, 0, 0, 0))          # masked
    now = sess2.machine.clock.now_ns
    b2.call(nr["SetAlarm"], (flags, (now + 5000) & 0xFFFFFFFF, (now + 5000) >> 32, 0, 0))
    b2.vcpu.vif = 0x200
    b2.vcpu.idle_until(now + 5000)
    assert b2.vcpu.due_vector() is None and not b2.vcpu.alarm_pending
    sess3, b3 = _attached()                                      # IRQ0 wiring, the default
    now = sess3.machine.clock.now_ns
    b3.call(nr["SetAlarm"], (abi.COUNTER_REAL, (now + 5000) & 0xFFFFFFFF, 0, 0, 0))
    b3.vcpu.vif = 0x200
    b3.vcpu.idle_until(now + 5000)
    assert b3.vcpu.due_vector() == abi.IRQ0_VECTOR
