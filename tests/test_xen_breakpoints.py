"""#DB from the guest's breakpoints, as Xen 4.17 raises it for a 64-bit PV
guest: the debug-register checks of the hostile reference guest pvtest-v2-rules
(guests/src/checks_debugreg.c, each naming its xen.git source), and what a
recording of them holds.

Sources are xen.git at stable-4.17: check_guest_io_breakpoint and
pv_emulate_privileged_op in xen/arch/x86/pv/emul-priv-op.c; do_debug and
activate_debugregs in xen/arch/x86/traps.c."""

import pytest

from pvmon.engine import debugregs
from pvmon.guests.catalog import resolve
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from tests.test_xen_rules import RULES_IMAGE, _check_lines, _run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("dbg") / "rules.pvt"
    res, ring, _io = _run(record=path)
    assert res.exit_kind == "shutdown", (res.exit_kind, res.detail)
    return ring, path


def _section(ring: str, title: str) -> dict:
    """The checks of one section of the guest's report (to the next '# ' line)."""
    start = ring.index(f"pvtest: # {title}")
    end = ring.find("pvtest: # ", start + 1)
    return _check_lines(ring[start:end if end > 0 else None])


def test_every_debug_register_check_of_the_rules_guest_passes(recorded):
    ring, _path = recorded
    checks = _section(ring, "debug registers")
    assert len(checks) >= 10 and set(checks.values()) == {"ok"}, checks


def test_an_io_breakpoint_is_a_db_after_the_instruction_with_its_b_bit_in_dr6(recorded):
    ring, _path = recorded
    checks = _section(ring, "debug registers")
    for name in (("out to port 0x80 with an I/O breakpoint there -> #DB after the instruction "
                  "(pv_emulate_privileged_op)"),
                 "... %dr6 = B0 | DR_STATUS_RESERVED_ONE",
                 ("in from port 0x80 -> #DB after the instruction, %al already loaded "
                  "(a domU reads all ones: guest_io_read)"),
                 "out to port 0x80 with CR4.DE cleared -> no #DB (check_guest_io_breakpoint)"):
        assert checks.get(name) == "ok", name


def test_the_io_breakpoint_db_is_recorded_as_a_fault_at_the_next_instruction(recorded):
    _ring, path = recorded
    db = [e for e in TraceReader(path).events() if e["k"] == "fault" and e["vec"] == 1]
    # four hits (out, in, in $0x71, out): vector 1, no error code, no #GP recorded for them
    assert len(db) >= 4 and all(e["err"] is None for e in db[:4])


def test_a_recording_with_io_breakpoint_hits_verifies_identically(recorded):
    _ring, path = recorded
    rep = replay_closed(open_run(path, guest=str(RULES_IMAGE)))
    assert rep.total == 0 and rep.ending["outcome"] == "identical"


def test_an_instruction_breakpoint_is_a_db_at_the_instruction_and_rf_lets_it_run(recorded):
    ring, _path = recorded
    checks = _section(ring, "debug registers")
    for name in (("an instruction breakpoint -> #DB at the instruction, before it runs (a fault: "
                  "do_debug, traps.c)"),
                 "... %dr6 = B0 | the reserved ones (do_debug merges the hardware's)",
                 "... RFLAGS.RF set in the frame: the instruction then runs once",
                 "RF lasts one instruction: the next execution hits again",
                 "set_debugreg(7, 0x400) removes it -> no #DB"):
        assert checks.get(name) == "ok", name


def test_a_data_breakpoint_is_a_db_after_the_access_but_not_for_xens_own_accesses(recorded):
    ring, _path = recorded
    checks = _section(ring, "debug registers")
    for name in (("a store to a write breakpoint -> #DB after it, the store done (a trap: "
                  "do_debug, traps.c)"),
                 "a load under a write-only breakpoint -> no #DB",
                 ("a load under a 4-byte read/write breakpoint whose address has its low bits "
                  "set (they are ignored) -> #DB after it, %dr6 B1"),
                 ("a hypercall writing a word under a write breakpoint (a multicall's result) "
                  "-> no #DB (do_debug drops a #DB in Xen context)"),
                 "... and the guest's own store there -> #DB"):
        assert checks.get(name) == "ok", name


def test_a_kernel_mov_to_or_from_a_debug_register_is_emulated_as_xen_does(recorded):
    """x86emul_write_dr / x86emul_read_dr (xen/arch/x86/x86_emulate.c): the
    hypercalls' checks, -ENODEV as #UD and any other refusal as #GP(0)."""
    ring, _path = recorded
    checks = _section(ring, "debug registers")
    for name in ("mov to %dr0 from the kernel -> set_debugreg, no fault (x86emul_write_dr)",
                 "... and the breakpoint it enabled fires (activate_debugregs)",
                 ("mov to %dr0 of an address in Xen's range -> #GP(0) (set_debugreg -EPERM), "
                  "unchanged"),
                 "mov to %dr7 with GD -> #GP(0) (-EPERM)",
                 "mov to %dr4 with CR4.DE set -> #UD (set_debugreg -ENODEV)",
                 "mov from %dr4 with CR4.DE clear -> %dr6 (x86emul_read_dr: the alias)"):
        assert checks.get(name) == "ok", name


def test_the_engine_gets_the_debug_registers_only_while_dr7_enables_a_breakpoint():
    s = Session(resolve(str(RULES_IMAGE)))
    s.run(timeout=120)
    regs = debugregs.for_machine(s.machine)
    # loaded when an instruction breakpoint was enabled (its changes reload them),
    # and taken away again by set_debugreg(7, 0x400)
    assert regs.loads > 0 and not regs.live


@pytest.mark.debian
@pytest.mark.slow
def test_a_debian_boot_never_loads_the_debug_registers_into_the_engine(debian612):
    """Linux sets %dr7 = 0x400 (no breakpoint) once: nothing reaches the engine."""
    s = Session(debian612)
    s.run(timeout=600)
    assert debugregs.for_machine(s.machine).loads == 0
    assert s.dispatch.faults[1] == 0
