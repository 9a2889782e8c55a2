"""Xen public ABI constants and struct layouts, as data.

Every decoder, backend, trace pretty-printer and UI label reads names from
here. Numbers and layouts are facts of Xen's public headers (64-bit PV guest
view); the header each block comes from is named above it.
"""

from __future__ import annotations

import errno as _errno

# --- xen/include/public/xen.h: hypercall numbers ---------------------------
HYPERCALLS: dict[int, str] = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
    4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op",
    8: "set_debugreg", 9: "get_debugreg", 10: "update_descriptor", 12: "memory_op",
    13: "multicall", 14: "update_va_mapping", 15: "set_timer_op",
    16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
    19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist",
    22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op",
    25: "set_segment_base", 26: "mmuext_op", 27: "xsm_op", 28: "nmi_op",
    29: "sched_op", 30: "callback_op", 31: "xenoprof_op", 32: "event_channel_op",
    33: "physdev_op", 34: "hvm_op", 35: "sysctl", 36: "domctl", 37: "kexec_op",
    38: "tmem_op", 39: "argo_op", 40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op",
}
HYPERCALL_NUMBERS: dict[str, int] = {v: k for k, v in HYPERCALLS.items()}
HYPERVISOR_iret = 23

# Linux/Xen errno values as returned in RAX (negated). xen/include/public/errno.h
EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO = 1, 2, 3, 4, 5, 6
ENODEV = 19
E2BIG, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST = 7, 11, 12, 13, 14, 16, 17
EINVAL, ENOSPC, ERANGE, ENOSYS, ETIME, EILSEQ, EOPNOTSUPP = 22, 28, 34, 38, 62, 84, 95
assert _errno.EFAULT == EFAULT and _errno.ENOSYS == ENOSYS  # Linux host numbering
assert _errno.ERANGE == ERANGE and _errno.EILSEQ == EILSEQ and _errno.ENODEV == ENODEV

ERRNO_NAMES = {v: k for k, v in {
    "EPERM": EPERM, "ENOENT": ENOENT, "ESRCH": ESRCH, "EINTR": EINTR, "EIO": EIO, "ENXIO": ENXIO,
    "E2BIG": E2BIG, "EAGAIN": EAGAIN, "ENOMEM": ENOMEM, "EACCES": EACCES, "EFAULT": EFAULT,
    "EBUSY": EBUSY, "EEXIST": EEXIST, "ENODEV": ENODEV, "EINVAL": EINVAL, "ENOSPC": ENOSPC,
    "ERANGE": ERANGE,
    "ENOSYS": ENOSYS, "ETIME": ETIME, "EILSEQ": EILSEQ, "EOPNOTSUPP": EOPNOTSUPP}.items()}

# xen.h: special domain identifiers
DOMID_SELF, DOMID_IO, DOMID_XEN = 0x7FF0, 0x7FF1, 0x7FF2

# --- xen.h: mmu_update commands (low 2 bits of mmu_update.ptr) --------------
MMU_CMDS = {0: "NORMAL_PT_UPDATE", 1: "MACHPHYS_UPDATE", 2: "PT_UPDATE_PRESERVE_AD",
            3: "PT_UPDATE_NO_TRANSLATE"}
MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD = 0, 1, 2
MMU_UPDATE_PREEMPTED = 1 << 31

# --- xen.h: mmuext_op commands; struct mmuext_op is 24 bytes ----------------
MMUEXT_CMDS = {
    0: "PIN_L1_TABLE", 1: "PIN_L2_TABLE", 2: "PIN_L3_TABLE", 3: "PIN_L4_TABLE",
    4: "UNPIN_TABLE", 5: "NEW_BASEPTR", 6: "TLB_FLUSH_LOCAL", 7: "INVLPG_LOCAL",
    8: "TLB_FLUSH_MULTI", 9: "INVLPG_MULTI", 10: "TLB_FLUSH_ALL", 11: "INVLPG_ALL",
    12: "FLUSH_CACHE", 13: "SET_LDT", 15: "NEW_USER_BASEPTR", 16: "CLEAR_PAGE",
    17: "COPY_PAGE", 18: "FLUSH_CACHE_GLOBAL", 19: "MARK_SUPER", 20: "UNMARK_SUPER",
}
MMUEXT = {v: k for k, v in MMUEXT_CMDS.items()}
MMUEXT_OP_SIZE = 24
MMU_UPDATE_SIZE = 16

