"""KVM backend profiles: a user's own KVM host, declared in TOML like Xen's
(:mod:`pvmon.backends.profiles` finds, loads and records them)::

    name = "acme-kvm"                   # how --backend selects it
    base = "kvm-6.12"                   # a built-in KVM version (pvmon backends)
    description = "ACME's hosts: QEMU without PV EOI, steal time off"

    [remove]
    features = ["PV_EOI", "STEAL_TIME"]      # KVM_FEATURE_* names: bit clear, MSRs #GP
    hypercalls = ["sched_yield"]             # answer -KVM_ENOSYS

    [add]
    features = ["MSI_EXT_DEST_ID"]

Names are those of ``arch/x86/include/uapi/asm/kvm_para.h`` (features, without
``KVM_FEATURE_``) and ``include/uapi/linux/kvm_para.h`` (hypercalls, without
``KVM_HC_``, lower case). Every error is a BackendError naming the file and key.
"""

from __future__ import annotations

from dataclasses import replace

from pvmon.backends.kvm.abi import FEATURE_BITS, HYPERCALLS
from pvmon.backends.kvm.versions import KvmChange, KvmVersion

_TOP_KEYS = {"name", "base", "description", "remove", "add"}
_SET_KEYS = {"features", "hypercalls"}


def parse_kvm_profile(data: dict, name: str, base: KvmVersion, where: str, bad) -> KvmVersion:
    """A :class:`KvmVersion` derived from ``base`` (a built-in KVM version) by
    a parsed profile table; ``name`` already checked; ``where`` names the
    file; ``bad(msg)`` makes the BackendError raised."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise bad(f"unknown key {min(unknown)!r} for a KVM profile "
                  f"(known: {', '.join(sorted(_TOP_KEYS))})")
    base_name = base.name
    feats, calls = set(base.features), set(base.hypercalls)
    changes = list(base.changes)
    src = "profile"
    for section, present in (("remove", False), ("add", True)):
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise bad(f"[{section}] must be a table")
        extra = set(table) - _SET_KEYS
        if extra:
            raise bad(f"unknown key {section}.{min(extra)!r} (known: features, hypercalls)")
        for key, known, target, kind in (("features", FEATURE_BITS, feats, "feature"),
                                         ("hypercalls", set(HYPERCALLS.values()), calls,
                                          "hypercall")):
            values = table.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise bad(f"{section}.{key} must be a list of names")
            for v in values:
                v = v.removeprefix("KVM_FEATURE_") if kind == "feature" else \
                    v.removeprefix("KVM_HC_").lower()
                if v not in known:
                    raise bad(f"unknown {kind} {v!r} in {section}.{key} "
                              f"(known: {', '.join(sorted(known))})")
                (target.add if present else target.discard)(v)
                changes.append(KvmChange(kind, v, present, src))
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise bad("'description' must be a string")
    return replace(base, name=name, features=frozenset(feats), hypercalls=frozenset(calls),
                   base=base_name, changes=tuple(changes),
                   description=desc or f"profile based on {base_name}")


__all__ = ["parse_kvm_profile"]
