"""Xen ABI versions as data.

Xen 4.17 is the reference. Every other version (and every user profile, see
:mod:`pvmon.backends.profiles`) is the reference plus a list of
:class:`Change` records, each one difference a PV domU can observe, declared
once, with its public source. The backend consults the resulting
:class:`XenVersion` tables (missing hypercalls, missing sub-ops, forced
failures, feature bits, capabilities); there are no version conditionals in
the hypercall code, and the same records explain divergences in replay
reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

from pvmon.backends.xen import abi


@dataclass(frozen=True)
class Change:
    """One declared difference from a base version.

    ``kind``:
      - ``"hypercall"``: ``hypercall`` does not exist (``present=False``: -ENOSYS)
        or exists (``present=True``) in this version;
      - ``"subop"``: sub-op ``subop`` of ``hypercall`` is absent (-ENOSYS) or present;
      - ``"feature"``: XENFEAT bit ``feature`` (xen/include/public/features.h) is
        reported by XENVER_get_features or not;
      - ``"capability"``: a behaviour of the backend (``"fifo_events"``...) is on or off;
      - ``"failure"``: ``hypercall`` (sub-op ``subop`` or every sub-op when None)
        always fails with ``-errno`` (profiles only: models a broken build).
    ``source``: where the fact comes from (header@version, CHANGELOG line).
    ``xsa``: for a security fix, its advisory number (XSA-``xsa``); ``fix``: the
    fix's commit in xen.git (master, or the branch the version is on); ``file``:
    the file the fix changed that holds the behaviour. A capability with an
    ``xsa`` is the fixed behaviour: a version without it is affected.
    """

    kind: str
    hypercall: str | None = None
    subop: str | None = None
    feature: str | None = None
    present: bool = False
    errno: int = 0
    source: str = ""
    note: str = ""
    xsa: int = 0
    fix: str = ""
    file: str = ""

    def describe(self) -> str:
        """One line for people: ``EVTCHNOP_init_control returns -ENOSYS``."""
        if self.kind == "hypercall":
            return (f"hypercall {self.hypercall} is available" if self.present
                    else f"hypercall {self.hypercall} returns -ENOSYS")
        if self.kind == "subop":
            what = f"{self.hypercall}({self.subop})"
            return f"{what} is available" if self.present else f"{what} returns -ENOSYS"
        if self.kind == "feature":
            return (f"XENVER_get_features reports XENFEAT_{self.feature}" if self.present
                    else f"XENVER_get_features does not report XENFEAT_{self.feature}")
        if self.kind == "capability":
            return f"{self.feature} {'supported' if self.present else 'not supported'}"
        if self.kind == "failure":
            what = f"{self.hypercall}({self.subop})" if self.subop else self.hypercall
            return f"{what} fails with -{abi.ERRNO_NAMES.get(self.errno, self.errno)}"
        return self.note or self.kind

    def as_dict(self) -> dict:
        d = {"kind": self.kind, "what": self.describe(), "source": self.source}
        for k in ("hypercall", "subop", "feature"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        if self.kind == "failure":
            d["errno"] = self.errno
        if self.note:
            d["note"] = self.note
        if self.xsa:
            d.update(xsa=self.xsa, fix=self.fix, file=self.file)
        return d


@dataclass(frozen=True)
class XenVersion:
    """One modelled Xen build as a 64-bit PV domU sees it.

    ``name``: how users select it (``xen-4.17``, or a profile's name);
    ``major``/``minor``/``extraversion``: what XENVER_version and
    XENVER_extraversion return; ``missing``: hypercall names answering -ENOSYS;
    ``missing_subops``: {hypercall: {sub-op}} answering -ENOSYS;
    ``failures``: {(hypercall, sub-op or None): errno} forced failures;
    ``features``: XENFEAT names XENVER_get_features reports;
    ``capabilities``: backend behaviours (``fifo_events``);
    ``base``: the version this one is derived from; ``changes``: the declared
    differences from ``base``; ``description``: one line; ``profile_toml``:
    for a profile, its TOML text (recorded in traces so replay can rebuild it);
    ``profile_source``: for a profile, the file it was read from.
    """

    name: str
    major: int
    minor: int
    extraversion: str = ".0"
    missing: frozenset[str] = frozenset()
    missing_subops: dict[str, frozenset[str]] = field(default_factory=dict)
    failures: dict[tuple[str, str | None], int] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()
    base: str | None = None
    changes: tuple[Change, ...] = ()
    description: str = ""
    released: str = ""
    profile_toml: str = ""
    profile_source: str = ""

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def version_string(self) -> str:
        return f"{self.major}.{self.minor}{self.extraversion}"

    @cached_property
    def gated(self) -> frozenset[str]:
        """Hypercalls whose sub-ops this version restricts (checked per call)."""
        return frozenset(self.missing_subops) | frozenset(h for h, _ in self.failures)

    def subop_error(self, hypercall: str, subop: str | None) -> int | None:
        """The errno (positive) this version forces for ``hypercall(subop)``,
        or None when the call proceeds normally."""
        e = self.failures.get((hypercall, subop))
        if e is None:
            e = self.failures.get((hypercall, None))
        if e is not None:
            return e
        if subop is not None and subop in self.missing_subops.get(hypercall, ()):
            return abi.ENOSYS
        return None

    def derive(self, name: str, changes: list[Change], *, major: int | None = None,
               minor: int | None = None, extraversion: str | None = None,
               description: str = "", released: str = "") -> XenVersion:
        """A new version: this one with ``changes`` applied in order."""
        missing = set(self.missing)
        subops = {k: set(v) for k, v in self.missing_subops.items()}
        failures = dict(self.failures)
        features = set(self.features)
        caps = set(self.capabilities)
        for c in changes:
            if c.hypercall is not None and c.hypercall not in abi.HYPERCALL_NUMBERS:
                raise ValueError(f"{name}: unknown hypercall {c.hypercall!r}")
            if c.subop is not None and c.subop not in abi.SUBOPS.get(c.hypercall, {}).values():
                raise ValueError(f"{name}: unknown sub-op {c.hypercall}({c.subop})")
            if c.kind == "feature" and c.feature not in abi.XENFEAT:
                raise ValueError(f"{name}: unknown feature {c.feature!r}")
            if c.kind == "hypercall":
                (missing.discard if c.present else missing.add)(c.hypercall)
            elif c.kind == "subop":
                s = subops.setdefault(c.hypercall, set())
                (s.discard if c.present else s.add)(c.subop)
            elif c.kind == "feature":
                (features.add if c.present else features.discard)(c.feature)
            elif c.kind == "capability":
                (caps.add if c.present else caps.discard)(c.feature)
            elif c.kind == "failure":
                failures[(c.hypercall, c.subop)] = c.errno
            else:
                raise ValueError(f"unknown change kind {c.kind!r}")
        return replace(
            self, name=name, major=self.major if major is None else major,
            minor=self.minor if minor is None else minor,
            extraversion=self.extraversion if extraversion is None else extraversion,
            missing=frozenset(missing),
            missing_subops={k: frozenset(v) for k, v in subops.items() if v},
            failures=failures, features=frozenset(features), capabilities=frozenset(caps),
            base=self.name, changes=tuple(changes), description=description,
            released=released)

    def lineage(self) -> list[XenVersion]:
        """This version and its bases, nearest first (up to the reference)."""
        out = [self]
        seen = {self.name}
        while out[-1].base and out[-1].base in REGISTRY and out[-1].base not in seen:
            seen.add(out[-1].base)
            out.append(REGISTRY[out[-1].base])
        return out

    def all_changes(self) -> list[Change]:
        """Every change from the reference to this version (reference first)."""
        out: list[Change] = []
        for v in reversed(self.lineage()):
            out.extend(v.changes)
        return out


# ---------------------------------------------------------------- reference
# Capabilities that are security fixes (XSA-234's is gnttab_unmap_checks_pte_flags,
# declared with the grant tables). Their records are in pvmon.backends.xen.history.
XSA_FIXES = ("xsa12_dr7_high_bits_dropped", "xsa148_l2_pse_refused",
             "xsa182_pde_fastpath_whitelist",
             "xsa213_multicall_iret_ends_batch", "xsa227_gnttab_pte_aligned",
             "xsa327_vcpu_info_aligned")

XEN_4_17 = XenVersion(
    "xen-4.17", 4, 17, ".7",
    # tmem_op: removed in 4.13 (xen.git c492e19fdd "xen: remove tmem from hypervisor");
    # the hypercall table entry is "-" (xen/include/hypercall-defs.c@RELEASE-4.17.0).
    missing=frozenset({"tmem_op"}),
    # What 4.17 reports to a 64-bit PV domU (xen/common/kernel.c@RELEASE-4.17.7,
    # XENVER_get_features): submap 0 = 0x220E0. PV is not translated, so it gets
    # XENFEAT_direct_mapped; pae_pgdir_above_4gb only after VMASST_TYPE_pae_extended_cr3.
    features=frozenset({"mmu_pt_update_preserve_ad", "highmem_assist", "gnttab_map_avail_bits",
                        "memory_op_vnode_supported", "direct_mapped"}),
    # Backend behaviours: FIFO event channels (4.4), vm_assist types up to
    # runstate_update_flag (4.8) and m2p_strict (4.6), the pvclock flags field with
    # XEN_PVCLOCK_TSC_STABLE_BIT (4.7).
    # verbose_debug: the build has CONFIG_VERBOSE_DEBUG (y by default when CONFIG_DEBUG
    # is, xen/Kconfig.debug@stable-4.17), so a domU's CONSOLEIO_write is taken
    # (xen/include/xsm/dummy.h@stable-4.17 xsm_console_io); a release build refuses it
    # with -EPERM (xen-4.17-release below). The reference keeps it because Linux's boot
    # output depends on it: with pvmon's default command line (earlyprintk=xen) every
    # early message goes through CONSOLEIO_write, and on -EPERM Linux writes them to
    # the console ring instead, each prefixed "(early) " (drivers/tty/hvc/hvc_xen.c
    # xenboot_write_console); the built-in guests print every line with it too.
    # Grant tables (xen/common/grant_table.c@stable-4.17): batches of any size, preempted
    # with continuations (gnttab_unlimited_batches); unmap checks that the PTE is present
    # and as writable as the mapping, not only its frame (gnttab_unmap_checks_pte_flags,
    # XSA-234); a copy claims both sides before checking its lengths and a bad frame is
    # GNTST_bad_page (gnttab_copy_claims_first, gnttab_copy_one).
    # Security fixes a guest can see (each named after its advisory; older versions that
    # predate the fix declare it absent, pvmon.backends.xen.history): bits 32-63 of %dr7
    # reserved (XSA-12), an L2 entry with
    # _PAGE_PSE refused (XSA-148), L2-L4 entries changing more than the fast path's
    # whitelisted flags revalidated (XSA-182), an iret ends a multicall (XSA-213), a
    # contains_pte grant PTE address 8-byte aligned (XSA-227), a vcpu_info offset
    # aligned (XSA-327); gnttab_unmap_checks_pte_flags above is XSA-234.
    # pvh_domu: PVH (v2) domUs, entered at XEN_ELFNOTE_PHYS32_ENTRY with
    # hvm_start_info (docs/misc/pvh.pandoc); supported since 4.10 (SUPPORT.md@RELEASE-4.10.0
    # "x86/PVH guest: Supported").
    # hvm_upcall_vector: CPUID 0x40000004 tells an HVM/PVH guest that per-vCPU upcall
    # vectors (HVMOP_set_evtchn_upcall_vector) work (XEN_HVM_CPUID_UPCALL_VECTOR, xen.git
    # e2d2b9fd7a, 4.17; xen/arch/x86/cpuid.c@RELEASE-4.17.0).
    # vcpu_info_enxio: register_vcpu_info's bad offsets are -ENXIO, not -EINVAL
    # (xen.git 7ee7a3749b, 4.16; xen/common/domain.c map_vcpu_info@RELEASE-4.17.0).
    # debugreg_dr45_alias: %dr4/%dr5 alias %dr6/%dr7 while CR4.DE is clear (-ENODEV
    # with it), the upper 32 bits of %dr6/%dr7 are -EINVAL, unknown registers -ENODEV
    # (xen.git f539ae2706, 4.11); debugreg_dr7_emul: %dr4/%dr5 writes reach %dr6/%dr7
    # and %dr7's I/O enables have their own field (xen.git 30f43f4aa8, 4.12;
    # xen/arch/x86/pv/misc-hypercalls.c set_debugreg@stable-4.17); breakpoint_addr_ok:
    # %dr0-3 checked with __addr_ok, not access_ok (XSA-444, xen.git dc9d9aa62d,
    # stable-4.17 0b56bed864 in 4.17.3; xen/arch/x86/include/asm/debugreg.h).
    # iret_fault_to_guest: an IRETQ to the guest that faults (a selector with no
    # usable descriptor) is reported as that exception at the iret's target, not
    # through the failsafe callback (xen.git d9b7ef209a "x86: drop failsafe callback
    # invocation from assembly", 4.7; x86_64/entry.S iret_exit_to_guest@stable-4.17).
    capabilities=frozenset({"fifo_events", "vmassist_architectural_iopl",
                            "vmassist_runstate_update_flag", "vmassist_m2p_strict",
                            "pvclock_tsc_stable", "verbose_debug",
                            "gnttab_unlimited_batches", "gnttab_unmap_checks_pte_flags",
                            "gnttab_copy_claims_first", "vcpu_info_enxio", "pvh_domu",
                            "hvm_upcall_vector", "debugreg_dr45_alias", "debugreg_dr7_emul",
                            "breakpoint_addr_ok", "iret_fault_to_guest",
                            *XSA_FIXES}),
    description="reference: Xen 4.17.7 (4.17 released Dec 2022), a 64-bit PV domU's ABI; "
                "built with CONFIG_VERBOSE_DEBUG (guest console_io writes logged)",
    released="2022-12",
)

REFERENCE = XEN_4_17
REGISTRY: dict[str, XenVersion] = {XEN_4_17.name: XEN_4_17}


def register(v: XenVersion) -> XenVersion:
    REGISTRY[v.name] = v
    return v


# Versions other than the reference are declared in pvmon.backends.xen.history.
from pvmon.backends.xen import history as _history  # noqa: F401
