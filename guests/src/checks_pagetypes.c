/*
 * checks_pagetypes.c - page types and type reference counts of L1-L4 page
 * tables, as Xen 4.17 keeps them for a 64-bit PV domU (pvtest-v2-rules,
 * RULES=1; run last, after checks_rules.c, and leaves every page it used
 * unpinned and writable again).
 *
 * Source (xen.git, stable-4.17): xen/arch/x86/mm.c (MM below): a frame is a
 * page table of a level only once validated (promote_l?_table, from a pin,
 * a new baseptr, or an entry of a validated table one level up), and holds
 * that type while anything references it; a writable mapping takes the
 * writable type (get_page_from_l1e), so the two exclude each other. Each
 * check names the function its expected answer comes from.
 */
#include "pvtest.h"

#define MMUEXT_CLEAR_PAGE  16       /* xen.h */
#define PT_ENTRY  (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED)
#define PT_RO     (_PAGE_PRESENT | _PAGE_ACCESSED)

static uint64_t l1a[512] __page_aligned;     /* pinned as an L1 */
static uint64_t l1b[512] __page_aligned;     /* an L1 below l2a, never pinned itself */
static uint64_t data[512] __page_aligned;    /* mapped writable by l1a, then an L1 */
static uint64_t l2a[512] __page_aligned;
static uint64_t l2b[512] __page_aligned;
static uint64_t l3a[512] __page_aligned;
static uint64_t l4a[512] __page_aligned;
static uint8_t scratch[PAGE_SIZE] __page_aligned;   /* a window whose PTE is repointed */