# --- xen.h: update_va_mapping flags ----------------------------------------
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK, UVMF_ALL = 0, 1, 2, 3, 4

# --- xen.h: multicall_entry {op, result, args[6]}: 64 bytes ----------------
MULTICALL_ENTRY_SIZE = 64

# --- xen.h: vm_assist --------------------------------------------------------
VMASST_CMDS = {0: "enable", 1: "disable"}
VMASST_TYPES = {0: "4gb_segments", 1: "4gb_segments_notify", 2: "writable_pagetables",
                3: "pae_extended_cr3", 4: "architectural_iopl", 5: "runstate_update_flag",
                32: "m2p_strict"}

# --- xen.h: console_io -------------------------------------------------------
CONSOLEIO_CMDS = {0: "write", 1: "read"}
CONSOLEIO_write, CONSOLEIO_read = 0, 1

# --- sched.h -----------------------------------------------------------------
SCHEDOP_CMDS = {0: "yield", 1: "block", 2: "shutdown", 3: "poll", 4: "remote_shutdown",
                5: "shutdown_code", 6: "watchdog", 7: "pin_override"}
SCHEDOP = {v: k for k, v in SCHEDOP_CMDS.items()}
SHUTDOWN_REASONS = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog",
                    5: "soft_reset"}
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend, SHUTDOWN_crash = 0, 1, 2, 3

# --- event_channel.h ---------------------------------------------------------
EVTCHNOP_CMDS = {0: "bind_interdomain", 1: "bind_virq", 2: "bind_pirq", 3: "close",
                 4: "send", 5: "status", 6: "alloc_unbound", 7: "bind_ipi",
                 8: "bind_vcpu", 9: "unmask", 10: "reset", 11: "init_control",
                 12: "expand_array", 13: "set_priority", 14: "reset_cont"}
EVTCHNOP = {v: k for k, v in EVTCHNOP_CMDS.items()}
# Size in bytes of each sub-op's argument struct (the compat call copies
# these after a 4-byte cmd; event_channel.h "struct evtchn_op").
EVTCHNOP_ARG_SIZE = {0: 12, 1: 12, 2: 12, 3: 4, 4: 4, 5: 24, 6: 8, 7: 8, 8: 8, 9: 4,
                     10: 2, 11: 16, 12: 8, 13: 8, 14: 2}
EVTCHNSTAT = {"closed": 0, "unbound": 1, "interdomain": 2, "pirq": 3, "virq": 4, "ipi": 5}
EVTCHN_2L_NR_CHANNELS = 64 * 64   # event_channel.h: sizeof(xen_ulong_t) * sizeof(xen_ulong_t) * 64

# xen.h VIRQs
VIRQS = {0: "TIMER", 1: "DEBUG", 2: "CONSOLE", 3: "DOM_EXC", 4: "TBUF", 6: "DEBUGGER",
         7: "XENOPROF", 8: "CON_RING", 9: "PCPU_STATE", 10: "MEM_EVENT", 11: "ARGO",
         12: "ENOMEM", 13: "XENPMU"}
VIRQ_TIMER = 0
NR_VIRQS = 24
# VIRQs bound per vCPU; every other one is global and binds on vCPU 0 only
# (virq_is_global, xen/common/event_channel.c@stable-4.17)
PER_VCPU_VIRQS = frozenset({0, 1, 7, 13})   # TIMER, DEBUG, XENOPROF, XENPMU

# --- vcpu.h ------------------------------------------------------------------
VCPUOP_CMDS = {0: "initialise", 1: "up", 2: "down", 3: "is_up", 4: "get_runstate_info",
               5: "register_runstate_memory_area", 6: "set_periodic_timer",
               7: "stop_periodic_timer", 8: "set_singleshot_timer",
               9: "stop_singleshot_timer", 10: "register_vcpu_info", 11: "send_nmi",
               12: "get_physid", 13: "register_vcpu_time_memory_area",
               14: "register_runstate_phys_area", 15: "register_vcpu_time_phys_area"}
