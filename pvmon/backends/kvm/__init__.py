"""KVM guests: stock Linux on a minimal emulated PC with KVM's paravirtual
interface (CPUID leaves 0x40000000/1, the kvmclock / steal-time / PV-EOI /
async-PF / poll-control MSRs, the ``KVM_HC_*`` hypercalls), versioned by host
Linux release.

Modules: :mod:`~pvmon.backends.kvm.abi` (numbers),
:mod:`~pvmon.backends.kvm.versions` (releases as data),
:mod:`~pvmon.backends.kvm.pvclock` (kvmclock structures),
:mod:`~pvmon.backends.kvm.backend` (the backend and its vCPU),
:mod:`~pvmon.backends.kvm.builder` (the PVH-entry boot). The platform's
devices are in :mod:`pvmon.platforms.hvm` and the dispatch layer is
:mod:`pvmon.dispatch.kvm`. See docs/kvm.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvmon.backends.base import Backend, first_bad_int_field, layout_from_fields

#: The command line a KVM guest gets when the user gives none.
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1"


class KvmGuest:
    """The :class:`~pvmon.backends.base.GuestKind` of 64-bit Linux KVM guests."""

    name = "kvm"
    mode = None
    #: What trace headers record as ``machine.cpuid_policy`` (docs/trace-format.md).
    cpuid_policy = "kvm-pc-v1"
    default_cmdline = DEFAULT_CMDLINE

    def dispatch_class(self) -> type:
        """:class:`pvmon.dispatch.kvm.KvmDispatch`."""
        from pvmon.dispatch.kvm import KvmDispatch
        return KvmDispatch

    def load_kernel(self, path: Path) -> Any:
        """A :class:`~pvmon.backends.xen.builder.KernelImage` with a PVH
        entry note; raises GuestImageError otherwise (one line)."""
        from pvmon.backends.xen import builder
        from pvmon.errors import GuestImageError
        kernel = builder.load_kernel(Path(path))
        if not isinstance(kernel.notes.get("PHYS32_ENTRY"), int):
            raise GuestImageError(f"{path}: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): "
                                  "pvmon boots KVM guests through it (CONFIG_PVH=y)")
        return kernel

    def extra_bytes_for(self, ram_bytes: int) -> int:
        """None needed (0). Raises PvmonError, in one line, for more RAM than
        fits below the PC's 32-bit MMIO hole (the I/O APIC and local APIC
        pages at 0xFEC00000 and 0xFEE00000)."""
        from pvmon.backends.kvm.builder import check_memory
        check_memory(ram_bytes)
        return 0

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        """:func:`pvmon.backends.kvm.builder.build`."""
        from pvmon.backends.kvm import builder
        return builder.build(machine, kernel, cmdline, initrd)

    def layout_from(self, recorded: dict) -> Any | None:
        from pvmon.backends.kvm.builder import KvmLayout
        return layout_from_fields(KvmLayout, recorded)

    def layout_problem(self, recorded: dict, memory: int) -> tuple[str, Any, str] | None:
        """The first implausible field of a KVM header's ``layout`` map, or None."""
        return first_bad_int_field(recorded, 64, frozenset({"extras", "boot"}))

    def prepare(self, backend: Backend, kernel: Any) -> None:
        """No hypercall page on KVM."""
        backend.hypercall_page = None


#: The one KVM guest kind.
KVM_GUEST = KvmGuest()
