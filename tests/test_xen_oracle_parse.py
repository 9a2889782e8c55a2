"""scripts/xen_oracle.py's console parser on captured fragments: real Xen 4.17's com1
log (dom0 console_io lines bare among "(XEN)" lines, CRLF endings, a run that stalls)
and pvmon's console (SKIP, FAIL, the proof-of-concept verdicts)."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "xen_oracle", Path(__file__).resolve().parent.parent / "scripts" / "xen_oracle.py")
xen_oracle = importlib.util.module_from_spec(_spec)
sys.modules["xen_oracle"] = xen_oracle  # dataclasses look their module up
_spec.loader.exec_module(xen_oracle)

# From ~/.cache/pvmon-oracle/logs/pvtest-v2.log (Debian xen-hypervisor-4.17-amd64
# 4.17.7+13-g2445b30a44-0+deb12u1 on QEMU 7.2 TCG), shortened; the run stalled here.
XEN_STALLED = (
    "(XEN) *** Serial input to DOM0 (type 'CTRL-a' three times to switch input)\r\n"
    "(XEN) Freed 656kB init memory\r\n"
    "pvtest: pvtest-v2 booting (Xen x86-64 PV reference guest, hypercalls via syscall)\r\n"
    "pvtest: # boot: start of day (xen.h layout)\r\n"
    "pvtest: ok 1 - set_trap_table installs the virtual IDT\r\n"
    "pvtest: ok 84 - time advanced past the deadline across SCHEDOP_block\r\n"
    "pvtest: ok 85 - VCPUOP_set_periodic_timer 2 ms\r\n"
)

PVMON = (
    "pvtest: pvtest-v2-rules booting (Xen x86-64 PV reference guest with the hostile checks)\n"
    "pvtest: ok 1 - set_trap_table installs the virtual IDT\n"
    "pvtest: ok 2 - console_io write # SKIP a release build refuses it (-EPERM)\n"
    "pvtest: FAIL 3 - update_va_mapping refuses a writable L1 mapping (rc 0)\n"
    "pvtest: 2 passed, 1 failed\n"
    "pvtest: shutting down: crash\n"
)

POC = (
    "(d1) pvtest: XSA-148 fixed - mmu_update adds _PAGE_PSE to a present entry -> rc -22\n"
    "(XEN) [   12.000000] (d1) pvtest: XSA-213 vulnerable - multicall with iret -> RAX 0x0\n"
    "pvtest: shutting down: poweroff\n"
)


def test_a_real_xen_log_that_stops_mid_run_is_stalled_after_its_last_check():
    run = xen_oracle.parse_console(XEN_STALLED)
    assert run.booted
    assert list(run.checks) == ["1", "84", "85"]
    assert run.checks["85"].name == "VCPUOP_set_periodic_timer 2 ms"
    assert run.checks["85"].status == "ok"
    assert run.describe() == "stalled after check 85"


def test_a_log_whose_machine_stopped_is_not_called_a_stall():
    run = xen_oracle.parse_console(XEN_STALLED, finished=False)
    assert run.describe() == "machine stopped after check 85"


def test_skip_and_fail_lines_keep_their_name_apart_from_reason_and_detail():
    run = xen_oracle.parse_console(PVMON)
    skip, fail = run.checks["2"], run.checks["3"]
    assert (skip.status, skip.name) == ("skip", "console_io write")
    assert skip.detail == "a release build refuses it (-EPERM)"
    assert (fail.status, fail.name, fail.detail) == (
        "fail", "update_va_mapping refuses a writable L1 mapping", "rc 0")
    assert run.describe() == "finished (crash)"


def test_a_fail_detail_holding_parentheses_stays_whole():
    run = xen_oracle.parse_console(
        "pvtest: FAIL 135 - int $0x22 (DPL 0) from the kernel -> #GP((0x22<<3)|2) at the int "
        "(vector 13, error 0x222, rip 0xffffffff8020472b (int at 0xffffffff8020472b))\r\n")
    check = run.checks["135"]
    assert check.name == "int $0x22 (DPL 0) from the kernel -> #GP((0x22<<3)|2) at the int"
    assert check.detail == ("vector 13, error 0x222, rip 0xffffffff8020472b "
                            "(int at 0xffffffff8020472b)")


def test_xsa_verdicts_are_checks_keyed_by_advisory_whatever_the_prefix():
    run = xen_oracle.parse_console(POC)
    assert run.checks["XSA-148"].status == "fixed"
    assert run.checks["XSA-213"].status == "vulnerable"
    assert run.checks["XSA-213"].detail == "RAX 0x0"
    assert run.describe() == "finished (poweroff)"


def test_a_xen_panic_ends_the_run_as_a_crash_not_a_stall():
    run = xen_oracle.parse_console(XEN_STALLED + "(XEN) Panic on CPU 0:\r\n")
    assert run.describe() == "Xen crashed the guest after check 85"


def test_no_guest_output_at_all_says_so():
    assert xen_oracle.parse_console("(XEN) Xen version 4.17.7\r\n").describe() == "no guest output"


def test_compare_marks_disagreement_and_checks_real_xen_never_reached():
    pv = xen_oracle.parse_console(PVMON)
    xen = xen_oracle.parse_console(
        "pvtest: ok 1 - set_trap_table installs the virtual IDT\n"
        "pvtest: ok 2 - console_io write\n")
    rows = {r["check"]: r for r in xen_oracle.compare(pv, xen)}
    assert rows["1"]["agree"] is True
    assert rows["2"]["agree"] is False and (rows["2"]["pvmon"], rows["2"]["xen"]) == ("skip", "ok")
    assert rows["3"]["agree"] is None and rows["3"]["xen"] == "-"


def test_checks_are_paired_by_name_when_one_side_skips_a_section():
    # dom0 has no xenstore, so real Xen's pvtest-v2-rules skips its grant checks and
    # numbers every later check lower; the pairing follows the names, not the numbers.
    pv = xen_oracle.parse_console(
        "pvtest: ok 1 - xenstore domid read\n"
        "pvtest: ok 2 - query_size DOMID_SELF\n"
        "pvtest: ok 3 - setup_table DOMID_SELF\n"
        "pvtest: ok 4 - rdmsr FS_BASE\n"
        "pvtest: ok 5 - wrmsr FS_BASE\n"
        "pvtest: shutting down: poweroff\n")
    xen = xen_oracle.parse_console(
        "pvtest: FAIL 1 - xenstore domid read (len -1)\r\n"
        "pvtest: ok 2 - rdmsr FS_BASE\r\n"
        "pvtest: FAIL 3 - wrmsr FS_BASE (#GP 0)\r\n"
        "pvtest: shutting down: crash\r\n")
    rows = xen_oracle.compare(pv, xen)
    assert [(r["check"], r["xen_check"], r["agree"]) for r in rows] == [
        ("1", "1", False), ("2", "-", None), ("3", "-", None), ("4", "2", True),
        ("5", "3", False)]
    res = xen_oracle.summary("g", pv, xen, rows)
    assert (res["compared"], res["agree"], res["differ"]) == (3, 1, ["1", "5"])
    assert res["not_reached"] == ["2", "3"] and res["xen_only"] == []


def test_a_fatal_line_in_place_of_a_check_is_paired_with_it_and_named():
    pv = xen_oracle.parse_console("pvtest: ok 1 - a\npvtest: ok 2 - b\npvtest: ok 3 - c\n")
    xen = xen_oracle.parse_console(
        "pvtest: ok 1 - a\npvtest: FAIL 2 - fatal: unexpected trap 14 at rip 0x1 (error 0x1)\n")
    rows = {r["check"]: r for r in xen_oracle.compare(pv, xen)}
    assert rows["2"]["agree"] is False and rows["2"]["xen_check"] == "2"
    assert "fatal: unexpected trap 14" in rows["2"]["note"]
    assert rows["3"]["agree"] is None


def test_check_numbers_collapse_into_ranges_for_the_caption():
    assert xen_oracle._ranges(["5", "6", "7", "9", "162", "163", "XSA-148"]) == [
        "5-7", "9", "162-163", "XSA-148"]


def test_each_image_dir_and_qemu_cpu_keeps_its_own_com1_log():
    assert xen_oracle.log_name("pvtest-v2", None) == "pvtest-v2.log"
    assert xen_oracle.log_name("pvtest-v2-rules", Path("/c/tcg-build")) == \
        "pvtest-v2-rules-tcg-build.log"
    assert xen_oracle.log_name("pvtest-v2", None, xen_oracle.DEFAULT_CPU) == "pvtest-v2.log"
    assert xen_oracle.log_name("pvtest-v2-rules", Path("/c/tcg-build"), "max") == \
        "pvtest-v2-rules-tcg-build-max.log"
    assert xen_oracle.log_name("pvtest-v2", None, "max,vendor=AuthenticAMD") == \
        "pvtest-v2-max_vendor_AuthenticAMD.log"
