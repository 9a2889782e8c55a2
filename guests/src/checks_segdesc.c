/*
 * checks_segdesc.c - descriptor-table pages (PGT_seg_desc_page) and CR3 loads
 * as Xen 4.17 checks them for a 64-bit PV domU (pvtest-v2-rules, RULES=1;
 * run after checks_pagetypes.c; docs/xen-rules.md "Page types").
 *
 * Sources (xen.git, stable-4.17): xen/arch/x86/pv/descriptor-tables.c (DT
 * below: pv_set_gdt, check_descriptor, validate_segdesc_page,
 * do_update_descriptor), xen/arch/x86/mm.c (MM: _get_page_type,
 * get_page_from_l1e, do_mmu_update, do_mmuext_op MMUEXT_SET_LDT,
 * new_guest_cr3) and xen/arch/x86/pv/emul-priv-op.c (EPO: write_cr).
 * Each check names the function its expected answer comes from.  The GDT
 * checks_xen.c loaded is replaced, and the guest ends with an empty one.
 */
#include "pvtest.h"

#define MMUEXT_SET_LDT     13      /* xen.h */
#define MMUEXT_CLEAR_PAGE  16
#define DESC_DATA_DPL3  0x00cff2000000ffffUL    /* flat data, DPL 3 */
#define DESC_DATA_DPL0  0x00cf92000000ffffUL    /* flat data, DPL 0 */
#define DESC_TSS        0x0000890000000067UL    /* a present 64-bit TSS (system type 9) */
#define DPL_MASK        (3UL << 45)

static uint64_t gdt_a[512] __page_aligned;     /* the GDT these checks load */
static uint64_t pt_l1[512] __page_aligned;     /* a pinned L1, for update_descriptor */

static long set_gdt1(const void *page)
{
    unsigned long frames[1] = { virt_to_mfn(page) };
    return HYPERVISOR_set_gdt(frames, 512);
}