VCPUOP = {v: k for k, v in VCPUOP_CMDS.items()}
VCPU_SSHOTTMR_future = 1
RUNSTATE_running, RUNSTATE_runnable, RUNSTATE_blocked, RUNSTATE_offline = 0, 1, 2, 3
VCPU_RUNSTATE_INFO_SIZE = 48   # int state; u64 state_entry_time; u64 time[4]
XEN_RUNSTATE_UPDATE = 1 << 63

# --- version.h ---------------------------------------------------------------
XENVER_CMDS = {0: "version", 1: "extraversion", 2: "compile_info", 3: "capabilities",
               4: "changeset", 5: "platform_parameters", 6: "get_features", 7: "pagesize",
               8: "guest_handle", 9: "commandline", 10: "build_id", 11: "extraversion2",
               12: "capabilities2", 13: "changeset2", 14: "commandline2"}
XENVER = {v: k for k, v in XENVER_CMDS.items()}
# features.h
XENFEAT = {"writable_page_tables": 0, "writable_descriptor_tables": 1,
           "auto_translated_physmap": 2, "supervisor_mode_kernel": 3,
           "pae_pgdir_above_4gb": 4, "mmu_pt_update_preserve_ad": 5,
           "highmem_assist": 6, "gnttab_map_avail_bits": 7, "hvm_callback_vector": 8,
           "hvm_safe_pvclock": 9, "hvm_pirqs": 10, "dom0": 11, "grant_map_identity": 12,
           "memory_op_vnode_supported": 13, "ARM_SMCCC_supported": 14,
           "linux_rsdp_unrestricted": 15, "not_direct_mapped": 16, "direct_mapped": 17,
           "runstate_phys_area": 18, "vcpu_time_phys_area": 19, "dm_msix_all_writes": 20}

# --- memory.h ----------------------------------------------------------------
XENMEM_CMDS = {0: "increase_reservation", 1: "decrease_reservation", 2: "maximum_ram_page",
               3: "current_reservation", 4: "maximum_reservation", 5: "machphys_mfn_list",
               6: "populate_physmap", 7: "add_to_physmap", 9: "memory_map",
               10: "machine_memory_map", 11: "exchange", 12: "machphys_mapping",
               13: "set_memory_map", 14: "maximum_gpfn", 15: "remove_from_physmap",
               16: "set_pod_target", 17: "get_pod_target", 18: "get_sharing_freed_pages",
               21: "access_op",
               22: "sharing_op", 23: "add_to_physmap_batch", 24: "claim_pages",
               25: "machphys_compat_mfn_list", 26: "get_vnumainfo",
               27: "reserved_device_memory_map", 28: "acquire_resource",
               29: "get_mem_access"}
XENMEM = {v: k for k, v in XENMEM_CMDS.items()}
E820_RAM = 1

# --- physdev.h ---------------------------------------------------------------
PHYSDEVOP_CMDS = {4: "apic_read?", 5: "irq_status_query", 6: "set_iopl", 7: "set_iobitmap",
                  8: "apic_read", 9: "apic_write", 10: "alloc_irq_vector",
                  11: "free_irq_vector", 12: "eoi", 13: "map_pirq", 14: "unmap_pirq",
                  15: "manage_pci_add", 16: "manage_pci_remove", 17: "pirq_eoi_gmfn_v1",
                  19: "restore_msi", 21: "setup_gsi", 23: "get_free_pirq",
                  24: "pci_mmcfg_reserved", 25: "pci_device_add", 26: "pci_device_remove",
                  28: "pirq_eoi_gmfn_v2", 29: "dbgp_op", 30: "prepare_msix",
                  31: "release_msix", 32: "pci_device_reset"}

# --- callback.h --------------------------------------------------------------
CALLBACKOP_CMDS = {0: "register", 1: "unregister"}
CALLBACKOP_register, CALLBACKOP_unregister = 0, 1
# Type 3 (CALLBACKTYPE_sysenter_deprecated) is x86-32 only: a 64-bit Xen answers
# -ENOSYS (xen/arch/x86/pv/callback.c register_guest_callback, default case).
CALLBACKTYPES = {0: "event", 1: "failsafe", 2: "syscall", 4: "nmi", 5: "sysenter",
                 7: "syscall32"}
