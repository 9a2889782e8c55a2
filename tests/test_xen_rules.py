"""The rules Xen 4.17 enforces on any 64-bit PV guest, as pvmon's Xen backend
enforces them: checked by the hostile reference guest pvtest-v2-rules
(guests/src/checks_rules.c, each check naming its xen.git source) and by what
a recording of it holds."""

import re
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.versions import REGISTRY
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.explain import differences
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader

RULES_IMAGE = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images" / \
    "pvtest-v2-rules.elf"


def _run(backend="xen-4.17", record=None):
    img = resolve(str(RULES_IMAGE))
    s = Session(img, backend=backend, record=record)
    chans = {"io": bytearray(), "ring": bytearray()}
    s.on_console(lambda ch, data: chans[ch].extend(data))
    res = s.run(timeout=120)
    return res, chans["ring"].decode(), chans["io"].decode()


def _check_lines(text):
    """{check name: "ok" | "SKIP" | "FAIL"} from the guest's report lines."""
    out = {}
    for m in re.finditer(r"^pvtest: (ok|FAIL) \d+ - (.*)$", text, re.MULTILINE):
        name, skip, _why = m.group(2).partition(" # SKIP ")
        if m.group(1) == "FAIL":
            out[name.rpartition(" (")[0]] = "FAIL"   # "name (detail)"
        else:
            out[name] = "SKIP" if skip else "ok"
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "rules.pvt"
    res, ring, io = _run(record=path)
    return res, ring, io, path


def test_the_rules_guest_passes_every_check_on_xen_4_17(recorded):
    res, ring, _io, _path = recorded
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    assert "FAIL" not in ring and re.search(r"pvtest: 660 passed, 0 failed", ring)
    checks = _check_lines(ring)
    for name in (
        "CALLBACKOP_register sysenter -> 0 (register_guest_callback)",
        "CALLBACKOP_register syscall32 -> 0",
        "CALLBACKOP_register unknown type 6 -> -ENOSYS",
        "int $0x22 (DPL 0) from the kernel -> #GP((0x22<<3)|2) at the int",
        "int $0x80 with no handler -> int80_slow_path: #GP((0x80<<3)|2) at the int",
        "int $0x20 (DPL 1) from user mode -> #GP((0x20<<3)|2) at the int, user frame",
        ("syscall from user mode with no syscall callback -> #UD at the syscall, not #GP "
         "(switch_to_kernel: TB_eip == 0)"),
        ("an iret in a multicall resumes at its RIP and RSP, RAX the low 32 bits of its "
         "RAX sign-extended (mc_exit ends the batch; do_multicall returns the entry's "
         "result through its int rc)"),
        "alloc_unbound with remote DOMID_SELF stores the caller's own domid",
        "CONSOLEIO_read -> -EPERM (XSM_PRIV: only the hardware domain reads)",
    ):
        assert checks.get(name) == "ok", name
    assert checks["console_io CONSOLEIO_write"] == "ok"
    assert "console_io write on this build: permitted (CONFIG_VERBOSE_DEBUG)" in ring


def test_a_recording_of_the_rules_guest_verifies_identically(recorded):
    _res, _ring, _io, path = recorded
    rep = replay_closed(open_run(path, guest=str(RULES_IMAGE)))
    assert rep.total == 0 and rep.ending["outcome"] == "identical"


def test_an_int_the_trap_table_forbids_is_recorded_as_the_gp_xen_delivers(recorded):
    _res, _ring, _io, path = recorded
    faults = [e for e in TraceReader(path).events() if e["k"] == "fault"]
    gp = {e["err"]: e for e in faults if e["vec"] == abi.TRAP_gp_fault}
    # traps.c do_general_protection / entry.S int80_slow_path: error (n << 3) | 2
    for vector in (0x22, 0x23, 0x0E, 0x80, 0x20):
        assert (vector << 3) | abi.X86_XEC_IDT in gp, hex(vector)
    # permitted software interrupts arrive as themselves, with no error code
    soft = [e for e in faults if e["vec"] in (0x20, 0x21, 0x80)]
    assert soft and all(e["err"] is None for e in soft)
    # user-mode entries: the rules guest's user code sits at 0x400000
    user = [e for e in faults if e["rip"] < 1 << 32]
    assert {(e["vec"], e["err"]) for e in user} >= {
        (abi.TRAP_gp_fault, (0x20 << 3) | 2), (abi.TRAP_gp_fault, (0x80 << 3) | 2),
        (0x21, None), (0x80, None)}


def test_an_iret_in_a_multicall_ends_the_batch_with_its_rax(recorded):
    _res, _ring, _io, path = recorded
    mcs = [e for e in TraceReader(path).events()
           if e["k"] == "hc" and e["name"] == "multicall" and "iret" in e["op"]["calls"]]
    assert len(mcs) == 1
    ev = mcs[0]
    assert ev["op"]["calls"] == ["xen_version", "iret"] and ev["op"]["count"] == 3
    # do_multicall's int rc: the low 32 bits of the iret's RAX, sign-extended
    assert ev["ret"] == 0xABCD5678 - (1 << 32)      # of RAX 0x1234ABCD5678


def test_a_release_build_refuses_console_io_writes_and_the_guest_uses_its_ring():
    res, ring, io = _run("xen-4.17-release")
    assert res.clean and "0 failed" in ring
    assert io == ""                        # nothing reached the hypervisor's log
    assert _check_lines(ring)["console_io CONSOLEIO_write"] == "SKIP"
    assert "console_io write on this build: refused (release)" in ring


def test_the_release_build_differs_from_the_reference_only_in_console_io_writes():
    ref, rel = REGISTRY["xen-4.17"], REGISTRY["xen-4.17-release"]
    facts = differences(ref, rel)
    assert [(f.hypercall, f.subop) for f in facts] == [("console_io", "write")]
    assert "xsm/dummy.h@stable-4.17" in facts[0].source
    assert "verbose_debug" in ref.capabilities and "verbose_debug" not in rel.capabilities
    # every released version derived from the reference keeps the debug console
    assert all("verbose_debug" in REGISTRY[n].capabilities
               for n in ("xen-3.4", "xen-4.21", "xen-4.22"))


@pytest.mark.debian
@pytest.mark.slow
def test_debian_6_12_registers_its_sysenter_callback_and_boots_to_the_same_panic(debian612):
    s = Session(debian612)
    cbs = []
    s.dispatch.call_listeners.append(
        lambda ev: cbs.append((ev["op"].get("type"), ev["ret"]))
        if ev["name"] == "callback_op" else None)
    res = s.run(timeout=600)
    # Linux registers sysenter on an Intel CPUID vendor; Xen 4.17 takes it (was -EINVAL)
    assert ("sysenter", 0) in cbs and all(ret == 0 for _t, ret in cbs)
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in res.console.decode()
    assert res.exit_kind == "crash" and res.shutdown_reason == abi.SHUTDOWN_crash
