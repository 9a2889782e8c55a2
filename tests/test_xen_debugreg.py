"""Debug registers as Xen 4.17 enforces them on a 64-bit PV guest: the
set_debugreg and get_debugreg hypercalls of pvmon's Xen backend, called on a
real attached pvtest-v2 domain (the engine built, the guest not yet run).

Sources are xen.git at stable-4.17: set_debugreg and do_get_debugreg in
xen/arch/x86/pv/misc-hypercalls.c, x86emul_read_dr in xen/arch/x86/x86_emulate.c,
the masks in xen/arch/x86/include/asm/debugreg.h, breakpoint_addr_ok = __addr_ok
(xen/arch/x86/include/asm/x86_64/uaccess.h)."""

import struct

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.explain import xen_differences
from pvmon.backends.xen.versions import REGISTRY
from pvmon.guests.catalog import resolve
from pvmon.session import Session
from tests.test_smp import O, _ctx

SET, GET = abi.HYPERCALL_NUMBERS["set_debugreg"], abi.HYPERCALL_NUMBERS["get_debugreg"]
E = abi


@pytest.fixture
def b():
    """The Xen backend of an attached pvtest-v2 session."""
    return Session(resolve("pvtest-v2")).backend


def _set(b, reg, value):
    return b.call(SET, (reg, value, 0, 0, 0))


def _get(b, reg):
    return b.call(GET, (reg, 0, 0, 0, 0))


def _de(b, on):
    """Set or clear the guest's CR4.DE as its own `mov %cr4` would (the kernel
    writes CR4 natively in pvmon's engine)."""
    m = b.vcpu.m
    cr4 = m.reg("cr4")
    m.set_reg("cr4", cr4 | E.X86_CR4_DE if on else cr4 & ~E.X86_CR4_DE)


def test_a_new_vcpu_reads_the_reset_values(b):
    """arch_vcpu_regs_init (xen/arch/x86/domain.c): dr0-3 = 0, dr6 =
    X86_DR6_DEFAULT, dr7 = X86_DR7_DEFAULT."""
    assert [_get(b, r) for r in (0, 1, 2, 3, 6, 7)] == [0, 0, 0, 0, 0xFFFF0FF0, 0x400]


@pytest.mark.parametrize("addr", [0, 0x7FFF_FFFF_FFFF, 0xFFFF_8800_0000_0000,
                                  0xFFFF_FFFF_FFFF_F000])
def test_a_breakpoint_address_in_guest_space_is_stored(b, addr):
    """set_debugreg case 0...3: breakpoint_addr_ok(value) = __addr_ok: below 2^47
    or at/above HYPERVISOR_VIRT_END."""
    assert _set(b, 2, addr) == 0 and _get(b, 2) == addr


@pytest.mark.parametrize("addr", [0xFFFF_8000_0000_0000, 0xFFFF_87FF_FFFF_FFFF,
                                  0x0000_8000_0000_0000, 0x8000_0000_0000_0000])
def test_a_breakpoint_on_xen_or_non_canonical_is_eperm(b, addr):
    """set_debugreg: !breakpoint_addr_ok -> -EPERM, for Xen's range and for a
    non-canonical address alike (__addr_ok has no separate canonical check);
    the register keeps its old value."""
    assert _set(b, 1, 0x1000) == 0
    assert _set(b, 1, addr) == -E.EPERM and _get(b, 1) == 0x1000


def test_dr6_forces_its_reserved_bits(b):
    """set_debugreg case 6: value &= ~DR_STATUS_RESERVED_ZERO (bit 12 -> 0),
    value |= DR_STATUS_RESERVED_ONE (0xffff0ff0)."""
    assert _set(b, 6, 0x100F) == 0 and _get(b, 6) == 0xFFFF0FFF
    assert _set(b, 6, 0x4000) == 0 and _get(b, 6) == 0xFFFF4FF0


@pytest.mark.parametrize("reg", [6, 7])
def test_dr6_and_dr7_above_32_bits_are_einval(b, reg):
    """set_debugreg: 'The upper 32 bits are strictly reserved': value !=
    (uint32_t)value -> -EINVAL, nothing stored."""
    before = _get(b, reg)
    assert _set(b, reg, 1 << 32) == -E.EINVAL and _get(b, reg) == before


def test_dr7_forces_its_reserved_bits(b):
    """set_debugreg case 7: bits 11, 12, 14, 15 -> 0 (DR_CONTROL_RESERVED_ZERO),
    bit 10 -> 1 (DR_CONTROL_RESERVED_ONE); a data breakpoint is kept as given."""
    assert _set(b, 7, 0xD801 | (1 << 16)) == 0 and _get(b, 7) == 0x10401


