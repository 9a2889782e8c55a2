"""Why two KVM releases answer a guest differently: the declared differences
(:mod:`pvmon.backends.kvm.versions`) between them, as replay's
:class:`pvmon.replay.explain.Fact` records. A feature bit concerns the
``cpuid`` leaf 0x40000001 and the MSRs it announces; a hypercall concerns
that call."""

from __future__ import annotations

from pvmon.backends.kvm.abi import MSR_FEATURE, MSR_NAMES
from pvmon.backends.kvm.versions import KvmVersion


def _source(kind: str, name: str, *versions: KvmVersion) -> str:
    for v in versions:
        for c in v.changes:
            if c.kind == kind and c.name == name:
                return c.source + (f" ({c.note})" if c.note else "")
    return ""


def kvm_differences(a, b) -> list:
    """Every declared behaviour in which KVM versions ``a`` and ``b`` differ
    (a Xen version on either side: the ABIs differ as a whole, one fact)."""
    from pvmon.replay.explain import Fact
    if not (isinstance(a, KvmVersion) and isinstance(b, KvmVersion)):
        return [Fact("cpuid", None, f"{a.name} and {b.name} are different hypervisor ABIs", "")]
    facts = []
    for feat in sorted(a.features ^ b.features):
        has, lacks = (a, b) if feat in a.features else (b, a)
        msrs = [(m, MSR_NAMES[m]) for m, f in MSR_FEATURE.items() if f == feat]
        extra = f" (and its MSRs {', '.join(n for _m, n in msrs)})" if msrs else ""
        facts.append(Fact("cpuid", "0x40000001",
                          f"KVM_FEATURE_{feat}{extra} is offered by {has.name}, not by "
                          f"{lacks.name}", _source("feature", feat, lacks, has)))
        for m, n in msrs:
            facts.append(Fact("msr", f"{m:#x}", f"{n} exists on {has.name}; {lacks.name} "
                                                "raises #GP",
                              _source("feature", feat, lacks, has)))
    for hc in sorted(a.hypercalls ^ b.hypercalls):
        has, lacks = (a, b) if hc in a.hypercalls else (b, a)
        facts.append(Fact(hc, None, f"{lacks.name} answers KVM_HC_{hc.upper()} with "
                                    f"-KVM_ENOSYS; {has.name} knows it",
                          _source("hypercall", hc, lacks, has)))
    if a.signature_eax != b.signature_eax:
        facts.append(Fact("cpuid", "0x40000000",
                          f"CPUID 0x40000000 EAX: {a.name} {a.signature_eax:#x}, "
                          f"{b.name} {b.signature_eax:#x}",
                          _source("signature", "max_leaf_zero", a, b)))
    return facts


__all__ = ["kvm_differences"]
