"""RDMSR/WRMSR of a 64-bit PV guest kernel, as Xen 4.17 emulates them.

A PV kernel runs in ring 3 under Xen, so every ``rdmsr``/``wrmsr`` it executes
raises #GP in hardware and Xen emulates it (``pv_emulate_privileged_op``,
``read_msr``/``write_msr`` in xen/arch/x86/pv/emul-priv-op.c@stable-4.17): first
the common MSR policy (``guest_rdmsr``/``guest_wrmsr``, xen/arch/x86/msr.c),
then the PV-specific cases, and anything else raises #GP(0) in the guest.
pvmon runs the kernel at CPL 0, so the engine's own MSRs would answer (QEMU's
TCG reads an unknown MSR as 0 and accepts any write). With pvmon's patched
Unicorn (``pvmon_msr_hook``, patch ``unicorn-2.1.4-hvm-platform.patch``) every
RDMSR/WRMSR at CPL 0 asks :func:`rdmsr`/:func:`wrmsr` here first; at CPL 3 the
engine raises #GP itself, as the CPU does for Xen's guest user mode.

The answers follow pvmon's Xen PV CPUID policy (:mod:`pvmon.backends.xen.cpuid`:
GenuineIntel, MCE/MCA, no IBRS/IBPB, no ARCH_CAPABILITIES, no XSAVES, no RDTSCP
or RDPID, no MPX, no x2APIC) and a modelled host (Xen's ``boot_cpu_data``: Intel,
a PV domU that is not the hardware domain nor a cpufreq controller, vPMU off,
``msr_relaxed`` off). Host values Xen forwards (microcode revision,
PLATFORM_ID) are those of the engine.

Not modelled: Xen's "faking RDMSR" fallback for a guest with no #GP handler in
its trap table (it asks the host whether it has the MSR) is taken for every
MSR outside Xen's own range (the modelled host has them all), and the
machine-check banks hold no injected error (pvmon never injects #MC).
"""

from __future__ import annotations

from pvmon.backends.xen import abi

#: answers, as the engine patch's ``pvmon_msr_hook`` contract (pvmon.engine.hvm)
NATIVE, HANDLED, GP = 0, 1, 2

MSR_FS_BASE, MSR_GS_BASE, MSR_SHADOW_GS_BASE = 0xC0000100, 0xC0000101, 0xC0000102
MSR_EFER, MSR_TSC, MSR_APIC_BASE, MSR_PAT = 0xC0000080, 0x10, 0x1B, 0x277
MSR_UCODE_REV, MSR_PLATFORM_ID, MSR_MISC_ENABLE = 0x8B, 0x17, 0x1A0
MSR_FEATURE_CONTROL, MSR_PLATFORM_INFO, MSR_MISC_FEATURES_ENABLES = 0x3A, 0xCE, 0x140
MSR_MCG_CAP, MSR_MCG_STATUS, MSR_MCG_CTL, MSR_MCG_EXT_CTL = 0x179, 0x17A, 0x17B, 0x4D0
MSR_MC0_CTL, MSR_MC0_CTL2 = 0x400, 0x280

#: EFER as Xen's guest_efer shows it: the host's SCE | LME | LMA | NXE (SVME and
#: unknown bits hidden).
GUEST_EFER = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11)
#: XEN_MSR_PAT (xen/arch/x86/include/asm/processor.h@stable-4.17).
XEN_MSR_PAT = 0x0000_0501_0007_0406
#: APIC_BASE_ENABLE | APIC_DEFAULT_PHYS_BASE (| APIC_BASE_BSP on vCPU 0).
APIC_BASE_VALUE = (1 << 11) | 0xFEE00000
APIC_BASE_BSP = 1 << 8
#: INTEL_GUEST_MCG_CAP: MCG_SER_P | MCG_TES_P | MCG_CMCI_P | GUEST_MC_BANK_NUM
#: (xen/arch/x86/cpu/mcheck/vmce.c@stable-4.17).
GUEST_MC_BANK_NUM = 2
GUEST_MCG_CAP = (1 << 24) | (1 << 11) | (1 << 10) | GUEST_MC_BANK_NUM
#: MSR_INTEL_PLATFORM_INFO: CPUID faulting (bit 31), which Xen offers every PV guest.
PLATFORM_INFO = 1 << 31
MISC_FEATURES_CPUID_FAULTING = 1
FEATURE_CONTROL_LOCK = 1
#: guest_misc_enable(): PERF_AVAIL and MONITOR_ENABLE cleared, BTS_UNAVAIL,
#: PEBS_UNAVAIL and XTPR_DISABLE set; the modelled host's value: fast strings.
MISC_ENABLE_HOST = 1
GUEST_MISC_ENABLE = (MISC_ENABLE_HOST & ~((1 << 7) | (1 << 18))) | (1 << 11) | (1 << 12) \
    | (1 << 23)

