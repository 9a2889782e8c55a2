"""Privileged instructions of a Xen PV guest kernel as Xen 4.17 emulates them
(xen/arch/x86/pv/emul-priv-op.c, xen/arch/x86/msr.c): checked by the hostile
reference guest pvtest-v2-rules (guests/src/checks_privops.c) and, for the
parts of Xen's MSR policy a Debian boot would notice (off by default), on the
vCPU of a real run."""

import re
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.builder import hypercall_page_bytes
from pvmon.backends.xen.pv import msr as pvmsr
from pvmon.engine import hvm
from pvmon.guests.catalog import resolve
from pvmon.session import Session

IMAGES = Path(__file__).resolve().parents[1] / "pvmon" / "guests" / "images"

pytestmark = pytest.mark.skipif(not hvm.privops_available(),
                                reason="needs pvmon's patched Unicorn with the PV privileged-"
                                       "operation patch (pvmon engine build)")


def _run(image, **kw):
    s = Session(resolve(str(IMAGES / image)), backend="xen-4.17", **kw)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=120)
    return s, res, ring.decode()


def _privops_checks(text):
    start = text.index("# privileged operations")
    end = text.find("\npvtest: # ", start + 1)      # the next section (page types)
    return re.findall(r"^pvtest: (ok|FAIL) \d+ - (.*)$", text[start:end if end > 0 else None],
                      re.MULTILINE)


@pytest.fixture(scope="module")
def rules_run():
    return _run("pvtest-v2-rules.elf")


def test_a_non_canonical_fs_gs_or_shadow_gs_base_written_with_wrmsr_raises_gp(rules_run):
    _s, res, ring = rules_run
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff
    checks = _privops_checks(ring)
    assert len(checks) == 59 and all(kind == "ok" for kind, _ in checks), checks
    names = [n for _, n in checks]
    for base in ("FS_BASE", "GS_BASE", "SHADOW_GS_BASE"):
        assert (f"wrmsr {base} non-canonical 0x800000000000 -> #GP(0) "
                "(emul-priv-op.c write_msr)") in names
    assert any("set_segment_base(SEGBASE_GS_USER)" in n for n in names)
    assert any("0x40000000 (Xen's hypercall-page MSR) reads as zero" in n for n in names)
    assert any("rdmsr 0x40000001 (no such Xen MSR) -> #GP(0)" in n for n in names)


@pytest.fixture(scope="module")
def vcpu():
    s, res, _ring = _run("pvtest-v2.elf")
    assert res.exit_kind == "shutdown"
    return s.backend.vcpu


def test_the_msr_policy_answers_as_xen_4_17_answers_an_intel_pv_domu(vcpu):
    m = pvmsr.PvMsrs(vcpu)
    assert abi.TRAP_gp_fault in vcpu.trap_table          # no "faking RDMSR"
    # not offered to guests (msr.c guest_rdmsr): PPIN_CTL, no IBRS, AMD DE_CFG
    for msr in (0x4E, 0x48, 0xC0011029, 0x34):
        assert m.rdmsr(msr) == (pvmsr.GP, 0), hex(msr)
    assert m.rdmsr(pvmsr.MSR_PAT) == (pvmsr.HANDLED, 0x0000_0501_0007_0406)   # XEN_MSR_PAT
    assert m.rdmsr(pvmsr.MSR_APIC_BASE) == (pvmsr.HANDLED, 0xFEE00900)
    assert m.rdmsr(pvmsr.MSR_EFER) == (pvmsr.HANDLED, 0xD01)
    assert m.wrmsr(pvmsr.MSR_EFER, 0xD01) == pvmsr.HANDLED    # Linux writes it back
    assert m.wrmsr(pvmsr.MSR_EFER, 0x501) == pvmsr.GP         # a change is refused
    assert m.rdmsr(pvmsr.MSR_FEATURE_CONTROL) == (pvmsr.HANDLED, 1)   # locked
    # vMCE: two banks, MCi_CTL all ones, only zero written to STATUS
    assert m.rdmsr(pvmsr.MSR_MCG_CAP) == (pvmsr.HANDLED, 0x1000C02)
    assert m.rdmsr(0x400) == (pvmsr.HANDLED, (1 << 64) - 1)
    assert m.rdmsr(0x415) == (pvmsr.HANDLED, 0)              # bank 5: none, reads 0
    assert m.wrmsr(0x401, 5) == pvmsr.GP and m.wrmsr(0x401, 0) == pvmsr.HANDLED
    assert m.wrmsr(pvmsr.MSR_MISC_FEATURES_ENABLES, 2) == pvmsr.GP
    assert m.wrmsr(pvmsr.MSR_MISC_FEATURES_ENABLES, 1) == pvmsr.HANDLED
    assert m.rdmsr(pvmsr.MSR_MISC_FEATURES_ENABLES) == (pvmsr.HANDLED, 1)
    assert m.rdmsr(0x12345) == (pvmsr.GP, 0)                 # read_msr's default
    assert m.wrmsr(0xC1, 7) == pvmsr.HANDLED                 # vPMU off: dropped
    assert m.rdmsr(0xC1) == (pvmsr.HANDLED, 0)