static long pt_op(unsigned cmd, const void *va)
{
    struct mmuext_op op = { cmd, 0, virt_to_mfn(va), 0 };
    unsigned done = 0;
    return HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

static long set_entry(uint64_t *slot, uint64_t val)
{
    struct mmu_update u = { virt_to_maddr(slot) | MMU_NORMAL_PT_UPDATE, val };
    unsigned done = 0;
    return HYPERVISOR_mmu_update(&u, 1, &done, DOMID_SELF);
}

static uint64_t ma(const void *va)
{
    return virt_to_maddr(va);
}

void rules_pagetypes(void)
{
    long rc;
    section("rules: page types and reference counts");

    /* ---- pins and writable references (_get_page_type, do_mmuext_op) ---- */
    memset(l1a, 0, PAGE_SIZE);
    rc = pt_op(MMUEXT_PIN_L1_TABLE, l1a);
    check_eq("pin L1 of a page the kernel still maps writable -> -EINVAL (MM _get_page_type: "
             "\"Bad type\", the frame holds a writable type; \"Error -22 while pinning\")",
             rc, -XEN_EINVAL);
    set_page_ro(l1a, 1);
    rc = pt_op(MMUEXT_PIN_L1_TABLE, l1a);
    check_eq("pin L1 once its only writable mapping is read-only -> 0", rc, 0);
    rc = pt_op(MMUEXT_PIN_L1_TABLE, l1a);
    check_eq("pin L1 twice -> -EINVAL (MM do_mmuext_op: \"already pinned\")", rc, -XEN_EINVAL);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l1a);
    check_eq("pin as L2 a frame that is an L1 -> -EINVAL (MM _get_page_type: Bad type)",
             rc, -XEN_EINVAL);
    rc = set_page_ro(l1a, 0);
    check_eq("update_va_mapping mapping a pinned L1 writable -> -EBUSY (MM get_page_from_l1e: "
             "could_not_pin)", rc, -XEN_EBUSY);
    rc = set_entry(&l1a[0], ma(l1a) | PT_ENTRY);
    check_eq("mmu_update of an L1 entry mapping its own table writable -> -EBUSY "
             "(MM mod_l1_entry, get_page_from_l1e)", rc, -XEN_EBUSY);
    rc = set_entry(&l1a[0], ma(l1a) | PT_RO);
    check_eq("the same entry read-only -> 0 (a page table may be mapped read-only)", rc, 0);
    rc = pt_op(MMUEXT_CLEAR_PAGE, l1a);
    check_eq("MMUEXT_CLEAR_PAGE of a pinned L1 -> -EINVAL (MM do_mmuext_op: needs a writable "
             "type, \"Error clearing mfn\")", rc, -XEN_EINVAL);

    /* ---- writable page tables: plain writes to a read-only L1 (PV/ro-page-fault.c) ---- */
    uint64_t want = ma(data) | PT_RO;
    int werr = write_u64_safe(&l1a[3], want);
    check(!werr && l1a[3] == want, "a plain write of a read-only entry into the pinned L1 is "
          "carried out (writable page tables: ptwr_emulated_update, MM get_page_from_l1e)",
          "fault %d, entry 0x%lx", werr, (unsigned long)l1a[3]);
    werr = write_u64_safe(&l1a[2], ma(l1a) | PT_ENTRY);
    check(werr && l1a[2] == 0, "a plain write of an entry mapping the L1 itself writable -> "
          "#PF, the entry unchanged (ptwr_emulated_update: \"could not get_page_from_l1e()\", "
          "pv_ro_page_fault propagates the fault)", "fault %d, entry 0x%lx", werr,
          (unsigned long)l1a[2]);
    werr = write_u64_safe(&l1a[3], 0);
    check(!werr && l1a[3] == 0, "a plain write clearing that entry is carried out",
          "fault %d, entry 0x%lx", werr, (unsigned long)l1a[3]);

    /* ---- counts kept entry by entry ---- */
    memset(data, 0, PAGE_SIZE);
    rc = set_entry(&l1a[1], ma(data) | PT_ENTRY);
    check_eq("mmu_update: an entry of the pinned L1 maps another page writable -> 0", rc, 0);
    set_page_ro(data, 1);
    rc = pt_op(MMUEXT_PIN_L1_TABLE, data);
    check_eq("pin L1 of a page whose kernel mapping is read-only but an entry of a pinned L1 "
             "still maps writable -> -EINVAL (MM _get_page_type: its writable count is 1)",
             rc, -XEN_EINVAL);
    rc = set_entry(&l1a[1], ma(data) | PT_RO);
    check_eq("mmu_update: that entry made read-only -> 0", rc, 0);
    rc = pt_op(MMUEXT_PIN_L1_TABLE, data);
    check_eq("pin L1 of the page now -> 0 (MM put_page_from_l1e dropped the writable type on "
             "the entry's change, no scan)", rc, 0);
    rc = set_entry(&l1a[1], ma(data) | PT_ENTRY);
    check_eq("mmu_update mapping it writable again while pinned -> -EBUSY "
             "(MM get_page_from_l1e)", rc, -XEN_EBUSY);
    rc = pt_op(MMUEXT_UNPIN_TABLE, data);
    check_eq("unpin it -> 0", rc, 0);
    rc = pt_op(MMUEXT_UNPIN_TABLE, data);
    check_eq("unpin it again -> -EINVAL (MM do_mmuext_op: \"not pinned\")", rc, -XEN_EINVAL);
    rc = set_entry(&l1a[1], ma(data) | PT_ENTRY);
    check_eq("mmu_update mapping it writable after the unpin -> 0 (MM _put_page_type: the "
             "type went with the last reference)", rc, 0);
    set_entry(&l1a[1], 0);

    /* ---- validation of tables below: a pinned L2 types its L1s ---- */
    memset(l1b, 0, PAGE_SIZE);
    memset(l2a, 0, PAGE_SIZE);
    l2a[0] = ma(l1b) | PT_ENTRY;
    set_page_ro(l2a, 1);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l2a);
    check_eq("pin L2 whose entry names a page still mapped writable -> -EINVAL "
             "(MM promote_l2_table, get_page_from_l2e)", rc, -XEN_EINVAL);
    set_page_ro(l1b, 1);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l2a);
    check_eq("pin L2 once that page is read-only -> 0 (the L1 below is validated with it)",
             rc, 0);
    rc = set_page_ro(l1b, 0);
    check_eq("mapping the unpinned L1 below the pinned L2 writable -> -EBUSY (it has the L1 "
             "type from the L2's entry: MM get_page_from_l2e)", rc, -XEN_EBUSY);
    rc = pt_op(MMUEXT_PIN_L1_TABLE, l1b);
    check_eq("pinning that L1 as well -> 0 (a second type reference)", rc, 0);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l1b);
    check_eq("unpinning it -> 0", rc, 0);
    rc = set_page_ro(l1b, 0);
    check_eq("still not writable: the L2's entry holds its type -> -EBUSY", rc, -XEN_EBUSY);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l2a);
    check_eq("unpin the L2 -> 0", rc, 0);
    set_page_ro(l2a, 0);
    rc = set_page_ro(l1b, 0);
    check_eq("the L1 below is writable once the L2 is unpinned -> 0 (MM free_l2_table drops "
             "its entries' references)", rc, 0);

    /* ---- linear (same-level) entries: get_l?_linear_pagetable ---- */
    memset(l2a, 0, PAGE_SIZE);
    l2a[1] = ma(l2a) | PT_ENTRY;
    set_page_ro(l2a, 1);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l2a);
    check_eq("pin L2 holding a writable self-map -> -EINVAL (MM get_l2_linear_pagetable: "
             "\"Attempt to create linear p.t. with write perms\")", rc, -XEN_EINVAL);
    set_page_ro(l2a, 0);
    l2a[1] = ma(l2a) | PT_RO;
    set_page_ro(l2a, 1);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l2a);
    check_eq("pin L2 holding a read-only self-map -> 0 (a linear page table)", rc, 0);
    memset(l2b, 0, PAGE_SIZE);
    set_page_ro(l2b, 1);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l2b);
    check_eq("pin a second, empty L2 -> 0", rc, 0);
    rc = set_entry(&l2a[2], ma(l2b) | PT_ENTRY);
    check_eq("mmu_update: a writable L2 entry naming another L2 -> -EINVAL "
             "(MM get_l2_linear_pagetable: write perms)", rc, -XEN_EINVAL);
    rc = set_entry(&l2a[2], ma(l2b) | PT_RO);
    check_eq("the same entry read-only -> 0 (a linear entry; the L2 named takes a type "
             "reference)", rc, 0);
    rc = set_entry(&l2b[3], ma(l2a) | PT_RO);
    check_eq("a read-only entry in that L2 naming back the table holding linear entries -> "
             "-EINVAL (MM inc_linear_entries/inc_linear_uses: a table is a linear target or "
             "holds linear entries, not both; XSA-240)", rc, -XEN_EINVAL);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l2b);
    check_eq("unpin the L2 named by the linear entry -> 0", rc, 0);
    rc = set_page_ro(l2b, 0);
    check_eq("it stays an L2 while the linear entry names it: writable mapping -> -EBUSY",
             rc, -XEN_EBUSY);
    rc = set_entry(&l2a[2], 0);
    check_eq("clearing the linear entry -> 0", rc, 0);
    rc = set_page_ro(l2b, 0);
    check_eq("then it can be mapped writable -> 0 (MM put_pt_page)", rc, 0);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l2a);
    check_eq("unpin the self-mapping L2 -> 0", rc, 0);
    set_page_ro(l2a, 0);

    memset(l3a, 0, PAGE_SIZE);
    l3a[5] = ma(l3a) | PT_ENTRY;
    set_page_ro(l3a, 1);
    rc = pt_op(MMUEXT_PIN_L3_TABLE, l3a);
    check_eq("pin L3 holding a writable self-map -> -EINVAL (MM get_l3_linear_pagetable)",
             rc, -XEN_EINVAL);
    set_page_ro(l3a, 0);
    l3a[5] = ma(l3a) | PT_RO;
    set_page_ro(l3a, 1);
    rc = pt_op(MMUEXT_PIN_L3_TABLE, l3a);
    check_eq("pin L3 holding a read-only self-map -> 0", rc, 0);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l3a);
    check_eq("unpin that L3 -> 0", rc, 0);
    set_page_ro(l3a, 0);

    memset(l4a, 0, PAGE_SIZE);
    l4a[7] = ma(l4a) | PT_ENTRY;
    set_page_ro(l4a, 1);
    rc = pt_op(MMUEXT_PIN_L4_TABLE, l4a);
    check_eq("pin L4 holding a writable self-map -> -EINVAL (MM get_l4_linear_pagetable)",
             rc, -XEN_EINVAL);
    rc = pt_op(MMUEXT_NEW_BASEPTR, l1a);
    check_eq("NEW_BASEPTR to a frame that is an L1 -> -EINVAL (MM new_guest_cr3: "
             "get_page_and_type_from_mfn PGT_root_page_table)", rc, -XEN_EINVAL);
    set_page_ro(l4a, 0);
    l4a[7] = ma(l4a) | PT_RO;
    set_page_ro(l4a, 1);
    rc = pt_op(MMUEXT_PIN_L4_TABLE, l4a);
    check_eq("pin L4 holding a read-only self-map -> 0", rc, 0);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l4a);
    check_eq("unpin that L4 -> 0", rc, 0);
    set_page_ro(l4a, 0);

    /* ---- an entry naming a frame that is not the domain's ---- */
    set_page_ro(l2a, 0);
    memset(l2a, 0, PAGE_SIZE);
    set_page_ro(l2a, 1);
    rc = pt_op(MMUEXT_PIN_L2_TABLE, l2a);
    check_eq("pin an empty L2 -> 0", rc, 0);
    rc = set_entry(&l2a[4], (xen_start_info->shared_info & ~0xfffUL) | PT_RO);
    check_eq("an L2 entry naming the shared_info frame (Xen's, not the domain's) -> -EINVAL "
             "(MM get_page_from_l2e: get_page_from_mfn)", rc, -XEN_EINVAL);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l2a);
    check_eq("unpin it -> 0", rc, 0);
    set_page_ro(l2a, 0);

    /* ---- the builder's tables are page tables without a pin of their own ---- */
    uint64_t l2_ma;
    uint64_t *l2e = pte_slot((unsigned long)scratch, 2, &l2_ma);
    uint64_t old = lookup_pte((unsigned long)scratch);
    if (l2e && (*l2e & _PAGE_PRESENT) && (old & _PAGE_PRESENT)) {
        uint64_t kl1 = *l2e & PTE_MFN_MASK;
        rc = HYPERVISOR_update_va_mapping((unsigned long)scratch, kl1 | PT_ENTRY | _PAGE_NX,
                                          UVMF_INVLPG | UVMF_LOCAL);
        check_eq("mapping writable the L1 that maps the kernel (never pinned, below the live "
                 "L4) -> -EBUSY (MM promote_l2_table typed it at start of day)",
                 rc, -XEN_EBUSY);
        rc = HYPERVISOR_update_va_mapping((unsigned long)scratch, kl1 | PT_RO | _PAGE_NX,
                                          UVMF_INVLPG | UVMF_LOCAL);
        uint64_t self = rc ? 0 : ((volatile uint64_t *)scratch)[((unsigned long)scratch >> 12)
                                                                  & 511];
        check(rc == 0 && (self & ~(uint64_t)_PAGE_DIRTY) == (kl1 | PT_RO | _PAGE_NX),
              "mapping it read-only -> 0: through the window the L1 shows that same entry",
              "rc %ld, entry 0x%lx", rc, (unsigned long)self);
        rc = HYPERVISOR_update_va_mapping((unsigned long)scratch, old, UVMF_INVLPG | UVMF_LOCAL);
        check_eq("the window restored -> 0", rc, 0);
    } else {
        check(0, "found the L1 that maps the kernel", "l2e %p pte 0x%lx", (void *)l2e,
              (unsigned long)old);
    }

    /* leave everything writable and unpinned */
    set_entry(&l1a[0], 0);
    rc = pt_op(MMUEXT_UNPIN_TABLE, l1a);
    check_eq("unpin the first L1 -> 0", rc, 0);
    rc = set_page_ro(l1a, 0);
    check_eq("an unpinned, unreferenced L1 maps writable again -> 0", rc, 0);
    set_page_ro(data, 0);
}
