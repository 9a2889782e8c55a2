"""A guest's interface to its host by family, for ``pvmon diff`` of a KVM
trace against another (a Xen PV trace of the same kernel, or another KVM
release): hypercalls, CPUID leaves, MSRs, port I/O and MMIO by device,
interrupts by vector, idling, console, exceptions the hypervisor handled.

:func:`family` names one recorded event (docs/trace-format.md) as
``(family, item)``; :func:`is_hvm` says whether a trace's events include the
HVM platform's kinds (the family table is shown only then, so Xen PV diffs
print as before)."""

from __future__ import annotations

from pvmon.backends.kvm.abi import MSR_NAMES

HVM_KINDS = frozenset({"msr", "io", "io_run", "mmio", "irq", "halt"})

#: Architectural MSRs a Linux guest touches, by name (Intel SDM vol. 4).
ARCH_MSRS = {0x10: "IA32_TSC", 0x1B: "IA32_APIC_BASE", 0x3A: "IA32_FEATURE_CONTROL",
             0x8B: "IA32_BIOS_SIGN_ID", 0xFE: "IA32_MTRRCAP", 0x1A0: "IA32_MISC_ENABLE",
             0x277: "IA32_PAT", 0x6E0: "IA32_TSC_DEADLINE", 0xC0000080: "EFER",
             0xC0000081: "STAR", 0xC0000082: "LSTAR", 0xC0000083: "CSTAR",
             0xC0000084: "SFMASK", 0xC0000100: "FS_BASE", 0xC0000101: "GS_BASE",
             0xC0000102: "KERNEL_GS_BASE", 0xC0000103: "TSC_AUX"}


def _port(port: int) -> str:
    if 0x3F8 <= port < 0x400:
        return "COM1 8250 UART (0x3f8-0x3ff)"
    if port in (0x60, 0x64):
        return "i8042 (0x60, 0x64)"
    if port == 0x80:
        return "port 0x80 (I/O delay)"
    return f"port {port:#x}"


def _mmio(addr: int) -> str:
    page = addr & ~0xFFF
    if page == 0xFEE00000:
        return "local APIC (0xfee00000)"
    if page == 0xFEC00000:
        return "I/O APIC (0xfec00000)"
    return "open bus"


def family(ev: dict) -> tuple[str, str] | None:
    """``(family, item)`` of one event, or None for bookkeeping events
    (``exit``, ``tsc_run``). An ``io_run`` stands for several events:
    :func:`family_counts` names each of its reads."""
    k = ev.get("k")
    try:
        if k == "hc":
            return "hypercall", f"{ev.get('abi', '?')} {ev.get('name')}"
        if k == "cpuid":
            leaf = int(ev.get("leaf", 0))
            if 0x40000000 < leaf < 0x40010000 and not leaf & 0xFF:
                return "cpuid", "hypervisor base scan (0x40000100-0x4000ff00)"
            return "cpuid", f"leaf {leaf:#x}"
        if k == "msr":
            msr = int(ev.get("msr", 0))
            name = MSR_NAMES.get(msr) or ARCH_MSRS.get(msr) or f"{msr:#x}"
            return "msr", f"{name} {ev.get('dir')}" + (" #GP" if ev.get("gp") else "")
        if k == "io":
            return "port I/O", _port(int(ev.get("port", 0)))
        if k == "mmio":
            return "MMIO", _mmio(int(ev.get("addr", 0)))
        if k == "irq":
            return "interrupt", f"vector {int(ev.get('vec', 0)):#x}"
        if k == "halt":
            return "idle", "hlt, interrupts " + ("on" if ev.get("if") else "off")
        if k == "upcall":
            return "interrupt", "Xen event upcall"
        if k == "fault":
            return "exception", f"vector {ev.get('vec')} (through the hypervisor)"
        if k == "con":
            return "console", f"{ev.get('dir')} {ev.get('ch')}"
        if k == "syscall":
            return "syscall", "guest system call"
    except (TypeError, ValueError):
        return k or "?", "malformed"
    return None


def family_counts(ev: dict) -> list[tuple[tuple[str, str], int]]:
    """``[((family, item), accesses)]`` of one event: :func:`family` once, or
    for an ``io_run`` (trace format version 4) each port it read with the
    number of reads, so a run counts as the ``io`` events it stands for."""
    if ev.get("k") == "io_run":
        ports = ev.get("port")
        if not isinstance(ports, list):
            return [(("port I/O", "malformed"), 1)]
        counts: dict[tuple[str, str], int] = {}
        for p in ports:
            key = ("port I/O", _port(p) if type(p) is int else "malformed")
            counts[key] = counts.get(key, 0) + 1
        return list(counts.items())
    fam = family(ev)
    return [] if fam is None else [(fam, 1)]


def is_hvm(kinds) -> bool:
    """True when the event kinds include the HVM platform's."""
    return bool(HVM_KINDS & set(kinds))


__all__ = ["family", "family_counts", "is_hvm"]
