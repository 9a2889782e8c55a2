"""The built-in reference guest's PVH build, pvtest-v2-pvh, on the xen-4.17
backend: a 32-bit PHYS32_ENTRY kernel that builds its own page tables and
IDT, reaches Xen with vmcall and takes events on the HVM_PARAM_CALLBACK_IRQ
vector. It runs its checks (guests/src/checks_pvh.c) and powers off; a
recording of it verifies byte-identical."""

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "pvmon" / "guests" / "images" / "pvtest-v2-pvh.elf"
VIRT_BASE = 0xFFFFFFFF80000000
XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_HYPERCALL_PAGE, XEN_ELFNOTE_PHYS32_ENTRY = 1, 2, 18
SUMMARY = re.compile(r"pvtest: (\d+) passed, (\d+) failed")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One recorded boot: (RunResult, trace path, the hypercall events seen live)."""
    path = tmp_path_factory.mktemp("pvh") / "pvtest-v2-pvh.pvt"
    sess = Session(resolve("pvtest-v2-pvh"), mode="pvh", record=path)
    calls = []
    sess.dispatch.call_listeners.append(calls.append)
    return sess.run(timeout=60), path, calls


def _pvmon(*args):
    return subprocess.run([sys.executable, "-m", "pvmon", *args], check=False,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_pvh_guest_passes_every_check_and_powers_off(recorded):
    res, _path, _calls = recorded
    text = res.console.decode()
    m = SUMMARY.search(text)
    assert m, text[-2000:]
    assert int(m.group(1)) >= 90 and m.group(2) == "0", text[-2000:]
    assert "FAIL" not in text
    assert "pvtest-v2-pvh booting" in text and "hypercalls via vmcall" in text
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0
    assert res.clean


def test_pvh_guest_calls_by_vmcall_and_takes_events_on_its_vector(recorded):
    res, path, calls = recorded
    assert {c["via"] for c in calls} == {"vmcall"}
    assert {"hvm_op", "event_channel_op", "vcpu_op", "memory_op", "grant_table_op",
            "sched_op"} <= set(res.hypercalls)
    kinds: dict[str, list[dict]] = {}
    for ev in TraceReader(path):
        kinds.setdefault(ev["k"], []).append(ev)
    assert kinds["irq"] and {ev["vec"] for ev in kinds["irq"]} == {0xF3}
    assert any(ev["if"] for ev in kinds["halt"])      # sti; hlt idling to the timer
    assert any(ev.get("gp") for ev in kinds["msr"])   # the unknown MSR's #GP
    assert res.upcalls == len(kinds["irq"])


def test_a_pvh_guest_recording_verifies_identical(recorded):
    _res, path, _calls = recorded
    rep = replay_closed(open_run(path))
    assert rep.mode == "verify"
    assert rep.total == 0
    assert rep.compared == len(TraceReader(path))
    assert rep.ending["outcome"] == "identical"


def test_pvmon_run_boots_it_as_pvh_without_mode():
    r = _pvmon("run", "pvtest-v2-pvh", "--timeout", "60")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    m = SUMMARY.search(r.stdout)
    assert m and m.group(2) == "0"


def test_booted_as_pv_it_says_it_has_no_pv_entry():
    r = _pvmon("run", "pvtest-v2-pvh", "--mode", "pv", "--timeout", "60")
    assert r.returncode == 1
    assert "no PV entry: boot it with --mode pvh" in r.stdout
    assert "Traceback" not in r.stderr


def _notes(data: bytes) -> dict[int, bytes]:
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    notes: dict[int, bytes] = {}
    for i in range(e_phnum):
        p_type, _fl, off, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", data,
                                                                e_phoff + i * e_phentsize)
        if p_type != 4:
            continue
        end = off + filesz
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            off += 12
            name = data[off:off + namesz]
            off += (namesz + 3) & ~3
            if name == b"Xen\0":
                notes[ntype] = data[off:off + descsz]
            off += (descsz + 3) & ~3
    return notes


def test_the_image_is_a_pvh_only_kernel_entered_at_pvh_start():
    data = IMAGE.read_bytes()
    assert len(data) < 128 * 1024
    notes = _notes(data)
    entry = int.from_bytes(notes[XEN_ELFNOTE_PHYS32_ENTRY], "little")
    syms = subprocess.run(["nm", str(IMAGE)], capture_output=True, text=True, check=False)
    if syms.returncode == 0:
        addr = {ln.split()[2]: int(ln.split()[0], 16) for ln in syms.stdout.splitlines()
                if len(ln.split()) == 3}
        assert entry == addr["pvh_start"] - VIRT_BASE
    assert 0x100000 <= entry < 0x400000
    assert XEN_ELFNOTE_ENTRY not in notes and XEN_ELFNOTE_HYPERCALL_PAGE not in notes
    assert notes[6] == b"pvtest\0"