CALLBACKTYPE_event, CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall = 0, 1, 2
CALLBACKTYPE_nmi, CALLBACKTYPE_sysenter, CALLBACKTYPE_syscall32 = 4, 5, 7
CALLBACKF_mask_events = 1
# struct callback_register {u16 type; u16 flags; xen_callback_t address}: 16 bytes
# (xen_callback_t is an unsigned long on x86-64); struct callback_unregister
# {u16 type; u16 _unused}: 4 bytes.
CALLBACK_REGISTER_SIZE, CALLBACK_UNREGISTER_SIZE = 16, 4

# --- nmi.h -------------------------------------------------------------------
XENNMI_CMDS = {0: "register_callback", 1: "unregister_callback"}
XENNMI_register_callback, XENNMI_unregister_callback = 0, 1

# --- grant_table.h (xen/include/public/grant_table.h@stable-4.17) ------------
GNTTABOP_CMDS = {0: "map_grant_ref", 1: "unmap_grant_ref", 2: "setup_table", 3: "dump_table",
                 4: "transfer", 5: "copy", 6: "query_size", 7: "unmap_and_replace",
                 8: "set_version", 9: "get_status_frames", 10: "get_version", 11: "swap_grant_ref",
                 12: "cache_flush"}
GNTTABOP = {v: k for k, v in GNTTABOP_CMDS.items()}
(GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref, GNTTABOP_setup_table, GNTTABOP_dump_table,
 GNTTABOP_transfer, GNTTABOP_copy, GNTTABOP_query_size, GNTTABOP_unmap_and_replace,
 GNTTABOP_set_version, GNTTABOP_get_status_frames, GNTTABOP_get_version,
 GNTTABOP_swap_grant_ref, GNTTABOP_cache_flush) = range(13)
# The command's low 12 bits; the rest carries a continuation (cache_flush only).
# xen/common/grant_table.c@stable-4.17 GNTTABOP_CONTINUATION_ARG_SHIFT: "effectively
# part of the ABI" (a guest suspended mid-continuation resumes on another Xen).
GNTTABOP_CMD_MASK = (1 << 12) - 1
# enum grant_status
GNTST = {0: "okay", -1: "general_error", -2: "bad_domain", -3: "bad_gntref", -4: "bad_handle",
         -5: "bad_virt_addr", -6: "bad_dev_addr", -7: "no_device_space",
         -8: "permission_denied", -9: "bad_page", -10: "bad_copy_arg", -11: "address_too_big",
         -12: "eagain", -13: "no_space"}
(GNTST_okay, GNTST_general_error, GNTST_bad_domain, GNTST_bad_gntref, GNTST_bad_handle,
 GNTST_bad_virt_addr, GNTST_bad_dev_addr, GNTST_no_device_space, GNTST_permission_denied,
 GNTST_bad_page, GNTST_bad_copy_arg, GNTST_address_too_big, GNTST_eagain,
 GNTST_no_space) = range(0, -14, -1)
# Grant entry flags (struct grant_entry_v1 / grant_entry_header.flags) and their subflags.
GTF_invalid, GTF_permit_access, GTF_accept_transfer, GTF_transitive = 0, 1, 2, 3
GTF_type_mask = 3
GTF_readonly, GTF_reading, GTF_writing = 1 << 2, 1 << 3, 1 << 4
GTF_PWT, GTF_PCD, GTF_PAT, GTF_sub_page = 1 << 5, 1 << 6, 1 << 7, 1 << 8
GTF_transfer_committed, GTF_transfer_completed = 1 << 2, 1 << 3
# gnttab_map_grant_ref.flags
GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly = 1 << 0, 1 << 1, 1 << 2
GNTMAP_application_map, GNTMAP_contains_pte = 1 << 3, 1 << 4
GNTMAP_guest_avail0 = 16            # _GNTMAP_guest_avail0: first PTE-available-bits flag
# gnttab_copy.flags
GNTCOPY_source_gref, GNTCOPY_dest_gref = 1 << 0, 1 << 1
# gnttab_cache_flush.op
GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL, GNTTAB_CACHE_SOURCE_GREF = 1 << 0, 1 << 1, 1 << 31
# Entries kept across a version change (toolstack-reserved: console, xenstore).
GNTTAB_NR_RESERVED_ENTRIES = 8
GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE = 0, 1
# Struct sizes (x86-64): grant_entry_v1 {u16 flags; u16 domid; u32 frame}; union
# grant_entry_v2 (16 bytes); grant_status_t (u16); and each sub-op's argument struct.
GRANT_ENTRY_V1_SIZE, GRANT_ENTRY_V2_SIZE, GRANT_STATUS_SIZE = 8, 16, 2
GNTTAB_ARG_SIZE = {"map_grant_ref": 32, "unmap_grant_ref": 24, "setup_table": 24,
                   "transfer": 24, "copy": 40, "query_size": 16, "unmap_and_replace": 24,
                   "set_version": 4, "get_status_frames": 16, "get_version": 8,
                   "swap_grant_ref": 12, "cache_flush": 16}

