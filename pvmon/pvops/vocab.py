"""The canonical paravirtual-operation vocabulary, as data.

One entry per operation: its family, a one-line meaning, and the Linux
``pv_ops`` member (arch/x86/include/asm/paravirt_types.h) or other kernel hook
it corresponds to. Families follow Linux's pv_ops (cpu, irq, mmu, time, lock)
plus what every ABI also has (console, power, info, memory, sched, batch).
Each ABI's mapping onto these names lives with the ABI
(``pvmon/backends/<abi>/pvops.py``); this module knows no ABI.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES: tuple[str, ...] = ("cpu", "irq", "mmu", "time", "lock", "sched", "power", "console",
                             "info", "memory", "batch", "unmapped")


@dataclass(frozen=True, slots=True)
class OpDef:
    """One canonical operation: ``name`` is ``family.op``; ``linux`` the pv_ops
    member (``pv_ops.mmu.write_cr3``) or, where Linux has none, the hook that
    issues it."""
    name: str
    meaning: str
    linux: str

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


_OPS: tuple[OpDef, ...] = (
    # --- cpu: descriptor tables, traps, stacks, segments, control registers
    OpDef("cpu.load_gdt", "install a new GDT (frames and entry count)", "pv_ops.cpu.load_gdt"),
    OpDef("cpu.write_descriptor", "write one GDT/LDT descriptor (incl. TLS slots)",
          "pv_ops.cpu.write_gdt_entry, write_ldt_entry, load_tls"),
    OpDef("cpu.set_ldt", "install a local descriptor table (address, entries)",
          "pv_ops.cpu.alloc_ldt / set_ldt (xen_set_ldt)"),
    OpDef("cpu.set_trap", "install exception/interrupt handlers (the virtual IDT)",
          "pv_ops.cpu.write_idt_entry, load_idt"),
    OpDef("cpu.set_callback", "register an entry point the hypervisor calls (event upcall, "
          "failsafe, syscall, NMI)", "none (xen_enable_syscall, xen_setup_callbacks)"),
    OpDef("cpu.set_stack", "set the kernel stack used on entry from user mode",
          "pv_ops.cpu.load_sp0"),
    OpDef("cpu.set_segment_base", "set the FS/GS base or the user GS selector",
          "pv_ops.cpu.load_gs_index, write_msr (MSR_FS_BASE/GS_BASE)"),
    OpDef("cpu.iret", "return from an exception or event to the interrupted context",
          "pv_ops.cpu.iret (older kernels; now xen_iret in xen-asm.S)"),
    OpDef("cpu.fpu_trap", "set or clear CR0.TS (lazy FPU switch)", "pv_ops.cpu.write_cr0"),
    OpDef("cpu.set_debugreg", "write a debug register", "pv_ops.cpu.set_debugreg"),
    OpDef("cpu.get_debugreg", "read a debug register", "pv_ops.cpu.get_debugreg"),
    OpDef("cpu.set_iopl", "set the I/O privilege level", "none (xen_set_iopl_mask, removed 5.5)"),
    OpDef("cpu.set_iobitmap", "install an I/O port permission bitmap",
          "pv_ops.cpu.update_io_bitmap"),
    OpDef("cpu.cpuid", "execute CPUID under the hypervisor's policy", "pv_ops.cpu.cpuid"),
    OpDef("cpu.vcpu_up", "bring a virtual CPU online", "smp_ops.cpu_up (xen_pv_cpu_up)"),
    OpDef("cpu.vcpu_down", "take a virtual CPU offline", "smp_ops.cpu_die (xen_pv_cpu_die)"),
    OpDef("cpu.vcpu_init", "give a virtual CPU its initial register state",
          "smp_ops.cpu_up (cpu_initialize_context)"),
    # --- irq: event delivery, masking, binding
    OpDef("irq.mask", "mask an interrupt source / event port",
          "irq_chip.irq_mask (Xen PV: a bit in shared memory, no call)"),
    OpDef("irq.unmask", "unmask an interrupt source / event port (delivering a pending one)",
          "irq_chip.irq_unmask (evtchn_2l_unmask)"),
    OpDef("irq.eoi", "signal end of interrupt for a physical IRQ", "irq_chip.irq_eoi (eoi_pirq)"),
    OpDef("irq.send_ipi", "send an inter-processor interrupt",
          "smp_ops.send_call_func_ipi, apic->send_IPI (xen_send_IPI_one)"),
    OpDef("irq.notify", "raise an event on a channel (kick the other end of a device ring)",
          "none (notify_remote_via_evtchn)"),
    OpDef("irq.send_nmi", "send an NMI to a virtual CPU", "apic->send_IPI (NMI_VECTOR)"),
    OpDef("irq.bind", "bind an interrupt source (virtual IRQ, IPI, peer, PIRQ) to a port",
          "none (bind_virq_to_irq, bind_ipi_to_irq, bind_evtchn_to_irq)"),
    OpDef("irq.unbind", "close a port / unbind a source", "none (xen_evtchn_close)"),
    OpDef("irq.set_affinity", "route a port to a virtual CPU",
          "irq_chip.irq_set_affinity (xen_rebind_evtchn_to_cpu)"),
    OpDef("irq.set_priority", "set an event port's priority", "none (FIFO events)"),
    OpDef("irq.query", "ask the state of a port or IRQ", "none (xen_test_irq_shared)"),
    OpDef("irq.setup", "set up the event delivery mechanism (control block, arrays, reset)",
          "none (evtchn_fifo_init_control_block, xen_evtchn_init)"),
    # --- mmu
    OpDef("mmu.set_pte", "write one page-table entry (frame, level, flags)",
          "pv_ops.mmu.set_pte, set_pmd, set_pud, set_p4d, set_pgd, "
          "ptep_modify_prot_commit"),
    OpDef("mmu.new_root", "switch to another page-table root (CR3)", "pv_ops.mmu.write_cr3"),
    OpDef("mmu.flush_tlb", "flush the TLB (local or on a set of CPUs)",
          "pv_ops.mmu.flush_tlb_user, flush_tlb_kernel, flush_tlb_multi"),
    OpDef("mmu.invlpg", "invalidate one virtual address in the TLB",
          "pv_ops.mmu.flush_tlb_one_user"),
    OpDef("mmu.pin", "declare a frame a page table of a level (validated, then read-only)",
          "pv_ops.mmu.alloc_pte, alloc_pmd, alloc_pud, alloc_p4d, activate_mm"),
    OpDef("mmu.unpin", "release a page table frame back to ordinary memory",
          "pv_ops.mmu.release_pte, release_pmd, release_pud, release_p4d, exit_mmap"),
    OpDef("mmu.flush_cache", "write back and invalidate caches", "pv_ops.cpu.wbinvd"),
    OpDef("mmu.clear_page", "zero a frame through the hypervisor", "none"),
    OpDef("mmu.copy_page", "copy a frame through the hypervisor", "none"),
    OpDef("mmu.superpage", "mark or unmark a superpage", "none"),
    # --- time
    OpDef("time.oneshot", "arm a one-shot timer (deadline in ns, absolute or relative)",
          "clock_event_device.set_next_event (xen_vcpuop_set_next_event)"),
    OpDef("time.periodic", "arm a periodic timer (period in ns)",
          "clock_event_device.set_state_periodic"),
    OpDef("time.stop", "stop a timer", "clock_event_device.set_state_shutdown"),
    OpDef("time.read_clock", "read the clock (TSC or system time)",
          "pv_ops.time.sched_clock (xen_sched_clock: pvclock + rdtsc)"),
    OpDef("time.runstate", "read the vCPU's run-state times (steal time)",
          "pv_ops.time.steal_clock"),
    # --- lock
    OpDef("lock.wait", "sleep until one of some ports is pending or a timeout (spinlock slow "
          "path)", "pv_ops.lock.wait (xen_qlock_wait)"),
    OpDef("lock.kick", "wake a CPU sleeping in lock.wait", "pv_ops.lock.kick (xen_qlock_kick)"),
    # --- sched
    OpDef("sched.yield", "give up the CPU, staying runnable", "none (HYPERVISOR_sched_op(SCHEDOP_yield))"),
    OpDef("sched.block", "sleep until an event arrives (idle)",
          "pv_ops.irq.safe_halt, halt (xen_safe_halt)"),
    OpDef("sched.watchdog", "arm or stop a hypervisor watchdog", "none (xen_wdt)"),
    OpDef("sched.pin_override", "temporarily pin the vCPU to its physical CPU", "none"),
    # --- power
    OpDef("power.shutdown", "stop the machine (poweroff, reboot, suspend, crash)",
          "machine_ops.power_off, restart, emergency_restart, crash_shutdown"),
    OpDef("power.set_reason", "record the shutdown reason without stopping yet",
          "none"),
    # --- console
    OpDef("console.write", "write bytes to the hypervisor console", "struct console.write "
          "(xenboot_write_console, hvc)"),
    OpDef("console.read", "read bytes from the hypervisor console", "hv_ops.get_chars"),
    # --- info
    OpDef("info.version", "ask the hypervisor's version or build strings", "none (xen_banner)"),
    OpDef("info.features", "ask the feature flags / capabilities the hypervisor offers",
          "none (xen_setup_features)"),
    OpDef("info.platform", "ask platform parameters (layout, page size, command line)",
          "none (xen_start_kernel)"),
    OpDef("info.assist", "turn an optional hypervisor behaviour on or off",
          "none (xen_start_kernel: vm_assist)"),
    OpDef("info.vcpu", "ask whether a vCPU is up, or its physical identity",
          "none (xen_filter_cpu_maps)"),
    # --- memory (outside page tables: reservation, physmap, shared areas, grants)
    OpDef("memory.populate", "add frames to the domain", "none (balloon, xen_memory_setup)"),
    OpDef("memory.release", "give frames back to the hypervisor", "none (balloon)"),
    OpDef("memory.exchange", "exchange frames for others", "none (xen_exchange_memory)"),
    OpDef("memory.query", "ask reservation sizes and limits", "none (xen_memory_setup)"),
    OpDef("memory.map", "read the memory map (E820)", "x86_init.resources.memory_setup"),
    OpDef("memory.physmap", "place a hypervisor frame in the guest physical map",
          "none (xen_hvm_init_shared_info, grant frames)"),
    OpDef("memory.set_m2p", "update the machine-to-physical table", "none (xen_update_mem_tables)"),
    OpDef("memory.share_area", "register a guest area the hypervisor keeps up to date "
          "(vcpu info, run state, time)", "none (xen_vcpu_setup, xen_setup_runstate_info)"),
    OpDef("memory.grant_map", "map a page another domain granted", "none (gnttab_map_refs)"),
    OpDef("memory.grant_unmap", "unmap a granted page", "none (gnttab_unmap_refs)"),
    OpDef("memory.grant_copy", "copy to or from granted pages", "none (gnttab_batch_copy)"),
    OpDef("memory.grant_transfer", "transfer a page through a grant", "none"),
    OpDef("memory.grant_setup", "set up or query the grant table (frames, version, size)",
          "none (gnttab_init, gnttab_setup)"),
    OpDef("memory.cache_flush", "flush caches for a granted page", "none (ARM only)"),
    # --- batch
    OpDef("batch.submit", "submit several operations in one call; each follows with this "
          "batch as context", "pv_ops.mmu.lazy_mode.flush (xen_mc_flush)"),
    # --- a call with no canonical operation
    OpDef("unmapped", "a call this ABI's mapping gives no canonical operation (the original "
          "call is kept)", "none"),
)

OPS: dict[str, OpDef] = {o.name: o for o in _OPS}
assert len(OPS) == len(_OPS), "duplicate canonical operation"
assert all(o.family in FAMILIES for o in _OPS)


def family_of(op: str) -> str:
    """The family of canonical operation ``op`` (``mmu.set_pte`` -> ``mmu``)."""
    return op.split(".", 1)[0]
