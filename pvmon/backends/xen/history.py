"""Real Xen releases other than the reference, each declared as the reference
(Xen 4.17) plus the differences a 64-bit PV domU can observe, every one with
its public source. Read by :mod:`pvmon.backends.xen.versions`.

Sources are xen.git paths at a tag (``file@tag``) or xen.git commits. The 3.x
stable trees were never imported into xen.git, so 3.4 facts are read at tag
``3.4.0-rc3`` (3.4.x stable releases took bug fixes only).
"""

from __future__ import annotations

from dataclasses import dataclass

from pvmon.backends.xen.versions import XEN_4_17, Change, register

_H34 = "@3.4.0-rc3"


# ------------------------------------------------------------- security fixes
@dataclass(frozen=True)
class Xsa:
    """One Xen Security Advisory whose fix a 64-bit PV domU can see.

    ``number``: the advisory (XSA-``number``); ``capability``: the backend
    behaviour that is the fix (in the reference; absent in an affected
    version); ``fix``: the fix commit on xen.git master; ``backports``:
    {branch: commit} for the stable branches pvmon models; ``file``: the file
    the fix changed that holds the behaviour; ``call``: the hypercall (and
    sub-op) whose answer changed; ``fixed``/``vulnerable``: what the guest
    sees after and before the fix."""

    number: int
    capability: str
    title: str
    fix: str
    backports: dict[str, str]
    file: str
    call: str
    fixed: str
    vulnerable: str

    def change(self, why: str) -> Change:
        """The declared difference of a version that predates the fix: the
        capability absent, ``why`` saying why the version is affected."""
        return Change("capability", feature=self.capability, xsa=self.number,
                      fix=self.fix, file=self.file,
                      source=f"XSA-{self.number} ({self.title}), fixed by xen.git {self.fix} "
                             f"in {self.file}; {why}",
                      note=f"XSA-{self.number}: {self.vulnerable}")


XSAS: dict[int, Xsa] = {x.number: x for x in (
    Xsa(12, "xsa12_dr7_high_bits_dropped", "hypercall set_debugreg vulnerability",
        "e89c6d0573", {"stable-4.0": "f2913de217",
                                           "stable-4.1": "ab4f401a1a (4.1.4)"},
        "xen/include/asm-x86/debugreg.h", "vcpu_op(initialise), get_debugreg",
        "bits 32-63 of %dr7 are reserved (DR_CONTROL_RESERVED_ZERO ~0xffff27ff): a vCPU "
        "initialised with them reads %dr7 without them (from 4.11 set_debugreg refuses them "
        "with -EINVAL and the context's %dr7 stays 0x400)",
        "DR_CONTROL_RESERVED_ZERO was 0xd800: set_debugreg keeps bits 32-63 of %dr7; a vCPU "
        "initialised (VCPUOP_initialise) with them and no enable bit reads them back from "
        "get_debugreg(7); loading such a %dr7 into the hardware (set_debugreg on the running "
        "vCPU, or a context switch while it enables a breakpoint) raises #GP inside Xen, a "
        "fatal trap: the host crashes"),
    Xsa(148, "xsa148_l2_pse_refused", "uncontrolled creation of large page mappings",
        "fe360c90ea", {"stable-4.6": "2d094bd870 (4.6.1)"}, "xen/arch/x86/mm.c",
        "mmu_update",
        "an L2 entry with _PAGE_PSE is refused (-EINVAL, L2_DISALLOW_MASK)",
        "mod_l2_entry's fast path (same frame, still present) takes _PAGE_PSE: mmu_update "
        "returns 0 and the L2 entry maps a 2 MiB superpage"),
    Xsa(182, "xsa182_pde_fastpath_whitelist", "privilege escalation via the PTE fast path",
        "e1bff4c2ea", {"stable-4.6": "eac595f18c (4.6.4)"}, "xen/arch/x86/mm.c",
        "mmu_update",
        "an L2-L4 update that changes more than FASTPATH_FLAG_WHITELIST is revalidated: "
        "making a linear (same-level) entry writable is refused (-EINVAL)",
        "mod_l4_entry's fast path (same frame, still present) takes any flag change: a "
        "read-only linear L4 entry made writable returns 0 (a writable page table)"),
    Xsa(213, "xsa213_multicall_iret_ends_batch", "64-bit PV guest breakout via multicall iret",
        "22c096c99d", {"stable-4.6": "fc7839698c (4.6.6)"}, "xen/common/multicall.c",
        "multicall",
        "an iret ends the batch; the multicall returns the iret's RAX",
        "the batch goes on after the iret (later entries run in the mode the iret "
        "entered) and the multicall returns 0 over the iret's RAX"),
    Xsa(227, "xsa227_gnttab_pte_aligned", "x86 grant operation misaligned PTE",
        "ce442926c2", {"stable-4.6": "3300ad37ea (after 4.6.6)"}, "xen/arch/x86/mm.c",
        "grant_table_op(map_grant_ref)",
        "a GNTMAP_contains_pte address not 8-byte aligned is GNTST_general_error",
        "the grant PTE is written at the misaligned address (GNTST_okay), straddling two "
        "L1 entries"),
    Xsa(234, "gnttab_unmap_checks_pte_flags", "insufficient grant unmapping checks",
        "16b1414de9", {"stable-4.6": "1658a87690 (after 4.6.6)"}, "xen/arch/x86/mm.c",
        "grant_table_op(unmap_grant_ref)",
        "unmap refuses a grant PTE whose present or writable bit no longer matches the "
        "mapping (GNTST_general_error)",
        "unmap checks the PTE's frame only: a grant PTE made read-only is unmapped "
        "(GNTST_okay) and the writable pin dropped"),
    Xsa(327, "xsa327_vcpu_info_aligned", "missing alignment check in "
        "VCPUOP_register_vcpu_info", "3fdc211b01", {"stable-4.11": "ddaaccbbab (after 4.11.4)"},
        "xen/common/domain.c", "vcpu_op(register_vcpu_info)",
        "an offset not aligned to vcpu_info (8 bytes) is refused (-EINVAL)",
        "a misaligned offset is accepted (0); the fault it causes is Arm's, but x86 took the "
        "same check in common code"),
)}