#: guest_rdmsr/guest_wrmsr's "not offered to guests" and the MSRs the policy
#: does not offer: #GP both ways. TEST_CTRL, PPIN_CTL/PPIN, SPEC_CTRL (no IBRS),
#: PRED_CMD (no IBPB), FLUSH_CMD (no L1D_FLUSH), ARCH_CAPABILITIES read (no
#: ARCH_CAPS), CORE_CAPABILITIES, TSX_FORCE_ABORT, TSX_CTRL, MCU_OPT_CTRL, RTIT,
#: CET, XSS (no XSAVES), BNDCFGS (no MPX), TSC_AUX (no RDTSCP/RDPID), LWP,
#: AMD PPIN, VIRT_SPEC_CTRL, DE_CFG and the DR address masks (AMD only).
_GP_BOTH = frozenset({
    0x33, 0x4E, 0x4F, 0x48, 0x49, 0x10B, 0x10A, 0xCF, 0x10F, 0x122, 0x123,
    *range(0x560, 0x590), 0x6A0, 0x6A2, *range(0x6A4, 0x6A9), 0xDA0, 0xD90, 0xC0000103,
    0xC0000105, 0xC0000106, 0xC00102F0, 0xC00102F1, 0xC001011F, 0xC0011029,
    0xC0011027, 0xC0011019, 0xC001101A, 0xC001101B,
    # AMD-only MSRs guest_rdmsr refuses on an Intel policy
    0xC0010010, 0xC001001A, 0xC001001D, 0xC0010016, 0xC0010017, 0xC0010018, 0xC0010019,
    0xC0010112, 0xC0010113, 0xC0010015,
    # write-only: AMD PATCHLOADER, UCODE_WRITE (reads), x2APIC (PV: never)
    0xC0010020, 0x79, *range(0x800, 0x900),
})
#: vPMU MSRs (vpmu_mode off: reads 0, writes ignored): P6 PERFCTR0-7, EVNTSEL0-3,
#: FIXED_CTR0-2, FIXED_CTR_CTRL .. GLOBAL_OVF_CTRL.
_VPMU = frozenset({*range(0xC1, 0xC9), *range(0x186, 0x18A), *range(0x309, 0x30C),
                   *range(0x38D, 0x391)})
#: PERF_STATUS, PERF_CTL, THERM_STATUS (Intel: read as zero), AMD64_NB_CFG
#: (not the hardware domain: 0), PERF_CAPABILITIES (0).
_READ_ZERO = frozenset({0x198, 0x199, 0x19C, 0xC001001F, 0x345})


def canonical(v: int) -> bool:
    """A 48-bit canonical address (``is_canonical_address``)."""
    return abi.is_canonical(v)


#: SYSENTER_CS/ESP/EIP: neither guest_rdmsr/guest_wrmsr (msr.c) nor read_msr/
#: write_msr (pv/emul-priv-op.c@stable-4.17) knows them, so #GP both ways (a
#: read without a #GP handler is faked as 0, as for any MSR the host has).
MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176


