"""Xen PV's mapping onto the canonical paravirtual operations (:mod:`pvmon.pvops`).

Which hypercall and sub-op is which canonical operation, each entry with its
source: the xen.git public header that defines the call and the Linux function
(arch/x86/xen/*.c, or drivers/xen where the call is not x86-specific) that
issues it. Names come from :mod:`pvmon.backends.xen.abi`, never literal numbers.

Arguments are normalized from the raw argument registers and the guest memory
the backend read (the event's ``rd``), so batch entries, whose decoded ``op`` the
trace does not keep, are normalized as well as top-level calls:

* time in nanoseconds, as Xen defines it: ``set_singleshot_timer`` and
  ``set_timer_op`` take an absolute deadline in Xen system time
  (``deadline_ns``, ``relative: False``), ``set_periodic_timer`` a relative
  ``period_ns``;
* page-table entries as ``frame`` (4 KiB frame number), ``flags`` (the entry's
  non-address bits: 0-11 and 52-63) and ``level`` (1-4: 1 for update_va_mapping,
  whose target is always an L1 entry; for mmu_update the level the target table
  was pinned at, or that the entry referencing it implies (an entry of a level-n
  table points to a level n-1 table), earlier in the trace or from the start-of-day
  L4 in the header; else None);
* multicalls and mmu_update/mmuext_op arrays of more than one entry as a
  ``batch.submit`` followed by each entry's operation carrying the batch as context.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pvmon.backends.xen import abi
from pvmon.pvops import BatchRef, PvOp, clock_reads

# Entry address bits of a 64-bit PTE (bits 12-51); the rest are flags.
PTE_FRAME_MASK = 0x000F_FFFF_FFFF_F000
_PTE_P, _PTE_PSE = 1 << 0, 1 << 7       # present; page size (a superpage, not a table)
_U64 = (1 << 64) - 1

_XEN_H = "xen/include/public/xen.h"
_X86_64_H = "xen/include/public/arch-x86/xen-x86_64.h"
_VCPU_H = "xen/include/public/vcpu.h"
_SCHED_H = "xen/include/public/sched.h"
_EVTCHN_H = "xen/include/public/event_channel.h"
_VERSION_H = "xen/include/public/version.h"
_MEMORY_H = "xen/include/public/memory.h"
_PHYSDEV_H = "xen/include/public/physdev.h"
_GNTTAB_H = "xen/include/public/grant_table.h"
_CALLBACK_H = "xen/include/public/callback.h"
_NMI_H = "xen/include/public/nmi.h"
_EVENTS = "drivers/xen/events/events_base.c"


@dataclass(frozen=True, slots=True)
class Entry:
    """One mapping entry: the canonical ``op``, the xen.git public ``header``
    defining the call or sub-op, and the Linux function(s) that issue it."""
    op: str
    header: str
    linux: str


def _sub(table: dict[int, str], header: str, **ops: tuple[str, str]) -> dict[str, Entry]:
    """Sub-op entries keyed by the ABI's own names (checked against ``table``)."""
    names = set(table.values())
    for k in ops:
        assert k in names, f"{k} is not a sub-op of {header}"
    return {k: Entry(op, header, linux) for k, (op, linux) in ops.items()}


_MMU = "arch/x86/xen/mmu_pv.c"
_ENL = "arch/x86/xen/enlighten_pv.c"