# xen.git 7ee7a3749b "common: map_vcpu_info() cosmetics" (first in RELEASE-4.16.0):
# an offset past the page or misaligned became -ENXIO; before it, -EINVAL
# (xen/common/domain.c map_vcpu_info@RELEASE-4.11.0).
_VCPU_INFO_EINVAL = Change(
    "capability", feature="vcpu_info_enxio",
    source="xen.git 7ee7a3749b 'common: map_vcpu_info() cosmetics' (4.16) turned "
           "map_vcpu_info's -EINVAL for a bad offset into -ENXIO; xen/common/domain.c",
    note="VCPUOP_register_vcpu_info with an offset past the page (or misaligned, where "
         "XSA-327 is fixed) returns -EINVAL, not -ENXIO")


# Debug registers (set_debugreg / do_get_debugreg). xen.git f539ae2706 "x86/pv:
# Introduce and use x86emul_write_dr()" (first in RELEASE-4.11.0) made %dr4/%dr5
# aliases of %dr6/%dr7 with CR4.DE clear, refused the upper 32 bits of %dr6/%dr7 and
# answered -ENODEV for bad registers; before it (xen/arch/x86/traps.c@RELEASE-4.6.0)
# a %dr4/%dr5 write was -EINVAL, a read gave %dr6/%dr7 only with CR4.DE set and 0
# without. xen.git 30f43f4aa8 "x86: Reorganise and rename debug register fields in
# struct vcpu" (first in RELEASE-4.12.0) stopped storing a %dr4/%dr5 write in
# debugreg[4]/[5], where no read saw the first and the second overwrote %dr7's
# I/O-breakpoint stash (xen/arch/x86/traps.c set_debugreg@RELEASE-4.11.0).
_DR45_NO_ALIAS = Change(
    "capability", feature="debugreg_dr45_alias",
    source="xen.git f539ae2706 'x86/pv: Introduce and use x86emul_write_dr()' (4.11); "
           "set_debugreg/do_get_debugreg in xen/arch/x86/traps.c@RELEASE-4.6.0",
    note="set_debugreg(4|5) and registers above 7 are -EINVAL; get_debugreg(4|5) is 0 "
         "with CR4.DE clear; %dr6/%dr7 bits above 31 are dropped, not -EINVAL")
