/*
 * xen_abi.h - the subset of the Xen public ABI (x86-64 PV) that pvtest uses.
 *
 * Numbers and layouts were checked against Xen 4.17 (RELEASE-4.17.x) public
 * headers; each block names the header it comes from (paths relative to
 * xen/include/public/).  This file is written for pvtest and contains only
 * what pvtest needs.  Usable from C and from assembler (__ASSEMBLER__).
 */
#ifndef PVTEST_XEN_ABI_H
#define PVTEST_XEN_ABI_H

/* ---- hypercall numbers: xen.h ("XEN SYSTEM CALLS") ---- */
#define HC_set_trap_table           0
#define HC_mmu_update               1
#define HC_set_gdt                  2
#define HC_stack_switch             3
#define HC_set_callbacks            4
#define HC_fpu_taskswitch           5
#define HC_sched_op_compat          6
#define HC_update_descriptor       10
#define HC_memory_op               12
#define HC_multicall               13
#define HC_update_va_mapping       14
#define HC_set_timer_op            15
#define HC_event_channel_op_compat 16
#define HC_xen_version             17
#define HC_console_io              18
#define HC_iret                    23
#define HC_vcpu_op                 24
#define HC_set_segment_base        25
#define HC_mmuext_op               26
#define HC_sched_op                29
#define HC_nmi_op                  28
#define HC_callback_op             30
#define HC_event_channel_op        32
#define HC_grant_table_op          20
/* 43..47 are unassigned in 4.17 (include/hypercall-defs.c, xen.h). */
#define HC_UNASSIGNED              45

/* Hypercall page: one 32-byte stub per hypercall number.
 * (x86/pv/hypercall.c writes the stubs; xen.h documents the page.) */
#define HYPERCALL_STUB_SIZE        32

/* ---- errno values returned as -E*: errno.h ---- */
#define XEN_EPERM     1
#define XEN_ENOENT    2
#define XEN_EFAULT   14
#define XEN_EINVAL   22
#define XEN_ENOSYS   38

/* ---- segment selectors: arch-x86/xen-x86_64.h ---- */
#define FLAT_KERNEL_CS64  0xe033
#define FLAT_KERNEL_SS64  0xe02b
#define FLAT_KERNEL_DS64  0x0000
/* 64-bit PV: user and kernel share the ring-3 flat selectors */
#define FLAT_USER_CS64    0xe033
#define FLAT_USER_SS64    0xe02b

/* ---- reserved hypervisor area and read-only M2P: arch-x86/xen-x86_64.h ---- */
#define HYPERVISOR_VIRT_START   0xFFFF800000000000UL
#define HYPERVISOR_VIRT_END     0xFFFF880000000000UL
#define MACH2PHYS_VIRT_START    0xFFFF800000000000UL
#define MACH2PHYS_VIRT_END      0xFFFF804000000000UL

/* ---- set_segment_base selectors: arch-x86/xen-x86_64.h ---- */
#define SEGBASE_FS          0
#define SEGBASE_GS_USER     1
#define SEGBASE_GS_KERNEL   2
#define SEGBASE_GS_USER_SEL 3

/* ---- iret_context flag: arch-x86/xen-x86_64.h ---- */
#define VGCF_in_syscall  (1 << 8)

/* ---- ELF note types: elfnote.h ---- */
#define XEN_ELFNOTE_ENTRY          1
#define XEN_ELFNOTE_HYPERCALL_PAGE 2
#define XEN_ELFNOTE_VIRT_BASE      3
#define XEN_ELFNOTE_PADDR_OFFSET   4
#define XEN_ELFNOTE_XEN_VERSION    5
#define XEN_ELFNOTE_GUEST_OS       6
#define XEN_ELFNOTE_GUEST_VERSION  7
#define XEN_ELFNOTE_LOADER         8
#define XEN_ELFNOTE_FEATURES      10

