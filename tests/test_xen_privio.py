"""String port I/O (INS/OUTS) and the rest of a Xen PV kernel's privileged
instructions as Xen 4.17 emulates them (xen/arch/x86/pv/emul-priv-op.c
rep_ins/rep_outs, x86_emulate.c): checked by the hostile reference guest
pvtest-v2-rules (guests/src/checks_privio.c), and the decoder on its own."""

import re
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.pv import stringio
from pvmon.engine import hvm
from pvmon.guests.catalog import resolve
from pvmon.session import Session

IMAGES = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images"

needs_patch = pytest.mark.skipif(not hvm.privops_available(),
                                 reason="needs pvmon's patched Unicorn with the PV privileged-"
                                        "operation patch (pvmon engine build)")


def _section(text, title):
    start = text.index(f"# {title}")
    end = text.find("\npvtest: # ", start + 1)
    return {n: k for k, n in re.findall(r"^pvtest: (ok|FAIL) \d+ - (.*)$",
                                        text[start:end if end > 0 else None], re.MULTILINE)}


@pytest.fixture(scope="module")
def rules_ring():
    s = Session(resolve(str(IMAGES / "pvtest-v2-rules.elf")), backend="xen-4.17")
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=120)
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    return ring.decode()


@needs_patch
def test_ins_and_outs_are_emulated_as_xens_rep_ins_and_rep_outs(rules_ring):
    checks = _section(rules_ring, "string port I/O")
    assert len(checks) == 31 and all(k == "ok" for k in checks.values()), checks
    for name in (
        "rep insb with RCX 5: 5 bytes, RCX 0, RDI + 5 (x86_emulate.c put_rep_prefix)",
        ("IOPL 0: insb from the kernel -> #GP(0), memory and RDI untouched "
         "(rep_ins: guest_io_okay first)"),
        ("IOPL 0: outsb from an unmapped address -> #GP(0), not #PF (the port is checked "
         "first)"),
        ("insb to a read-only page -> #PF error W without P (rep_ins: Xen's error code, "
         "not the hardware's P|W)"),
        ("rep insb of 8 reaching a read-only page after 3: #PF at the rep insb, RCX 5, RDI "
         "advanced by 3 (put_rep_prefix keeps the done reps)"),
        ("IOPL 3: insb from user mode into its read-only code page -> #PF error W|U "
         "(rep_ins; pv_inject_event sets U), not the hardware's P|W|U"),
        ("outsb %ss:(%rsi) non-canonical -> #GP(0): x86_emulate ignores an SS override "
         "in 64-bit mode, so pv_emul_virt_to_linear sees x86_seg_ds"),
        ("rep insb of 8192 bytes completes (Xen may stop and resume it at "
         "hypercall_preempt_check; the guest cannot tell)"),
        ("IOPL 0, port allowed by the bitmap: rep insb of 2 writing 0xff over that bitmap "
         "byte completes both (guest_io_okay is asked once, before the loop)"),
        "... and with IOPL 1 the next in is allowed (no refusal left over)",
    ):
        assert checks.get(name) == "ok", name


@pytest.mark.parametrize("code, want", [
    (b"\x6c", (0x6C, 1, 8, False, None, 1)),                  # insb
    (b"\x66\x6d", (0x6D, 2, 8, False, None, 2)),              # insw
    (b"\x6d", (0x6D, 4, 8, False, None, 1)),                  # insl
    (b"\x48\x6d", (0x6D, 4, 8, False, None, 2)),              # REX.W: still 4 bytes
    (b"\x66\x48\x6d", (0x6D, 4, 8, False, None, 3)),          # REX.W beats 0x66
    (b"\x48\x66\x6d", (0x6D, 2, 8, False, None, 3)),          # a REX before 0x66 is dropped
    (b"\xf3\x6c", (0x6C, 1, 8, True, None, 2)),               # rep insb
    (b"\xf2\x6e", (0x6E, 1, 8, True, None, 2)),               # repne counts as rep
    (b"\x67\xf3\x6c", (0x6C, 1, 4, True, None, 3)),           # addr32 rep insb
    (b"\x36\x6e", (0x6E, 1, 8, False, "ss", 2)),              # outsb %ss:(%rsi)
    (b"\x64\xf3\x6f", (0x6F, 4, 8, True, "fs", 3)),           # rep outsl %fs:(%rsi)
    (b"\xf0\x6c", None),                                       # lock: not emulated (#UD)
    (b"\xec", None),                                           # in %dx,%al
    (b"\x0f\x01\xf9", None),
])
def test_the_string_io_decoder_reads_prefixes_as_x86_emulate_does(code, want):
    assert stringio.decode(code) == want



@needs_patch
def test_wbinvd_is_ignored_and_cr4_tsd_makes_rdtsc_and_rdtscp_fault_as_on_xen(rules_ring):
    checks = _section(rules_ring, "wbinvd, rdtsc and CR4.TSD")
    assert len(checks) == 11 and all(k == "ok" for k in checks.values()), checks
    for name in (
        ("wbinvd from the kernel is ignored, no fault (emul-priv-op.c cache_op: no "
         "cache-flush permission)"),
        "wbinvd from user mode -> #GP(0) (x86_emulate.c: !mode_ring0())",
        ("CR4.TSD: rdtscp from the kernel -> #GP(0) (its MSR_TSC_AUX read: msr.c "
         "guest_rdmsr, no RDTSCP in the policy)"),
        "CR4.TSD: rdtsc from user mode -> #GP(0) (x86_emulate.c rdtsc: !mode_ring0, TSD)",
        "CR4.TSD: rdtsc from the kernel works (x86_emulate.c rdtsc: mode_ring0)",
    ):
        assert checks.get(name) == "ok", name


@needs_patch
def test_ring0_only_instructions_xen_does_not_emulate_raise_gp_in_the_kernel(rules_ring):
    checks = _section(rules_ring, "ring-0 instructions Xen does not emulate")
    assert len(checks) == 12 and all(k == "ok" for k in checks.values()), checks
    for insn in ("lidt", "lgdt", "lldt", "ltr", "lmsw", "invlpg", "swapgs", "hlt", "rdpmc"):
        assert any(n.startswith(f"{insn} from the kernel -> #GP(0)") for n in checks), insn
    assert checks[("clts from the kernel clears CR0.TS (x86_emulate.c clts, write_cr: "
                   "do_fpu_taskswitch)")] == "ok"
    assert checks["rdpmc from user mode -> #GP(0)"] == "ok"
    assert checks[("xsetbv from the kernel -> #UD: the guest's CR4.OSXSAVE is clear "
                   "(x86_emulate.c xsetbv; the policy has no XSAVE)")] == "ok"


@needs_patch
def test_popf_changes_neither_if_nor_iopl_and_pushf_shows_xens_flags(rules_ring):
    checks = _section(rules_ring, "flags a PV guest sees")
    assert len(checks) == 5 and all(k == "ok" for k in checks.values()), checks
    assert checks[("popf of IF 0, IOPL 3 in the kernel changes neither: pushf shows IF 1, "
                   "IOPL 0 (ring 3, hardware IOPL 0)")] == "ok"