_DR45_SLOTS = Change(
    "capability", feature="debugreg_dr7_emul",
    source="xen.git 30f43f4aa8 'x86: Reorganise and rename debug register fields in "
           "struct vcpu' (4.12); set_debugreg in xen/arch/x86/traps.c@RELEASE-4.11.0 "
           "ends with v->arch.debugreg[reg] = value",
    note="set_debugreg(4) changes no register a read sees; set_debugreg(5) leaves %dr7 "
         "as it was and its value is ORed into get_debugreg(7)")


_BP_XLAT = Change(
    "capability", feature="breakpoint_addr_ok",
    source="XSA-444 (CVE-2023-34328), xen.git dc9d9aa62d 'x86/pv: Correct the auditing of "
           "guest breakpoint addresses' (stable-4.17 0b56bed864, 4.17.3): set_debugreg "
           "checked %dr0-3 with access_ok, which also accepts the compat argument-translation "
           "area (xen/include/asm-x86/x86_64/uaccess.h@RELEASE-4.11.0)",
    note="set_debugreg(0..3) accepts this vCPU's 8 KiB argument-translation area at "
         "0xffff820080000000 + (vcpu_id << 14), inside Xen's range")


# xen.git d9b7ef209a "x86: drop failsafe callback invocation from assembly" (first
# in RELEASE-4.7.0): before it a faulting IRETQ to the guest (iret_exit_to_guest's
# .Lfx0 fixup) entered the failsafe callback with TBF_FAILSAFE, whose frame adds
# DS, ES, FS, GS (x86_64/entry.S@RELEASE-4.6.0 failsafe_callback,
# create_bounce_frame; the same in 3.4), and crashed the domain without one.
_IRET_FAILSAFE = Change(
    "capability", feature="iret_fault_to_guest",
    source="xen.git d9b7ef209a 'x86: drop failsafe callback invocation from assembly' "
           "(4.7); iret_exit_to_guest's .Lfx0 fixup and failsafe_callback in "
           "xen/arch/x86/x86_64/entry.S@RELEASE-4.6.0",
    note="an iret to a selector with no usable descriptor enters the failsafe callback "
         "(frame RCX, R11, DS, ES, FS, GS, RIP, CS, RFLAGS, RSP, SS), or crashes the domain "
         "without one, instead of delivering #GP/#NP/#SS at the iret's target")


def _gone(hc: str, *subs: str, source: str) -> list[Change]:
    return [Change("subop", hc, s, source=source) for s in subs]