def test_read_msr_fakes_zero_for_a_guest_without_a_gp_handler(vcpu):
    m = pvmsr.PvMsrs(vcpu)
    saved = vcpu.trap_table.pop(abi.TRAP_gp_fault)
    try:
        assert m.rdmsr(0x4E) == (pvmsr.HANDLED, 0)
        assert m.rdmsr(0x40000001) == (pvmsr.GP, 0)          # never for Xen's range
    finally:
        vcpu.trap_table[abi.TRAP_gp_fault] = saved


def test_wrmsr_of_xens_hypercall_page_msr_writes_the_page_into_the_frame(vcpu):
    m = pvmsr.PvMsrs(vcpu)
    frame = vcpu.layout.nr_pages - 1
    assert m.wrmsr(0x40000000, frame << 12) == pvmsr.HANDLED
    assert vcpu.m.read_phys(frame << 12, 4096) == hypercall_page_bytes()
    assert m.wrmsr(0x40000000, vcpu.layout.nr_pages << 12) == pvmsr.GP   # not a frame of it


def test_a_non_canonical_access_through_the_stack_segment_raises_ss_not_gp(rules_run):
    _s, _res, ring = rules_run
    checks = {n: k for k, n in _privops_checks(ring)}
    assert checks["mov (%rbp) at a non-canonical address -> #SS(0), not #GP(0)"] == "ok"
    assert checks["mov (%rsp,%rcx) at a non-canonical address -> #SS(0)"] == "ok"
    assert checks["mov %ss:(%rcx) at a non-canonical address -> #SS(0)"] == "ok"
    assert checks["mov (%rcx) at a non-canonical address -> #GP(0)"] == "ok"
    assert checks["mov %ds:(%rbp) at a non-canonical address -> #GP(0) (DS, not SS)"] == "ok"


@pytest.mark.parametrize(("code", "regs", "stack"), [
    (b"\x50", {"rsp": 1 << 47 | 8}, True),                       # push %rax
    (b"\x50", {"rsp": 1 << 47}, False),                          # writes 0x7ffffffffff8: fine
    (b"\x58", {"rsp": 1 << 47}, True),                           # pop %rax
    (b"\xc3", {"rsp": 1 << 47}, True),                           # ret
    (b"\xc9", {"rbp": 1 << 47, "rsp": 0x1000}, True),            # leave
    (b"\xff\x30", {"rax": 1 << 47, "rsp": 0x1000}, False),       # push (%rax): the DS read
    (b"\xf3\x48\x0f\xb8\x00", {"rax": 1 << 47}, False),          # popcnt (%rax): not a pop
    (b"\x48\x8b\x45\x08", {"rbp": (1 << 47) - 8}, True),         # mov 8(%rbp),%rax
    (b"\x65\x48\x8b\x45\x00", {"rbp": 1 << 47}, False),          # mov %gs:(%rbp): a base is added
    (b"\x0f\x30", {}, False),                                    # wrmsr
])
def test_the_stack_segment_test_decodes_what_the_cpu_would_fault_on(code, regs, stack):
    from pvmon.engine.stackfault import is_stack_fault
    assert is_stack_fault(code, 0x1000, lambda r: regs.get(r, 0)) is stack


