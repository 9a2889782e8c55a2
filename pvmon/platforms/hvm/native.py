"""What the CPU of an HVM guest does itself that a PV guest asks its
hypervisor for: canonical operations (:mod:`pvmon.pvops.vocab`) with the
instruction or guest store that performs them. Xen PVH and KVM guests share
these (their express tables, pvmon/backends/xen/express.py and
pvmon/backends/kvm/express.py, add what differs: callbacks, interrupts,
timers, devices); the source is the Intel SDM, vol. 3 (system instructions)
and docs/hvm-platform.md.
"""

from __future__ import annotations

#: Why an operation needs no call on the HVM platform.
HVM_NATIVE_WHY = "the HVM platform: the CPU does it on the guest's own state (docs/hvm-platform.md)"

#: canonical operation -> what the guest executes (or stores) instead of a call
HVM_NATIVE: dict[str, str] = {
    "cpu.load_gdt": "lgdt", "cpu.write_descriptor": "a store to the GDT/LDT",
    "cpu.set_ldt": "lldt", "cpu.set_trap": "lidt / a store to the IDT",
    "cpu.set_stack": "the TSS's RSP0", "cpu.set_segment_base": "wrmsr FS/GS_BASE",
    "cpu.iret": "iretq", "cpu.fpu_trap": "clts / mov cr0",
    "cpu.set_debugreg": "mov dr", "cpu.get_debugreg": "mov dr", "cpu.set_iopl": "popf",
    "cpu.set_iobitmap": "the TSS I/O bitmap",
    "mmu.set_pte": "a store to the guest's page table", "mmu.new_root": "mov cr3",
    "mmu.flush_tlb": "mov cr3 / invpcid", "mmu.invlpg": "invlpg",
    "mmu.flush_cache": "wbinvd", "mmu.clear_page": "the guest zeroes the frame",
    "mmu.copy_page": "the guest copies the frame",
    "mmu.superpage": "a PSE entry in the guest's table",
}