/* ---- mmu_update / mmuext_op / update_va_mapping: xen.h ---- */
#define MMU_NORMAL_PT_UPDATE      0
#define MMU_MACHPHYS_UPDATE       1
#define MMUEXT_PIN_L1_TABLE       0
#define MMUEXT_PIN_L2_TABLE       1
#define MMUEXT_PIN_L3_TABLE       2
#define MMUEXT_PIN_L4_TABLE       3
#define MMUEXT_UNPIN_TABLE        4
#define MMUEXT_NEW_BASEPTR        5
#define MMUEXT_TLB_FLUSH_LOCAL    6
#define MMUEXT_INVLPG_LOCAL       7
#define MMUEXT_NEW_USER_BASEPTR  15
/* 14 is a hole in the MMUEXT_* numbering (SET_LDT 13, NEW_USER_BASEPTR 15). */
#define MMUEXT_UNASSIGNED        14
#define UVMF_NONE                 0UL
#define UVMF_TLB_FLUSH            1UL
#define UVMF_INVLPG               2UL
#define UVMF_LOCAL                0UL
#define DOMID_SELF            0x7FF0U

/* ---- console_io: xen.h ---- */
#define CONSOLEIO_write  0
#define CONSOLEIO_read   1

/* ---- VIRQs: xen.h ---- */
#define VIRQ_TIMER  0

/* ---- sched_op: sched.h ---- */
#define SCHEDOP_yield     0
#define SCHEDOP_block     1
#define SCHEDOP_shutdown  2
#define SHUTDOWN_poweroff 0
#define SHUTDOWN_crash    3

/* ---- event channels: event_channel.h ---- */
#define EVTCHNOP_bind_interdomain 0
#define EVTCHNOP_bind_virq        1
#define EVTCHNOP_close            3
#define EVTCHNOP_send             4
#define EVTCHNOP_status           5
#define EVTCHNOP_alloc_unbound    6
#define EVTCHNSTAT_unbound        1
#define EVTCHNSTAT_interdomain    2
#define EVTCHNOP_bind_ipi         7
#define EVTCHNOP_unmask           9

/* ---- callbacks: callback.h ---- */
#define CALLBACKTYPE_event     0
#define CALLBACKTYPE_failsafe  1
#define CALLBACKTYPE_syscall   2
#define CALLBACKTYPE_sysenter_deprecated 3
#define CALLBACKTYPE_nmi       4
#define CALLBACKTYPE_sysenter  5
#define CALLBACKTYPE_syscall32 7
#define CALLBACKF_mask_events  (1U << 0)
#define CALLBACKOP_register    0
#define CALLBACKOP_unregister  1

/* nmi.h */
#define XENNMI_register_callback   0
#define XENNMI_unregister_callback 1

/* ---- vcpu_op: vcpu.h ---- */
#define VCPUOP_set_periodic_timer    6
#define VCPUOP_stop_periodic_timer   7
#define VCPUOP_set_singleshot_timer  8
#define VCPUOP_stop_singleshot_timer 9

/* ---- memory_op: memory.h ---- */
#define XENMEM_current_reservation 3
#define XENMEM_maximum_reservation 4
#define XENMEM_memory_map          9
#define E820_RAM                   1   /* e820 entry type, as in the BIOS */

/* ---- xen_version: version.h, features.h ---- */
#define XENVER_version       0
#define XENVER_extraversion  1
#define XENVER_get_features  6
#define XENFEAT_writable_page_tables    0
#define XENFEAT_auto_translated_physmap 2

/* ---- CPUID leaves: arch-x86/cpuid.h ---- */
#define XEN_CPUID_FIRST_LEAF     0x40000000U
#define XEN_CPUID_SIGNATURE_EBX  0x566e6558U  /* "XenV" */
#define XEN_CPUID_SIGNATURE_ECX  0x65584d4dU  /* "MMXe" */
#define XEN_CPUID_SIGNATURE_EDX  0x4d4d566eU  /* "nVMM" */

