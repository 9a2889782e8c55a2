/*
 * checks_pagerefs.c - general page references (count_info) as a 64-bit PV
 * domU sees them when it gives memory back (pvtest-v2-rules, RULES=1; run
 * after checks_segdesc.c; docs/xen-rules.md "Page types").
 *
 * Sources (xen.git, stable-4.17): xen/common/memory.c (MEM below:
 * decrease_reservation, guest_remove_page, populate_physmap),
 * xen/common/page_alloc.c (PA: assign_pages, free_domheap_pages) and
 * xen/arch/x86/mm.c (MM: get_page_from_l1e, get_page_and_type_from_mfn).
 * A frame given back keeps every reference it holds: while it is mapped it
 * stays the domain's and counted in its reservation; it is freed, and leaves
 * the domain, with the last reference.  Each check names its function.
 */
#include "pvtest.h"

#define XENMEM_decrease_reservation 1
#define XENMEM_populate_physmap     6

struct xen_memory_reservation {
    uint64_t extent_start;      /* XEN_GUEST_HANDLE(xen_pfn_t) */
    uint64_t nr_extents;
    uint32_t extent_order;
    uint32_t mem_flags;
    uint16_t domid;
};

static uint64_t given[512] __page_aligned;     /* the page given back */

static long reservation(unsigned cmd, uint64_t *frame)
{
    struct xen_memory_reservation r = { (uint64_t)(unsigned long)frame, 1, 0, 0, DOMID_SELF };
    return HYPERVISOR_memory_op(cmd, &r);
}

static long current_reservation(void)
{
    uint16_t self = DOMID_SELF;
    return HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
}

void rules_pagerefs(void)
{
    long rc;
    section("rules: page references");

    unsigned long va = (unsigned long)given;
    uint64_t pte = lookup_pte(va);
    uint64_t mfn = virt_to_mfn(given);
    long cur = current_reservation();
    given[0] = 0x5a5a5a5a5a5a5a5aUL;

    uint64_t f = mfn;
    rc = reservation(XENMEM_decrease_reservation, &f);
    check_eq("decrease_reservation of a page the kernel still maps -> 1 extent (MEM "
             "guest_remove_page: only the allocation reference is dropped)", rc, 1);
    check_eq("current_reservation is unchanged: the mapped page lingers (PA "
             "free_domheap_pages lowers tot_pages only with the last reference)",
             current_reservation(), cur);
    check_eqx("the page still reads through the kernel's mapping", given[0],
              0x5a5a5a5a5a5a5a5aUL);
    /* (an earlier check's grant transfer lost a page, so there may be room for one) */
    f = 0;
    rc = reservation(XENMEM_populate_physmap, &f);
    check(rc == 0 || (rc == 1 && f != mfn), "populate_physmap while it lingers never hands "
          "that page out (it is not free; PA assign_pages counts it in tot_pages)",
          "rc %ld, frame 0x%lx", rc, (unsigned long)f);
    if (rc == 1) {
        rc = reservation(XENMEM_decrease_reservation, &f);
        check_eq("the frame it gave instead, unmapped, given back -> 1 extent", rc, 1);
    }
    f = mfn;
    rc = reservation(XENMEM_decrease_reservation, &f);
    check_eq("decrease_reservation of the lingering page again -> 1 extent (MEM "
             "guest_remove_page: get_page succeeds, PGC_allocated already clear)", rc, 1);

    rc = HYPERVISOR_update_va_mapping(va, 0, UVMF_INVLPG | UVMF_LOCAL);
    check_eq("unmapping it -> 0: its last reference goes, the page is freed", rc, 0);
    check_eq("current_reservation is one page less (PA free_domheap_pages)",
             current_reservation(), cur - 1);
    f = mfn;
    rc = reservation(XENMEM_decrease_reservation, &f);
    check_eq("decrease_reservation of the freed page -> 0 extents (MEM guest_remove_page: "
             "get_page fails, \"Bad page free\")", rc, 0);
    rc = HYPERVISOR_update_va_mapping(va, (pte & ~PTE_MFN_MASK) | (mfn << 12),
                                      UVMF_INVLPG | UVMF_LOCAL);
    check_eq("mapping the freed page -> -EBUSY (MM get_page_from_l1e: no owner, "
             "could_not_pin)", rc, -XEN_EBUSY);
    struct mmuext_op pin = { MMUEXT_PIN_L1_TABLE, 0, mfn, 0 };
    unsigned done = 0;
    rc = HYPERVISOR_mmuext_op(&pin, 1, &done, DOMID_SELF);
    check_eq("pinning the freed page -> -EINVAL (MM get_page_and_type_from_mfn: get_page "
             "fails)", rc, -XEN_EINVAL);

    f = 0;
    rc = reservation(XENMEM_populate_physmap, &f);
    check(rc == 1 && f != 0, "populate_physmap -> 1 extent, a frame of the domain again "
          "(MEM populate_physmap)", "rc %ld, frame 0x%lx", rc, (unsigned long)f);
    check_eq("current_reservation is back where it was", current_reservation(), cur);
    if (rc == 1) {
        rc = HYPERVISOR_update_va_mapping(va, (pte & ~PTE_MFN_MASK) | (f << 12),
                                          UVMF_INVLPG | UVMF_LOCAL);
        /* PA free_domheap_pages: "Normally we expect a domain to clear pages
         * before freeing them": a live domain's page is scrubbed only with
         * scrub-domheap or CONFIG_SCRUB_DEBUG (a debug build's default), whose
         * scrub_one_page fills it with SCRUB_PATTERN 0xc2.  Real Xen 4.17.7
         * (release) gave the same frame back with its 0x5a word. */
        unsigned long w = rc ? 0UL : (unsigned long)given[0];
        check(rc == 0 && (f != mfn || w == 0x5a5a5a5a5a5a5a5aUL ||
                          w == 0xc2c2c2c2c2c2c2c2UL),
              "mapping the new frame where the old one was -> 0; the page given back "
              "comes back unscrubbed, or filled with 0xc2 on a debug build (PA "
              "free_domheap_pages scrubs a live domain's page only with scrub-domheap "
              "or CONFIG_SCRUB_DEBUG)",
              "rc %ld, frame 0x%lx (given back 0x%lx), word 0x%lx", rc,
              (unsigned long)f, (unsigned long)mfn, w);
    }
}