# --- xenpmu.h ----------------------------------------------------------------
XENPMU_CMDS = {0: "mode_get", 1: "mode_set", 2: "feature_get", 3: "feature_set",
               4: "init", 5: "finish", 6: "lvtpc_set", 7: "flush"}

# --- arch-x86/xen-x86_64.h: segments and the PV frame -----------------------
SEGBASE_NAMES = {0: "FS", 1: "GS_USER", 2: "GS_KERNEL", 3: "GS_USER_SEL"}
SEGBASE_FS, SEGBASE_GS_USER, SEGBASE_GS_KERNEL, SEGBASE_GS_USER_SEL = 0, 1, 2, 3
FLAT_RING3_CS32 = 0xE023                # GDT index 260 of Xen's reserved area
FLAT_RING3_CS64 = 0xE033                # 262
FLAT_RING3_SS64 = 0xE02B                # 261, also the 32-bit SS and DS
FLAT_RING3_SS32 = FLAT_RING3_DS32 = FLAT_RING3_SS64
FLAT_KERNEL_CS64 = FLAT_RING3_CS64
FLAT_KERNEL_SS64 = FLAT_RING3_SS64
FLAT_USER_CS64 = FLAT_RING3_CS64
FLAT_USER_SS64 = FLAT_RING3_SS64
FLAT_USER_CS32 = FLAT_RING3_CS32
FLAT_USER_SS32 = FLAT_RING3_SS32
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_VIRT_END = 0xFFFF880000000000
MACH2PHYS_VIRT_START = 0xFFFF800000000000
VGCF_in_syscall = 1 << 8
VGCF_i387_valid, VGCF_in_kernel, VGCF_failsafe_disables_events = 1, 1 << 2, 1 << 3
VGCF_syscall_disables_events = 1 << 4
# struct vcpu_guest_context (x86_64), VCPUOP_initialise's argument
# (xen/include/public/arch-x86/xen.h and xen-x86_64.h@stable-4.17): 512 bytes of FXSAVE
# area, flags, struct cpu_user_regs (200 bytes: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8
# rax rcx rdx rsi rdi, u32 error_code, u32 entry_vector, rip, u16 cs + pad + u8
# saved_upcall_mask + pad, rflags, rsp, then ss es ds fs gs as u16 in 8-byte slots),
# 256 trap_info, ldt_base, ldt_ents, gdt_frames[16], gdt_ents, kernel_ss, kernel_sp,
# ctrlreg[8], debugreg[8], event/failsafe/syscall callback eips, vm_assist, fs_base,
# gs_base_kernel, gs_base_user. Offsets in bytes.
VCPU_GUEST_CONTEXT = {"fpu_ctxt": 0, "flags": 512, "user_regs": 520, "trap_ctxt": 720,
                      "ldt_base": 4816, "ldt_ents": 4824, "gdt_frames": 4832,
                      "gdt_ents": 4960, "kernel_ss": 4968, "kernel_sp": 4976,
                      "ctrlreg": 4984, "debugreg": 5048, "event_callback_eip": 5112,
                      "failsafe_callback_eip": 5120, "syscall_callback_eip": 5128,
                      "vm_assist": 5136, "fs_base": 5144, "gs_base_kernel": 5152,
                      "gs_base_user": 5160}
