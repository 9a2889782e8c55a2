"""KVM's paravirtual interface as a Linux x86 guest sees it: numbers only.

KVM has no hypercall table in the Xen sense: its guest ABI is a surface of
CPUID leaves, paravirtual MSRs, a handful of ``vmcall`` hypercalls and the
emulated devices. This module names that surface; the backend
(:mod:`pvmon.backends.kvm.backend`) gives it behaviour and
:mod:`pvmon.backends.kvm.versions` says which parts each KVM release offers.

Sources (Linux 6.12.19 unless noted; the ABI is append-only, so older
releases have a subset):

* ``Documentation/virt/kvm/x86/cpuid.rst``: leaf 0x40000000 (EAX = highest
  leaf, EBX/ECX/EDX = "KVMKVMKVM\\0\\0\\0"), leaf 0x40000001 (EAX feature bits,
  EDX hints);
* ``Documentation/virt/kvm/x86/msr.rst`` and
  ``arch/x86/include/uapi/asm/kvm_para.h``: the MSR numbers and layouts;
* ``Documentation/virt/kvm/x86/hypercalls.rst`` and
  ``include/uapi/linux/kvm_para.h``: hypercall numbers and error values;
* ``arch/x86/kvm/x86.c`` (``kvm_emulate_hypercall``: -KVM_EPERM from CPL > 0,
  -KVM_ENOSYS for an unknown number; ``kvm_set_msr_common``: the reserved-bit
  checks that raise #GP).
"""

from __future__ import annotations

#: CPUID leaves (cpuid.rst)
KVM_CPUID_SIGNATURE = 0x40000000
KVM_CPUID_FEATURES = 0x40000001
#: "KVMKVMKVM\0\0\0" as EBX, ECX, EDX (kvm_para.h KVM_SIGNATURE)
KVM_SIGNATURE_REGS = (0x4B4D564B, 0x564B4D56, 0x4D)

#: KVM_CPUID_FEATURES EAX bits (uapi asm/kvm_para.h, cpuid.rst)
FEATURE_BITS: dict[str, int] = {
    "CLOCKSOURCE": 0, "NOP_IO_DELAY": 1, "MMU_OP": 2, "CLOCKSOURCE2": 3, "ASYNC_PF": 4,
    "STEAL_TIME": 5, "PV_EOI": 6, "PV_UNHALT": 7, "PV_TLB_FLUSH": 9, "ASYNC_PF_VMEXIT": 10,
    "PV_SEND_IPI": 11, "POLL_CONTROL": 12, "PV_SCHED_YIELD": 13, "ASYNC_PF_INT": 14,
    "MSI_EXT_DEST_ID": 15, "HC_MAP_GPA_RANGE": 16, "MIGRATION_CONTROL": 17,
    "CLOCKSOURCE_STABLE_BIT": 24,
}
#: KVM_CPUID_FEATURES EDX hint bits
HINT_BITS: dict[str, int] = {"REALTIME": 0}

#: Paravirtual MSRs (msr.rst, uapi asm/kvm_para.h)
MSR_KVM_WALL_CLOCK = 0x11
MSR_KVM_SYSTEM_TIME = 0x12
MSR_KVM_WALL_CLOCK_NEW = 0x4B564D00
MSR_KVM_SYSTEM_TIME_NEW = 0x4B564D01
MSR_KVM_ASYNC_PF_EN = 0x4B564D02
MSR_KVM_STEAL_TIME = 0x4B564D03
MSR_KVM_PV_EOI_EN = 0x4B564D04
MSR_KVM_POLL_CONTROL = 0x4B564D05
MSR_KVM_ASYNC_PF_INT = 0x4B564D06
MSR_KVM_ASYNC_PF_ACK = 0x4B564D07
MSR_KVM_MIGRATION_CONTROL = 0x4B564D08