# hypercall name -> one Entry, or sub-op name -> Entry.
CALLS: dict[str, Entry | dict[str, Entry]] = {
    "set_trap_table": Entry("cpu.set_trap", _XEN_H, f"{_ENL} xen_load_idt, xen_write_idt_entry"),
    "set_callbacks": Entry("cpu.set_callback", _XEN_H,
                           "none on x86-64 (x86-32 only; 64-bit Linux uses callback_op)"),
    "callback_op": _sub(abi.CALLBACKOP_CMDS, _CALLBACK_H,
                        register=("cpu.set_callback", ("arch/x86/xen/setup.c register_callback, "
                                  "xen_enable_syscall")),
                        unregister=("cpu.set_callback", "none")),
    "nmi_op": _sub(abi.XENNMI_CMDS, _NMI_H,
                   register_callback=("cpu.set_callback", "none"),
                   unregister_callback=("cpu.set_callback", "none")),
    "stack_switch": Entry("cpu.set_stack", _XEN_H, f"{_ENL} xen_load_sp0 (MULTI_stack_switch)"),
    "fpu_taskswitch": Entry("cpu.fpu_trap", _XEN_H,
                            f"{_ENL} xen_write_cr0 (MULTI_fpu_taskswitch)"),
    "set_segment_base": Entry("cpu.set_segment_base", _X86_64_H,
                              f"{_ENL} xen_load_gs_index, xen_write_msr_safe"),
    "set_debugreg": Entry("cpu.set_debugreg", _XEN_H, f"{_ENL} xen_set_debugreg"),
    "get_debugreg": Entry("cpu.get_debugreg", _XEN_H, f"{_ENL} xen_get_debugreg"),
    "set_gdt": Entry("cpu.load_gdt", _XEN_H, f"{_ENL} xen_load_gdt, xen_load_gdt_boot"),
    "update_descriptor": Entry("cpu.write_descriptor", _XEN_H,
                               f"{_ENL} xen_write_gdt_entry, xen_write_ldt_entry, "
                               "load_TLS_descriptor"),
    "vm_assist": Entry("info.assist", _XEN_H, "arch/x86/xen/setup.c xen_pvmmu_arch_setup"),
    "iret": Entry("cpu.iret", _X86_64_H, "arch/x86/xen/xen-asm.S xen_iret"),
    "mmu_update": {
        "NORMAL_PT_UPDATE": Entry("mmu.set_pte", _XEN_H,
                                  f"{_MMU} xen_set_pte, xen_set_pmd_hyper, xen_set_pud_hyper, "
                                  "xen_set_p4d, xen_batched_set_pte"),
        "PT_UPDATE_PRESERVE_AD": Entry("mmu.set_pte", _XEN_H,
                                       f"{_MMU} xen_ptep_modify_prot_commit"),
        "MACHPHYS_UPDATE": Entry("memory.set_m2p", _XEN_H,
                                 "arch/x86/xen/setup.c xen_update_mem_tables"),
        "PT_UPDATE_NO_TRANSLATE": Entry("mmu.set_pte", _XEN_H, "none (HVM/PVH foreign maps)"),
    },
    "mmuext_op": _sub(
        abi.MMUEXT_CMDS, _XEN_H,
        PIN_L1_TABLE=("mmu.pin", f"{_MMU} pin_pagetable_pfn (xen_alloc_pte), xen_do_pin"),
        PIN_L2_TABLE=("mmu.pin", f"{_MMU} pin_pagetable_pfn (xen_alloc_pmd), xen_do_pin"),
        PIN_L3_TABLE=("mmu.pin", f"{_MMU} pin_pagetable_pfn (xen_alloc_pud), xen_do_pin"),
        PIN_L4_TABLE=("mmu.pin", f"{_MMU} __xen_pgd_pin, xen_setup_kernel_pagetable"),
        UNPIN_TABLE=("mmu.unpin", f"{_MMU} xen_release_ptpage, __xen_pgd_unpin"),
        NEW_BASEPTR=("mmu.new_root", f"{_MMU} xen_write_cr3 (__xen_write_cr3)"),
        NEW_USER_BASEPTR=("mmu.new_root", f"{_MMU} xen_write_cr3 (__xen_write_cr3)"),
        TLB_FLUSH_LOCAL=("mmu.flush_tlb", f"{_MMU} xen_flush_tlb"),
        TLB_FLUSH_MULTI=("mmu.flush_tlb", f"{_MMU} xen_flush_tlb_multi"),
        TLB_FLUSH_ALL=("mmu.flush_tlb", "none"),
        INVLPG_LOCAL=("mmu.invlpg", f"{_MMU} xen_flush_tlb_one_user"),
        INVLPG_MULTI=("mmu.invlpg", f"{_MMU} xen_flush_tlb_multi"),
        INVLPG_ALL=("mmu.invlpg", "none"),
        FLUSH_CACHE=("mmu.flush_cache", "none"),
        FLUSH_CACHE_GLOBAL=("mmu.flush_cache", "none"),
        SET_LDT=("cpu.set_ldt", f"{_ENL} xen_set_ldt"),
        CLEAR_PAGE=("mmu.clear_page", "none"),
        COPY_PAGE=("mmu.copy_page", "none"),
        MARK_SUPER=("mmu.superpage", "none"),
        UNMARK_SUPER=("mmu.superpage", "none")),
    "update_va_mapping": Entry("mmu.set_pte", _XEN_H,
                               f"{_ENL} set_aliased_prot; {_MMU} make_lowmem_page_readonly, "
                               "xen_set_pte_init"),
    "multicall": Entry("batch.submit", _XEN_H, "arch/x86/xen/multicalls.c xen_mc_flush"),
    "event_channel_op": (_evtchn := _sub(
        abi.EVTCHNOP_CMDS, _EVTCHN_H,
        send=("irq.notify", (f"{_EVENTS} notify_remote_via_irq; arch/x86/xen/smp.c "
              "xen_send_IPI_one (irq.send_ipi on a port bound by bind_ipi)")),
        unmask=("irq.unmask", "drivers/xen/events/events_2l.c evtchn_2l_unmask"),
        bind_virq=("irq.bind", f"{_EVENTS} bind_virq_to_irq"),
        bind_ipi=("irq.bind", f"{_EVENTS} bind_ipi_to_irq"),
        bind_pirq=("irq.bind", f"{_EVENTS} startup_pirq"),
        bind_interdomain=("irq.bind", f"{_EVENTS} bind_interdomain_evtchn_to_irq_lateeoi"),
        alloc_unbound=("irq.bind", "drivers/xen/xenbus/xenbus_client.c xenbus_alloc_evtchn"),
        close=("irq.unbind", f"{_EVENTS} xen_evtchn_close"),
        status=("irq.query", f"{_EVENTS} find_virq"),
        bind_vcpu=("irq.set_affinity", f"{_EVENTS} xen_rebind_evtchn_to_cpu"),
        set_priority=("irq.set_priority", "drivers/xen/events/events_fifo.c"),
        init_control=("irq.setup", "drivers/xen/events/events_fifo.c init_control_block"),
        expand_array=("irq.setup", "drivers/xen/events/events_fifo.c evtchn_fifo_setup"),
        reset=("irq.setup", f"{_EVENTS} xen_evtchn_reset (via xen_evtchn_init)"),
        reset_cont=("irq.setup", "none"))),
    "event_channel_op_compat": _evtchn,
    "set_timer_op": Entry("time.oneshot", _XEN_H,
                          "arch/x86/xen/time.c xen_timerop_set_next_event"),
    "vcpu_op": _sub(
        abi.VCPUOP_CMDS, _VCPU_H,
        set_singleshot_timer=("time.oneshot", "arch/x86/xen/time.c xen_vcpuop_set_next_event"),
        stop_singleshot_timer=("time.stop", "arch/x86/xen/time.c xen_vcpuop_shutdown"),
        set_periodic_timer=("time.periodic", "none (Linux's Xen clockevent is one-shot)"),
        stop_periodic_timer=("time.stop", ("arch/x86/xen/time.c xen_vcpuop_shutdown, "
                             "xen_setup_timer")),
        initialise=("cpu.vcpu_init", "arch/x86/xen/smp_pv.c cpu_initialize_context"),
        up=("cpu.vcpu_up", "arch/x86/xen/smp_pv.c xen_pv_cpu_up"),
        down=("cpu.vcpu_down", "arch/x86/xen/smp_pv.c xen_pv_play_dead"),
        is_up=("info.vcpu", "arch/x86/xen/smp_pv.c xen_filter_cpu_maps, xen_pv_cpu_die"),
        get_runstate_info=("time.runstate", "drivers/xen/time.c xen_get_runstate_snapshot"),
        register_runstate_memory_area=("memory.share_area",
                                       "drivers/xen/time.c xen_setup_runstate_info"),
        register_vcpu_info=("memory.share_area", "arch/x86/xen/enlighten.c xen_vcpu_setup"),
        register_vcpu_time_memory_area=("memory.share_area",
                                        "arch/x86/xen/time.c xen_setup_vsyscall_time_info"),
        register_runstate_phys_area=("memory.share_area", "none"),
        register_vcpu_time_phys_area=("memory.share_area", "none"),
        send_nmi=("irq.send_nmi", "arch/x86/xen/smp.c xen_send_IPI_one (NMI_VECTOR)"),
        get_physid=("info.vcpu", "none")),
    "sched_op": (_sched := _sub(
        abi.SCHEDOP_CMDS, _SCHED_H,
        block=("sched.block", "arch/x86/xen/irq.c xen_safe_halt"),
        **{"yield": ("sched.yield", "none in arch/x86/xen")},
        shutdown=("power.shutdown", "arch/x86/xen/enlighten.c xen_reboot"),
        poll=("lock.wait", (f"{_EVENTS} xen_poll_irq_timeout (arch/x86/xen/spinlock.c "
              "xen_qlock_wait)")),
        remote_shutdown=("power.shutdown", "none (another domain)"),
        shutdown_code=("power.set_reason", "none in arch/x86/xen"),
        watchdog=("sched.watchdog", "drivers/watchdog/xen_wdt.c"),
        pin_override=("sched.pin_override", "none (dom0 firmware calls)"))),
    "sched_op_compat": _sched,
    "xen_version": _sub(
        abi.XENVER_CMDS, _VERSION_H,
        version=("info.version", "arch/x86/xen/enlighten.c xen_running_on_version_or_later"),
        extraversion=("info.version", f"{_ENL} xen_banner"),
        compile_info=("info.version", "none"),
        changeset=("info.version", "none"),
        build_id=("info.version", "drivers/xen/sys-hypervisor.c"),
        extraversion2=("info.version", "none"),
        changeset2=("info.version", "none"),
        capabilities=("info.features", "drivers/xen/sys-hypervisor.c"),
        capabilities2=("info.features", "none"),
        get_features=("info.features", "drivers/xen/features.c xen_setup_features"),
        platform_parameters=("info.platform", "none (tools)"),
        pagesize=("info.platform", "drivers/xen/sys-hypervisor.c"),
        guest_handle=("info.platform", "drivers/xen/sys-hypervisor.c"),
        commandline=("info.platform", "none"),
        commandline2=("info.platform", "none")),
    "hvm_op": _sub(
        abi.HVMOP_CMDS, "xen/include/public/hvm/hvm_op.h",
        set_param=("irq.setup", ("drivers/xen/events/events_base.c xen_set_callback_via "
                   "(HVM_PARAM_CALLBACK_IRQ)")),
        get_param=("info.platform", ("drivers/tty/hvc/hvc_xen.c xen_hvm_console_init, "
                   "drivers/xen/xenbus/xenbus_probe.c (HVM_PARAM_*_PFN/EVTCHN)")),
        set_evtchn_upcall_vector=("irq.setup", ("drivers/xen/events/events_base.c "
                                  "xen_init_setup_upcall_vector")),
        pagetable_dying=("mmu.unpin", "arch/x86/xen/mmu_hvm.c xen_hvm_exit_mmap")),
    "console_io": _sub(
        abi.CONSOLEIO_CMDS, _XEN_H,
        write=("console.write", ("drivers/tty/hvc/hvc_xen.c xenboot_write_console, "
               "dom0_write_console")),
        read=("console.read", "drivers/tty/hvc/hvc_xen.c dom0_read_console")),
    "memory_op": _sub(
        abi.XENMEM_CMDS, _MEMORY_H,
        increase_reservation=("memory.populate", "drivers/xen/balloon.c increase_reservation"),
        populate_physmap=("memory.populate", ("arch/x86/xen/setup.c xen_do_chunk, "
                          "drivers/xen/mem-reservation.c")),
        claim_pages=("memory.populate", "none"),
        decrease_reservation=("memory.release", ("arch/x86/xen/setup.c xen_free_mfn, "
                              "drivers/xen/balloon.c")),
        exchange=("memory.exchange", f"{_MMU} xen_exchange_memory"),
        maximum_ram_page=("memory.query", "none"),
        current_reservation=("memory.query", "drivers/xen/balloon.c"),
        maximum_reservation=("memory.query", "arch/x86/xen/setup.c xen_get_max_pages"),
        maximum_gpfn=("memory.query", "none"),
        get_pod_target=("memory.query", "none"),
        get_sharing_freed_pages=("memory.query", "none"),
        get_vnumainfo=("memory.query", "none"),
        machphys_mfn_list=("memory.query", "none"),
        machphys_compat_mfn_list=("memory.query", "none"),
        machphys_mapping=("memory.query", f"{_MMU} xen_setup_machphys_mapping"),
        memory_map=("memory.map", "arch/x86/xen/setup.c xen_memory_setup"),
        machine_memory_map=("memory.map", "arch/x86/xen/setup.c xen_memory_setup (dom0)"),
        set_memory_map=("memory.map", "none (toolstack)"),
        reserved_device_memory_map=("memory.map", "none"),
        add_to_physmap=("memory.physmap", ("drivers/xen/grant-table.c, arch/x86/xen/"
                        "enlighten_hvm.c")),
        add_to_physmap_batch=("memory.physmap", "drivers/xen/xlate_mmu.c"),
        remove_from_physmap=("memory.physmap", "drivers/xen/xlate_mmu.c"),
        acquire_resource=("memory.physmap", "drivers/xen/privcmd.c")),
    "physdev_op": (_physdev := _sub(
        abi.PHYSDEVOP_CMDS, _PHYSDEV_H,
        eoi=("irq.eoi", f"{_EVENTS} eoi_pirq"),
        irq_status_query=("irq.query", f"{_EVENTS} pirq_query_unmask"),
        set_iopl=("cpu.set_iopl", f"{_ENL} xen_set_iopl_mask (before Linux 5.5)"),
        set_iobitmap=("cpu.set_iobitmap", f"{_ENL} xen_update_io_bitmap"),
        pirq_eoi_gmfn_v1=("irq.setup", f"{_EVENTS} xen_init_IRQ"),
        pirq_eoi_gmfn_v2=("irq.setup", f"{_EVENTS} xen_init_IRQ"),
        map_pirq=("irq.bind", "arch/x86/pci/xen.c xen_register_pirq"),
        unmap_pirq=("irq.unbind", f"{_EVENTS} xen_destroy_irq"))),
    "physdev_op_compat": _physdev,
    "grant_table_op": _sub(
        abi.GNTTABOP_CMDS, _GNTTAB_H,
        map_grant_ref=("memory.grant_map", "drivers/xen/grant-table.c gnttab_map_refs"),
        unmap_grant_ref=("memory.grant_unmap", "drivers/xen/grant-table.c gnttab_unmap_refs"),
        unmap_and_replace=("memory.grant_unmap", "none"),
        copy=("memory.grant_copy", "drivers/xen/grant-table.c gnttab_batch_copy"),
        transfer=("memory.grant_transfer", "none"),
        setup_table=("memory.grant_setup", "drivers/xen/grant-table.c gnttab_map (v1)"),
        query_size=("memory.grant_setup", "drivers/xen/grant-table.c gnttab_init"),
        set_version=("memory.grant_setup", "none (Linux uses v1)"),
        get_version=("memory.grant_setup", "none"),
        get_status_frames=("memory.grant_setup", "none"),
        dump_table=("memory.grant_setup", "none"),
        swap_grant_ref=("memory.grant_setup", "none"),
        cache_flush=("memory.cache_flush", "none (ARM only)")),
}