VCPU_GUEST_CONTEXT_SIZE = 5168
CPU_USER_REGS_SIZE = 200
CPU_USER_REGS_GPRS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
                      "rax", "rcx", "rdx", "rsi", "rdi")
# struct iret_context: rax, r11, rcx, flags, rip, cs, rflags, rsp, ss (9 x u64)
IRET_CONTEXT_SIZE = 72
# trap_info {u8 vector; u8 flags; u16 cs; u64 address}: 16 bytes; flags: DPL in bits 0-1,
# bit 2: disable events on entry (TI_GET_IF). xen/include/public/arch-x86/xen.h
TRAP_INFO_SIZE = 16
TI_DPL_MASK, TI_IF = 3, 4
# hypercall page: 32 bytes per entry (xen/arch/x86/pv/hypercall.c lays it out)
HYPERCALL_ENTRY_SIZE = 32

# --- xen.h: start_info (x86_64) ---------------------------------------------
START_INFO_MAGIC = b"xen-3.0-x86_64"
START_INFO = {"magic": 0, "nr_pages": 32, "shared_info": 40, "flags": 48, "store_mfn": 56,
              "store_evtchn": 64, "console_mfn": 72, "console_evtchn": 80, "pt_base": 88,
              "nr_pt_frames": 96, "mfn_list": 104, "mod_start": 112, "mod_len": 120,
              "cmd_line": 128, "first_p2m_pfn": 1152, "nr_p2m_frames": 1160}
MAX_GUEST_CMDLINE = 1024
SIF_PRIVILEGED, SIF_INITDOMAIN, SIF_MULTIBOOT_MOD, SIF_MOD_START_PFN = 1, 2, 4, 8

# --- xen.h: shared_info / vcpu_info / vcpu_time_info (x86_64) ---------------
XEN_LEGACY_MAX_VCPUS = 32
VCPU_INFO_SIZE = 64
VCPU_INFO = {"evtchn_upcall_pending": 0, "evtchn_upcall_mask": 1, "evtchn_pending_sel": 8,
             "cr2": 16, "time": 32}
VCPU_TIME = {"version": 0, "tsc_timestamp": 8, "system_time": 16, "tsc_to_system_mul": 24,
             "tsc_shift": 28, "flags": 29}
XEN_PVCLOCK_TSC_STABLE_BIT = 1
SHARED_INFO = {"vcpu_info": 0, "evtchn_pending": 2048, "evtchn_mask": 2560,
               "wc_version": 3072, "wc_sec": 3076, "wc_nsec": 3080, "wc_sec_hi": 3084,
               "max_pfn": 3088, "pfn_to_mfn_frame_list_list": 3096, "nmi_reason": 3104,
               "p2m_cr3": 3112, "p2m_vaddr": 3120, "p2m_generation": 3128}

# --- elfnote.h ---------------------------------------------------------------
XEN_ELFNOTES = {0: "INFO", 1: "ENTRY", 2: "HYPERCALL_PAGE", 3: "VIRT_BASE",
                4: "PADDR_OFFSET", 5: "XEN_VERSION", 6: "GUEST_OS", 7: "GUEST_VERSION",
                8: "LOADER", 9: "PAE_MODE", 10: "FEATURES", 11: "BSD_SYMTAB",
                12: "HV_START_LOW", 13: "L1_MFN_VALID", 14: "SUSPEND_CANCEL",
                15: "INIT_P2M", 16: "MOD_START_PFN", 17: "SUPPORTED_FEATURES",
                18: "PHYS32_ENTRY"}

# --- io/console.h: struct xencons_interface ---------------------------------
XENCONS = {"in": 0, "in_size": 1024, "out": 1024, "out_size": 2048, "in_cons": 3072,
           "in_prod": 3076, "out_cons": 3080, "out_prod": 3084}

