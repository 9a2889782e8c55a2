"""The code and stack segments a 64-bit Xen PV vCPU runs with, as the guest sees them.

Xen runs a 64-bit PV guest's kernel and user mode both in ring 3, with the
flat selectors of its reserved GDT area (``xen/arch/x86/desc.c@stable-4.17``
``boot_gdt``; ``xen/include/public/arch-x86/xen-x86_64.h``): FLAT_RING3_CS32
0xe023 (32-bit code, compatibility mode), FLAT_RING3_SS64 0xe02b (data, also
the 32-bit SS and DS), FLAT_RING3_CS64 0xe033 (64-bit code), all DPL 3.

* ``HYPERVISOR_iret`` loads ``cs | 3`` and ``ss | 3`` from the frame, in
  either mode (``do_iret``, ``xen/arch/x86/pv/iret.c``; the hardware IRETQ of
  ``restore_all_guest`` that follows loads their descriptors): FLAT_RING3_CS32
  or a guest GDT selector of a 32-bit code segment runs the process in
  compatibility mode. A selector that names no usable descriptor makes that
  IRETQ fault, and the guest gets the fault at the iret's target
  (:meth:`Segments.iret_fault`; ``pv/vcpu.py`` ``PvVcpu.iret``).
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
from pvmon.engine.machine import PAGE_SIZE

#: Xen's boot_gdt descriptors by selector (xen/arch/x86/desc.c@stable-4.17).
FLAT_DESCRIPTORS = {E.FLAT_RING3_CS64: DESC_CODE64, E.FLAT_RING3_CS32: DESC_CODE32,
                    E.FLAT_RING3_SS64: DESC_DATA}
#: The rest of Xen's reserved GDT page (boot_gdt, by selector without RPL):
#: ring-0 64-bit code and data, the TSS, the per-CPU entry; every other entry
#: (0xe018, 0xe038, the LDT slot while no LDT is loaded...) is zero.
XEN_RESERVED = {0xE008: 0x00AF9B000000FFFF, 0xE010: 0x00CF93000000FFFF,
                0xE040: 0x00008B0000000067, 0xE060: 0x0000910000000000,
                **{sel & ~3: d for sel, d in FLAT_DESCRIPTORS.items()}}
#: The first selector of Xen's reserved GDT area (FIRST_RESERVED_GDT_BYTE) and
#: the GDT limit Xen loads (LAST_RESERVED_GDT_BYTE; xen/arch/x86/include/asm/desc.h).
FIRST_RESERVED_SEL, GDT_LIMIT = 0xE000, 0xEFFF
TRAP_no_segment, TRAP_stack_error, TRAP_gp_fault = 11, 12, 13
_DPL = 3 << 45
_P, _S, _CODE, _C, _W, _L, _G = 1 << 47, 1 << 44, 1 << 43, 1 << 42, 1 << 41, 1 << 53, 1 << 55


def is_code32(desc: int) -> bool:
    """``desc`` is a code segment descriptor without the L bit (compatibility mode)."""
    return bool(desc & _CODE) and not desc & _L


def _limit(desc: int) -> int:
    """The byte limit of a code or data descriptor (G scales it by 4 KiB)."""
    lim = (desc & 0xFFFF) | ((desc >> 32) & 0xF0000)
    return (lim << 12) | 0xFFF if desc & _G else lim


def _canonical(va: int) -> bool:
    return (va >> 47) in (0, 0x1FFFF)


class Segments:
    """Loads the engine's CS and SS for one PV vCPU's mode switches, from
    Xen's flat descriptors or the vCPU's GDT as pvmon keeps it
    (``layout.gdt_ma``: the guest's frames, then Xen's reserved entries).
    ``vcpu``: the vCPU whose GDT frames bound the guest area (None: every
    guest entry pvmon's copy holds is read)."""

    def __init__(self, machine, layout, backend, vcpu=None) -> None:
        self.m = machine
        self.gdt_ma = layout.gdt_ma
        self.loader = SegmentLoader(machine.uc)
        self._b = backend
        self._vcpu = vcpu

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

    def raw_descriptor(self, selector: int) -> int | None:
        """The 8 bytes the CPU reads for ``selector`` (RPL ignored) in the GDT
        Xen loads for the vCPU: the guest's frames below FIRST_RESERVED_SEL
        (zero past them: pv_set_gdt maps the zero page there), Xen's
        :data:`XEN_RESERVED` page above. None when there is none to read: the
        null selector or beyond the GDT limit. An LDT selector reads the
        vCPU's LDT (:func:`ldt.descriptor`: its page mapped as Xen maps it on
        first use; None when it cannot be, past its limit, or with no LDT)."""
        if selector & 4:
            # the vCPU's LDT, its page faulted in as Xen's IRETQ would (pv/ldt.py)
            return ldt.descriptor(self._b, self._vcpu or self._b.vcpu, selector)
        index = selector & 0xFFF8
        if not index or index > GDT_LIMIT - 7:
            return None
        if index >= FIRST_RESERVED_SEL:
            return XEN_RESERVED.get(index, 0)
        v = self._vcpu
        if v is not None and index >= len(v.gdt_frames) * PAGE_SIZE:
            return 0
        try:
            (desc,) = struct.unpack("<Q", self.m.read_phys(self.gdt_ma + index, 8))
        except ValueError:      # outside machine memory
            return 0
        return desc

    def descriptor(self, selector: int, code: bool) -> int | None:
        """The descriptor ``selector`` (RPL ignored) names if it is a present
        DPL-3 code segment (``code``) or writable data segment: Xen's flat ones,
        the vCPU's LDT for a selector with TI=1 (:func:`ldt.descriptor`), else
        the vCPU's GDT. None otherwise (null, beyond the table, an LDT page
        that cannot be mapped, another type)."""
        sel = selector | 3
        desc = FLAT_DESCRIPTORS.get(sel)
        if desc is None:
            desc = self.raw_descriptor(sel)
            if desc is None:
                return None
        want = _CODE if code else _W
        if desc & (_P | _S | _DPL | _CODE | want) != _P | _S | _DPL | (_CODE if code else 0) | want:
            return None
        return desc

    def iret_fault(self, cs: int, ss: int, rip: int) -> tuple[int, int] | None:
        """The exception the IRETQ Xen returns to the guest with raises
        (iret_exit_to_guest, x86_64/entry.S@stable-4.17), for the frame ``cs``,
        ``ss`` (both with RPL 3, as do_iret forces) and ``rip``, in the SDM's
        order for IRET to an outer level (vol. 2, IRET): ``(vector, error
        code)``, or None when it loads them.

        * CS: null -> #GP(0); no descriptor (beyond the limit, an LDT selector
          with no LDT), not a code segment, or DPL != 3 (RPL) for a
          non-conforming one (> 3 never happens for a conforming one) ->
          #GP(CS); not present -> #NP(CS).
        * SS: null -> #GP(0) (a null SS is allowed only for CPL < 3); no
          descriptor, not a writable data segment, or DPL != 3 -> #GP(SS);
          not present -> #SS(SS).
        * RIP: non-canonical for a 64-bit CS, beyond the limit of a 32-bit
          one -> #GP(0)."""
        if cs in FLAT_DESCRIPTORS and ss == E.FLAT_RING3_SS64 and cs != ss:
            dcs = FLAT_DESCRIPTORS[cs]
        else:
            if not cs & 0xFFFC:
                return TRAP_gp_fault, 0
            dcs = self.raw_descriptor(cs)
            err = cs & 0xFFFC
            if dcs is None or dcs & (_S | _CODE) != _S | _CODE:
                return TRAP_gp_fault, err
            if not dcs & _C and dcs & _DPL != _DPL:
                return TRAP_gp_fault, err
            if not dcs & _P:
                return TRAP_no_segment, err
            if not ss & 0xFFFC:
                return TRAP_gp_fault, 0
            dss = self.raw_descriptor(ss)
            err = ss & 0xFFFC
            if dss is None or dss & (_S | _CODE | _W) != _S | _W or dss & _DPL != _DPL:
                return TRAP_gp_fault, err
            if not dss & _P:
                return TRAP_stack_error, err
        if dcs & _L:
            return None if _canonical(rip) else (TRAP_gp_fault, 0)
        return None if rip <= _limit(dcs) else (TRAP_gp_fault, 0)

    def to_user(self, cs: int, ss: int) -> tuple[int, int]:
        """Load ``cs | 3`` and ``ss | 3`` for guest user mode (CPL 3); the
        caller has checked them with :meth:`iret_fault`. Returns the (cs, ss)
        loaded."""
        cs, ss = cs | 3, ss | 3
        dcs = FLAT_DESCRIPTORS.get(cs) or self.raw_descriptor(cs) or DESC_CODE64
        dss = FLAT_DESCRIPTORS.get(ss) or self.raw_descriptor(ss) or DESC_DATA
        self.loader.load("ss", ss, dss)
        self.loader.load("cs", cs, dcs)
        return cs, ss

    def to_kernel(self) -> None:
        """Load the kernel's CS and SS: 64-bit code and data with DPL 0 (CPL 0)."""
        self.loader.load("ss", self.kernel_ss, DESC_DATA & ~_DPL)
        self.loader.load("cs", self.kernel_cs, DESC_CODE64 & ~_DPL)

    def to_kernel_frame(self, cs: int, ss: int) -> None:
        """Load ``cs`` and ``ss`` (RPL 3, checked with :meth:`iret_fault`) for
        the guest kernel, as an iret that stays in kernel mode does (do_iret
        forces RPL 3, the IRETQ loads their descriptors): the descriptors
        with DPL 0, so the engine stays at CPL 0 (the ring switch)."""
        dcs = FLAT_DESCRIPTORS.get(cs) or self.raw_descriptor(cs) or DESC_CODE64
        dss = FLAT_DESCRIPTORS.get(ss) or self.raw_descriptor(ss) or DESC_DATA
        self.loader.load("ss", ss, dss & ~_DPL)
        self.loader.load("cs", cs, dcs & ~_DPL)


__all__ = ["DESC_CODE32", "DESC_CODE64", "DESC_DATA", "FLAT_DESCRIPTORS", "XEN_RESERVED",
           "Segments", "is_code32"]