_DOM0 = "a dom0/toolstack call; pvmon's Xen PV domU backend refuses it"
# Hypercalls (or sub-ops, "call sub") with no canonical operation, and why.
UNMAPPED: dict[str, str] = {
    "update_va_mapping_otherdomain": "maps into another domain (dom0 only); pvmon answers "
                                     "-EPERM",
    "xenpmu_op": "PMU virtualization: no canonical family yet (pvmon answers -EOPNOTSUPP, "
                 "vpmu=off)",
    "platform_op": _DOM0, "sysctl": _DOM0, "domctl": _DOM0, "xsm_op": _DOM0,
    "kexec_op": _DOM0, "dm_op": _DOM0, "hypfs_op": _DOM0,
    "hvm_op *": "HVM device-model, paging and introspection controls (a toolstack's or "
                "device model's); the guest-kernel sub-ops are mapped",
    "argo_op": "inter-domain messaging: no canonical family yet",
    "xenoprof_op": "not implemented by pvmon's backend (-ENOSYS)",
    "tmem_op": "not implemented by pvmon's backend (-ENOSYS)",
    "sched_op_compat": "",   # placeholder removed below; sched_op_compat is mapped
    "memory_op set_pod_target": _DOM0, "memory_op access_op": _DOM0,
    "memory_op sharing_op": _DOM0, "memory_op get_mem_access": _DOM0,
    "physdev_op *": "device management (dom0); the guest-kernel sub-ops are mapped",
}
del UNMAPPED["sched_op_compat"]

