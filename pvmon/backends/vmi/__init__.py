"""VMware's VMI (API 3.0, Linux 2.6.21-2.6.36, x86-32) as a pvmon ABI
package: :mod:`~pvmon.backends.vmi.abi` (call numbers, ROM header, flags),
:mod:`~pvmon.backends.vmi.builder` (the option ROM, the entry),
:mod:`~pvmon.backends.vmi.backend` (the ROM's calls),
:mod:`~pvmon.backends.vmi.profiles` (the 3.0 and 2006 ROM rules), the dispatch layer
:mod:`pvmon.dispatch.vmi` on the HVM platform, and the guest kind
:data:`VMI`. See docs/vmi.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvmon.backends.base import Backend, first_bad_int_field, layout_from_fields


class VmiGuest:
    """The :class:`~pvmon.backends.base.GuestKind` of 32-bit VMI guests."""

    name = "vmi"
    mode = None
    mechanism = "rom"
    cpuid_policy = "vmi-v1"

    def dispatch_class(self) -> type:
        from pvmon.dispatch.vmi import VmiDispatch
        return VmiDispatch

    def load_kernel(self, path: Path) -> Any:
        from pvmon.backends.lguest.builder import load_kernel
        k = load_kernel(Path(path))
        k.mechanism = "rom"
        return k

    def extra_bytes_for(self, ram_bytes: int) -> int:
        return 0

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        from pvmon.backends.vmi import builder
        return builder.build(machine, kernel, cmdline, initrd)

    def layout_from(self, recorded: dict) -> Any | None:
        from pvmon.backends.vmi.builder import VmiLayout
        return layout_from_fields(VmiLayout, recorded)

    def layout_problem(self, recorded: dict, memory: int) -> tuple[str, Any, str] | None:
        return first_bad_int_field(recorded, 32)

    def prepare(self, backend: Backend, kernel: Any) -> None:
        backend.hypercall_page = None


#: The one VMI guest kind.
VMI = VmiGuest()