/* ---- xenstore wire protocol: io/xs_wire.h ---- */
#define XS_READ   2
#define XS_WRITE 11
#define XS_ERROR 16
#define XENSTORE_RING_SIZE 1024

/* ---- grant tables: grant_table.h ---- */
#define GNTTABOP_map_grant_ref        0
#define GNTTABOP_unmap_grant_ref      1
#define GNTTABOP_setup_table          2
#define GNTTABOP_dump_table           3
#define GNTTABOP_transfer             4
#define GNTTABOP_copy                 5
#define GNTTABOP_query_size           6
#define GNTTABOP_unmap_and_replace    7
#define GNTTABOP_set_version          8
#define GNTTABOP_get_status_frames    9
#define GNTTABOP_get_version         10
#define GNTTABOP_swap_grant_ref      11
#define GNTTABOP_cache_flush         12
#define GTF_permit_access    (1U << 0)
#define GTF_accept_transfer  (2U << 0)
#define GTF_transitive       (3U << 0)
#define GTF_readonly         (1U << 2)
#define GTF_reading          (1U << 3)
#define GTF_writing          (1U << 4)
#define GTF_sub_page         (1U << 8)
#define GTF_transfer_committed (1U << 2)
#define GTF_transfer_completed (1U << 3)
#define GNTMAP_device_map    (1U << 0)
#define GNTMAP_host_map      (1U << 1)
#define GNTMAP_readonly      (1U << 2)
#define GNTMAP_contains_pte  (1U << 4)
#define GNTCOPY_source_gref  (1U << 0)
#define GNTCOPY_dest_gref    (1U << 1)
#define GNTTAB_CACHE_CLEAN   (1U << 0)
#define GNTTAB_CACHE_INVAL   (1U << 1)
#define GNTTAB_CACHE_SOURCE_GREF (1U << 31)
#define GNTTAB_NR_RESERVED_ENTRIES 8
#define GNTST_okay              0
#define GNTST_general_error   (-1)
#define GNTST_bad_domain      (-2)
#define GNTST_bad_gntref      (-3)
#define GNTST_bad_handle      (-4)
#define GNTST_bad_virt_addr   (-5)
#define GNTST_bad_dev_addr    (-6)
#define GNTST_permission_denied (-8)
#define GNTST_bad_page        (-9)
#define GNTST_bad_copy_arg   (-10)
#define GNTST_eagain         (-12)
/* errno.h, for grant_table_op */
#define XEN_ESRCH     3
#define XEN_ENXIO     6
#define XEN_EBUSY    16
#define XEN_ERANGE   34
#define XEN_EOPNOTSUPP 95

/* ---- PVH (an HVM-container guest) additions ---- */
/* xen.h: hypercall 34; elfnote.h: the 32-bit physical entry point */
#define HC_hvm_op                  34
#define XEN_ELFNOTE_PHYS32_ENTRY   18
/* hvm/hvm_op.h */
#define HVMOP_set_param             0
#define HVMOP_get_param             1
/* hvm/params.h */
#define HVM_PARAM_CALLBACK_IRQ      0
#define HVM_PARAM_STORE_PFN         1
#define HVM_PARAM_STORE_EVTCHN      2
#define HVM_PARAM_CONSOLE_PFN      17
#define HVM_PARAM_CONSOLE_EVTCHN   18
#define HVM_PARAM_CALLBACK_TYPE_VECTOR 2UL   /* bits 63:56 of CALLBACK_IRQ */
/* memory.h */
#define XENMEM_add_to_physmap       7
#define XENMEM_machphys_mapping    12
#define XENMAPSPACE_shared_info     0
#define XENMAPSPACE_grant_table     1
/* features.h */
#define XENFEAT_hvm_callback_vector 8
/* arch-x86/cpuid.h: leaf base+4 */
#define XEN_HVM_CPUID_VCPU_ID_PRESENT (1U << 3)
/* arch-x86/hvm/start_info.h */
#define XEN_HVM_START_MAGIC_VALUE  0x336ec578U
#define XEN_HVM_MEMMAP_TYPE_RAM     1
#define XEN_HVM_MEMMAP_TYPE_RESERVED 2
#define XEN_HVM_MEMMAP_TYPE_ACPI    3
/* grant_table.h: the reserved entries the toolstack fills */
#define GNTTAB_RESERVED_CONSOLE     0
#define GNTTAB_RESERVED_XENSTORE    1