# Sub-op tables and the mask of the sub-op number in the first argument.
_ARG0_SUBOPS: dict[str, tuple[dict[int, str], int]] = {
    "callback_op": (abi.CALLBACKOP_CMDS, _U64), "nmi_op": (abi.XENNMI_CMDS, _U64),
    "vcpu_op": (abi.VCPUOP_CMDS, _U64), "sched_op": (abi.SCHEDOP_CMDS, _U64),
    "sched_op_compat": (abi.SCHEDOP_CMDS, _U64), "event_channel_op": (abi.EVTCHNOP_CMDS, _U64),
    "xen_version": (abi.XENVER_CMDS, _U64), "console_io": (abi.CONSOLEIO_CMDS, _U64),
    "memory_op": (abi.XENMEM_CMDS, 0xFFFF), "physdev_op": (abi.PHYSDEVOP_CMDS, _U64),
    "grant_table_op": (abi.GNTTABOP_CMDS, abi.GNTTABOP_CMD_MASK),
    "xenpmu_op": (abi.XENPMU_CMDS, _U64), "vm_assist": (abi.VMASST_CMDS, _U64),
    "hvm_op": (abi.HVMOP_CMDS, _U64),
}
# memory_op: the low 16 bits are the command (memory.h MEMOP_CMD_MASK), the rest the
# extent start of a continuation.


@dataclass(slots=True)
class XenState:
    """What the mapping keeps across events, bounded by the domain, not the trace:
    the level each pinned page-table frame was pinned at, and the ports bound
    with bind_ipi (a send on one is an IPI)."""
    levels: dict[int, int] = field(default_factory=dict)
    ipi_ports: set[int] = field(default_factory=set)
    #: A run read from mid-trace (:func:`resume_state`): the ports it bound with
    #: bind_ipi (True) or closed (False), last action kept, and the ports of the
    #: sends it counted as irq.notify before touching them (an IPI if the port was
    #: bound earlier in the trace: see :func:`continue_state`).
    partial: bool = False
    #: A guest on the HVM platform (Xen PVH: header ``machine.mode``): CPUID traps
    #: natively, and its platform events have operations of their own.
    hvm: bool = False
    touched: dict[int, bool] = field(default_factory=dict)
    unknown: set[int] = field(default_factory=set)


def new_state(header: dict[str, Any] | None = None) -> XenState:
    """Fresh mapping state for one trace. The header's ``layout.pt_base_pfn`` is
    the start-of-day L4 the domain builder pinned (pvmon's P2M is the identity,
    so the frame is the same number)."""
    st = XenState()
    machine = header.get("machine") if isinstance(header, dict) else None
    st.hvm = isinstance(machine, dict) and machine.get("mode") == "pvh"
    layout = header.get("layout") if isinstance(header, dict) else None
    base = layout.get("pt_base_pfn") if isinstance(layout, dict) else None
    if type(base) is int:
        st.levels[base] = 4
    return st


def resume_state(header: dict[str, Any] | None = None) -> XenState:
    """State for counting a run of events that starts mid-trace (parallel
    counting): it records what it cannot know, for :func:`continue_state`.
    ``header``: the trace header (the guest mode)."""
    machine = header.get("machine") if isinstance(header, dict) else None
    return XenState(partial=True,
                    hvm=isinstance(machine, dict) and machine.get("mode") == "pvh")


def continue_state(earlier: XenState, later: XenState) -> XenState | None:
    """The state (for counting) after the events of ``earlier`` then the run
    ``later`` read from :func:`resume_state`; None when ``later``'s counts are
    wrong because of what it could not see (a send on a port bound by bind_ipi
    before the run: count serially then). Page-table levels change no count and
    are not carried."""
    if later.unknown & earlier.ipi_ports:
        return None
    ports = set(earlier.ipi_ports)
    for port, bound in later.touched.items():
        if bound:
            ports.add(port)
        else:
            ports.discard(port)
    return XenState(ipi_ports=ports)


class _Mem:
    """Guest memory as the backend read it during one call (the event's ``rd``:
    guest-virtual reads only); ``get`` answers None for bytes it did not read."""
    __slots__ = ("_rd", "_reads")

    def __init__(self, rd: Any) -> None:
        # parsed on first use: most calls never look at guest memory
        self._rd = rd
        self._reads: list[tuple[int, bytes]] | None = None

    @property
    def reads(self) -> list[tuple[int, bytes]]:
        """The guest-virtual reads, as ``(address, bytes)``."""
        r = self._reads
        if r is None:
            r = self._reads = [(e[1], e[2]) for e in _accesses(self._rd) if e[0] == "v"]
        return r

    def get(self, addr: int, size: int) -> bytes | None:
        for a, b in self.reads:
            if a <= addr and addr + size <= a + len(b):
                return bytes(b[addr - a:addr - a + size])
        return None

    def u32(self, addr: int) -> int | None:
        b = self.get(addr, 4)
        return None if b is None else int.from_bytes(b, "little")

    def u64(self, addr: int) -> int | None:
        b = self.get(addr, 8)
        return None if b is None else int.from_bytes(b, "little")


def _accesses(xs: Any) -> list[tuple[str, int, bytes]]:
    """The well-formed ``[space, addr, bytes]`` entries of an ``rd``/``wr`` list
    (a damaged or hostile trace may hold anything)."""
    if not isinstance(xs, list):
        return []
    return [(e[0], e[1], e[2]) for e in xs
            if isinstance(e, (list, tuple)) and len(e) == 3 and isinstance(e[0], str)
            and type(e[1]) is int and isinstance(e[2], (bytes, bytearray))]


def pte(val: int) -> dict[str, Any]:
    """A 64-bit PTE as ``frame`` (4 KiB frame number), ``flags`` (bits 0-11 and
    52-63) and ``present``."""
    return {"frame": (val & PTE_FRAME_MASK) >> 12, "flags": val & ~PTE_FRAME_MASK & _U64,
            "present": bool(val & 1)}


