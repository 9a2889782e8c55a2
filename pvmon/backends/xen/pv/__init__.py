"""The Xen PV platform: what a 64-bit Xen PV guest needs beyond the Xen ABI's
hypercalls (its loader and domain builder, its dispatch layer), as one
:class:`~pvmon.backends.base.GuestKind`, :data:`XEN_PV`, which the registry
returns for backends of the "xen" ABI (:func:`pvmon.backends.registry.guest_kind`).

Its modules: :mod:`~pvmon.backends.xen.pv.vcpu` (the PV vCPU: trap table,
bounce frames, iret, kernel/user mode), :mod:`~pvmon.backends.xen.pv.cpu`
and :mod:`~pvmon.backends.xen.pv.mmu` (the PV-only hypercalls, mixins of
:class:`~pvmon.backends.xen.backend.XenBackend`), and
:mod:`~pvmon.backends.xen.pv.ptwr` (writable page tables). Still outside it:
the PV domain builder (:mod:`pvmon.backends.xen.builder`) and the Xen PV
dispatch layer (:mod:`pvmon.dispatch.xen`).

Importing this package is cheap: the builder and the dispatch layer are
imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvmon.backends.base import Backend, layout_from_fields


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
        from pvmon.backends.xen.builder import Layout
        return layout_from_fields(Layout, recorded)

    def layout_problem(self, recorded: dict, memory: int) -> tuple[str, Any, str] | None:
        """The first field of a header's ``layout`` map that is not where the
        builder puts it for ``memory`` bytes of RAM, as ``(field, value,
        what it should be)``; None if every field present is plausible
        (open loop builds its scratch domain from it)."""
        from dataclasses import fields

        from pvmon.backends.xen import abi, builder
        from pvmon.units import PAGE_SIZE, size_text

        nr_pages = memory // PAGE_SIZE
        phys = memory + builder.extra_bytes_for(memory)
        m2p_pages = -(-(phys // PAGE_SIZE) * 8 // PAGE_SIZE)
        spans = {"gdt_ma": builder.GDT_PAGES, "grant_ma": builder.GRANT_FRAMES,
                 "m2p_ma": m2p_pages}
        for f in fields(builder.Layout):
            name = f.name
            if name == "extras" or name not in recorded:
                continue
            v = recorded[name]
            if type(v) is not int:
                return name, v, "an integer"
            if name == "nr_pages":
                ok, where = v == nr_pages, f"machine.memory's {nr_pages} pages"
            elif name.endswith("_ma"):
                top = phys - spans.get(name, 1) * PAGE_SIZE
                ok = v % PAGE_SIZE == 0 and memory <= v <= top
                where = f"a page of the hypervisor area, {memory:#x} to {top:#x}"
            elif name.endswith("_pfn"):
                ok, where = 0 <= v < nr_pages, f"a guest frame, 0 to {nr_pages - 1}"
            elif name == "nr_pt_frames":
                ok = 0 < v <= nr_pages - recorded.get("pt_base_pfn", 0)
                where = "the frames of guest RAM"
            elif name == "mod_len":
                ok, where = 0 <= v <= memory, f"0 to machine.memory ({size_text(memory)})"
            elif name.endswith("_evtchn"):
                ok, where = 0 < v < abi.EVTCHN_2L_NR_CHANNELS, \
                    f"an event channel, 1 to {abi.EVTCHN_2L_NR_CHANNELS - 1}"
            else:                                   # guest-virtual addresses
                ok, where = 0 <= v < 1 << 64, "a 64-bit address"
            if not ok:
                return name, v, where
        return None

    def prepare(self, backend: Backend, kernel: Any) -> None:
        """Sets ``backend.hypercall_page`` (None when the kernel has no
        hypercall page and makes calls by ``syscall``)."""
        backend.hypercall_page = kernel.hypercall_page


#: The one Xen PV guest kind.
XEN_PV = XenPvGuest()