/* ---- x86 page table entry bits (architectural) ---- */
#define _PAGE_PRESENT  0x001UL
#define _PAGE_RW       0x002UL
#define _PAGE_USER     0x004UL
#define _PAGE_ACCESSED 0x020UL
#define _PAGE_DIRTY    0x040UL
#define _PAGE_NX       (1UL << 63)
#define PTE_MFN_MASK   0x000ffffffffff000UL

#ifndef __ASSEMBLER__
#include <stdint.h>

typedef uint16_t domid_t;
typedef uint32_t evtchn_port_t;

/* xen.h */
struct mmu_update { uint64_t ptr, val; };

/* xen.h: cmd, then two unions of unsigned long / pointer size */
struct mmuext_op {
    uint32_t cmd;
    uint32_t _pad;
    uint64_t arg1;      /* mfn or linear_addr */
    uint64_t arg2;      /* nr_ents or vcpumask */
};

/* xen.h */
struct multicall_entry {
    unsigned long op, result;
    unsigned long args[6];
};

/* xen.h: 32 bytes */
struct vcpu_time_info {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t   tsc_shift;
    int8_t   pad1[3];
};

/* xen.h + arch-x86/xen-x86_64.h (arch_vcpu_info = cr2, pad): 64 bytes */
struct vcpu_info {
    uint8_t evtchn_upcall_pending;
    uint8_t evtchn_upcall_mask;
    unsigned long evtchn_pending_sel;
    unsigned long cr2;
    unsigned long arch_pad;
    struct vcpu_time_info time;
};

/* xen.h; XEN_LEGACY_MAX_VCPUS is 32 (arch-x86/xen.h).  Only the fields in
 * front of arch_shared_info are described. */
#define XEN_LEGACY_MAX_VCPUS 32
struct shared_info {
    struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
    unsigned long evtchn_pending[64];
    unsigned long evtchn_mask[64];
    uint32_t wc_version;
    uint32_t wc_sec;
    uint32_t wc_nsec;
    uint32_t wc_sec_hi;
};

/* xen.h (struct start_info, XEN_HAVE_PV_GUEST_ENTRY) */
struct start_info {
    char magic[32];
    unsigned long nr_pages;
    unsigned long shared_info;      /* machine address */
    uint32_t flags;
    unsigned long store_mfn;
    uint32_t store_evtchn;
    union {
        struct { unsigned long mfn; uint32_t evtchn; } domU;
        struct { uint32_t info_off, info_size; } dom0;
    } console;
    unsigned long pt_base;          /* virtual */
    unsigned long nr_pt_frames;
    unsigned long mfn_list;         /* virtual */
    unsigned long mod_start;
    unsigned long mod_len;
    int8_t cmd_line[1024];
};

/* arch-x86/xen.h */
struct trap_info {
    uint8_t  vector;
    uint8_t  flags;     /* bits 0-1: DPL; bit 2: mask events on entry */
    uint16_t cs;
    unsigned long address;
};

/* callback.h */
struct callback_register {
    uint16_t type;
    uint16_t flags;
    unsigned long address;
};

struct callback_unregister {
    uint16_t type;
    uint16_t _unused;
};

/* nmi.h */
struct xennmi_callback {
    unsigned long handler_address;
    unsigned long pad;
};

/* sched.h */
struct sched_shutdown { uint32_t reason; };

/* event_channel.h */
struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; };
struct evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t remote_port;
                                 evtchn_port_t local_port; };
