"""The Xen PVH platform: a Xen guest on the HVM platform, reaching Xen with
``vmcall``, as one :class:`~pvmon.backends.base.GuestKind`, :data:`XEN_PVH`,
which the registry returns for backends of the "xen" ABI in mode "pvh"
(:func:`pvmon.backends.registry.guest_kind`).

Its modules: :mod:`~pvmon.backends.xen.pvh.builder` (the PVH domain builder:
hvm_start_info, memory map, ACPI tables, the 32-bit entry),
:mod:`~pvmon.backends.xen.pvh.vcpu` (the upcall vector, idling),
:mod:`~pvmon.backends.xen.pvh.hvm` (hvm_op and the auto-translated
memory_op sub-ops, a mixin of :class:`~pvmon.backends.xen.backend.XenBackend`).
The dispatch layer is :mod:`pvmon.dispatch.xen_pvh` over the HVM platform's
:mod:`pvmon.dispatch.hvm`. Sources: xen.git ``docs/misc/pvh.pandoc`` and
Linux ``arch/x86/platform/pvh/`` (see ``docs/pvh.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvmon.backends.base import Backend, first_bad_int_field, layout_from_fields


class XenPvhGuest:
    """The :class:`~pvmon.backends.base.GuestKind` of 64-bit Xen PVH guests."""

    name = "xen-pvh"
    mode = "pvh"
    #: How the guest enters Xen (trace header ``guest.mechanism``).
    mechanism = "vmcall"
    #: What trace headers record as ``machine.cpuid_policy`` (docs/trace-format.md).
    cpuid_policy = "xen-pvh-v1"

    def dispatch_class(self) -> type:
        """:class:`pvmon.dispatch.xen_pvh.XenPvhDispatch`."""
        from pvmon.dispatch.xen_pvh import XenPvhDispatch
        return XenPvhDispatch

    def load_kernel(self, path: Path) -> Any:
        """A :class:`~pvmon.backends.xen.builder.KernelImage` with a
        PHYS32_ENTRY note; raises GuestImageError otherwise."""
        from pvmon.backends.xen import builder
        from pvmon.errors import GuestImageError
        kernel = builder.load_kernel(Path(path))
        if not isinstance(kernel.notes.get("PHYS32_ENTRY"), int):
            raise GuestImageError(f"{path}: no XEN_ELFNOTE_PHYS32_ENTRY note: this kernel "
                                  "cannot boot as a PVH guest (boot it with --mode pv)")
        return kernel

    def extra_bytes_for(self, ram_bytes: int) -> int:
        from pvmon.backends.xen.pvh import builder
        return builder.extra_bytes_for(ram_bytes)

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        """:func:`pvmon.backends.xen.pvh.builder.build`: a
        :class:`~pvmon.backends.xen.pvh.builder.PvhLayout`."""
        from pvmon.backends.xen.pvh import builder
        return builder.build(machine, kernel, cmdline, initrd)

    def layout_from(self, recorded: dict) -> Any | None:
        from pvmon.backends.xen.pvh.builder import PvhLayout
        return layout_from_fields(PvhLayout, recorded)

    def layout_problem(self, recorded: dict, memory: int) -> tuple[str, Any, str] | None:
        """The first implausible field of a PVH header's ``layout`` map, or None."""
        return first_bad_int_field(recorded, 64, frozenset({"extras", "mode"}))

    def prepare(self, backend: Backend, kernel: Any) -> None:
        """A PVH guest has no PV hypercall page. Raises BackendError when the
        backend's Xen cannot run PVH domUs (capability ``pvh_domu``: 4.10 on)."""
        ver = getattr(backend, "ver", None)
        if ver is not None and "pvh_domu" not in ver.capabilities:
            from pvmon.errors import BackendError
            raise BackendError(f"backend {backend.name!r} cannot run PVH guests: PVH domUs "
                               "are supported from Xen 4.10 (SUPPORT.md@RELEASE-4.10.0)")
        backend.hypercall_page = None


#: The one Xen PVH guest kind.
XEN_PVH = XenPvhGuest()
