"""lguest (Rusty Russell's hypervisor, Linux 2.6.23-4.13, x86-32 only) as a
pvmon ABI package: :mod:`~pvmon.backends.lguest.abi` (numbers, layouts,
sources), :mod:`~pvmon.backends.lguest.builder` (the Launcher's boot and the
host's Switcher), :mod:`~pvmon.backends.lguest.backend` (the host's calls and
the Launcher's devices), the dispatch layer :mod:`pvmon.dispatch.lguest` on
the HVM platform, and the guest kind :data:`LGUEST` the registry returns for
backends of the "lguest" ABI. See docs/lguest.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvmon.backends.base import Backend, first_bad_int_field, layout_from_fields


class LguestGuest:
    """The :class:`~pvmon.backends.base.GuestKind` of 32-bit lguest guests."""

    name = "lguest"
    mode = None
    #: How the guest enters the host (trace header ``guest.mechanism``).
    mechanism = "int0x1f"
    cpuid_policy = "lguest-v1"

    def dispatch_class(self) -> type:
        """:class:`pvmon.dispatch.lguest.LguestDispatch`."""
        from pvmon.dispatch.lguest import LguestDispatch
        return LguestDispatch

    def load_kernel(self, path: Path) -> Any:
        from pvmon.backends.lguest import builder
        return builder.load_kernel(Path(path))

    def extra_bytes_for(self, ram_bytes: int) -> int:
        from pvmon.backends.lguest import builder
        return builder.extra_bytes_for(ram_bytes)

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        from pvmon.backends.lguest import builder
        return builder.build(machine, kernel, cmdline, initrd)

    def layout_from(self, recorded: dict) -> Any | None:
        from pvmon.backends.lguest.builder import LguestLayout
        return layout_from_fields(LguestLayout, recorded)

    def layout_problem(self, recorded: dict, memory: int) -> tuple[str, Any, str] | None:
        return first_bad_int_field(recorded, 32)

    def prepare(self, backend: Backend, kernel: Any) -> None:
        """lguest has no hypercall page."""
        backend.hypercall_page = None


class LguestPaeGuest(LguestGuest):
    """lguest with a PAE host and guest (mode "pae"): the Launcher's linear
    mapping and the guest's page tables are PAE (CR4.PAE set by the host,
    as lguest's shadow tables were), SET_PMD exists and SET_PTE takes a
    64-bit entry (EDX low, ESI high) [LGHC], [LGP]."""

    mode = "pae"

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        from pvmon.backends.lguest import builder
        return builder.build(machine, kernel, cmdline, initrd, pae=True)

    def prepare(self, backend: Backend, kernel: Any) -> None:
        backend.hypercall_page = None
        backend.pae = True


#: The lguest guest kinds: non-PAE (the default) and PAE.
LGUEST = LguestGuest()
LGUEST_PAE = LguestPaeGuest()
