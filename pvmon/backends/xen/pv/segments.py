"""The code and stack segments a 64-bit Xen PV vCPU runs with, as the guest sees them.

Xen runs a 64-bit PV guest's kernel and user mode both in ring 3, with the
flat selectors of its reserved GDT area (``xen/arch/x86/desc.c@stable-4.17``
``boot_gdt``; ``xen/include/public/arch-x86/xen-x86_64.h``): FLAT_RING3_CS32
0xe023 (32-bit code, compatibility mode), FLAT_RING3_SS64 0xe02b (data, also
the 32-bit SS and DS), FLAT_RING3_CS64 0xe033 (64-bit code), all DPL 3.

* ``HYPERVISOR_iret`` to user mode loads ``cs | 3`` and ``ss | 3`` from the
  frame (``do_iret``, ``xen/arch/x86/pv/iret.c``; the hardware IRETQ that
  follows loads their descriptors): FLAT_RING3_CS32 or a guest GDT selector of
  a 32-bit code segment runs the process in compatibility mode.
* Event, exception and ``int $0x80`` delivery enter the kernel with
  FLAT_KERNEL_CS/SS (``create_bounce_frame``, ``x86_64/entry.S``), the frame
  holding the interrupted CS and SS.

pvmon runs the kernel at CPL 0 (``pv/vcpu.py`` says why), so the hidden part of
the kernel's CS and SS has DPL 0 (an SS's DPL is the engine's CPL). The
selectors loaded with it are Xen's FLAT_KERNEL_CS64/SS64 (0xe033/0xe02b: what
the kernel reads from %cs and %ss, and pushes) when the engine's ring switch
is on (``hvm.PvHooks.set_ring3``, set by ``pvmon/dispatch/xen.py``): then an
IRETQ or far RET the kernel executes to those RPL-3 selectors is the
same-privilege return it is under Xen, not a return to CPL 3. Without that
switch (an engine without the PV patch) they are pvmon's internal
ENGINE_KERNEL_CS/SS (0xe010/0xe018, ``builder.py``), DPL 0 in the GDT.
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi as E
from pvmon.backends.xen.builder import (
    DESC_CODE32,
    DESC_CODE64,
    DESC_DATA,
    ENGINE_KERNEL_CS,
    ENGINE_KERNEL_SS,
)
from pvmon.backends.xen.pv import ldt
from pvmon.engine.hvm import SegmentLoader

#: Xen's boot_gdt descriptors by selector (xen/arch/x86/desc.c@stable-4.17).
FLAT_DESCRIPTORS = {E.FLAT_RING3_CS64: DESC_CODE64, E.FLAT_RING3_CS32: DESC_CODE32,
                    E.FLAT_RING3_SS64: DESC_DATA}
_DPL = 3 << 45
_P, _S, _CODE, _W, _L = 1 << 47, 1 << 44, 1 << 43, 1 << 41, 1 << 53


def is_code32(desc: int) -> bool:
    """``desc`` is a code segment descriptor without the L bit (compatibility mode)."""
    return bool(desc & _CODE) and not desc & _L


class Segments:
    """Loads the engine's CS and SS for one PV vCPU's mode switches, from
    Xen's flat descriptors or the vCPU's GDT as pvmon keeps it
    (``layout.gdt_ma``: the guest's frames, then Xen's reserved entries)."""

    def __init__(self, machine, layout, backend) -> None:
        self.m = machine
        self.gdt_ma = layout.gdt_ma
        self.loader = SegmentLoader(machine.uc)
        self._b = backend
        #: The PvVcpu these are, whose LDT an LDT selector names (set by it).
        self.vcpu = None

    @property
    def xen_selectors(self) -> bool:
        """The kernel runs with Xen's selectors: the backend's
        ``xen_kernel_selectors``, which the dispatch sets only with the
        engine's ring switch on (else an IRETQ at CPL 0 to RPL 3 would drop
        to CPL 3)."""
        return getattr(self._b, "xen_kernel_selectors", False)

    @property
    def kernel_cs(self) -> int:
        """The kernel's CS selector (what reading %cs gives it)."""
        return E.FLAT_KERNEL_CS64 if self.xen_selectors else ENGINE_KERNEL_CS

    @property
    def kernel_ss(self) -> int:
        """The kernel's SS selector."""
        return E.FLAT_KERNEL_SS64 if self.xen_selectors else ENGINE_KERNEL_SS

    def descriptor(self, selector: int, code: bool) -> int | None:
        """The descriptor ``selector`` (RPL ignored) names if it is a present
        DPL-3 code segment (``code``) or writable data segment: Xen's flat ones,
        the vCPU's LDT for a selector with TI=1 (:func:`ldt.descriptor`), else
        the vCPU's GDT. None otherwise (null, beyond the table, an LDT page
        that cannot be mapped, another type)."""
        sel = selector | 3
        if sel in FLAT_DESCRIPTORS:
            desc = FLAT_DESCRIPTORS[sel]
        elif sel & 4:
            # the vCPU's LDT, its page faulted in as Xen's IRETQ would (pv/ldt.py)
            desc = ldt.descriptor(self._b, self.vcpu or self._b.vcpu, sel)
            if desc is None:
                return None
        elif not sel & ~7:
            return None
        else:
            off = (sel >> 3) * 8
            try:
                (desc,) = struct.unpack("<Q", self.m.read_phys(self.gdt_ma + off, 8))
            except ValueError:      # outside machine memory
                return None
        want = _CODE if code else _W
        if desc & (_P | _S | _DPL | _CODE | want) != _P | _S | _DPL | (_CODE if code else 0) | want:
            return None
        return desc

    def to_user(self, cs: int, ss: int) -> tuple[int, int]:
        """Load ``cs | 3`` and ``ss | 3`` for guest user mode (CPL 3): the
        selectors as given when they name a usable descriptor, else Xen's
        64-bit flat ones (Xen's IRETQ would fault there and deliver the
        failsafe callback: not modelled). Returns the (cs, ss) loaded."""
        cs, ss = cs | 3, ss | 3
        dcs = self.descriptor(cs, code=True)
        if dcs is None:
            cs, dcs = E.FLAT_USER_CS64, DESC_CODE64
        dss = self.descriptor(ss, code=False)
        if dss is None:
            ss, dss = E.FLAT_USER_SS64, DESC_DATA
        self.loader.load("ss", ss, dss)
        self.loader.load("cs", cs, dcs)
        return cs, ss

    def to_kernel(self) -> None:
        """Load the kernel's CS and SS: 64-bit code and data with DPL 0 (CPL 0)."""
        self.loader.load("ss", self.kernel_ss, DESC_DATA & ~_DPL)
        self.loader.load("cs", self.kernel_cs, DESC_CODE64 & ~_DPL)


__all__ = ["DESC_CODE32", "DESC_CODE64", "DESC_DATA", "FLAT_DESCRIPTORS", "Segments",
           "is_code32"]