def entry_for(call: str, sub: str | int | None) -> Entry | None:
    """The mapping entry of ``call`` (and sub-op name ``sub``), or None."""
    e = CALLS.get(call)
    if isinstance(e, dict):
        return e.get(sub) if isinstance(sub, str) else None
    return e


# mmu_update's command (the low 2 bits of ``ptr``) -> (its entry or None, the call label)
_MMU_UPDATE_BY_CMD: dict[int, tuple[Entry | None, str]] = {
    n: (entry_for("mmu_update", abi.MMU_CMDS.get(n, n)), f"mmu_update {abi.MMU_CMDS.get(n, n)}")
    for n in range(4)}
_PTE_FLAGS_MASK = ~PTE_FRAME_MASK & _U64


#: The HVM platform's event kinds with operations (pvmon.platforms.hvm.pvops.KINDS).
_HVM_KINDS = frozenset({"halt", "mmio", "msr"})


def translate(ev: dict[str, Any], state: XenState) -> Iterator[PvOp]:
    """Canonical operations of one trace event of a Xen PV run."""
    get = ev.get
    k = get("k")
    seq, t = get("seq"), get("t")
    seq = seq if type(seq) is int else -1
    t = t if type(t) is int else 0
    if k == "hc":
        args = get("args")
        if type(args) is list:
            args = tuple([a if type(a) is int else 0 for a in args])
            if len(args) < 6:
                args = args + (0,) * (6 - len(args))
        elif isinstance(args, list):
            args = tuple(a if type(a) is int else 0 for a in args)
            args = args + (0,) * (6 - len(args))
        else:
            args = (0,) * 6
        op = get("op")
        if not isinstance(op, dict):
            op = {}
        if "port" in op and type(op["port"]) is not int:
            op = {k: v for k, v in op.items() if k != "port"}
        ret = get("ret")
        if type(ret) is not int:
            ret = None
        name = get("name")
        if not isinstance(name, str):
            nr = get("nr")
            name = abi.hypercall_name(nr) if type(nr) is int else "?"
        yield from _call(name, args, op, ret, _Mem(get("rd")), get("wr"), seq, t, (), state)
    elif k == "tsc_run" or k == "tsc":
        yield from clock_reads(ev, seq, t)
    elif k == "cpuid":
        yield PvOp("cpu.cpuid", seq, t, "cpuid" if state.hvm else "cpuid (forced emulation)",
                   {"leaf": ev.get("leaf"), "sub": ev.get("sub")})
    elif k in _HVM_KINDS:
        from pvmon.platforms.hvm import pvops as hvm_pvops
        yield from hvm_pvops.translate(ev, seq, t)


def _subop(call: str, args: tuple[int, ...], op: dict, mem: _Mem) -> str | int | None:
    if call in _ARG0_SUBOPS:
        table, mask = _ARG0_SUBOPS[call]
        n = args[0] & mask
        return table.get(n, n)
    if call in ("event_channel_op_compat", "physdev_op_compat"):
        n = mem.u32(args[0])
        if n is None:
            c = op.get("cmd")
            return c if isinstance(c, (str, int)) else None
        table = abi.EVTCHNOP_CMDS if call == "event_channel_op_compat" else abi.PHYSDEVOP_CMDS
        return table.get(n, n)
    return None


def _call(call: str, args: tuple[int, ...], op: dict, ret: int | None, mem: _Mem, wr: Any,
          seq: int, t: int, batch: tuple[BatchRef, ...], st: XenState) -> Iterator[PvOp]:
    """Operations of one call (a top-level hypercall or a batch entry: ``op`` is
    the backend's decoded map for a top-level call, {} for an entry)."""
    if call == "mmu_update":
        yield from _mmu_update(args, op, ret, mem, _Mem(wr), seq, t, batch, st)
        return
    if call == "mmuext_op":
        yield from _mmuext(args, op, ret, mem, _Mem(wr), seq, t, batch, st)
        return
    if call == "multicall":
        yield from _multicall(args, op, ret, mem, wr, seq, t, batch, st)
        return
    sub = _subop(call, args, op, mem)
    label = call if sub is None else f"{call} {sub}"
    entry = entry_for(call, sub)
    if entry is None:
        yield PvOp("unmapped", seq, t, label, {}, ret, batch)
        return
    a = _args(call, sub, args, op, mem, st, ret)
    name = entry.op
    if name == "irq.notify":
        port = a.get("port")
        if port in st.ipi_ports:
            name = "irq.send_ipi"
        elif st.partial and port is not None and port not in st.touched:
            st.unknown.add(port)
    if call == "set_timer_op" and not args[0]:
        name, a = "time.stop", {"timer": "oneshot"}
    yield PvOp(name, seq, t, label, a, ret, batch)
    if call == "update_va_mapping":
        flush = args[2] & abi.UVMF_FLUSHTYPE_MASK
        if flush:
            scope = _scope(args[2] & ~abi.UVMF_FLUSHTYPE_MASK)
            if flush == abi.UVMF_INVLPG:
                yield PvOp("mmu.invlpg", seq, t, label, {"va": args[0], "scope": scope}, ret,
                           batch)
            else:
                yield PvOp("mmu.flush_tlb", seq, t, label, {"scope": scope}, ret, batch)


def _scope(mask: int) -> str:
    """update_va_mapping's flush target (xen.h: UVMF_LOCAL 0, UVMF_ALL, else a
    pointer to a vCPU mask)."""
    return "local" if mask == 0 else "all" if mask == abi.UVMF_ALL else "multi"


