"""KVM releases as data: which parts of KVM's paravirtual interface each
host Linux version offers a guest.

KVM 6.12 (host Linux 6.12) is the reference. Every other version is the
reference minus the features and hypercalls that came later, each declared
once as a :class:`KvmChange` with its source. The backend consults the
resulting :class:`KvmVersion` (CPUID 0x40000001 bits, known MSRs, known
hypercalls); there are no version conditionals in its code.

What "offers" means: the bits ``KVM_GET_SUPPORTED_CPUID`` reports for leaf
0x40000001 (``arch/x86/kvm/cpuid.c`` ``__do_cpuid_func``, case
``KVM_CPUID_FEATURES``), as a VMM that passes them through (QEMU
``-cpu host``) shows the guest. Bits a VMM sets itself (MSI_EXT_DEST_ID,
HC_MAP_GPA_RANGE, MIGRATION_CONTROL) are not KVM's to offer and are off in
every version; the MSR MIGRATION_CONTROL then raises #GP and MAP_GPA_RANGE
answers -KVM_ENOSYS (no ``KVM_CAP_EXIT_HYPERCALL``), as on such a host.

Sources for "since": the QEMU document ``docs/system/i386/kvm-pv.rst``
(feature list with the Linux release that added each), marked [QD]; entries
marked (approx.) were not checked against linux.git history (the facts
sheet ``shared/research/hvm-facts.md`` 4.1 records why).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class KvmChange:
    """One declared difference from the reference (KVM 6.12).

    ``kind``: ``"feature"`` (a KVM_CPUID_FEATURES bit, and the MSRs it
    announces) or ``"hypercall"`` (a ``KVM_HC_*`` number KVM answers);
    ``name``: the feature (``"PV_EOI"``) or hypercall (``"send_ipi"``);
    ``present``: False = this version lacks it; ``source``: where the fact
    comes from; ``note``: what a guest does without it."""

    kind: str
    name: str
    present: bool = False
    source: str = ""
    note: str = ""

    def describe(self) -> str:
        if self.kind == "signature":
            return "CPUID 0x40000000 EAX reads 0 (the highest KVM leaf is implied)"
        if self.kind == "feature":
            from pvmon.backends.kvm.abi import MSR_FEATURE
            msrs = " and its MSRs #GP" if self.name in MSR_FEATURE.values() else ""
            return (f"CPUID 0x40000001 offers KVM_FEATURE_{self.name}" if self.present
                    else f"no KVM_FEATURE_{self.name} (CPUID 0x40000001 bit clear{msrs})")
        return (f"hypercall KVM_HC_{self.name.upper()} is known" if self.present
                else f"hypercall KVM_HC_{self.name.upper()} returns -KVM_ENOSYS")

    def as_dict(self) -> dict:
        d = {"kind": self.kind, "what": self.describe(), "source": self.source}
        if self.kind in ("feature", "hypercall"):
            d[self.kind] = self.name
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class KvmVersion:
    """One KVM release as a guest sees it. ``name``: ``kvm-6.12``;
    ``linux``: the host Linux release; ``features``: KVM_FEATURE names
    offered in CPUID 0x40000001 EAX; ``hypercalls``: hypercall names KVM
    answers (others: -KVM_ENOSYS); ``base``/``changes``: the declared
    differences from the reference; ``profile_toml``/``profile_source``:
    empty (KVM profiles are not supported yet)."""

    name: str
    linux: str
    features: frozenset[str]
    hypercalls: frozenset[str]
    base: str | None = None
    changes: tuple[KvmChange, ...] = ()
    description: str = ""
    released: str = ""
    profile_toml: str = ""
    profile_source: str = ""
    abi: str = field(default="kvm")
    #: CPUID 0x40000000 EAX (the highest KVM leaf; 0 on early KVM)
    signature_eax: int = 0x40000001

    @property
    def version(self) -> str:
        return self.linux

    @property
    def version_string(self) -> str:
        return f"Linux {self.linux} KVM"

    @property
    def major(self) -> int:
        return int(self.linux.split(".")[0])

    @property
    def minor(self) -> int:
        return int(self.linux.split(".")[1])

    def offers(self, feature: str) -> bool:
        return feature in self.features

    def feature_eax(self) -> int:
        """CPUID 0x40000001 EAX."""
        from pvmon.backends.kvm.abi import FEATURE_BITS
        return sum(1 << FEATURE_BITS[f] for f in self.features)


#: What KVM 6.12 reports (arch/x86/kvm/cpuid.c@v6.12 KVM_CPUID_FEATURES;
#: STEAL_TIME when sched_info_on(), which Debian's CONFIG_SCHED_INFO makes true).
REFERENCE_FEATURES = frozenset({
    "CLOCKSOURCE", "NOP_IO_DELAY", "CLOCKSOURCE2", "ASYNC_PF", "PV_EOI",
    "CLOCKSOURCE_STABLE_BIT", "PV_UNHALT", "PV_TLB_FLUSH", "ASYNC_PF_VMEXIT", "PV_SEND_IPI",
    "POLL_CONTROL", "PV_SCHED_YIELD", "ASYNC_PF_INT", "STEAL_TIME"})
#: Hypercalls KVM 6.12 answers (arch/x86/kvm/x86.c kvm_emulate_hypercall@v6.12).
REFERENCE_HYPERCALLS = frozenset({"vapic_poll_irq", "kick_cpu", "clock_pairing", "send_ipi",
                                  "sched_yield", "map_gpa_range"})

_QD = "QEMU docs/system/i386/kvm-pv.rst [QD]"

#: Each feature and hypercall with the release that brought it, newest first.
_HISTORY: list[tuple[str, KvmChange]] = [
    ("5.14", KvmChange("hypercall", "map_gpa_range",
                       source="include/uapi/linux/kvm_para.h KVM_HC_MAP_GPA_RANGE, Linux 5.14 "
                              "(approx.)",
                       note="the answer is -KVM_ENOSYS either way without the VMM's "
                            "KVM_CAP_EXIT_HYPERCALL")),
    ("5.10", KvmChange("feature", "ASYNC_PF_INT", source=f"{_QD}: kvm-asyncpf-int, Linux 5.10",
                       note="async page faults would use #PF 'page ready' delivery")),
    ("5.10", KvmChange("feature", "PV_SCHED_YIELD",
                       source=f"{_QD}: kvm-pv-sched-yield, 5.10 there (approx.; KVM 5.3)")),
    ("5.10", KvmChange("hypercall", "sched_yield",
                       source="hypercalls.rst KVM_HC_SCHED_YIELD, with PV_SCHED_YIELD (approx.)")),
    ("5.10", KvmChange("feature", "POLL_CONTROL",
                       source=f"{_QD}: kvm-poll-control, 5.10 there (approx.; KVM 5.2)",
                       note="cpuidle-haltpoll does not write MSR_KVM_POLL_CONTROL")),
    ("4.19", KvmChange("feature", "PV_SEND_IPI", source=f"{_QD}: kvm-pv-ipi, Linux 4.19")),
    ("4.19", KvmChange("hypercall", "send_ipi",
                       source="hypercalls.rst KVM_HC_SEND_IPI, with PV_SEND_IPI (Linux 4.19)")),
    ("4.16", KvmChange("feature", "PV_TLB_FLUSH", source=f"{_QD}: kvm-pv-tlb-flush, Linux 4.16")),
    ("4.16", KvmChange("feature", "ASYNC_PF_VMEXIT",
                       source="cpuid.rst KVM_FEATURE_ASYNC_PF_VMEXIT, Linux 4.16 (approx.)")),
    ("4.11", KvmChange("hypercall", "clock_pairing",
                       source="hypercalls.rst KVM_HC_CLOCK_PAIRING, Linux 4.11 (approx.)")),
    ("3.12", KvmChange("feature", "PV_UNHALT", source=f"{_QD}: kvm-pv-unhalt, Linux 3.12")),
    ("3.12", KvmChange("hypercall", "kick_cpu",
                       source="hypercalls.rst KVM_HC_KICK_CPU, with PV_UNHALT (Linux 3.12)")),
    ("3.10", KvmChange("feature", "PV_EOI", source=f"{_QD}: kvm-pv-eoi, Linux 3.10",
                       note="the guest acknowledges every interrupt with an APIC EOI write")),
    ("3.1", KvmChange("feature", "STEAL_TIME", source=f"{_QD}: kvm-steal-time, Linux 3.1")),
    ("2.6.38", KvmChange("feature", "ASYNC_PF", source=f"{_QD}: kvm-asyncpf, Linux 2.6.38")),
    ("2.6.35", KvmChange("feature", "CLOCKSOURCE2",
                         source="cpuid.rst KVM_FEATURE_CLOCKSOURCE2, Linux 2.6.35 (approx.)",
                         note="kvmclock uses the old MSRs 0x11/0x12")),
    ("2.6.35", KvmChange("feature", "CLOCKSOURCE_STABLE_BIT",
                         source=f"{_QD}: kvmclock-stable-bit, Linux 2.6.35",
                         note="the guest cannot trust PVCLOCK_TSC_STABLE_BIT")),
]


def _key(release: str) -> tuple[int, ...]:
    return tuple(int(p) for p in release.split("."))


def _version(linux: str, description: str, released: str) -> KvmVersion:
    changes = tuple(c for since, c in _HISTORY if _key(since) > _key(linux))
    feats = REFERENCE_FEATURES - {c.name for c in changes if c.kind == "feature"}
    calls = REFERENCE_HYPERCALLS - {c.name for c in changes if c.kind == "hypercall"}
    if _key(linux) < (2, 6, 35):
        # offered by KVM of that time, deprecated since; Linux 6.x guests ignore it
        feats |= {"MMU_OP"}
        changes += (KvmChange("feature", "MMU_OP", True,
                              "cpuid.rst KVM_FEATURE_MMU_OP (deprecated); Linux 2.6.34 (approx.)",
                              "ignored by Linux 6.x guests"),)
    sig_eax = 0x40000001
    if _key(linux) < (2, 6, 35):
        sig_eax = 0
        changes += (KvmChange("signature", "max_leaf_zero", True,
                              "Documentation/kvm/cpuid.txt (2010): 'eax = 0'; cpuid.rst now "
                              "says eax = 0x40000001"),)
    name = f"kvm-{linux}"
    return KvmVersion(name, linux, frozenset(feats), frozenset(calls),
                      None if linux == "6.12" else "kvm-6.12", changes, description, released,
                      signature_eax=sig_eax)


REGISTRY: dict[str, KvmVersion] = {v.name: v for v in (
    _version("2.6.34", "KVM before kvmclock's new MSRs: the guest uses MSRs 0x11/0x12",
             "2010-05"),
    _version("3.9", "KVM before PV EOI: kvmclock, steal time, async PF", "2013-04"),
    _version("4.19", "KVM 4.19 LTS: PV EOI, PV TLB flush, PV send-IPI; no poll control, no "
             "async-PF-by-interrupt", "2018-10"),
    _version("5.10", "KVM 5.10 LTS: async page faults by interrupt, poll control, "
             "PV sched-yield", "2020-12"),
    _version("6.1", "KVM 6.1 LTS (no difference found from 6.12 in cpuid.rst, msr.rst, "
             "hypercalls.rst)", "2022-12"),
    _version("6.12", "KVM 6.12 LTS, the reference", "2024-11"),
)}


def builtin_names() -> list[str]:
    """The built-in KVM versions, oldest first."""
    return sorted(REGISTRY, key=lambda n: _key(REGISTRY[n].linux))


__all__ = ["REGISTRY", "KvmChange", "KvmVersion", "builtin_names"]
