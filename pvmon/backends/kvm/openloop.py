"""Open-loop replay of a KVM trace: KVM's interface is mostly CPUID leaves
and MSRs, so besides its (rare) hypercalls each recorded answer to a KVM
CPUID leaf (0x40000000-0x400000ff) and each access to a KVM paravirtual MSR
is put to the other version, without the guest, and compared: the leaf's
registers; for an MSR, whether it raised #GP and, for a read, the value.

:func:`feed` is called by :func:`pvmon.replay.openloop._feed_all` for the
events of a KVM trace; it adds each difference to the side's report."""

from __future__ import annotations

from collections import deque

from pvmon.backends.kvm.abi import MSR_FEATURE, MSR_NAMES
from pvmon.backends.kvm.backend import kvm_cpuid_policy
from pvmon.engine.hvm import MSR_GP

#: The event kinds :func:`feed` takes.
KINDS = frozenset({"msr", "cpuid"})


def feed(side, ev: dict, recent: deque) -> bool:
    """Put recorded event ``ev`` (``msr`` or ``cpuid``) to ``side``'s KVM
    backend. Returns True when it was a KVM interaction (compared, counted as
    a call), False for events that are the platform's, not KVM's."""
    from pvmon.replay.compare import Delta
    from pvmon.replay.explain import explain_event
    from pvmon.replay.report import Divergence, Site
    from pvmon.trace.render import describe

    k = ev.get("k")
    deltas: list = []
    right = dict(ev)
    if k == "cpuid":
        leaf = ev.get("leaf")
        if not isinstance(leaf, int) or not 0x40000000 <= leaf < 0x40000100:
            return False
        pol = getattr(side, "_kvm_policy", None)
        if pol is None:
            pol = side._kvm_policy = kvm_cpuid_policy(side.version)
        from pvmon.backends.xen.cpuid import lookup
        out = list(lookup(pol, leaf, ev.get("sub") or 0))
        if out != ev.get("out"):
            deltas.append(Delta("result", f"cpuid {leaf:#x} returned {ev.get('out')} vs {out}"))
            right["out"] = out
    elif k == "msr":
        msr = ev.get("msr")
        if msr not in MSR_FEATURE:
            return False
        write = ev.get("dir") == "wr"
        value = ev.get("val", 0) if write else 0
        side.clock.now_ns = ev.get("t", side.clock.now_ns)
        if write and ev.get("gp") and "val" not in ev:
            # A write that raised #GP is recorded without its value (the HVM core's
            # msr event). Refused by a recorded release that knows the MSR, it was
            # the value (reserved bits), which cannot be put to this side: take
            # the recorded answer. Refused because the release lacks the MSR,
            # what matters is whether this side knows it.
            rec = getattr(getattr(side, "run", None), "version", None)
            known = getattr(rec, "offers", None)
            if known is None or known(MSR_FEATURE[msr]):
                return True
            gp = not side.backend.has_msr(msr)
            got = 0
        else:
            answer, got = side.backend.msr(write, msr, value if isinstance(value, int) else 0)
            gp = answer == MSR_GP
        name = MSR_NAMES.get(msr, f"{msr:#x}")
        if gp != bool(ev.get("gp")):
            deltas.append(Delta("result", f"{'wrmsr' if write else 'rdmsr'} {name}: "
                                          f"{'#GP' if ev.get('gp') else 'handled'} vs "
                                          f"{'#GP' if gp else 'handled'}"))
        elif not write and not gp and got != ev.get("val"):
            deltas.append(Delta("result", f"rdmsr {name} read {ev.get('val')} vs {got}"))
        right = {**ev, "gp": True} if gp else {k2: v for k2, v in ev.items() if k2 != "gp"}
    else:
        return False
    if deltas:
        report = side.report
        n = report.total + 1
        report.add(Divergence(n, deltas, ev, right, Site(ev.get("seq"), ev.get("t"),
                                                         ev.get("rip")),
                              [f"#{e.get('seq')} {describe(e)}" for e in recent] if n <= 5
                              else [], explain_event(side.facts, ev)))
    return True


__all__ = ["KINDS", "feed"]