MSR_NAMES: dict[int, str] = {
    MSR_KVM_WALL_CLOCK: "KVM_WALL_CLOCK", MSR_KVM_SYSTEM_TIME: "KVM_SYSTEM_TIME",
    MSR_KVM_WALL_CLOCK_NEW: "KVM_WALL_CLOCK_NEW", MSR_KVM_SYSTEM_TIME_NEW: "KVM_SYSTEM_TIME_NEW",
    MSR_KVM_ASYNC_PF_EN: "KVM_ASYNC_PF_EN", MSR_KVM_STEAL_TIME: "KVM_STEAL_TIME",
    MSR_KVM_PV_EOI_EN: "KVM_PV_EOI_EN", MSR_KVM_POLL_CONTROL: "KVM_POLL_CONTROL",
    MSR_KVM_ASYNC_PF_INT: "KVM_ASYNC_PF_INT", MSR_KVM_ASYNC_PF_ACK: "KVM_ASYNC_PF_ACK",
    MSR_KVM_MIGRATION_CONTROL: "KVM_MIGRATION_CONTROL",
}

#: The feature bit that announces each MSR: a KVM release without the
#: feature does not know the MSR, so the guest gets #GP (kvm_set_msr_common
#: falls through to "unhandled").
MSR_FEATURE: dict[int, str] = {
    MSR_KVM_WALL_CLOCK: "CLOCKSOURCE", MSR_KVM_SYSTEM_TIME: "CLOCKSOURCE",
    MSR_KVM_WALL_CLOCK_NEW: "CLOCKSOURCE2", MSR_KVM_SYSTEM_TIME_NEW: "CLOCKSOURCE2",
    MSR_KVM_ASYNC_PF_EN: "ASYNC_PF", MSR_KVM_STEAL_TIME: "STEAL_TIME",
    MSR_KVM_PV_EOI_EN: "PV_EOI", MSR_KVM_POLL_CONTROL: "POLL_CONTROL",
    MSR_KVM_ASYNC_PF_INT: "ASYNC_PF_INT", MSR_KVM_ASYNC_PF_ACK: "ASYNC_PF_INT",
    MSR_KVM_MIGRATION_CONTROL: "MIGRATION_CONTROL",
}

#: Hypercall numbers (include/uapi/linux/kvm_para.h; 3, 4, 6-8 are PPC/MIPS)
HYPERCALLS: dict[int, str] = {
    1: "vapic_poll_irq", 2: "mmu_op", 5: "kick_cpu", 9: "clock_pairing", 10: "send_ipi",
    11: "sched_yield", 12: "map_gpa_range",
}
HYPERCALL_NUMBERS: dict[str, int] = {v: k for k, v in HYPERCALLS.items()}
#: No sub-ops in KVM's hypercalls (for :func:`pvmon.backends.registry.abi_names`).
SUBOPS: dict[str, dict[int, str]] = {}

#: Error values (include/uapi/linux/kvm_para.h): returned negated in RAX.
KVM_ENOSYS = 1000
KVM_EFAULT = 14
KVM_EINVAL = 22
KVM_E2BIG = 7
KVM_EPERM = 1
KVM_EOPNOTSUPP = 95
ERRNO_NAMES: dict[int, str] = {KVM_ENOSYS: "KVM_ENOSYS", KVM_EFAULT: "KVM_EFAULT",
                               KVM_EINVAL: "KVM_EINVAL", KVM_E2BIG: "KVM_E2BIG",
                               KVM_EPERM: "KVM_EPERM", KVM_EOPNOTSUPP: "KVM_EOPNOTSUPP"}

#: pvclock_vcpu_time_info.flags (arch/x86/include/asm/pvclock-abi.h)
PVCLOCK_TSC_STABLE_BIT = 1 << 0
#: MSR_KVM_SYSTEM_TIME / ASYNC_PF / STEAL_TIME / PV_EOI enable bit
KVM_MSR_ENABLED = 1


def hypercall_name(nr: int) -> str:
    """The name of hypercall ``nr`` ("kvm_hc_<nr>" for an unknown one)."""
    return HYPERCALLS.get(nr, f"kvm_hc_{nr}")


__all__ = ["ERRNO_NAMES", "FEATURE_BITS", "HYPERCALLS", "HYPERCALL_NUMBERS", "MSR_FEATURE",
           "MSR_NAMES", "SUBOPS", "hypercall_name"]