struct evtchn_bind_virq { uint32_t virq, vcpu; evtchn_port_t port; };
struct evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; };
struct evtchn_close { evtchn_port_t port; };
struct evtchn_send { evtchn_port_t port; };
struct evtchn_unmask { evtchn_port_t port; };
struct evtchn_status {
    domid_t dom;
    evtchn_port_t port;
    uint32_t status;
    uint32_t vcpu;
    union {
        struct { domid_t dom; } unbound;
        struct { domid_t dom; evtchn_port_t port; } interdomain;
        uint32_t pirq;
        uint32_t virq;
    } u;
};
/* event_channel.h: the argument of event_channel_op_compat.  The largest
 * union member (evtchn_status) is 24 bytes, so the struct is 28 bytes. */
struct evtchn_op {
    uint32_t cmd;
    union {
        struct evtchn_alloc_unbound alloc_unbound;
        struct evtchn_bind_interdomain bind_interdomain;
        struct evtchn_bind_virq bind_virq;
        struct evtchn_bind_ipi bind_ipi;
        struct evtchn_close close;
        struct evtchn_send send;
        struct evtchn_unmask unmask;
        uint8_t _size[24];
    } u;
};

/* vcpu.h */
struct vcpu_set_periodic_timer { uint64_t period_ns; };
struct vcpu_set_singleshot_timer { uint64_t timeout_abs_ns; uint32_t flags; };

/* memory.h: nr_entries, then a guest handle */
struct xen_memory_map {
    uint32_t nr_entries;
    void *buffer;
};
/* e820 entry as returned by XENMEM_memory_map: packed, 20 bytes */
struct e820entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

/* version.h */
struct xen_feature_info { uint32_t submap_idx; uint32_t submap; };

/* grant_table.h: shared entries (v1, and v2's union seen through its
 * full_page / sub_page / transitive members), status entries, sub-op args */
typedef uint32_t grant_ref_t;
struct grant_entry_v1 { uint16_t flags; domid_t domid; uint32_t frame; };
struct grant_entry_v2 {
    uint16_t flags;
    domid_t  domid;
    uint16_t page_off;      /* sub_page.page_off; transitive.trans_domid */
    uint16_t length;        /* sub_page.length */
    uint64_t frame;         /* full_page/sub_page.frame; transitive.gref (low half) */
};
struct gnttab_map_grant_ref {
    uint64_t host_addr; uint32_t flags; grant_ref_t ref; domid_t dom;
    int16_t status; uint32_t handle; uint64_t dev_bus_addr;
};
struct gnttab_unmap_grant_ref {
    uint64_t host_addr; uint64_t dev_bus_addr; uint32_t handle; int16_t status;
};
struct gnttab_unmap_and_replace {
    uint64_t host_addr; uint64_t new_addr; uint32_t handle; int16_t status;
};
struct gnttab_setup_table {
    domid_t dom; uint32_t nr_frames; int16_t status; uint64_t *frame_list;
};
struct gnttab_query_size {
    domid_t dom; uint32_t nr_frames; uint32_t max_nr_frames; int16_t status;
};
struct gnttab_copy_ptr { uint64_t u; domid_t domid; uint16_t offset; };  /* u: ref or gmfn */
struct gnttab_copy {
    struct gnttab_copy_ptr source, dest;
    uint16_t len; uint16_t flags; int16_t status;
};
struct gnttab_set_version { uint32_t version; };
struct gnttab_get_status_frames {
    uint32_t nr_frames; domid_t dom; int16_t status; uint64_t *frame_list;
};
struct gnttab_get_version { domid_t dom; uint16_t pad; uint32_t version; };
struct gnttab_swap_grant_ref { grant_ref_t ref_a, ref_b; int16_t status; };
struct gnttab_cache_flush {
    uint64_t dev_bus_addr; uint16_t offset; uint16_t length; uint32_t op;
};
struct gnttab_transfer { uint64_t mfn; domid_t domid; grant_ref_t ref; int16_t status; };