class PvMsrs:
    """The MSR state Xen keeps for one PV vCPU (``struct vcpu_msrs`` and the
    vMCE banks) and the policy over it. ``vcpu``: the
    :class:`~pvmon.backends.xen.pv.vcpu.PvVcpu`, for the segment bases.

    Every MSR follows Xen 4.17's policy. Against the engine's own answers
    (QEMU's reset values), which pvmon gave before session 13, a Debian boot
    differs in three #GPs Xen raises too (PPIN_CTL, SMI_COUNT and AMD's
    DE_CFG, read by ``rdmsr_safe``), Xen's PAT, and MISC_ENABLE's fast
    strings (Linux then keeps ERMS): docs/xen-rules.md, "Privileged
    operations"."""

    def __init__(self, vcpu) -> None:
        self.vcpu = vcpu
        self.misc_features_enables = 0
        self.mcg_status = 0
        #: per guest bank: [status, addr, misc, ctl2]
        self.banks = [[0, 0, 0, 0] for _ in range(GUEST_MC_BANK_NUM)]

    # ----------------------------------------------------------------- vMCE
    def _vmce_read(self, msr: int) -> int | None:
        """vmce_rdmsr: the value, or None for #GP."""
        if msr == MSR_MCG_STATUS:
            return self.mcg_status
        if msr == MSR_MCG_CAP:
            return GUEST_MCG_CAP
        if msr == MSR_MCG_CTL:
            return 0                    # MCG_CTL_P is not offered
        if msr == MSR_MCG_EXT_CTL:
            return None                 # no MCG_LMCE_P
        if msr in (0, 1):               # P5_MC_ADDR / P5_MC_TYPE: bank 1's addr / status
            return self.banks[1][1 if msr == 0 else 0]
        if MSR_MC0_CTL <= msr < MSR_MC0_CTL + 4 * GUEST_MC_BANK_NUM:
            bank, reg = divmod(msr - MSR_MC0_CTL, 4)
            return (1 << 64) - 1 if reg == 0 else self.banks[bank][reg - 1]
        if MSR_MC0_CTL2 <= msr < MSR_MC0_CTL2 + GUEST_MC_BANK_NUM:
            return self.banks[msr - MSR_MC0_CTL2][3]
        return 0                        # not a bank the guest has: reads 0

    def _vmce_write(self, msr: int, val: int) -> bool:
        """vmce_wrmsr: False for #GP."""
        if msr == MSR_MCG_STATUS:
            self.mcg_status = val
            return True
        if msr in (MSR_MCG_CAP, MSR_MCG_CTL):
            return True                 # read-only / stuck: the write is dropped
        if msr == MSR_MCG_EXT_CTL:
            return False
        if MSR_MC0_CTL <= msr < MSR_MC0_CTL + 4 * GUEST_MC_BANK_NUM:
            bank, reg = divmod(msr - MSR_MC0_CTL, 4)
            if reg == 0:
                return True             # MCi_CTL: sticks at all ones
            if val:
                return False            # STATUS/ADDR/MISC: only 0 may be written
            self.banks[bank][reg - 1] = 0
            return True
        if MSR_MC0_CTL2 <= msr < MSR_MC0_CTL2 + GUEST_MC_BANK_NUM:
            # vmce_intel_wrmsr: CMCI_EN | the error threshold kept
            self.banks[msr - MSR_MC0_CTL2][3] = val & ((1 << 30) | 0x7FFF)
            return True
        return True                     # a bank the guest does not have: ignored

    @staticmethod
    def _is_vmce(msr: int) -> bool:
        return (msr in (MSR_MCG_CAP, MSR_MCG_STATUS, MSR_MCG_CTL, MSR_MCG_EXT_CTL)
                or 0x280 <= msr <= 0x29F or 0x400 <= msr <= 0x47F)

    # ------------------------------------------------------------------ read
    def rdmsr(self, msr: int) -> tuple[int, int]:
        """``(answer, value)``: :data:`HANDLED` with the value RDMSR returns,
        :data:`NATIVE` (the engine's MSR: the host value Xen forwards), or
        :data:`GP` (#GP(0) at the instruction)."""
        v = self._read(msr)
        if v is None:
            if not self._gp_handler() and (msr >> 16) != 0x4000:
                return HANDLED, 0       # read_msr's "faking RDMSR" (no #GP handler yet)
            return GP, 0
        if v is NATIVE_VALUE:
            return NATIVE, 0
        return HANDLED, v

    def _gp_handler(self) -> bool:
        return abi.TRAP_gp_fault in self.vcpu.trap_table

    def _read(self, msr: int):
        vcpu = self.vcpu
        if msr in _GP_BOTH:
            return None
        if msr == MSR_FEATURE_CONTROL:
            return FEATURE_CONTROL_LOCK
        if msr in (MSR_PLATFORM_ID, MSR_UCODE_REV):
            return NATIVE_VALUE
        if msr == MSR_PLATFORM_INFO:
            return PLATFORM_INFO
        if msr == MSR_MISC_FEATURES_ENABLES:
            return self.misc_features_enables
        if msr in (0, 1) or self._is_vmce(msr):
            return self._vmce_read(msr)
        if msr == 0x40000000:
            return 0                    # guest_rdmsr_xen: the hypercall-page MSR reads as 0
        if 0x40000000 < msr <= 0x400002FF:
            return None                 # guest_rdmsr_xen: no other Xen MSR is readable
        if msr == MSR_APIC_BASE:
            return APIC_BASE_VALUE | (APIC_BASE_BSP if vcpu.vcpu_id == 0 else 0)
        if msr == MSR_FS_BASE:
            return vcpu.m.reg("fs_base")
        if msr == MSR_GS_BASE:
            return vcpu.m.reg("gs_base")
        if msr == MSR_SHADOW_GS_BASE:
            return vcpu.gs_user         # the kernel runs: the user base is the shadow
        if msr == MSR_TSC:
            return vcpu.b.p.on_tsc()
        if msr == MSR_EFER:
            return GUEST_EFER
        if msr == MSR_PAT:
            return XEN_MSR_PAT
        if msr == MSR_MISC_ENABLE:
            return GUEST_MISC_ENABLE
        if msr in _READ_ZERO or msr in _VPMU:
            return 0
        return None                     # read_msr's default: #GP

    # ----------------------------------------------------------------- write
    def wrmsr(self, msr: int, val: int) -> int:
        """:data:`HANDLED` (done or dropped, as Xen does) or :data:`GP`."""
        vcpu = self.vcpu
        if msr in _GP_BOTH or msr in (MSR_PLATFORM_ID, MSR_PLATFORM_INFO, 0x35):
            return GP                   # 0x35: INTEL_CORE_THREAD_COUNT, read-only
        if msr == MSR_UCODE_REV:
            return HANDLED if val == 0 else GP
        if msr == MSR_MISC_FEATURES_ENABLES:
            if val & ~MISC_FEATURES_CPUID_FAULTING:
                return GP
            self.misc_features_enables = val
            return HANDLED
        if self._is_vmce(msr):
            return HANDLED if self._vmce_write(msr, val) else GP
        if msr == 0x199:                # PERF_CTL: not a cpufreq controller, dropped
            return HANDLED
        if 0x40000000 <= msr <= 0x400002FF:
            return self._xen_msr(msr, val)
        if msr in (MSR_FS_BASE, MSR_GS_BASE, MSR_SHADOW_GS_BASE):
            if not canonical(val):
                return GP
            if msr == MSR_FS_BASE:
                vcpu.m.set_reg("fs_base", val)
            elif msr == MSR_GS_BASE:
                vcpu.m.set_reg("gs_base", val)
            else:
                vcpu.gs_user = val
            return HANDLED
        if msr == MSR_EFER:
            return HANDLED if val == GUEST_EFER else GP
        if msr == MSR_MISC_ENABLE:
            return HANDLED              # a changed value is logged and dropped ("invalid")
        if msr in (0xC001001F, 0xE7, 0xE8) or msr in _VPMU:
            return HANDLED              # NB_CFG (not hwdom), MPERF/APERF, vPMU: dropped
        return GP                       # write_msr's default

    def _xen_msr(self, msr: int, val: int) -> int:
        """guest_wrmsr_xen (xen/arch/x86/msr.c@stable-4.17): the base MSR, per
        CPUID leaf 0x40000002 EBX (0x40000000 for pvmon's policy), writes the
        hypercall page into the guest frame ``val >> 12`` (offset 0 only);
        every other index is #GP."""
        from pvmon.backends.xen.builder import hypercall_page_bytes
        b = self.vcpu.b
        if msr != 0x40000000 or val & 0xFFF or not b._valid_mfn(val >> 12):
            return GP
        self.vcpu.m.write_phys_data(val & ~0xFFF, hypercall_page_bytes())
        return HANDLED


class _Native:
    def __repr__(self) -> str:
        return "NATIVE_VALUE"


#: :meth:`PvMsrs._read`'s marker for "the engine's (host's) value".
NATIVE_VALUE = _Native()

__all__ = ["GP", "HANDLED", "NATIVE", "PvMsrs"]
