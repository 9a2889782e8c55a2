"""The Xen PV platform: what a 64-bit Xen PV guest needs beyond the Xen ABI's
hypercalls (its loader and domain builder, its dispatch layer), as one
:class:`~pvmon.backends.base.GuestKind`, :data:`XEN_PV`, which the registry
returns for backends of the "xen" ABI (:func:`pvmon.backends.registry.guest_kind`).

Importing this package is cheap: the builder and the dispatch layer are
imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvmon.backends.base import Backend


class XenPvGuest:
    """The :class:`~pvmon.backends.base.GuestKind` of 64-bit Xen PV guests:
    the PV ELF loader and domain builder (:mod:`pvmon.backends.xen.builder`),
    the Xen PV dispatch layer (:class:`pvmon.dispatch.xen.XenPvDispatch`)."""

    name = "xen-pv"
    #: What trace headers record as ``machine.cpuid_policy`` (docs/trace-format.md).
    cpuid_policy = "xen-pv-v1"

    def dispatch_class(self) -> type:
        """:class:`pvmon.dispatch.xen.XenPvDispatch`."""
        from pvmon.dispatch.xen import XenPvDispatch
        return XenPvDispatch

    def load_kernel(self, path: Path) -> Any:
        """A :class:`~pvmon.backends.xen.builder.KernelImage`; raises
        GuestImageError for an image that is not a 64-bit Xen PV kernel."""
        from pvmon.backends.xen import builder
        return builder.load_kernel(Path(path))

    def extra_bytes_for(self, ram_bytes: int) -> int:
        """Bytes beyond RAM for the hypervisor's frames (M2P, GDT, grant tables)."""
        from pvmon.backends.xen import builder
        return builder.extra_bytes_for(ram_bytes)

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        """:func:`pvmon.backends.xen.builder.build`: a
        :class:`~pvmon.backends.xen.builder.Layout`."""
        from pvmon.backends.xen import builder
        return builder.build(machine, kernel, cmdline, initrd)

    def layout_from(self, recorded: dict) -> Any | None:
        """A :class:`~pvmon.backends.xen.builder.Layout` from a header's
        ``layout`` map (``extras`` may be missing), None if a field is."""
        from dataclasses import fields

        from pvmon.backends.xen.builder import Layout
        names = {f.name for f in fields(Layout)}
        if isinstance(recorded, dict) and names - {"extras"} <= set(recorded):
            try:
                return Layout(**{k: v for k, v in recorded.items() if k in names})
            except TypeError:
                pass
        return None

    def prepare(self, backend: Backend, kernel: Any) -> None:
        """Sets ``backend.hypercall_page`` (None when the kernel has no
        hypercall page and makes calls by ``syscall``)."""
        backend.hypercall_page = kernel.hypercall_page


#: The one Xen PV guest kind.
XEN_PV = XenPvGuest()