def test_in_out_and_cli_follow_the_virtual_iopl_and_the_io_bitmap(rules_run):
    _s, _res, ring = rules_run
    checks = {n: k for k, n in _privops_checks(ring)}
    for name in (
        "IOPL 0: in from user mode -> #GP(0) at the in (emul-priv-op.c guest_io_okay)",
        ("IOPL 3: in $0x80,%al from user mode is emulated: AL = 0xff, the rest of RAX kept "
        "(guest_io_read)"),
        "IOPL 0: in from the kernel -> #GP(0), AL untouched (guest_io_okay: kernel CPL 1)",
        "IOPL 1: in from the kernel reads 0xff (a domU has no ports: guest_io_read)",
        "IOPL 0: cli in the kernel -> #GP(0) (validate: !iopl_ok)",
        "IOPL 1: cli in the kernel is a no-op: RFLAGS.IF stays set (validate: X86EMUL_DONE)",
        "IOPL 3: cli from user mode is a no-op (emul-priv-op.c validate)",
        "IOPL 0, port 0x80 clear in the I/O bitmap: in from user mode is emulated",
        "port 0x80 set in the I/O bitmap -> #GP(0)",
        ("architectural_iopl: an iret with RFLAGS.IOPL 3 sets the virtual IOPL: in from user "
        "mode is emulated (pv/iret.c)"),
        "architectural_iopl: the bounce frame's RFLAGS.IOPL is the virtual IOPL (3)",
        "without architectural_iopl an iret's RFLAGS.IOPL is ignored -> #GP(0)",
        "PHYSDEVOP_set_iopl 4 -> -EINVAL (physdev.c)",
        "vm_assist enable 4gb_segments (0) -> 0 (kept for 64-bit guests)",
        "vm_assist command 2 on a valid type -> -ENOSYS",
    ):
        assert checks.get(name) == "ok", name


def test_cr4_writes_are_filtered_by_the_cpuid_policy_and_cr0_only_takes_ts(rules_run):
    _s, _res, ring = rules_run
    checks = {n: k for k, n in _privops_checks(ring)}
    for name in (
        "mov to %cr4 setting DE keeps it as CPUID offers it (pv_fixup_guest_cr4)",
        "mov to %cr4 cannot set PGE (not guest-controllable: PV_CR4_GUEST_MASK)",
        ("mov to %cr4 cannot set FSGSBASE/OSXSAVE when CPUID hides them "
        "(pv_fixup_guest_cr4: the policy)"),
        "mov %cr8 from the kernel -> #GP(0) (read_cr: unhandleable)",
        'mov to %cr0 changing WP -> #GP(0) (write_cr: "unmodifiable CR0 flags")',
        "mov to %cr0 changing only TS is do_fpu_taskswitch",
    ):
        assert checks.get(name) == "ok", name


def test_the_guest_sees_xens_cr4_and_the_engine_keeps_its_own(vcpu):
    # pv_fixup_guest_cr4: only TSD/DE/FSGSBASE/OSXSAVE the policy offers, plus the
    # host's PAE/MCE/OSFXSR/OSXMMEXCPT; the engine follows TSD and DE only
    assert vcpu.fixup_cr4(0xFFFF_FFFF) == 0x66C
    engine = vcpu.m.reg("cr4")
    answer, value = vcpu.privop(hvm.OP_WRITE_CR, 4, 1 << 20 | 1 << 3)   # SMEP | DE
    assert answer == hvm.MSR_NATIVE and value == (engine & ~0xC) | 1 << 3
    assert vcpu.privop(hvm.OP_READ_CR, 4, 0) == (hvm.MSR_HANDLED, 0x668)
    assert vcpu.cr4_de()
    assert vcpu.privop(hvm.OP_READ_CR, 8, 0)[0] == hvm.MSR_GP


@pytest.mark.debian
@pytest.mark.slow
def test_a_debian_boot_never_meets_a_refused_port_or_privileged_instruction(debian612, tmp_path):
    """Linux asks for IOPL 1 at start of day (PHYSDEVOP_set_iopl), so its port
    I/O and CLI/STI are allowed, as on Xen: the boot's only #GPs are the three
    MSRs Xen's policy refuses to ``rdmsr_safe`` probes (PPIN_CTL, SMI_COUNT,
    AMD DE_CFG; xen/arch/x86/msr.c@stable-4.17 guest_rdmsr), at RDMSR."""
    from pvmon.trace.reader import TraceReader
    path = tmp_path / "d.pvt"
    s = Session(debian612, backend="xen-4.17", record=path)
    s.run(timeout=300)
    faults = [e for e in TraceReader(path).events() if e.get("k") == "fault"]
    # its one int3, as before; the #GPs of Xen's MSR policy at RDMSR; the rest
    # are writable-page-table writes (#PF, err 0x3: vunmap clearing PTEs of
    # pinned L1s after the TLB flush on a type change, docs/xen-rules.md)
    assert sorted(e["vec"] for e in faults if e["vec"] != 14) == [3, 13, 13, 13]
    for e in faults:
        if e["vec"] == 13:
            assert e["err"] == 0 and s.machine.read_virt(e["rip"], 2) == b"\x0f\x32"
    assert all(e["err"] == 3 for e in faults if e["vec"] == 14)
    assert s.backend.vcpu.iopl == 1