def _args(call: str, sub: Any, args: tuple[int, ...], op: dict, mem: _Mem, st: XenState,
          ret: int | None) -> dict[str, Any]:
    """Normalized arguments of a call that is not a batch."""
    if call == "update_va_mapping":
        return {"va": args[0], **pte(args[1]), "level": 1}
    if call == "set_timer_op":
        return {"deadline_ns": args[0], "relative": False}
    if call == "vcpu_op":
        out: dict[str, Any] = {"vcpu": args[1]}
        if sub == "set_singleshot_timer":
            dl, fl = op.get("timeout_ns"), op.get("flags")
            if dl is None:
                dl, fl = mem.u64(args[2]), mem.u32(args[2] + 8)
            out.update(deadline_ns=dl, relative=False,
                       future_only=None if fl is None else bool(fl & abi.VCPU_SSHOTTMR_future))
        elif sub == "set_periodic_timer":
            p = op.get("period_ns")
            out.update(period_ns=mem.u64(args[2]) if p is None else p, relative=True)
        elif sub in ("stop_singleshot_timer", "stop_periodic_timer"):
            out["timer"] = "oneshot" if sub == "stop_singleshot_timer" else "periodic"
        elif isinstance(sub, str) and sub.startswith("register_"):
            out["area"] = sub[len("register_"):]
        return out
    if call in ("event_channel_op", "event_channel_op_compat"):
        base = args[1] if call == "event_channel_op" else args[0] + 4
        out = {}
        port = op.get("port")
        if port is None and sub in ("send", "unmask", "close", "status", "bind_vcpu",
                                    "set_priority"):
            port = mem.u32(base)
        if port is not None:
            out["port"] = port
        if sub == "bind_virq":
            out["source"] = "virq"
            if "virq" in op:
                out["virq"] = op["virq"]
        elif sub == "bind_ipi":
            out["source"] = "ipi"
            if port is not None and ret == 0:
                st.ipi_ports.add(port)
                if st.partial:
                    st.touched[port] = True
        elif sub in ("bind_interdomain", "alloc_unbound", "bind_pirq"):
            out["source"] = {"bind_pirq": "pirq"}.get(sub, "interdomain")
        elif sub == "close" and port is not None:
            st.ipi_ports.discard(port)
            if st.partial:
                st.touched[port] = False
        return out
    if call in ("sched_op", "sched_op_compat"):
        if sub == "shutdown":
            r = args[1] if call == "sched_op_compat" else mem.u32(args[1])
            reason = op.get("reason")
            if reason is None and r is not None:
                reason = abi.SHUTDOWN_REASONS.get(r, r)
            return {"reason": reason}
        if sub == "poll":
            return {k: op[k] for k in ("nr_ports", "timeout") if k in op}
        return {}
    if call == "set_segment_base":
        return {"which": abi.SEGBASE_NAMES.get(args[0], args[0]), "base": args[1]}
    if call == "stack_switch":
        return {"ss": args[0], "sp": args[1]}
    if call == "fpu_taskswitch":
        return {"ts": bool(args[0])}
    if call in ("set_debugreg", "get_debugreg"):
        return {"reg": args[0], **({"value": args[1]} if call == "set_debugreg" else {})}
    if call == "set_gdt":
        return {"entries": args[1]}
    if call == "update_descriptor":
        return {"entry_ma": args[0], "desc": args[1]}
    if call == "set_trap_table":
        return {"entries": op.get("entries"), "clear": args[0] == 0}
    if call == "set_callbacks":
        return {"event": args[0], "failsafe": args[1], "syscall": args[2]}
    if call in ("callback_op", "nmi_op"):
        return {k: op[k] for k in ("type", "address") if k in op}
    if call == "vm_assist":
        return {"enable": sub == "enable", "type": abi.VMASST_TYPES.get(args[1], args[1])}
    if call == "console_io":
        return {"bytes": args[1]}
    if call == "grant_table_op":
        return {"count": args[2]}
    if call == "memory_op":
        return {k: op[k] for k in ("nr_extents", "extent_order") if k in op}
    return {}


def _mmu_update(args: tuple[int, ...], op: dict, ret: int | None, mem: _Mem, mem_w: _Mem,
                seq: int, t: int, batch: tuple[BatchRef, ...],
                st: XenState) -> Iterator[PvOp]:
    """mmu_update: one operation per ``struct mmu_update`` {ptr, val} (xen.h);
    more than one entry is a batch."""
    count = args[1] & ~abi.MMU_UPDATE_PREEMPTED & _U64
    raw = mem.get(args[0], abi.MMU_UPDATE_SIZE * count) if count <= 1 << 20 else None
    if raw is None:
        if count == 1 and "ptr" in op and "val" in op:
            reqs = [(op["ptr"], op["val"])]
        else:
            yield PvOp("unmapped", seq, t, "mmu_update", {"count": count,
                                                          "why": "entries not in the trace"},
                       ret, batch)
            return
    else:
        reqs = [struct.unpack_from("<QQ", raw, i * abi.MMU_UPDATE_SIZE) for i in range(count)]
    inner = batch
    if len(reqs) > 1:
        yield PvOp("batch.submit", seq, t, "mmu_update", {"count": len(reqs)}, ret, batch)
    done = _done(args, op, mem_w)
    for i, (ptr, val) in enumerate(reqs):
        if len(reqs) > 1:
            inner = (*batch, BatchRef("mmu_update", seq, i, len(reqs)))
            ret_i = _entry_ret(i, done, ret)
        else:
            ret_i = ret
        entry, label = _MMU_UPDATE_BY_CMD[ptr & 3]
        if entry is None:
            yield PvOp("unmapped", seq, t, label, {}, ret_i, inner)
        elif entry.op == "memory.set_m2p":
            yield PvOp(entry.op, seq, t, label, {"mfn": ptr >> 12, "pfn": val}, ret_i, inner)
        else:
            ma = ptr & ~7 & _U64
            level = st.levels.get(ma >> 12)
            a = {"entry_ma": ma, "frame": (val & PTE_FRAME_MASK) >> 12,     # as pte(val)
                 "flags": val & _PTE_FLAGS_MASK, "present": bool(val & 1), "level": level}
            if ret_i == 0 and level is not None and level > 1 and val & _PTE_P \
                    and not (level < 4 and val & _PTE_PSE):
                st.levels[a["frame"]] = level - 1     # the table this entry points to
            if ptr & 3 == abi.MMU_PT_UPDATE_PRESERVE_AD:
                a["preserve_ad"] = True
            yield PvOp(entry.op, seq, t, label, a, ret_i, inner)