static long ext_op(unsigned cmd, uint64_t arg1, uint64_t arg2)
{
    struct mmuext_op op = { cmd, 0, arg1, arg2 };
    unsigned done = 0;
    return HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

void rules_segdesc(void)
{
    long rc;
    section("rules: descriptor pages and CR3");

    /* ---- set_gdt takes a seg_desc type reference (DT pv_set_gdt) ---- */
    memset(gdt_a, 0, PAGE_SIZE);
    gdt_a[1] = DESC_DATA_DPL3;
    gdt_a[4] = DESC_TSS;
    rc = set_gdt1(gdt_a);
    check_eq("set_gdt of a frame the kernel still maps writable -> -EINVAL (DT pv_set_gdt: "
             "get_page_and_type(PGT_seg_desc_page), MM _get_page_type: Bad type)",
             rc, -XEN_EINVAL);
    set_page_ro(gdt_a, 1);
    rc = set_gdt1(gdt_a);
    check_eq("set_gdt of a read-only frame holding a present TSS descriptor -> -EINVAL "
             "(DT check_descriptor: \"Everything but a call gate is discarded\", "
             "validate_segdesc_page)", rc, -XEN_EINVAL);
    rc = set_page_ro(gdt_a, 0);
    check_eq("the frame that failed validation maps writable again -> 0 (no type kept)", rc, 0);
    gdt_a[4] = 0;
    set_page_ro(gdt_a, 1);
    rc = set_gdt1(gdt_a);
    check_eq("set_gdt of it once the TSS descriptor is gone -> 0", rc, 0);

    /* ---- a loaded GDT frame has the seg_desc type, nothing else ---- */
    rc = set_page_ro(gdt_a, 0);
    check_eq("update_va_mapping mapping the loaded GDT frame writable -> -EBUSY "
             "(MM get_page_from_l1e: could_not_pin)", rc, -XEN_EBUSY);
    struct mmuext_op pin = { MMUEXT_PIN_L1_TABLE, 0, virt_to_mfn(gdt_a), 0 };
    unsigned done = 0;
    rc = HYPERVISOR_mmuext_op(&pin, 1, &done, DOMID_SELF);
    check_eq("pin L1 of the loaded GDT frame -> -EINVAL (MM _get_page_type: Bad type)",
             rc, -XEN_EINVAL);
    rc = ext_op(MMUEXT_CLEAR_PAGE, virt_to_mfn(gdt_a), 0);
    check_eq("MMUEXT_CLEAR_PAGE of the loaded GDT frame -> -EINVAL (MM do_mmuext_op: "
             "needs a writable type)", rc, -XEN_EINVAL);
    /* (bit 0 clear: a value that is not a present PTE, so only the frame's type counts) */
    struct mmu_update u = { virt_to_maddr(&gdt_a[5]) | MMU_NORMAL_PT_UPDATE,
                            DESC_DATA_DPL3 & ~1UL };
    rc = HYPERVISOR_mmu_update(&u, 1, &done, DOMID_SELF);
    check_eq("mmu_update writing into the loaded GDT frame -> -EINVAL (MM do_mmu_update: "
             "no case for PGT_seg_desc_page)", rc, -XEN_EINVAL);

    /* ---- update_descriptor (DT do_update_descriptor, check_descriptor) ---- */
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&gdt_a[2]), DESC_DATA_DPL0);
    check_eq("update_descriptor of a DPL 0 data descriptor into the GDT -> 0", rc, 0);
    check_eqx("it reads back with DPL 3 (DT check_descriptor: __fixup_guest_selector, "
              "GUEST_KERNEL_RPL 3)", ((volatile uint64_t *)gdt_a)[2] & DPL_MASK, DPL_MASK);
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&gdt_a[3]), DESC_TSS);
    check_eq("update_descriptor of a present TSS descriptor -> -EINVAL (DT check_descriptor)",
             rc, -XEN_EINVAL);
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&gdt_a[3]) + 4, DESC_DATA_DPL3);
    check_eq("update_descriptor at an address not 8-byte aligned -> -EINVAL", rc, -XEN_EINVAL);
    /* a 64-bit call gate to FLAT_KERNEL_CS (0xe033), DPL 3, offset 0 */
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&gdt_a[6]), 0x0000ec00e0330000UL);
    check_eq("update_descriptor of a call gate to FLAT_KERNEL_CS -> 0", rc, 0);
    check_eqx("it reads back with DPL 0 and the DPL in the selector's RPL (DT "
              "check_descriptor: a gate is emulated)", ((volatile uint64_t *)gdt_a)[6],
              0x00008c00e0330000UL);
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&gdt_a[8]), 0x0000ec00e0080000UL);
    check_eq("update_descriptor of a call gate to a Xen-reserved selector (0xe008) -> -EINVAL "
             "(DT guest_gate_selector_okay)", rc, -XEN_EINVAL);
    memset(pt_l1, 0, PAGE_SIZE);
    set_page_ro(pt_l1, 1);
    struct mmuext_op pin1 = { MMUEXT_PIN_L1_TABLE, 0, virt_to_mfn(pt_l1), 0 };
    rc = HYPERVISOR_mmuext_op(&pin1, 1, &done, DOMID_SELF);
    check_eq("pin an empty L1 -> 0", rc, 0);
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&pt_l1[1]), DESC_DATA_DPL3);
    check_eq("update_descriptor into a pinned L1 -> -EINVAL (DT do_update_descriptor: "
             "get_page_type(PGT_writable_page))", rc, -XEN_EINVAL);
    pin1.cmd = MMUEXT_UNPIN_TABLE;
    HYPERVISOR_mmuext_op(&pin1, 1, &done, DOMID_SELF);
    set_page_ro(pt_l1, 0);

    /* ---- MMUEXT_SET_LDT arguments (MM do_mmuext_op) ---- */
    rc = ext_op(MMUEXT_SET_LDT, (unsigned long)gdt_a + 8, 1);
    check_eq("SET_LDT with a base not page aligned -> -EINVAL (MM do_mmuext_op: \"Bad args "
             "to SET_LDT\")", rc, -XEN_EINVAL);
    rc = ext_op(MMUEXT_SET_LDT, (unsigned long)gdt_a, 8193);
    check_eq("SET_LDT of 8193 entries -> -EINVAL", rc, -XEN_EINVAL);
    rc = ext_op(MMUEXT_SET_LDT, 0xffff800000000000UL, 1);
    check_eq("SET_LDT with a base in Xen's range -> -EINVAL (__addr_ok)", rc, -XEN_EINVAL);
    rc = ext_op(MMUEXT_SET_LDT, 0xffff800000000008UL, 0);
    check_eq("SET_LDT of no entries, whatever the base -> 0", rc, 0);

    /* ---- an empty GDT: the type goes with the last reference ---- */
    rc = HYPERVISOR_set_gdt(0, 0);
    check_eq("set_gdt of no entries -> 0 (nothing after these checks uses a GDT selector)",
             rc, 0);
    rc = set_page_ro(gdt_a, 0);
    check_eq("the unloaded GDT frame maps writable again -> 0 (DT pv_destroy_gdt: "
             "put_page_and_type)", rc, 0);
}

/* ---- a kernel's own `mov %cr3` (EPO write_cr -> MM new_guest_cr3) ---- */

/* The #GP catcher of checks_privops.c (privops_trap resumes after the insn). */
extern volatile unsigned long privops_gp_rip, privops_gp_fix, privops_gp_err, privops_gp_n,
    privops_gp_vec;