def test_dr7_general_detect_is_eperm(b):
    """set_debugreg case 7: 'GD (bit 13): must be 0' -> -EPERM; dr7 unchanged."""
    assert _set(b, 7, E.DR_GENERAL_DETECT | 1) == -E.EPERM and _get(b, 7) == 0x400


def test_an_io_breakpoint_without_cr4_de_is_eperm(b):
    """set_debugreg case 7: an enabled %dr7 with any R/W field = 10b (DR_IO) and
    the guest's CR4.DE clear -> -EPERM."""
    _de(b, False)
    assert _set(b, 7, (E.DR_IO << 20) | 0x1) == -E.EPERM   # breakpoint 1 I/O, 0 enabled
    assert _get(b, 7) == 0x400


def test_io_fields_in_a_disabled_dr7_are_accepted(b):
    """set_debugreg case 7: the I/O check runs only if value & DR7_ACTIVE_MASK;
    a disabled %dr7 is stored with its R/W fields as given."""
    _de(b, False)
    assert _set(b, 7, E.DR_IO << 16) == 0 and _get(b, 7) == 0x20400


def test_an_io_breakpoint_with_cr4_de_reads_back_whole(b):
    """set_debugreg case 7 with CR4.DE: the I/O breakpoints' enable bits move to
    pv.dr7_emul (emulated in port I/O, not loaded); x86emul_read_dr returns
    dr7 | dr7_emul, so the guest reads its value back."""
    _de(b, True)
    value = (E.DR_IO << 16) | 0x3 | 0x4   # bp0 I/O (L0 G0), bp1 exec (L1)
    assert _set(b, 7, value) == 0 and _get(b, 7) == value | 0x400
    v = b.vcpu
    assert (v.dr7_emul, v.dr7) == (0x3, (value | 0x400) & ~0x3)
    # a disabled %dr7 clears the emulated controls
    assert _set(b, 7, 0) == 0 and _get(b, 7) == 0x400 and v.dr7_emul == 0


@pytest.mark.parametrize("alias, reg, value, seen", [(4, 6, 0x1, 0xFFFF0FF1),
                                                      (5, 7, 0x2, 0x402)])
def test_dr4_dr5_alias_dr6_dr7_with_cr4_de_clear(b, alias, reg, value, seen):
    """set_debugreg cases 4 and 5 fall through to 6 and 7, x86emul_read_dr
    likewise, while CR4.DE is clear."""
    _de(b, False)
    assert _set(b, alias, value) == 0
    assert _get(b, reg) == seen and _get(b, alias) == seen


@pytest.mark.parametrize("alias", [4, 5])
def test_dr4_dr5_with_cr4_de_set_are_enodev(b, alias):
    """set_debugreg and x86emul_read_dr: %dr4/%dr5 with CR4.DE set -> -ENODEV
    (#UD for the emulated mov)."""
    _de(b, True)
    assert _set(b, alias, 0) == -E.ENODEV and _get(b, alias) == -E.ENODEV


@pytest.mark.parametrize("reg", [8, 15, 0xFFFF_FFFF])
def test_a_register_above_7_is_enodev(b, reg):
    """set_debugreg and x86emul_read_dr default: -ENODEV (do_get_debugreg turns
    any failure into -ENODEV)."""
    assert _set(b, reg, 0) == -E.ENODEV and _get(b, reg) == -E.ENODEV


def test_the_register_number_is_a_c_int(b):
    """do_set_debugreg(int reg, ...) and do_get_debugreg(int reg): only the low
    32 bits of the argument name the register."""
    assert _set(b, (1 << 32) | 3, 0x5000) == 0 and _get(b, (1 << 32) | 3) == 0x5000


def test_vcpuop_initialise_loads_debug_registers_through_set_debugreg(pvtest_v2):
    """arch_set_info_guest (xen/arch/x86/domain.c@stable-4.17): the registers are
    reset, then set_debugreg(v, i, c(debugreg[i])) for dr0-3, dr6, dr7 with each
    refusal ignored: a breakpoint on Xen's range stays 0, dr6's reserved bits are
    forced, an I/O breakpoint needs the context's CR4.DE."""
    sess = Session(pvtest_v2, vcpus=2)
    b, v1 = sess.backend, sess.backend.vcpus[1]
    ctx = _ctx(sess)
    io7 = (E.DR_IO << 16) | 0x1
    struct.pack_into("<8Q", ctx, O["debugreg"], 0x1000, E.HYPERVISOR_VIRT_START, 0, 0,
                     0, 0, 0x1, io7)
    assert b.smp.initialise(v1, bytes(ctx)) == 0
    assert (v1.dr, v1.dr6, v1.dr7, v1.dr7_emul) == ([0x1000, 0, 0, 0], 0xFFFF0FF1, 0x400, 0)
    # the same context with CR4.DE keeps the I/O breakpoint (enable bits in dr7_emul)
    v2 = Session(pvtest_v2, vcpus=2).backend
    struct.pack_into("<Q", ctx, O["ctrlreg"] + 4 * 8, E.X86_CR4_DE)
    assert v2.smp.initialise(v2.vcpus[1], bytes(ctx)) == 0
    w = v2.vcpus[1]
    assert (w.dr7 | w.dr7_emul, w.dr7_emul) == (io7 | 0x400, 0x1)