def _mmuext(args: tuple[int, ...], op: dict, ret: int | None, mem: _Mem, mem_w: _Mem,
            seq: int, t: int, batch: tuple[BatchRef, ...], st: XenState) -> Iterator[PvOp]:
    """mmuext_op: one operation per ``struct mmuext_op`` {cmd, arg1, arg2} (xen.h)."""
    count = args[1] & ~abi.MMU_UPDATE_PREEMPTED & _U64
    raw = mem.get(args[0], abi.MMUEXT_OP_SIZE * count) if count <= 1 << 20 else None
    if raw is None:
        c = op.get("cmd")
        if count == 1 and c is not None:
            arg1 = op.get("mfn", op.get("linear_addr", 0))
            reqs = [(abi.MMUEXT.get(c, c) if isinstance(c, str) else c, arg1, 0)]
        else:
            yield PvOp("unmapped", seq, t, "mmuext_op", {"count": count,
                                                         "why": "entries not in the trace"},
                       ret, batch)
            return
    else:
        reqs = [struct.unpack_from("<I4xQQ", raw, i * abi.MMUEXT_OP_SIZE) for i in range(count)]
    inner = batch
    if len(reqs) > 1:
        yield PvOp("batch.submit", seq, t, "mmuext_op", {"count": len(reqs)}, ret, batch)
    done = _done(args, op, mem_w)
    for i, (cmd, arg1, arg2) in enumerate(reqs):
        if len(reqs) > 1:
            inner = (*batch, BatchRef("mmuext_op", seq, i, len(reqs)))
            ret_i = _entry_ret(i, done, ret)
        else:
            ret_i = ret
        name = abi.MMUEXT_CMDS.get(cmd, cmd) if type(cmd) is int else cmd
        label = f"mmuext_op {name}"
        entry = entry_for("mmuext_op", name)
        if entry is None:
            yield PvOp("unmapped", seq, t, label, {}, ret_i, inner)
            continue
        a: dict[str, Any]
        if entry.op == "mmu.pin":
            level = int(name[len("PIN_L")])          # PIN_L<n>_TABLE
            a = {"frame": arg1, "level": level}
            if ret_i == 0:
                st.levels[arg1] = level
        elif entry.op == "mmu.unpin":
            a = {"frame": arg1}
            if ret_i == 0:
                st.levels.pop(arg1, None)
        elif entry.op == "mmu.new_root":
            a = {"frame": arg1, "user": name == "NEW_USER_BASEPTR"}
        elif entry.op in ("mmu.flush_tlb", "mmu.invlpg"):
            a = {"scope": name.rsplit("_", 1)[1].lower()}
            if entry.op == "mmu.invlpg":
                a = {"va": arg1, **a}
        elif entry.op == "cpu.set_ldt":
            a = {"va": arg1, "entries": arg2}
        elif entry.op == "mmu.copy_page":
            a = {"frame": arg1, "src_frame": arg2}
        elif entry.op in ("mmu.clear_page", "mmu.superpage"):
            a = {"frame": arg1}
        else:
            a = {}
        yield PvOp(entry.op, seq, t, label, a, ret_i, inner)


def _done(args: tuple[int, ...], op: dict, mem_w: _Mem) -> int | None:
    """How many entries of an mmu_update/mmuext_op array Xen performed: the
    backend's decoded ``done``, else the count it wrote to the done pointer."""
    d = op.get("done")
    if type(d) is int:
        return d
    return mem_w.u32(args[2]) if args[2] else None


def _entry_ret(i: int, done: int | None, ret: int | None) -> int | None:
    """An array entry's result: 0 before ``done``, the call's error at it, None
    (never run, or not known) after it."""
    if ret == 0:
        return 0
    if done is None:
        return None
    return 0 if i < done else ret if i == done else None


def _multicall(args: tuple[int, ...], op: dict, ret: int | None, mem: _Mem, wr: Any, seq: int,
               t: int, batch: tuple[BatchRef, ...], st: XenState) -> Iterator[PvOp]:
    """multicall: a ``batch.submit``, then each ``struct multicall_entry``
    {op, result, args[6]} (xen.h) as the call it names, with the batch as
    context and the result Xen wrote into the entry as its ``ret``. Entries
    past an iret that ended the batch were never read: they are not shown."""
    nr = args[1]
    yield PvOp("batch.submit", seq, t, "multicall", {"count": nr}, ret, batch)
    results: dict[int, int] = {}
    for s, a, b in _accesses(wr):
        if s == "v" and len(b) == 8:
            results[a] = int.from_bytes(b, "little", signed=True)
    for i in range(min(nr, 1024)):
        ent = args[0] + i * abi.MULTICALL_ENTRY_SIZE
        raw = mem.get(ent, abi.MULTICALL_ENTRY_SIZE)
        if raw is None:
            break
        num, _res, *a = struct.unpack("<QQ6Q", raw)
        inner = (*batch, BatchRef("multicall", seq, i, nr))
        name = abi.hypercall_name(num) if num <= 0xFFFF else f"hypercall_{num}"
        yield from _call(name, tuple(a), {}, results.get(ent + 8), mem, wr, seq, t, inner, st)


# ---------------------------------------------------------------------------
# Counting only (``trace stats --pvops``, ``trace pvops``): the (operation, call,
# native?) keys translate() would yield for an event, added to a counter dict
# without building PvOp objects or normalized arguments. Page-table levels change
# no key, so the count path does not keep them; the ports bound by bind_ipi do
# (irq.notify or irq.send_ipi), so event_channel_op goes through translate().

#: Event kinds translate() yields operations for (it yields nothing for any other).
_COUNT_KINDS = frozenset({"hc", "tsc_run", "tsc", "cpuid"}) | _HVM_KINDS
_CLOCK_KEY = ("time.read_clock", "rdtsc", True)
_MMU_BATCH_KEY = ("batch.submit", "mmu_update", False)
_MMUEXT_BATCH_KEY = ("batch.submit", "mmuext_op", False)
# mmu_update's command -> its entry's key (as _mmu_update yields it)
_MMU_KEYS: tuple[tuple[str, str, bool], ...] = tuple(
    ("unmapped" if e is None else e.op, label, False)
    for e, label in (_MMU_UPDATE_BY_CMD[n] for n in range(4)))
# Calls whose key is decided by the call name and (for _ARG0_SUBOPS calls) the
# sub-op in the first argument alone: one operation each, no state read or kept.
_COUNT_BY_NAME = frozenset(
    c for c in [*CALLS, *_ARG0_SUBOPS]
    if c not in ("mmu_update", "mmuext_op", "multicall", "update_va_mapping",
                 "set_timer_op", "event_channel_op", "event_channel_op_compat",
                 "physdev_op_compat"))
_key_cache: dict[Any, tuple[str, str, bool]] = {}
_mmuext_keys: dict[int, tuple[str, str, bool]] = {}


def _count_slow(ev: dict[str, Any], state: XenState, seen: dict[Any, int]) -> None:
    get = seen.get
    for o in translate(ev, state):
        key = (o.op, o.call, o.native is not None)
        seen[key] = get(key, 0) + 1


def _mmuext_key(cmd: int) -> tuple[str, str, bool]:
    key = _mmuext_keys.get(cmd)
    if key is None:
        name = abi.MMUEXT_CMDS.get(cmd, cmd)
        entry = entry_for("mmuext_op", name)
        key = ("unmapped" if entry is None else entry.op, f"mmuext_op {name}", False)
        if cmd in abi.MMUEXT_CMDS:      # the cache stays bounded by the ABI
            _mmuext_keys[cmd] = key
    return key


def _read_of(rd: Any, addr: int, size: int) -> bytes | None:
    """``_Mem(rd).get(addr, size)`` without building the _Mem (same answer)."""
    if type(rd) is not list:
        return _Mem(rd).get(addr, size)
    for e in rd:
        if isinstance(e, (list, tuple)) and len(e) == 3 and isinstance(e[0], str) \
                and e[0] == "v" and type(e[1]) is int and isinstance(e[2], (bytes, bytearray)):
            a, b = e[1], e[2]
            if a <= addr and addr + size <= a + len(b):
                return bytes(b[addr - a:addr - a + size])
    return None


