"""End-to-end boots of the built-in reference guests on the xen-4.17 backend."""

import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.guests.catalog import resolve
from pvmon.session import Session

IMAGES = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images"


@pytest.mark.parametrize("name", ["pvtest-v1", "pvtest-v2"])
def test_builtin_guest_passes_every_check_and_powers_off(name):
    res = Session(resolve(name)).run(timeout=60)
    text = res.console.decode()
    assert "0 failed" in text and " passed" in text
    assert "FAIL" not in text
    assert res.exit_kind == "shutdown" and res.shutdown_reason == 0
    assert res.clean


def test_v1_calls_through_the_hypercall_page_and_v2_through_syscall():
    seen = {}
    for name in ("pvtest-v1", "pvtest-v2"):
        s = Session(resolve(name))
        vias = set()
        s.dispatch.call_listeners.append(lambda ev, v=vias: v.add(ev["via"]))
        s.run(timeout=60)
        seen[name] = vias
    assert seen["pvtest-v1"] == {"page"}
    assert seen["pvtest-v2"] == {"syscall"}


def test_v1_uses_the_older_interfaces_and_v2_the_newer_ones():
    counts = {n: Session(resolve(n)).run(timeout=60).hypercalls for n in ("pvtest-v1", "pvtest-v2")}
    old = {"sched_op_compat", "event_channel_op_compat", "set_timer_op"}
    new = {"sched_op", "event_channel_op"}
    assert old <= set(counts["pvtest-v1"]) and not new & set(counts["pvtest-v1"])
    assert new <= set(counts["pvtest-v2"]) and not old & set(counts["pvtest-v2"])


def _calls(name):
    s = Session(resolve(name))
    calls = []
    s.dispatch.call_listeners.append(calls.append)
    s.run(timeout=60)
    return calls


def test_a_bad_guest_pointer_in_console_io_gets_efault():
    calls = _calls("pvtest-v2")
    bad = [c for c in calls if c["name"] == "console_io" and c["ret"] == -14]
    assert len(bad) >= 2   # non-canonical and unmapped buffers


def test_an_unknown_hypercall_gets_enosys_and_is_counted():
    s = Session(resolve("pvtest-v2"))
    calls = []
    s.dispatch.call_listeners.append(calls.append)
    res = s.run(timeout=60)
    assert any(c["nr"] == 45 and c["ret"] == -38 for c in calls)
    assert res.unsupported.get("hypercall_45") == 1


def test_an_unknown_mmuext_op_gets_enosys_and_bad_arguments_get_einval():
    calls = _calls("pvtest-v2")
    assert any(c["name"] == "mmuext_op" and c["op"].get("cmd") == 14 and c["ret"] == -38
               for c in calls)
    assert any(c["name"] == "set_segment_base" and c["ret"] == -22 for c in calls)


def test_a_failing_check_makes_the_guest_and_pvmon_run_report_failure(tmp_path):
    fail_img = tmp_path / "pvtest-v2-fail.elf"
    src = IMAGES / "pvtest-v2-fail.elf"
    if not src.exists():
        pytest.skip("pvtest-v2-fail.elf not shipped")
    fail_img.write_bytes(src.read_bytes())
    p = subprocess.run([sys.executable, "-m", "pvmon.cli", "run", str(fail_img)],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "1 failed" in p.stdout
    assert "SCHEDOP_shutdown(crash)" in p.stderr


def test_two_runs_give_the_same_hypercall_stream_and_console():
    def stream():
        s = Session(resolve("pvtest-v2"))
        calls = []
        s.dispatch.call_listeners.append(
            lambda ev: calls.append((ev["name"], tuple(ev["args"]), ev["ret"], ev["t"])))
        res = s.run(timeout=60)
        return calls, res.console
    assert stream() == stream()


def test_the_bootstrap_mapping_is_executable_only_over_the_kernels_code():
    """The builder sets NX outside the kernel's PF_X segments (pvmon/backends/xen/builder.py:
    Unicorn takes a slow path for every store to an executable page)."""
    from pvmon.engine.machine import PTE_NX
    s = Session(resolve("pvtest-v2"))
    m, lay = s.machine, s.layout
    assert s.kernel.exec_ranges
    _pa, entry_pte = m.walk(s.kernel.entry)
    _pa, si_pte = m.walk(lay.start_info_va)
    _pa, stack_pte = m.walk(lay.stack_top_va - 8)
    assert not m.read_u64_phys(entry_pte) & PTE_NX
    assert m.read_u64_phys(si_pte) & PTE_NX
    assert m.read_u64_phys(stack_pte) & PTE_NX