# ------------------------------------------------------------ older versions
def _old(backend):
    return Session(resolve("pvtest-v2"), backend=backend).backend


@pytest.mark.parametrize("backend", ["xen-3.4", "xen-4.6"])
def test_before_4_11_dr4_dr5_are_einval_and_read_zero_without_cr4_de(backend):
    """set_debugreg / do_get_debugreg in xen/arch/x86/traps.c@RELEASE-4.6.0 (the
    same at 3.4.0-rc3): %dr4/%dr5 writes and any register above 7 are -EINVAL;
    %dr4/%dr5 read 0 with CR4.DE clear and %dr6/%dr7 with it set (the alias
    inverted); the upper 32 bits of %dr6 are dropped, not refused. Changed by
    xen.git f539ae2706 (4.11)."""
    b = _old(backend)
    _de(b, False)
    assert _set(b, 4, 0) == -E.EINVAL and _set(b, 5, 0) == -E.EINVAL
    assert _set(b, 8, 0) == -E.EINVAL and _get(b, 8) == -E.EINVAL
    assert _get(b, 4) == 0 and _get(b, 5) == 0
    assert _set(b, 6, (1 << 32) | 1) == 0 and _get(b, 6) == 0xFFFF0FF1
    _de(b, True)
    assert _get(b, 4) == 0xFFFF0FF1 and _get(b, 5) == 0x400


def test_on_4_11_a_dr5_write_lands_in_the_io_stash():
    """set_debugreg in xen/arch/x86/traps.c@RELEASE-4.11.0 ends with
    v->arch.debugreg[reg] = value: a %dr4 write (CR4.DE clear) reaches no
    register a read sees, a %dr5 write leaves %dr7 and is ORed into a %dr7 read
    (x86emul_read_dr: debugreg[7] | debugreg[5]). Fixed by xen.git 30f43f4aa8
    (4.12)."""
    b = _old("xen-4.11")
    _de(b, False)
    assert _set(b, 4, 0x1) == 0 and _get(b, 6) == 0xFFFF0FF0 and _get(b, 4) == 0xFFFF0FF0
    assert _set(b, 5, 0x2) == 0
    assert _get(b, 5) == 0x400 and _get(b, 7) == 0x402
    assert _set(b, 8, 0) == -E.ENODEV and _set(b, 6, 1 << 32) == -E.EINVAL


def test_replay_explains_a_debugreg_difference_by_its_commit():
    """The version differences are declared with their xen.git commits, so the
    replay layer can name them (pvmon.backends.xen.explain)."""
    facts = [f for f in xen_differences(REGISTRY["xen-4.17"], REGISTRY["xen-4.6"])
             if f.hypercall == "set_debugreg"]
    text = " ".join(f.source for f in facts)
    assert "f539ae2706" in text and "30f43f4aa8" in text


@pytest.mark.parametrize("backend, answer", [("xen-4.6", 0), ("xen-4.11", 0),
                                             ("xen-4.17", -E.EPERM)])
def test_a_breakpoint_on_the_arg_xlat_area_is_taken_before_xsa_444(backend, answer):
    """XSA-444 (xen.git dc9d9aa62d; stable-4.17 0b56bed864, 4.17.3): set_debugreg
    checked %dr0-3 with access_ok, which accepts the vCPU's compat argument-
    translation area (ARG_XLAT_START(v), 2 pages, xen/include/asm-x86/config.h
    and x86_64/uaccess.h@RELEASE-4.11.0); breakpoint_addr_ok = __addr_ok does not."""
    b = _old(backend)
    xlat = E.ARG_XLAT_VIRT_START
    assert _set(b, 0, xlat + 0x1FF8) == answer
    assert _set(b, 0, xlat + 0x1FF9) == -E.EPERM     # off + sizeof(long) > 2 pages