# ----------------------------------------------------------------- Xen 3.4
# May 2009, the last 3.x release: what the first paravirt_ops Linux PV ports met in the
# field. XENVER_version 0x00030004; interface version 0x00030209
# (xen/include/public/xen-compat.h@3.4.0-rc3).
XEN_3_4 = register(XEN_4_17.derive("xen-3.4", [
    Change("capability", feature="hvm_upcall_vector",
           source="XEN_HVM_CPUID_UPCALL_VECTOR (CPUID 0x40000004 EAX bit 6) added in 4.17 "
                  "(xen.git e2d2b9fd7a): a PVH guest uses the global callback vector"),
    Change("capability", feature="pvh_domu",
           source="PVH (v2) domU: supported from 4.10 (SUPPORT.md@RELEASE-4.10.0); before "
                  "it only PVHv1, a PV-derived ABI (removed in 4.9), so no PHYS32_ENTRY boot"),
    *_gone("event_channel_op", "init_control", "expand_array", "set_priority",
           source="FIFO event channels added in 4.4 (xen.git d2d50c2f30); "
                  "xen/common/event_channel.c" + _H34),
    *_gone("event_channel_op", "reset_cont", source="EVTCHNOP_reset_cont added in 4.15"),
    Change("capability", feature="fifo_events", source="FIFO event channels: Xen 4.4"),
    Change("hypercall", "xenpmu_op",
           source="__HYPERVISOR_xenpmu_op (40) added in 4.6 (xen.git 11fe998e56); "
                  "xen/arch/x86/x86_64/entry.S" + _H34),
    Change("hypercall", "argo_op", source="argo_op (39) added in 4.12"),
    Change("hypercall", "dm_op", source="dm_op (41) added in 4.9"),
    Change("hypercall", "hypfs_op", source="hypfs_op (42) added in 4.14"),
    *_gone("vcpu_op", "register_vcpu_time_memory_area",
           source="VCPUOP_register_vcpu_time_memory_area added in 4.0 (xen.git a5d39947cb)"),
    *_gone("xen_version", "commandline",
           source="XENVER_commandline added in 4.0 (xen.git fa97833ae1)"),
    *_gone("xen_version", "build_id", source="XENVER_build_id added in 4.7 (xen.git 460d24188d)"),
    *_gone("grant_table_op", "set_version", "get_status_frames", "get_version",
           source="grant tables v2 added in 4.0 (xen.git a98dc13703 'Introduce a "
                  "grant_entry_v2 structure'); do_grant_table_op in xen/common/grant_table.c"
                  + _H34 + " has no such case: -ENOSYS, the table stays v1"),
    *_gone("grant_table_op", "swap_grant_ref",
           source="GNTTABOP_swap_grant_ref added in 4.2 (xen.git 04b9829949)"),
    *_gone("grant_table_op", "cache_flush", source="GNTTABOP_cache_flush added in 4.6"),
    Change("capability", feature="gnttab_unlimited_batches",
           source="xen/common/grant_table.c" + _H34 + " do_grant_table_op: 'if ( count > 512 ) "
                  "return -EINVAL'; removed in 4.0 (xen.git 1c4e651d3f 'Eliminate "
                  "grant_table_op restriction')",
           note="grant_table_op with more than 512 entries returns -EINVAL"),
    Change("capability", feature="gnttab_unmap_checks_pte_flags",
           source="XSA-234 (CVE-2017-14319), xen.git 16b1414de9 'gnttab: also validate PTE "
                  "permissions upon destroy/replace' (4.10, backported); "
                  "xen/arch/x86/mm.c" + _H34 + " replace_grant_va_mapping checks the frame only",
           note="unmap accepts a grant PTE whose present or writable bit no longer matches "
                "the mapping"),
    *(XSAS[n].change("the 3.x trees were never patched; 3.4.0-rc3 predates the fix")
      for n in (12, 148, 182, 213, 227, 327)),
    Change("capability", feature="gnttab_copy_claims_first",
           source="xen/common/grant_table.c" + _H34 + " __gnttab_copy: lengths checked first, "
                  "an invalid frame GNTST_general_error; gnttab_copy_one from 4.6 (xen.git "
                  "3c72f8c2cf 'grant-table: refactor grant copy to reduce duplicate code')",
           note="GNTTABOP_copy checks lengths before the grants; a bad frame is "
                "GNTST_general_error, not GNTST_bad_page"),
    *_gone("sched_op", "shutdown_code", "watchdog",
           source="xen/include/public/sched.h: SCHEDOP_shutdown_code, SCHEDOP_watchdog (4.1)"),
    *_gone("sched_op", "pin_override", source="SCHEDOP_pin_override added in 4.7"),
    *_gone("physdev_op", "pirq_eoi_gmfn_v2",
           source="PHYSDEVOP_pirq_eoi_gmfn_v2 added in 4.2 (xen.git 0057a949de)"),
    *_gone("physdev_op", "get_free_pirq", source="PHYSDEVOP_get_free_pirq added in 4.1"),
    *_gone("memory_op", "get_sharing_freed_pages", "add_to_physmap_batch", "claim_pages",
           "machphys_compat_mfn_list", "get_vnumainfo", "acquire_resource",
           source="xen/include/public/memory.h" + _H34 + " vs @RELEASE-4.17.0"),
    *_gone("mmuext_op", "FLUSH_CACHE_GLOBAL", "MARK_SUPER", "UNMARK_SUPER",
           source="xen/include/public/xen.h: MMUEXT_FLUSH_CACHE_GLOBAL, MMUEXT_[UN]MARK_SUPER "
                  "(4.1)"),
    Change("capability", feature="vmassist_architectural_iopl",
           source="MAX_VMASST_TYPE 3 in xen/common/domain.c" + _H34 +
                  "; VMASST_TYPE_architectural_iopl added in 4.7"),
    Change("capability", feature="vmassist_runstate_update_flag",
           source="VMASST_TYPE_runstate_update_flag added in 4.8; -EINVAL before"),
    Change("capability", feature="vmassist_m2p_strict",
           source="VMASST_TYPE_m2p_strict added in 4.6 (xen.git d639e6a05a)"),
    Change("capability", feature="pvclock_tsc_stable",
           source="vcpu_time_info.flags (XEN_PVCLOCK_TSC_STABLE_BIT) added in 4.7 "
                  "(xen.git 9e55a33cc8); padding in xen/include/public/xen.h" + _H34),
    Change("feature", feature="memory_op_vnode_supported",
           source="XENFEAT_memory_op_vnode_supported (13) added in 4.6 (xen.git 319442762f); "
                  "xen/common/kernel.c" + _H34 + " reports submap 0 = 0xE0"),
    Change("feature", feature="direct_mapped",
           source="XENFEAT_direct_mapped (17) added in 4.16 (xen.git d66bf122c0)"),
    _VCPU_INFO_EINVAL, _DR45_NO_ALIAS, _DR45_SLOTS, _IRET_FAILSAFE,
], major=3, minor=4, extraversion=".4",
    description="Xen 3.4.4 (3.4 released May 2009): 2-level event channels only, no PMU, "
                "no vNUMA, grant tables v1",
    released="2009-05"))