# --- io/xs_wire.h ------------------------------------------------------------
XS_TYPES = {0: "CONTROL", 1: "DIRECTORY", 2: "READ", 3: "GET_PERMS", 4: "WATCH", 5: "UNWATCH",
            6: "TRANSACTION_START", 7: "TRANSACTION_END", 8: "INTRODUCE", 9: "RELEASE",
            10: "GET_DOMAIN_PATH", 11: "WRITE", 12: "MKDIR", 13: "RM", 14: "SET_PERMS",
            15: "WATCH_EVENT", 16: "ERROR", 17: "IS_DOMAIN_INTRODUCED", 18: "RESUME",
            19: "SET_TARGET", 21: "RESET_WATCHES", 22: "DIRECTORY_PART"}
XS = {v: k for k, v in XS_TYPES.items()}
XENSTORE_RING_SIZE = 1024
XENSTORE = {"req": 0, "rsp": 1024, "req_cons": 2048, "req_prod": 2052, "rsp_cons": 2056,
            "rsp_prod": 2060, "server_features": 2064, "connection": 2068, "error": 2072}
XENSTORE_PAYLOAD_MAX = 4096

# Sub-op tables per hypercall, for decoders and pretty-printers.
SUBOPS: dict[str, dict[int, str]] = {
    "mmuext_op": MMUEXT_CMDS, "sched_op": SCHEDOP_CMDS, "sched_op_compat": SCHEDOP_CMDS,
    "event_channel_op": EVTCHNOP_CMDS, "event_channel_op_compat": EVTCHNOP_CMDS,
    "vcpu_op": VCPUOP_CMDS, "xen_version": XENVER_CMDS, "memory_op": XENMEM_CMDS,
    "physdev_op": PHYSDEVOP_CMDS, "callback_op": CALLBACKOP_CMDS,
    "grant_table_op": GNTTABOP_CMDS, "console_io": CONSOLEIO_CMDS, "xenpmu_op": XENPMU_CMDS,
    "vm_assist": VMASST_CMDS, "set_segment_base": SEGBASE_NAMES, "nmi_op": XENNMI_CMDS,
}


# --- x86 exception vectors and the error code of a #GP raised through the IDT
# (xen/arch/x86/include/asm/processor.h, x86-defns.h; Intel SDM vol. 3 6.13)
TRAP_nmi, TRAP_int3, TRAP_overflow, TRAP_invalid_op, TRAP_gp_fault = 2, 3, 4, 6, 13
LEGACY_SYSCALL_VECTOR = 0x80          # int $0x80 (xen/arch/x86/include/asm/irq-vectors.h)
X86_XEC_IDT = 2                       # error code bit 1: the selector indexes the IDT
# --- debug registers (xen/arch/x86/include/asm/debugreg.h, x86-defns.h@stable-4.17)
X86_CR4_DE = 1 << 3                   # debugging extensions: dr4/dr5 #UD, I/O breakpoints
X86_DR6_DEFAULT = 0xFFFF0FF0          # %dr6 at reset; its reserved bits read as 1
DR_STATUS_RESERVED_ZERO = ~0xFFFFEFFF & (1 << 64) - 1   # %dr6 bit 12 and bits 32-63 read 0
X86_DR7_DEFAULT = 0x400               # %dr7 at reset (bit 10 reads as 1)
DR_CONTROL_RESERVED_ZERO = ~0xFFFF27FF & (1 << 64) - 1  # %dr7 bits 11, 12, 14, 15, 32-63
# before XSA-12's fix (xen.git e89c6d0573, 4.2; xen/include/asm-x86/debugreg.h@3.4.0-rc3):
# bits 32-63 of %dr7 were not among the reserved ones and were kept
DR_CONTROL_RESERVED_ZERO_XSA12 = 0xD800
DR_GENERAL_DETECT = 1 << 13           # %dr7.GD: never allowed to a PV guest (-EPERM)
DR7_ACTIVE_MASK = 0xFF                # %dr7 L0-L3/G0-G3 enable bits
DR_CONTROL_SHIFT, DR_CONTROL_SIZE = 16, 4   # per-breakpoint R/W+LEN fields
DR_IO = 2                             # R/W = 10b: an I/O breakpoint (needs CR4.DE)
# The compat argument-translation area of 4.6-4.13 (xen/include/asm-x86/config.h,
# x86_64/uaccess.h@RELEASE-4.11.0): PERDOMAIN_VIRT_SLOT(2) = PML4 slot 260 + 2 GiB,
# (vcpu_id << 14) per vCPU, 2 pages; access_ok accepted it before XSA-444's fix.
ARG_XLAT_VIRT_START, ARG_XLAT_VA_SHIFT, COMPAT_ARG_XLAT_SIZE = 0xFFFF820080000000, 14, 8192


