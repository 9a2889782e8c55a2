"""Why two Xen versions answer a call differently: their declared differences.

Both versions are the reference (xen-4.17) plus declared
:class:`~pvmon.backends.xen.versions.Change` records; comparing what each
version ends up with (missing hypercalls and sub-ops, forced failures,
XENFEAT bits, capabilities, version numbers) gives the facts that differ,
each traced back to the change that introduced it and its source. The replay
layer reaches this through the registry (:data:`pvmon.backends.registry.EXPLAIN_BY_ABI`).
"""

from __future__ import annotations

from pvmon.backends.xen import abi
from pvmon.backends.xen.versions import XenVersion


def _source(kind: str, key, *versions: XenVersion) -> str:
    for v in versions:
        for c in reversed(v.all_changes()):
            if c.kind != kind:
                continue
            if kind == "hypercall" and c.hypercall == key:
                return c.source
            if kind == "subop" and (c.hypercall, c.subop) == key:
                return c.source
            if kind in ("feature", "capability") and c.feature == key:
                return c.source
            if kind == "failure" and (c.hypercall, c.subop) == key:
                return c.source + (f" ({c.note})" if c.note else "")
    return ""


def xen_differences(a: XenVersion, b: XenVersion) -> list:
    """Every declared behaviour in which Xen versions ``a`` and ``b`` differ, as
    :class:`pvmon.replay.explain.Fact` records (``cpuid`` facts keyed by leaf)."""
    from pvmon.replay.explain import Fact
    facts: list[Fact] = []
    for hc in sorted(a.missing ^ b.missing):
        has, lacks = (b, a) if hc in a.missing else (a, b)
        facts.append(Fact(hc, None, f"{lacks.name} has no {hc} (-ENOSYS); {has.name} has it",
                          _source("hypercall", hc, lacks, has)))
    for hc in sorted(set(a.missing_subops) | set(b.missing_subops)):
        sa, sb = a.missing_subops.get(hc, frozenset()), b.missing_subops.get(hc, frozenset())
        for sub in sorted(sa ^ sb):
            has, lacks = (b, a) if sub in sa else (a, b)
            facts.append(Fact(hc, sub, f"{lacks.name} has no {hc}({sub}) (-ENOSYS); "
                                       f"{has.name} has it",
                              _source("subop", (hc, sub), lacks, has)))
    for key in sorted(set(a.failures) | set(b.failures), key=str):
        ea, eb = a.failures.get(key), b.failures.get(key)
        if ea == eb:
            continue
        hc, sub = key
        what = f"{hc}({sub})" if sub else hc
        side, err = (a, ea) if ea is not None else (b, eb)
        facts.append(Fact(hc, sub, f"{side.name} fails {what} with "
                                   f"-{abi.ERRNO_NAMES.get(err, err)} on purpose",
                          _source("failure", key, side)))
    for feat in sorted(a.features ^ b.features):
        has, lacks = (a, b) if feat in a.features else (b, a)
        facts.append(Fact("xen_version", "get_features",
                          f"XENFEAT_{feat} is reported by {has.name}, not by {lacks.name}",
                          _source("feature", feat, has, lacks)))
    for cap in sorted(a.capabilities ^ b.capabilities):
        has, lacks = (a, b) if cap in a.capabilities else (b, a)
        for hc, sub in _CAPABILITY_CALLS.get(cap, ()):
            facts.append(Fact(hc, sub, f"{cap}: supported by {has.name}, not by {lacks.name}",
                              _source("capability", cap, has, lacks)))
    if (a.major, a.minor, a.extraversion) != (b.major, b.minor, b.extraversion):
        for sub in ("version", "extraversion"):
            facts.append(Fact("xen_version", sub,
                              f"XENVER_{sub}: {a.name} is {a.version_string}, "
                              f"{b.name} is {b.version_string}",
                              "xen/include/public/version.h"))
        # the same numbers in CPUID's version leaf (xen/include/public/arch-x86/cpuid.h)
        facts.append(Fact("cpuid", "0x40000001",
                          f"CPUID leaf 0x40000001 (Xen version): {a.name} is "
                          f"{a.version_string}, {b.name} is {b.version_string}",
                          "xen/include/public/arch-x86/cpuid.h"))
    return facts


# Calls whose behaviour a capability changes.
_CAPABILITY_CALLS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "fifo_events": (("event_channel_op", "init_control"), ("event_channel_op", "expand_array"),
                    ("event_channel_op", "set_priority")),
    "verbose_debug": (("console_io", "write"),),
    # PVH: the CPUID bit telling the guest per-vCPU upcall vectors work, and the
    # calls the guest then makes or not ("cpuid" facts are keyed by leaf)
    "hvm_upcall_vector": (("cpuid", "0x40000004"), ("hvm_op", "set_evtchn_upcall_vector"),
                          ("hvm_op", "set_param")),
    "gnttab_unmap_checks_pte_flags": (("grant_table_op", "unmap_grant_ref"),
                                      ("grant_table_op", "unmap_and_replace")),
    "gnttab_copy_claims_first": (("grant_table_op", "copy"),),
    # security fixes (pvmon.backends.xen.history.XSAS)
    "xsa12_dr7_high_bits_dropped": (("get_debugreg", None), ("set_debugreg", None),
                                    ("vcpu_op", "initialise")),
    "xsa148_l2_pse_refused": (("mmu_update", None),),
    "xsa182_pde_fastpath_whitelist": (("mmu_update", None),),
    "xsa213_multicall_iret_ends_batch": (("multicall", None), ("iret", None)),
    "xsa227_gnttab_pte_aligned": (("grant_table_op", "map_grant_ref"),
                                  ("grant_table_op", "unmap_grant_ref"),
                                  ("grant_table_op", "unmap_and_replace")),
    "xsa327_vcpu_info_aligned": (("vcpu_op", "register_vcpu_info"),),
    "vcpu_info_enxio": (("vcpu_op", "register_vcpu_info"),),
    "debugreg_dr45_alias": (("set_debugreg", None), ("get_debugreg", None)),
    "debugreg_dr7_emul": (("set_debugreg", None), ("get_debugreg", None)),
    "breakpoint_addr_ok": (("set_debugreg", None),),
    "iret_fault_to_guest": (("iret", None),),
}


__all__ = ["xen_differences"]
