"""Code bytes of a guest kernel read from its image, for traces and divergences.

A trace holds no guest memory image, so the player and the divergence view
disassemble from the vmlinux ELF the trace names (matched by sha256): bytes
of the PT_LOAD segment holding a kernel virtual address. Code the kernel
patched at boot (alternatives, static keys) shows as it is in the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from elftools.elf.elffile import ELFFile

from pvmon.engine.disasm import disassemble_around
from pvmon.errors import PvmonError
from pvmon.guests.catalog import GuestImage


class ImageCode:
    """Code of one guest image. ``read(va, n)`` -> bytes (short or empty
    outside the image); ``symbolize(va)`` -> ``sym+0xoff``."""

    def __init__(self, image: GuestImage) -> None:
        self.image = image
        self._segments: list[tuple[int, bytes]] = []
        with open(image.vmlinux, "rb") as fh:
            elf = ELFFile(fh)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                    self._segments.append((seg["p_vaddr"], seg.data()))

    def read(self, va: int, size: int) -> bytes:
        for start, data in self._segments:
            if start <= va < start + len(data):
                off = va - start
                return data[off:off + size]
        return b""

    def window(self, rip: int, before: int = 96, after: int = 64) -> tuple[int, bytes]:
        """``(base, bytes)`` around ``rip``, as much of it as the image holds."""
        for b in (before, rip & 0xFFF, 0):
            data = self.read(rip - b, b + after)
            if len(data) > b:
                return rip - b, data
        return rip, b""

    @property
    def symbolize(self) -> Callable[[int], str]:
        return self.image.symbols().format

    def func_start(self, rip: int) -> int | None:
        """Address of the symbol RIP lies in, if known."""
        hit = self.image.symbols().lookup(rip)
        return rip - hit[1] if hit else None


def image_for_header(header: dict[str, Any]) -> ImageCode | None:
    """The guest image a trace was recorded from, if it is here with the same
    sha256 (built-in guests, cached Debian kernels); else None."""
    from pvmon.guests.catalog import resolve

    g = header.get("guest") if isinstance(header, dict) else None
    if not isinstance(g, dict) or not isinstance(g.get("name"), str):
        return None
    try:
        img = resolve(g["name"])
        if g.get("sha256") and img.sha256 != g["sha256"]:
            return None
        return ImageCode(img)
    except (PvmonError, OSError, ValueError):
        return None


def code_at(guest, rip: int) -> tuple[str, list]:
    """``(symbol, [(address, size, text)])`` around ``rip`` from the guest's
    ELF image (3 instructions before, 3 after); empty when unavailable."""
    try:
        code = ImageCode(guest)
        sym = code.symbolize(rip)
        base, data = code.window(rip)
        insns = disassemble_around(data, base, rip, before=3, after=3,
                                   func_start=code.func_start(rip), symbolize=code.symbolize)
    except (OSError, PvmonError, ValueError):
        return "", []
    return sym, [(i.address, i.size, i.text) for i in insns]
