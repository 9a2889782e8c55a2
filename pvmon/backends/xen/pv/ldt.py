"""The local descriptor table of a 64-bit Xen PV vCPU, as Xen 4.17 keeps it.

A PV guest cannot load an LDT itself (``lldt`` is privileged); it names one
with ``MMUEXT_SET_LDT`` (linear address, entries) and Xen loads the hardware
LDTR with a descriptor of its own pointing at the vCPU's LDT area in the
per-domain range, ``LDT_VIRT_START(v)``, with limit ``ents * 8 - 1``
(``load_LDT``, xen/arch/x86/include/asm/ldt.h@stable-4.17; ``sldt`` reads
``LDT_SELECTOR``). That area starts empty. The first access through a
selector with TI=1 faults there, and Xen maps the guest's page lazily
(``handle_ldt_mapping_fault``, xen/arch/x86/traps.c; ``pv_map_ldt_shadow_page``,
xen/arch/x86/pv/mm.c):

* the guest page under ``ldt_base + offset`` is looked up in the guest's
  *kernel* page tables (``guest_get_eff_kern_l1e``, even from user mode); an
  L1 entry not present, a superpage L2, or a frame that is not the domain's
  fails;
* the frame takes a ``PGT_seg_desc_page`` type reference, validating all 512
  descriptors with ``check_descriptor`` when it had no such type (a frame
  mapped writable, or a page table, refuses it; a descriptor Xen refuses
  fails validation). Validation writes the fixed-up descriptors back into
  the frame (``validate_segdesc_page``: a present DPL 0-2 becomes DPL 3, a
  call gate's DPL moves into its selector's RPL);
* the frame is mapped read-write at the LDT slot (``l1e_add_flags(gl1e,
  _PAGE_RW)``) and the access is retried; the guest sees nothing.

A failure is the guest's fault: ``ldt_base + offset`` non-canonical gives
#GP((offset & ~3) | TI); otherwise the #PF is passed on with the hardware
error code and CR2 = ``ldt_base + offset``. While a frame is mapped there it
is a descriptor page: a writable mapping of it is refused (-EBUSY), and
``update_descriptor`` still writes it. The mappings go, their type
references dropped, when ``MMUEXT_SET_LDT`` names another table
(``pv_destroy_ldt``; the same base and count again change nothing) and when
``new_guest_cr3`` installs a different root (``MMUEXT_NEW_BASEPTR``, a
kernel's ``mov %cr3``); not on a vCPU switch nor on kernel/user switches
(each vCPU has its own area).

pvmon does the same with the engine's LDTR (:meth:`Machine.set_ldt`): the
table is at :data:`HV_LDT_VA`, 64 KiB after the GDT the domain builder maps
in the hypervisor's L4 slot (entries 16-31 of the builder's ``hv_l1``), each
slot empty until the engine faults there (the dispatch layer calls
:func:`mapping_fault`). There is one such area; the vCPU on the engine owns
it, and a vCPU switch moves the slots (:func:`switch`). ``HYPERVISOR_iret``
to an LDT code or stack selector reads the descriptor through
:func:`descriptor`, mapping the page as Xen's IRETQ would fault it in.

Per vCPU (:class:`~pvmon.backends.xen.pv.vcpu.PvVcpu`): ``ldt`` (base,
entries) and ``ldt_pages`` (slot 0-15 -> the frame mapped there, each holding
one seg_desc type reference).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pvmon.backends.xen import abi as E
from pvmon.backends.xen.builder import HV_GDT_VA
from pvmon.backends.xen.pv import pagetype as PT
from pvmon.engine.machine import PAGE_SIZE, PTE_A, PTE_ADDR_MASK, PTE_D, PTE_NX, PTE_P, PTE_RW

#: The 16 pages of an 8192-entry LDT (LDT_VIRT_START(v) = GDT_VIRT_START(v) + 64 KiB,
#: asm/config.h@stable-4.17).
LDT_PAGES = 16
#: Most entries MMUEXT_SET_LDT accepts (do_mmuext_op).
MAX_ENTRIES = 8192
#: Where the engine's LDTR points: the 64 KiB after the builder's GDT mapping.
HV_LDT_VA = HV_GDT_VA + LDT_PAGES * PAGE_SIZE
HV_LDT_END = HV_LDT_VA + LDT_PAGES * PAGE_SIZE
#: What ``sldt`` reads with an LDT loaded: LDT_SELECTOR = LDT_ENTRY << 3, LDT_ENTRY =
#: TSS_ENTRY + 2 = FIRST_RESERVED_GDT_ENTRY + 10 (asm/desc.h@stable-4.17).
LDT_SELECTOR = (PT.FIRST_RESERVED_GDT_ENTRY + 10) << 3
#: The first ``hv_l1`` slot of the LDT area (the GDT's 16 come first).
_FIRST_SLOT = LDT_PAGES
#: The shadow entry's flags: present, read-write (for the accessed bit), not executable.
_SHADOW_FLAGS = PTE_P | PTE_RW | PTE_A | PTE_D | PTE_NX
_PFEC_USER, _PFEC_RSVD = 4, 8
_X86_XEC_TI = 4
_DESCS = struct.Struct("<512Q")

if TYPE_CHECKING:
    from pvmon.backends.xen.backend import XenBackend
    from pvmon.backends.xen.builder import Layout
    from pvmon.backends.xen.pv.vcpu import PvVcpu


def hv_l1_ma(layout: Layout) -> int:
    """Machine address of the builder's ``hv_l1`` table (the fifth hypervisor
    frame: shared_info, hv_l3, m2p_l2, hv_l2, hv_l1; builder.build)."""
    return layout.hv_l3_ma + 3 * PAGE_SIZE


def in_area(va: int) -> bool:
    """``va`` lies in the engine's LDT area."""
    return HV_LDT_VA <= va < HV_LDT_END