/* hvm/hvm_op.h: HVMOP_set_param / HVMOP_get_param */
struct xen_hvm_param { domid_t domid; uint16_t pad; uint32_t index; uint64_t value; };
/* memory.h: XENMEM_add_to_physmap */
struct xen_add_to_physmap {
    domid_t domid; uint16_t size; uint32_t space; uint64_t idx; uint64_t gpfn;
};
/* arch-x86/hvm/start_info.h (version 1) */
struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
struct hvm_memmap_table_entry { uint64_t addr, size; uint32_t type, reserved; };
struct hvm_modlist_entry { uint64_t paddr, size, cmdline_paddr, reserved; };

/* io/console.h */
struct xencons_interface {
    char in[1024];
    char out[2048];
    uint32_t in_cons, in_prod;
    uint32_t out_cons, out_prod;
};

/* io/xs_wire.h */
struct xsd_sockmsg { uint32_t type, req_id, tx_id, len; };
struct xenstore_domain_interface {
    char req[XENSTORE_RING_SIZE];
    char rsp[XENSTORE_RING_SIZE];
    uint32_t req_cons, req_prod;
    uint32_t rsp_cons, rsp_prod;
    uint32_t server_features;
    uint32_t connection;
    uint32_t error;
};

_Static_assert(sizeof(struct vcpu_time_info) == 32, "vcpu_time_info");
_Static_assert(sizeof(struct vcpu_info) == 64, "vcpu_info");
_Static_assert(__builtin_offsetof(struct shared_info, evtchn_pending) == 2048, "evtchn_pending");
_Static_assert(__builtin_offsetof(struct shared_info, wc_version) == 3072, "wc_version");
_Static_assert(__builtin_offsetof(struct start_info, pt_base) == 88, "start_info");
_Static_assert(sizeof(struct trap_info) == 16, "trap_info");
_Static_assert(sizeof(struct mmuext_op) == 24, "mmuext_op");
_Static_assert(sizeof(struct multicall_entry) == 64, "multicall_entry");
_Static_assert(sizeof(struct evtchn_op) == 28, "evtchn_op");
_Static_assert(sizeof(struct e820entry) == 20, "e820entry");
_Static_assert(sizeof(struct evtchn_status) == 24, "evtchn_status");
_Static_assert(sizeof(struct xencons_interface) == 3088, "xencons_interface");
_Static_assert(sizeof(struct grant_entry_v2) == 16, "grant_entry_v2");
_Static_assert(sizeof(struct gnttab_map_grant_ref) == 32, "gnttab_map_grant_ref");
_Static_assert(sizeof(struct gnttab_unmap_grant_ref) == 24, "gnttab_unmap_grant_ref");
_Static_assert(sizeof(struct gnttab_setup_table) == 24, "gnttab_setup_table");
_Static_assert(sizeof(struct gnttab_query_size) == 16, "gnttab_query_size");
_Static_assert(sizeof(struct gnttab_copy) == 40, "gnttab_copy");
_Static_assert(__builtin_offsetof(struct gnttab_copy, status) == 36, "gnttab_copy.status");
_Static_assert(sizeof(struct gnttab_get_status_frames) == 16, "gnttab_get_status_frames");
_Static_assert(sizeof(struct gnttab_swap_grant_ref) == 12, "gnttab_swap_grant_ref");
_Static_assert(sizeof(struct gnttab_cache_flush) == 16, "gnttab_cache_flush");
_Static_assert(sizeof(struct gnttab_transfer) == 24, "gnttab_transfer");
_Static_assert(sizeof(struct xen_hvm_param) == 16, "xen_hvm_param");
_Static_assert(sizeof(struct xen_add_to_physmap) == 24, "xen_add_to_physmap");
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry");
#endif /* !__ASSEMBLER__ */

#endif
