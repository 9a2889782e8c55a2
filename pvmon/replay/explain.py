"""Why two backends answer a call differently: the declared differences
between two Xen versions (or profiles), matched against a divergent call.

Both versions are the reference (xen-4.17) plus declared
:class:`~pvmon.backends.xen.versions.Change` records; comparing what each
version ends up with (missing hypercalls and sub-ops, forced failures,
XENFEAT bits, capabilities, version numbers) gives the facts that differ,
each traced back to the change that introduced it and its source.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvmon.backends.xen import abi
from pvmon.backends.xen.versions import XenVersion


@dataclass(frozen=True)
class Fact:
    """One behaviour that differs between version ``a`` and version ``b``.
    ``hypercall``/``subop``: the call it concerns (subop None: every sub-op);
    ``text``: one line naming both sides; ``source``: where it is declared."""

    hypercall: str
    subop: str | None
    text: str
    source: str

    def as_dict(self) -> dict:
        return {"hypercall": self.hypercall, "subop": self.subop, "text": self.text,
                "source": self.source}


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


def differences(a: XenVersion, b: XenVersion) -> list[Fact]:
    """Every declared behaviour in which ``a`` and ``b`` differ."""
    if "kvm" in (getattr(a, "abi", "xen"), getattr(b, "abi", "xen")):
        from pvmon.backends.kvm.explain import kvm_differences
        return kvm_differences(a, b)
    if not isinstance(a, XenVersion) or not isinstance(b, XenVersion):
        # another ABI's versions declare their differences themselves
        # (pvmon.backends.registry.OtherVersion.facts_against)
        declared = getattr(a, "facts_against", None)
        return [Fact(d["hypercall"], None, d["text"], d["source"])
                for d in (declared(b) if declared is not None else [])]
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
    "xsa148_l2_pse_refused": (("mmu_update", None),),
    "xsa182_pde_fastpath_whitelist": (("mmu_update", None),),
    "xsa213_multicall_iret_ends_batch": (("multicall", None), ("iret", None)),
    "xsa227_gnttab_pte_aligned": (("grant_table_op", "map_grant_ref"),
                                  ("grant_table_op", "unmap_grant_ref"),
                                  ("grant_table_op", "unmap_and_replace")),
    "xsa327_vcpu_info_aligned": (("vcpu_op", "register_vcpu_info"),),
    "vcpu_info_enxio": (("vcpu_op", "register_vcpu_info"),),
}


def explain(facts: list[Fact], hypercall: str | None, subop) -> list[Fact]:
    """The facts that concern ``hypercall(subop)`` (exact sub-op first, then
    facts about the whole hypercall)."""
    if hypercall is None:
        return []
    sub = subop if isinstance(subop, str) else None
    exact = [f for f in facts if f.hypercall == hypercall and f.subop == sub and sub]
    whole = [f for f in facts if f.hypercall == hypercall and f.subop is None]
    # compat entry points share their sub-ops' declarations
    if not exact and not whole and hypercall.endswith("_compat"):
        return explain(facts, hypercall.removesuffix("_compat"), subop)
    return exact + whole


def explain_event(facts: list[Fact], ev: dict) -> list[Fact]:
    """The facts that concern a recorded event: a hypercall's own
    (hypercall, sub-op), every call batched in a multicall, or the CPUID
    leaves that carry the Xen version."""
    k = ev.get("k")
    if k == "msr":          # KVM's facts name their MSRs (pvmon.backends.kvm.explain)
        from pvmon.backends.kvm.abi import MSR_NAMES
        name = MSR_NAMES.get(ev.get("msr"))
        return [f for f in facts if f.hypercall == "msr" and f.subop == name] if name else []
    if k == "cpuid" and any(f.hypercall == "cpuid" for f in facts):
        leaf = ev.get("leaf")
        return [f for f in facts
                if f.hypercall == "cpuid" and f.subop == (f"{leaf:#x}" if isinstance(leaf, int)
                                                          else None)]
    if k == "cpuid":
        leaf = ev.get("leaf")
        if leaf == 0x40000001:   # xen/include/public/arch-x86/cpuid.h: version leaf
            return [Fact("cpuid", None, f.text.replace("XENVER_version", "CPUID leaf "
                                                       "0x40000001 (Xen version)"),
                         "xen/include/public/arch-x86/cpuid.h")
                    for f in facts if f.hypercall == "xen_version" and f.subop == "version"]
        if isinstance(leaf, int):
            return [f for f in facts if f.hypercall == "cpuid" and f.subop == f"{leaf:#x}"]
        return []
    if k != "hc":
        return []
    op = ev.get("op") if isinstance(ev.get("op"), dict) else {}
    if ev.get("name") == "multicall" and isinstance(op.get("calls"), list):
        names = set(map(str, op["calls"]))
        return [f for f in facts if f.hypercall in names]
    return explain(facts, ev.get("name"), op.get("cmd"))


def rule_verdict(recorded: XenVersion, replayed: XenVersion) -> str:
    """Which side of the paravirt-ops rule a divergence falls on: replaying a
    guest's trace on a newer host that breaks it means the guest would need an
    uprev when the host is upreved (not acceptable); on an older host, the
    guest needs a newer host (acceptable)."""
    abi_a, abi_b = getattr(recorded, "abi", "xen"), getattr(replayed, "abi", "xen")
    if abi_a != abi_b:
        return (f"different hypervisor ABIs ({abi_a} recorded, {abi_b} replayed): the guest "
                "boots another way on each, so differences compare the ABIs, not two versions")
    ra = (recorded.major, recorded.minor)
    rb = (replayed.major, replayed.minor)
    if rb > ra:
        return ("host upgrade: differences here mean upgrading the host changes what an "
                "unchanged guest sees; any the guest does not tolerate is a host regression "
                "(needing to uprev a guest when you uprev a host is not acceptable)")
    if rb < ra:
        return ("older host: the guest uses what this host lacks; needing to uprev the host "
                "when you uprev a guest is acceptable, provided the guest falls back")
    if abi_a == "kvm":
        return "same KVM version: differences come from the profile's declared changes"
    return "same Xen version: differences come from the build's declared changes"


__all__ = ["Fact", "differences", "explain", "explain_event", "rule_verdict"]