def _owner(b: XenBackend) -> PvVcpu:
    """The vCPU whose mappings the engine's LDT area holds: the last one
    :func:`switch` put there, else the backend's current vCPU."""
    return getattr(b, "ldt_area_owner", None) or b.vcpu


def _set_slot(b: XenBackend, slot: int, mfn: int | None) -> None:
    """Write LDT slot ``slot`` of the engine's area: ``mfn`` mapped, or empty."""
    b.m.write_u64_phys(hv_l1_ma(b.layout) + (_FIRST_SLOT + slot) * 8,
                       0 if mfn is None else (mfn << 12) | _SHADOW_FLAGS)


def load(b: XenBackend, v: PvVcpu) -> None:
    """load_LDT for vCPU ``v`` on the engine: the LDTR at the LDT area with
    limit ``ents * 8 - 1``, or a null LDTR (lldt(0)) with no entries."""
    ents = v.ldt[1]
    if ents:
        b.m.set_ldt(LDT_SELECTOR, HV_LDT_VA, ents * 8 - 1)
    else:
        b.m.set_ldt(0, 0, 0)


def set_ldt(b: XenBackend, v: PvVcpu, base: int, ents: int) -> None:
    """MMUEXT_SET_LDT after its argument checks (do_mmuext_op): a table other
    than the current one (base or count differ; no entries: base 0) drops
    the shadow mappings (pv_destroy_ldt) and loads the LDTR; the same one
    again changes nothing."""
    base = base if ents else 0
    if (base, ents) == tuple(v.ldt):
        return
    destroy(b, v)
    v.ldt = (base, ents)
    if _owner(b) is v:
        load(b, v)


def destroy(b: XenBackend, v: PvVcpu) -> bool:
    """pv_destroy_ldt: unmap vCPU ``v``'s LDT pages and drop their seg_desc
    type references. Returns True when a mapping was removed (the TLB is then
    flushed)."""
    pages = v.ldt_pages
    if not pages:
        return False
    on_engine = _owner(b) is v
    for slot, mfn in pages.items():
        if on_engine:
            _set_slot(b, slot, None)
        b.types.put_type(mfn)
    pages.clear()
    if on_engine:
        b.m.flush_tlb()
    return True


def switch(b: XenBackend, old: PvVcpu, new: PvVcpu) -> None:
    """vCPU ``new`` goes on the engine after ``old``: the LDT area's slots
    become ``new``'s mappings (kept across switches, as each Xen vCPU has
    its own area) and the LDTR is loaded for it. Call before its segment
    registers are loaded."""
    held = _owner(b)
    if held.ldt_pages or new.ldt_pages:
        for slot in held.ldt_pages:
            _set_slot(b, slot, None)
        for slot, mfn in new.ldt_pages.items():
            _set_slot(b, slot, mfn)
        b.m.flush_tlb()
    b.ldt_area_owner = new
    if held.ldt[1] != new.ldt[1]:   # the LDTR depends on the count only
        load(b, new)


def _kernel_l1e(b: XenBackend, v: PvVcpu, va: int) -> int:
    """guest_get_eff_kern_l1e: the L1 entry for ``va`` in ``v``'s kernel page
    tables, 0 when an upper level is not present or an L2 entry is a
    superpage (map_guest_l1e)."""
    m = b.m
    table = v.kernel_cr3 << 12
    for shift in (39, 30, 21):
        ea = table | ((va >> (shift - 3)) & 0xFF8)
        if not m.valid_phys(ea, 8):
            return 0
        e = m.read_u64_phys(ea)
        if not e & PTE_P or (shift != 39 and e & 0x80):
            return 0
        table = e & PTE_ADDR_MASK
    ea = table | ((va >> 9) & 0xFF8)
    return m.read_u64_phys(ea) if m.valid_phys(ea, 8) else 0