# ------------------------------------------------------- Xen 4.17, release build
# The reference with CONFIG_VERBOSE_DEBUG off, as a stock release build (CONFIG_DEBUG=n;
# VERBOSE_DEBUG defaults to DEBUG, xen/Kconfig.debug@stable-4.17): what most domUs meet.
# Use it as a profile's base to model a release build of your own.
XEN_4_17_RELEASE = register(XEN_4_17.derive("xen-4.17-release", [
    Change("capability", feature="verbose_debug",
           source="xen/include/xsm/dummy.h@stable-4.17 xsm_console_io: without "
                  "CONFIG_VERBOSE_DEBUG a domU's CONSOLEIO_write is XSM_PRIV, -EPERM",
           note="console_io(write) returns -EPERM; the guest must use its console ring"),
], description="Xen 4.17.7, a release build (no CONFIG_VERBOSE_DEBUG): a domU's "
               "CONSOLEIO_write is refused with -EPERM",
    released="2022-12"))

# ----------------------------------------------------------------- Xen 4.21
# Interface version 0x00041300 (bumped in 4.19, xen.git 93d913c6e6).
XEN_4_21 = register(XEN_4_17.derive("xen-4.21", [
    Change("feature", feature="runstate_phys_area", present=True,
           source="XENFEAT_runstate_phys_area (18) added in 4.18 (xen.git 48a3fd1432)"),
    Change("feature", feature="vcpu_time_phys_area", present=True,
           source="XENFEAT_vcpu_time_phys_area (19) added in 4.18 (xen.git 48a3fd1432)"),
    Change("feature", feature="dm_msix_all_writes", present=True,
           source="XENFEAT_dm_msix_all_writes (20) added in 4.19 (xen.git 64b21662b1), "
                  "reported to every x86 domain (xen/common/kernel.c@RELEASE-4.21.0)"),
    *_gone("grant_table_op", "cache_flush",
           source="CHANGELOG.md 4.21: GNTTABOP_cache_flush removed on x86 (xen.git 5642a6055c)"),
], major=4, minor=21, extraversion=".2",
    description="Xen 4.21.2 (4.21 released Nov 2025): physical-address runstate and time "
                "area feature bits; GNTTABOP_cache_flush gone on x86",
    released="2025-11"))

# ----------------------------------------------------------------- Xen 4.22
XEN_4_22 = register(XEN_4_21.derive("xen-4.22", [
    Change("hypercall", "xenoprof_op",
           source="CHANGELOG.md 4.22: Xenoprofile support removed (xen.git 69e8aaf9cc); "
                  "xen/include/public/xen.h@RELEASE-4.22.0 '/* Dropped in Xen 4.22 */'"),
], major=4, minor=22, extraversion=".0",
    description="Xen 4.22.0 (Jul 2026): xenoprof_op removed", released="2026-07"))

