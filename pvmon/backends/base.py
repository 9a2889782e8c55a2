"""The backend interface: one hypervisor ABI at one version.

A backend is pure in its inputs: it sees the guest only through a
:class:`GuestAccess` (which records every byte it reads and writes), keeps its
own state, and answers each call with a result. Events it raises and memory it
writes are what the recorder stores beside the call, so a call can be replayed
against another backend without the guest.

Third-party backends register a factory under the ``pvmon.backends`` entry
point group; the factory takes no arguments and returns a :class:`Backend`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol


class GuestFault(Exception):
    """A backend touched a guest address the guest cannot access. Backends
    turn it into the ABI's own error (Xen: -EFAULT); it never leaves pvmon."""

    def __init__(self, address: int, write: bool = False) -> None:
        super().__init__(f"guest {'write' if write else 'read'} fault at {address:#x}")
        self.address = address
        self.write = write


class GuestAccess(Protocol):
    """How a backend reads and writes the guest. Virtual addresses go through
    the guest's current page tables with kernel privilege; machine addresses
    are frame << 12; ``walk`` translates a virtual address to ``(pa,
    machine address of its L1 entry)``. Every method raises
    :class:`GuestFault` on a bad address."""

    def read(self, va: int, size: int) -> bytes: ...
    def write(self, va: int, data: bytes) -> None: ...
    def read_machine(self, ma: int, size: int) -> bytes: ...
    def write_machine(self, ma: int, data: bytes) -> None: ...
    def walk(self, va: int) -> tuple[int, int]: ...


class Backend(ABC):
    """One hypervisor ABI (``abi``: "xen", "kvm", "vmi", "lguest") at one
    ``version``. ``name`` is how users select it (``xen-4.17``)."""

    abi: str = ""
    name: str = ""
    version: str = ""

    @abstractmethod
    def describe(self) -> dict:
        """What this backend is and how it differs from its base: a dict with
        ``name``, ``abi``, ``version``, ``base`` and ``differences`` (a list of
        ``{"what", "source"}``)."""