def map_page(b: XenBackend, v: PvVcpu, offset: int) -> bool:
    """pv_map_ldt_shadow_page (pv/mm.c@stable-4.17) for vCPU ``v`` (the one
    on the engine, or going on it): map the guest page holding byte
    ``offset`` of the LDT. True when mapped (already, or now); False when the
    page is not present in the kernel's page tables, not the domain's, or
    refuses the seg_desc type (mapped writable, a page table, a descriptor
    check_descriptor refuses)."""
    if offset >> 3 >= v.ldt[1]:
        return False                    # ASSERT_UNREACHABLE: the LDTR limit forbids it
    slot = offset >> 12
    if slot in v.ldt_pages:
        return True
    va = v.ldt[0] + offset
    if not E.is_canonical(va):
        return False
    l1e = _kernel_l1e(b, v, va)
    if not l1e & PTE_P:
        return False
    mfn = (l1e & PTE_ADDR_MASK) >> 12
    if not b._valid_mfn(mfn):
        return False                    # get_page_from_gfn: not a page of the domain
    types = b.types
    validated = types.segdesc_validations
    if types.get_type(mfn, PT.SEG_DESC):
        return False
    if types.segdesc_validations != validated:
        _write_back(b, mfn)
    v.ldt_pages[slot] = mfn
    if _owner(b) is v:
        _set_slot(b, slot, mfn)
        b.m.flush_tlb()
    return True


def _write_back(b: XenBackend, mfn: int) -> None:
    """validate_segdesc_page's write-back: each descriptor check_descriptor
    changed is stored fixed up in the frame (not recorded: no hypercall asked
    for it, and the guest re-executes the access that caused it on replay)."""
    pa = mfn << 12
    descs = _DESCS.unpack(b.m.read_phys(pa, PAGE_SIZE))
    for i, d in enumerate(descs):
        fixed = PT.check_descriptor(d)
        if fixed is not None and fixed != d:
            b.m.write_phys(pa + i * 8, struct.pack("<Q", fixed))


def mapping_fault(b: XenBackend, va: int, error_code: int) -> tuple[int, int, int | None] | None:
    """A #PF the engine raised at ``va`` in the LDT area with ``error_code``
    (handle_ldt_mapping_fault, traps.c@stable-4.17; only supervisor accesses
    without reserved bits come here: fixup_page_fault). None: the page is
    mapped now and the access is retried, the engine's CR2 put back to the
    last #PF address the guest was given. Else the fault the guest gets:
    ``(13, (offset & ~3) | TI, None)`` when ``ldt_base + offset`` is not
    canonical, else ``(14, error code, ldt_base + offset)``, the error code's
    user bit set when the vCPU is in user mode (pv_inject_event,
    pv/traps.c@stable-4.17: "Re-set error_code.user flag appropriately for
    the guest"; the descriptor read itself is a supervisor access)."""
    v = b.vcpu
    offset = va - HV_LDT_VA
    if (offset >> 12) not in v.ldt_pages and map_page(b, v, offset):
        # the guest's CR2 stays what Xen last gave it (ctrlreg[2], which
        # pv_inject_event also stores in vcpu_info), not the LDT-area address
        b.m.set_reg("cr2", b.m.read_u64_phys(v.vcpu_info_ma() + E.VCPU_INFO["cr2"]))
        return None                     # (a fault on a mapped slot is not this one's)
    linear = v.ldt[0] + offset
    if not E.is_canonical(linear):
        return 13, (offset & ~3) | _X86_XEC_TI, None
    return 14, (error_code & ~_PFEC_USER) | (_PFEC_USER if v.user_mode else 0), linear


def fixable(va: int, error_code: int) -> bool:
    """A #PF at ``va`` that Xen's fixup_page_fault sends to the LDT mapping:
    in the LDT area, a supervisor access, no reserved bit."""
    return in_area(va) and not error_code & (_PFEC_USER | _PFEC_RSVD)


def descriptor(b: XenBackend, v: PvVcpu, selector: int) -> int | None:
    """The descriptor an LDT ``selector`` (TI=1) names in vCPU ``v``'s LDT,
    its page mapped as a descriptor load would fault it in; None when the
    selector is beyond the LDT's limit (hardware #GP) or the page cannot be
    mapped (Xen's IRETQ faults: the failsafe callback)."""
    index = selector & ~7 & 0xFFFF
    ents = v.ldt[1]
    if index + 7 > ents * 8 - 1:
        return None
    if not map_page(b, v, index):
        return None
    return b.m.read_u64_phys((v.ldt_pages[index >> 12] << 12) | (index & 0xFFF))


def loadable(b: XenBackend, v: PvVcpu, selector: int) -> int:
    """``selector`` for a data segment register of vCPU ``v`` being put back
    on the engine (a vCPU switch): an LDT selector whose page cannot be
    mapped, or beyond the limit, becomes the null selector (Xen's
    load_segments would deliver the failsafe callback; not modelled). Others
    are returned as they are."""
    if not selector & 4:
        return selector
    d = descriptor(b, v, selector)
    # present, code or data, not execute-only code (what the engine's load checks;
    # the DPL is 3 once the page validated)
    ok = d is not None and d & (1 << 47) and d & (1 << 44) and \
        (d >> 41) & 5 != 4
    return selector if ok else 0


__all__ = ["HV_LDT_VA", "LDT_PAGES", "LDT_SELECTOR", "MAX_ENTRIES", "descriptor", "destroy",
           "fixable", "hv_l1_ma", "in_area", "load", "loadable", "map_page", "mapping_fault",
           "set_ldt", "switch"]