def count_events(events: Iterable[dict[str, Any]], state: XenState, seen: dict[Any, int],
                 abi_name: str = "xen",
                 other: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Add to ``seen`` ({(op, call, native): count}, in first-seen order) the
    keys of the operations ``translate(ev, state)`` yields for each event of
    ``events``, in the same order, keeping the state that decides a key (the
    ports bound by bind_ipi): the counts :func:`pvmon.pvops.derive` would give.

    ``abi_name`` is the trace's ABI: an event whose ``abi`` field names another
    (a string) goes to ``other`` instead (as :class:`pvmon.pvops.Deriver` would
    route it; TypeError when there is no ``other``).

    Fast for the events that carry a boot's operations (mmu_update and
    mmuext_op arrays read from the event's ``rd``, calls decided by their name
    and sub-op, TSC reads, kinds with no operation); anything else (multicalls,
    event channels, damaged events) goes through :func:`translate`. Raises what
    translate raises."""
    get = seen.get
    kinds = _COUNT_KINDS
    by_name = _COUNT_BY_NAME
    cache = _key_cache
    mmu_keys = _MMU_KEYS
    ext_keys = _mmuext_keys
    mask = _COUNT_MASK
    mmu_size, ext_size = abi.MMU_UPDATE_SIZE, abi.MMUEXT_OP_SIZE
    u32 = _U32.unpack_from
    u32x2 = _U32X2.unpack_from
    pairs = _mmuext_pairs
    from pvmon.platforms.hvm.pvops import mmio_has_no_op
    for ev in events:
        a = ev.get("abi")       # (a non-map event raises AttributeError, as in translate)
        if a is not None and a != abi_name and type(a) is str:
            other(ev)  # type: ignore[misc]
            continue
        k = ev.get("k")
        if k == "hc":
            name = ev.get("name")
            args = ev.get("args")
            if type(args) is not list or len(args) < 2 or type(args[0]) is not int \
                    or type(args[1]) is not int:
                _count_slow(ev, state, seen)
            elif name == "mmu_update" or name == "mmuext_op":
                # the array as _Mem(rd).get reads it: the first well-formed
                # guest-virtual read holding it whole (almost always rd[0])
                addr, count = args[0], args[1] & mask
                if not 0 < count <= 4096:
                    _count_slow(ev, state, seen)
                    continue
                mmu = name == "mmu_update"
                end = (mmu_size if mmu else ext_size) * count
                rd = ev.get("rd")
                e = rd[0] if type(rd) is list and rd else None
                if type(e) is list and len(e) == 3:
                    space, base, raw = e
                    if space == "v" and type(base) is int and type(raw) is bytes \
                            and base <= addr and addr + end <= base + len(raw):
                        off = addr - base
                    else:
                        raw, off = _read_of(rd, addr, end), 0
                else:
                    raw, off = _read_of(rd, addr, end), 0
                if raw is None:
                    _count_slow(ev, state, seen)
                elif mmu:
                    if count == 1:
                        key = mmu_keys[raw[off] & 3]
                        seen[key] = get(key, 0) + 1
                        continue
                    seen[_MMU_BATCH_KEY] = get(_MMU_BATCH_KEY, 0) + 1
                    for i in range(off, off + end, mmu_size):
                        key = mmu_keys[raw[i] & 3]
                        seen[key] = get(key, 0) + 1
                elif count == 2:        # Linux pins with a flush: two entries
                    pair = pairs.get(u32x2(raw, off)) or _mmuext_pair(u32x2(raw, off))
                    seen[_MMUEXT_BATCH_KEY] = get(_MMUEXT_BATCH_KEY, 0) + 1
                    key = pair[0]
                    seen[key] = get(key, 0) + 1
                    key = pair[1]
                    seen[key] = get(key, 0) + 1
                else:
                    if count > 1:
                        seen[_MMUEXT_BATCH_KEY] = get(_MMUEXT_BATCH_KEY, 0) + 1
                    for i in range(off, off + end, ext_size):
                        cmd = u32(raw, i)[0]
                        key = ext_keys.get(cmd) or _mmuext_key(cmd)
                        seen[key] = get(key, 0) + 1
            elif type(name) is str and name in by_name:
                sub_of = _ARG0_SUBOPS.get(name)
                ck = name if sub_of is None else (name, args[0] & sub_of[1])
                key = cache.get(ck)
                if key is None:
                    key = _name_key(name, args[0])
                    if sub_of is None or ck[1] in sub_of[0]:    # bounded by the ABI
                        cache[ck] = key
                seen[key] = get(key, 0) + 1
            else:
                _count_slow(ev, state, seen)
        elif type(k) is not str:
            _count_slow(ev, state, seen)
        elif k not in kinds:        # port I/O, console, faults...: no operation
            continue
        elif k == "tsc_run":
            vals = ev.get("val")
            if isinstance(vals, list):
                if vals:
                    seen[_CLOCK_KEY] = get(_CLOCK_KEY, 0) + len(vals)
            else:
                _count_slow(ev, state, seen)
        elif k == "cpuid":
            key = _CPUID_HVM_KEY if state.hvm else _CPUID_PV_KEY
            seen[key] = get(key, 0) + 1
        elif k != "mmio" or not mmio_has_no_op(ev):
            _count_slow(ev, state, seen)


_COUNT_MASK = ~abi.MMU_UPDATE_PREEMPTED & _U64
_U32 = struct.Struct("<I")
_U32X2 = struct.Struct(f"<I{abi.MMUEXT_OP_SIZE - 4}xI")   # the cmds of two mmuext_ops
# (cmd, cmd) of a two-entry mmuext_op -> the entries' keys (known commands only)
_mmuext_pairs: dict[tuple[int, int], tuple[tuple[str, str, bool], ...]] = {}


def _mmuext_pair(cmds: tuple[int, int]) -> tuple[tuple[str, str, bool], ...]:
    keys = (_mmuext_key(cmds[0]), _mmuext_key(cmds[1]))
    if cmds[0] in abi.MMUEXT_CMDS and cmds[1] in abi.MMUEXT_CMDS:   # bounded
        _mmuext_pairs[cmds] = keys
    return keys
_CPUID_HVM_KEY = ("cpu.cpuid", "cpuid", False)
_CPUID_PV_KEY = ("cpu.cpuid", "cpuid (forced emulation)", False)


def _name_key(name: str, arg0: int) -> tuple[str, str, bool]:
    """The key of a call in :data:`_COUNT_BY_NAME` (as :func:`_call` labels it)."""
    sub = _subop(name, (arg0,), {}, _Mem(None))
    entry = entry_for(name, sub)
    return ("unmapped" if entry is None else entry.op,
            name if sub is None else f"{name} {sub}", False)