# ------------------------------------------------------------------ Xen 4.6
# Xen 4.6.0 (RELEASE-4.6.0, Oct 2015), as released: every XSA fix published after it
# is absent (each one's stable-4.6 backport came in a later 4.6.x, Xsa.backports).
# Interface differences from 4.17 checked against the tag: xen.git commit not an
# ancestor of RELEASE-4.6.0.
_R46 = "RELEASE-4.6.0"
XEN_4_6 = register(XEN_4_17.derive("xen-4.6", [
    Change("capability", feature="hvm_upcall_vector",
           source="XEN_HVM_CPUID_UPCALL_VECTOR (CPUID 0x40000004 EAX bit 6) added in 4.17 "
                  "(xen.git e2d2b9fd7a): a PVH guest uses the global callback vector"),
    Change("capability", feature="pvh_domu",
           source="PVH (v2) domU: supported from 4.10 (SUPPORT.md@RELEASE-4.10.0); before "
                  "it only PVHv1, a PV-derived ABI (removed in 4.9), so no PHYS32_ENTRY boot"),
    *_gone("event_channel_op", "reset_cont",
           source="EVTCHNOP_reset_cont added in 4.15 (xen.git 2785b2a9e0)"),
    Change("hypercall", "argo_op", source="argo_op (39) added in 4.12"),
    Change("hypercall", "dm_op", source="dm_op (41) added in 4.9"),
    Change("hypercall", "hypfs_op", source="hypfs_op (42) added in 4.14"),
    *_gone("xen_version", "build_id", source="XENVER_build_id added in 4.7 (xen.git 460d24188d, "
                                             "not in " + _R46 + ")"),
    *_gone("sched_op", "pin_override",
           source="SCHEDOP_pin_override added in 4.7 (xen.git 8fa0fca9f3)"),
    *_gone("memory_op", "acquire_resource",
           source="XENMEM_acquire_resource added in 4.11 (xen.git 3fefa0f15d)"),
    Change("capability", feature="vmassist_architectural_iopl",
           source="VMASST_TYPE_architectural_iopl added in 4.7"),
    Change("capability", feature="vmassist_runstate_update_flag",
           source="VMASST_TYPE_runstate_update_flag added in 4.8; -EINVAL before"),
    Change("capability", feature="pvclock_tsc_stable",
           source="vcpu_time_info.flags (XEN_PVCLOCK_TSC_STABLE_BIT) added in 4.7 "
                  "(xen.git 9e55a33cc8, not in " + _R46 + ")"),
    Change("feature", feature="direct_mapped",
           source="XENFEAT_direct_mapped (17) added in 4.16 (xen.git d66bf122c0)"),
    *(XSAS[n].change(f"the fix is not in {_R46} (stable-4.6 took it as "
                     f"{XSAS[n].backports['stable-4.6']})")
      for n in (148, 182, 213, 227, 234)),
    XSAS[327].change(f"the fix is not in {_R46}; 4.6 was out of security support (Oct 2017) "
                     "before it"),
    _VCPU_INFO_EINVAL, _DR45_NO_ALIAS, _DR45_SLOTS, _BP_XLAT, _IRET_FAILSAFE,
], major=4, minor=6, extraversion=".0",
    description="Xen 4.6.0 (Oct 2015) as released: no dm_op, argo or hypfs; affected by "
                "XSA-148, 182, 213, 227, 234 and 327",
    released="2015-10"))

# ----------------------------------------------------------------- Xen 4.11
# Xen 4.11.0 (RELEASE-4.11.0, Jul 2018), as released: the 2015-2017 fixes are in it
# (their master commits are ancestors of the tag); XSA-327 (2020) is not.
_R411 = "RELEASE-4.11.0"
XEN_4_11 = register(XEN_4_17.derive("xen-4.11", [
    Change("capability", feature="hvm_upcall_vector",
           source="XEN_HVM_CPUID_UPCALL_VECTOR (CPUID 0x40000004 EAX bit 6) added in 4.17 "
                  "(xen.git e2d2b9fd7a): a PVH guest uses the global callback vector"),
    *_gone("event_channel_op", "reset_cont",
           source="EVTCHNOP_reset_cont added in 4.15 (xen.git 2785b2a9e0)"),
    Change("hypercall", "argo_op", source="argo_op (39) added in 4.12"),
    Change("hypercall", "hypfs_op", source="hypfs_op (42) added in 4.14"),
    Change("feature", feature="direct_mapped",
           source="XENFEAT_direct_mapped (17) added in 4.16 (xen.git d66bf122c0)"),
    XSAS[327].change(f"the fix is not in {_R411} (stable-4.11 took it as "
                     f"{XSAS[327].backports['stable-4.11']})"),
    _VCPU_INFO_EINVAL, _DR45_SLOTS, _BP_XLAT,
], major=4, minor=11, extraversion=".0",
    description="Xen 4.11.0 (Jul 2018) as released: no argo or hypfs; affected by XSA-327",
    released="2018-07"))