def is_canonical(addr: int) -> bool:
    """True if the 64-bit ``addr`` is canonical for 48-bit virtual addresses
    (bits 63..47 all equal: Xen's is_canonical_address, x86_64/page.h)."""
    return (addr >> 47) in (0, 0x1FFFF)


def hypercall_name(nr: int) -> str:
    """Name of Xen hypercall ``nr`` (xen.h), or ``hypercall_<nr>`` when unassigned."""
    name = HYPERCALLS.get(nr)
    return name if name is not None else f"hypercall_{nr}"

# ---------------------------------------------------------------- HVM / PVH
# hvm_op commands (xen/include/public/hvm/hvm_op.h) and HVM parameters
# (xen/include/public/hvm/params.h), stable-4.17.
HVMOP_CMDS = {0: "set_param", 1: "get_param", 2: "set_pci_intx_level", 3: "set_isa_irq_level",
              4: "set_pci_link_route", 5: "flush_tlbs", 9: "pagetable_dying", 10: "get_time",
              11: "xentrace", 12: "set_mem_access", 13: "get_mem_access", 15: "get_mem_type",
              23: "set_evtchn_upcall_vector", 24: "guest_request_vm_event", 25: "altp2m"}
HVMOP_set_param, HVMOP_get_param, HVMOP_set_evtchn_upcall_vector = 0, 1, 23
HVM_PARAMS = {0: "CALLBACK_IRQ", 1: "STORE_PFN", 2: "STORE_EVTCHN", 4: "PAE_ENABLED",
              5: "IOREQ_PFN", 6: "BUFIOREQ_PFN", 9: "TIMER_MODE", 10: "HPET_ENABLED",
              12: "IDENT_PT", 14: "ACPI_S_STATE", 15: "VM86_TSS", 16: "VPT_ALIGN",
              17: "CONSOLE_PFN", 18: "CONSOLE_EVTCHN", 19: "ACPI_IOPORTS_LOCATION",
              24: "NESTEDHVM", 27: "PAGING_RING_PFN", 28: "MONITOR_RING_PFN",
              29: "SHARING_RING_PFN", 31: "TRIPLE_FAULT_REASON", 35: "ALTP2M",
              37: "VM86_TSS_SIZED", 38: "MCA_CAP"}
HVM_NR_PARAMS = 39
HVM_PARAM_CALLBACK_IRQ, HVM_PARAM_STORE_PFN, HVM_PARAM_STORE_EVTCHN = 0, 1, 2
HVM_PARAM_CONSOLE_PFN, HVM_PARAM_CONSOLE_EVTCHN = 17, 18
#: HVM_PARAM_CALLBACK_IRQ value: type in bits 63:56 (params.h)
HVM_PARAM_CALLBACK_TYPE_GSI, HVM_PARAM_CALLBACK_TYPE_PCI_INTX = 0, 1
HVM_PARAM_CALLBACK_TYPE_VECTOR = 2
#: XENMAPSPACE_* of struct xen_add_to_physmap (xen/include/public/memory.h)
XENMAPSPACE = {0: "shared_info", 1: "grant_table", 2: "gmfn", 3: "gmfn_range",
               4: "gmfn_foreign", 5: "dev_mmio"}
XENMAPIDX_grant_table_status = 1 << 31
#: Hypercalls a 64-bit HVM/PVH guest may make: the hvm64 column of
#: xen/include/hypercall-defs.c@stable-4.17 (every other number is -ENOSYS).
HVM64_HYPERCALLS = frozenset({
    "platform_op", "memory_op", "multicall", "set_timer_op", "xen_version", "console_io",
    "grant_table_op", "vm_assist", "vcpu_op", "mmuext_op", "xsm_op", "sched_op",
    "event_channel_op", "physdev_op", "hvm_op", "sysctl", "domctl", "argo_op",
    "xenpmu_op", "dm_op", "hypfs_op"})
SUBOPS["hvm_op"] = HVMOP_CMDS