/* mov %rcx, %cr3: the vector it raised (0: none). */
static unsigned long k_write_cr3(unsigned long val)
{
    unsigned long n0 = privops_gp_n;
    privops_gp_vec = 0;
    privops_gp_err = ~0UL;
    __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                         "mov %%r11, privops_gp_rip(%%rip)\n\t"
                         "lea 2f(%%rip), %%r11\n\t"
                         "mov %%r11, privops_gp_fix(%%rip)\n"
                         "1: mov %%rcx, %%cr3\n"
                         "2:\n\t"
                         "movq $0, privops_gp_rip(%%rip)\n"
                         : : "c"(val) : "r11", "memory");
    return privops_gp_n != n0 ? privops_gp_vec : 0;
}

static unsigned long k_read_cr3(void)
{
    unsigned long v;
    __asm__ __volatile__("mov %%cr3, %0" : "=r"(v));
    return v;
}

static uint64_t l4_copy[512] __page_aligned;   /* a second root: the live L4 copied */

void rules_cr3(void)
{
    long rc;
    unsigned long vec;
    section("rules: a kernel's mov to %cr3");

    unsigned long cr3 = k_read_cr3();
    const uint64_t *live = (const uint64_t *)xen_start_info->pt_base;
    check(cr3 == virt_to_maddr(live), "mov from %cr3 reads the kernel root (EPO read_cr)",
          "cr3 0x%lx, pt_base maddr 0x%lx", cr3, (unsigned long)virt_to_maddr(live));
    vec = k_write_cr3(cr3);
    check(vec == 0 && k_read_cr3() == cr3, "mov to %cr3 of the root in use -> done (MM "
          "new_guest_cr3: the same mfn, write_ptbase only)", "vector %lu, cr3 0x%lx", vec,
          k_read_cr3());

    memset(pt_l1, 0, PAGE_SIZE);
    set_page_ro(pt_l1, 1);
    struct mmuext_op pin1 = { MMUEXT_PIN_L1_TABLE, 0, virt_to_mfn(pt_l1), 0 };
    unsigned done = 0;
    HYPERVISOR_mmuext_op(&pin1, 1, &done, DOMID_SELF);
    vec = k_write_cr3(virt_to_maddr(pt_l1));
    check(vec == 13 && privops_gp_err == 0 && k_read_cr3() == cr3,
          "mov to %cr3 of a pinned L1 -> #GP(0), CR3 unchanged (EPO write_cr: new_guest_cr3 "
          "fails, get_page_and_type_from_mfn PGT_root_page_table)", "vector %lu, error 0x%lx",
          vec, privops_gp_err);
    pin1.cmd = MMUEXT_UNPIN_TABLE;
    HYPERVISOR_mmuext_op(&pin1, 1, &done, DOMID_SELF);
    set_page_ro(pt_l1, 0);
    vec = k_write_cr3(1UL << 45);
    check(vec == 13 && privops_gp_err == 0 && k_read_cr3() == cr3,
          "mov to %cr3 of a frame the domain does not have -> #GP(0) (EPO write_cr: "
          "get_page_from_gfn fails)", "vector %lu, error 0x%lx", vec, privops_gp_err);

    memcpy(l4_copy, live, PAGE_SIZE);
    vec = k_write_cr3(virt_to_maddr(l4_copy));
    check(vec == 13 && k_read_cr3() == cr3, "mov to %cr3 of a copy of the root still mapped "
          "writable -> #GP(0) (MM _get_page_type: Bad type)", "vector %lu", vec);
    set_page_ro(l4_copy, 1);
    vec = k_write_cr3(virt_to_maddr(l4_copy) | 0x18);
    check(vec == 0 && k_read_cr3() == virt_to_maddr(l4_copy),
          "mov to %cr3 of that copy made read-only -> done, validated as an L4, the flag bits "
          "dropped (MM new_guest_cr3, xen_cr3_to_pfn)", "vector %lu, cr3 0x%lx", vec,
          k_read_cr3());
    rc = set_page_ro(l4_copy, 0);
    check_eq("mapping the new root writable -> -EBUSY (its CR3 holds an L4 type reference)",
             rc, -XEN_EBUSY);
    vec = k_write_cr3(cr3);
    check(vec == 0 && k_read_cr3() == cr3, "mov to %cr3 back to the first root -> done",
          "vector %lu, cr3 0x%lx", vec, k_read_cr3());
    rc = set_page_ro(l4_copy, 0);
    check_eq("the copy maps writable again -> 0 (MM new_guest_cr3: put_page_and_type of the "
             "old root devalidated it)", rc, 0);
}
