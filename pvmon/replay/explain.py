"""Why two backends answer a call differently: the declared differences
between two versions of one ABI (or profiles), matched against a divergent
call or event. Each ABI states its own differences (Xen:
:mod:`pvmon.backends.xen.explain`; KVM: :mod:`pvmon.backends.kvm.explain`;
lguest and VMI: their versions' ``facts_against``); this module holds the
:class:`Fact` record and the matching, which know no ABI.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def differences(a, b) -> list[Fact]:
    """Every declared behaviour in which backend versions ``a`` and ``b``
    differ: the ABI's own explainer (:data:`pvmon.backends.registry.EXPLAIN_BY_ABI`,
    KVM's when either side is KVM), or, for other built-in ABIs, the
    differences their versions declare (``facts_against``)."""
    from importlib import import_module

    from pvmon.backends.registry import EXPLAIN_BY_ABI
    abis = {getattr(a, "abi", "xen"), getattr(b, "abi", "xen")}
    name = "kvm" if "kvm" in abis else (next(iter(abis)) if len(abis) == 1 else None)
    where = EXPLAIN_BY_ABI.get(name) if name is not None else None
    if where is not None:
        module, _, attr = where.partition(":")
        return getattr(import_module(module), attr)(a, b)
    declared = getattr(a, "facts_against", None)
    return [Fact(d["hypercall"], None, d["text"], d["source"])
            for d in (declared(b) if declared is not None else [])]


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
    (hypercall, sub-op), every call batched in a multicall, or the facts
    about its MSR or CPUID leaf (keyed by number)."""
    k = ev.get("k")
    if k in ("msr", "cpuid"):   # facts about an MSR or a CPUID leaf, keyed by its number
        num = ev.get("msr" if k == "msr" else "leaf")
        return [f for f in facts if f.hypercall == k and isinstance(num, int)
                and f.subop == f"{num:#x}"]
    if k != "hc":
        return []
    op = ev.get("op") if isinstance(ev.get("op"), dict) else {}
    if ev.get("name") == "multicall" and isinstance(op.get("calls"), list):
        names = set(map(str, op["calls"]))
        return [f for f in facts if f.hypercall in names]
    return explain(facts, ev.get("name"), op.get("cmd"))


def rule_verdict(recorded, replayed) -> str:
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
