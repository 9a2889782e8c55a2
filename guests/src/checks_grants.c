/*
 * checks_grants.c - grant tables v1 and v2 as Xen 4.17 keeps them for a
 * 64-bit PV domU (pvtest-v2-rules, RULES=1).  A domain alone can grant pages
 * to itself, map them, copy through them and switch versions, which is how
 * these checks reach every path; other domains answer as Xen does for a domU
 * (domain 0 exists and is privileged, an unknown id does not exist).
 *
 * Sources (xen.git, stable-4.17): xen/common/grant_table.c (GT below),
 * xen/arch/x86/pv/grant_table.c (PVGT), xen/include/public/grant_table.h.
 * Each check names the function its expected answer comes from.
 */
#include "pvtest.h"

#define NO_DOM       0x7abcU        /* a domain id no domain has */
#define HOLE_VA      0xffff800000001000UL   /* in Xen's hole: __addr_ok fails */
#define NOL2_VA      0x00007f0000000000UL   /* no L4 entry in the kernel's tables */
#define R_KEPT       3              /* a reserved entry the toolstack leaves free */
#define R_A          8              /* first entry past the reserved ones */
#define R_RO         9
#define R_DOM0       10
#define R_PT         11
#define R_BADFRAME   12
#define R_INVALID    13
#define R_SUBPAGE    14
#define R_XFER       15
#define PTE_MAP      (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_NX)

static uint8_t page_a[PAGE_SIZE] __page_aligned;
static uint8_t page_b[PAGE_SIZE] __page_aligned;
static uint8_t repl_page[PAGE_SIZE] __page_aligned;
/* Windows whose PTEs these checks repoint: the shared grant frames, the v2
 * status frame, and the host mappings grants are mapped at. */
static uint8_t tab_va[2 * PAGE_SIZE] __page_aligned;
static uint8_t status_va[PAGE_SIZE] __page_aligned;
static uint8_t map_va[10][PAGE_SIZE] __page_aligned;
static uint8_t xfer_page[2][PAGE_SIZE] __page_aligned;     /* unmapped, then transferred */

static unsigned long domid;
static volatile struct grant_entry_v1 *gt1;
static volatile struct grant_entry_v2 *gt2;

static long gnttab(unsigned cmd, void *uop, unsigned long count)
{
    return xen_hypercall_nr(HC_grant_table_op, cmd, (unsigned long)uop, count, 0, 0);
}

static void invlpg(const void *va)
{
    struct mmuext_op op = { MMUEXT_INVLPG_LOCAL, 0, (unsigned long)va, 0 };
    unsigned done = 0;
    HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

static struct gnttab_map_grant_ref map(uint64_t addr, uint32_t flags, grant_ref_t ref,
                                       domid_t dom)
{
    struct gnttab_map_grant_ref m = { addr, flags, ref, dom, 0x7777, 0xabcd, 0x1234 };
    long rc = gnttab(GNTTABOP_map_grant_ref, &m, 1);
    if (rc)
        m.status = (int16_t)(0x100 + rc);    /* shows up in the check's detail */
    if (m.status == GNTST_okay && (flags & GNTMAP_host_map) && !(flags & GNTMAP_contains_pte))
        invlpg((void *)addr);
    return m;
}

static int16_t unmap(uint64_t addr, uint64_t dev, uint32_t handle)
{
    struct gnttab_unmap_grant_ref u = { addr, dev, handle, 0x7777 };
    long rc = gnttab(GNTTABOP_unmap_grant_ref, &u, 1);
    return rc ? (int16_t)(0x100 + rc) : u.status;
}

static int16_t copy(uint64_t src, domid_t sdom, uint16_t soff, uint64_t dst, domid_t ddom,
                    uint16_t doff, uint16_t len, uint16_t flags)
{
    struct gnttab_copy c = { { src, sdom, soff }, { dst, ddom, doff }, len, flags, 0x7777 };
    long rc = gnttab(GNTTABOP_copy, &c, 1);
    return rc ? (int16_t)(0x100 + rc) : c.status;
}

static int16_t query(domid_t dom, struct gnttab_query_size *q)
{
    q->dom = dom;
    q->status = 0x7777;
    long rc = gnttab(GNTTABOP_query_size, q, 1);
    return rc ? (int16_t)(0x100 + rc) : q->status;
}

static long set_version(uint32_t v, uint32_t *back)
{
    struct gnttab_set_version sv = { v };
    long rc = gnttab(GNTTABOP_set_version, &sv, 1);
    *back = sv.version;
    return rc;
}

static long get_version(domid_t dom, uint32_t *v)
{
    struct gnttab_get_version g = { dom, 0, 0x7777 };
    long rc = gnttab(GNTTABOP_get_version, &g, 1);
    *v = g.version;
    return rc;
}

static int16_t status_frames(uint32_t nr, uint64_t *frames)
{
    struct gnttab_get_status_frames g = { nr, DOMID_SELF, 0x7777, frames };
    long rc = gnttab(GNTTABOP_get_status_frames, &g, 1);
    return rc ? (int16_t)(0x100 + rc) : g.status;
}

static int16_t swap(grant_ref_t a, grant_ref_t b)
{
    struct gnttab_swap_grant_ref s = { a, b, 0x7777 };
    long rc = gnttab(GNTTABOP_swap_grant_ref, &s, 1);
    return rc ? (int16_t)(0x100 + rc) : s.status;
}

static void grant_v1(grant_ref_t ref, uint16_t flags, domid_t dom, uint32_t frame)
{
    gt1[ref].domid = dom;
    gt1[ref].frame = frame;
    barrier();
    gt1[ref].flags = flags;
}

static uint64_t pte_of(const void *va)
{
    return lookup_pte((unsigned long)va);
}

/* ------------------------------------------------------------------ */

static int rules_grant_setup(void)
{
    struct gnttab_query_size q;
    uint64_t frames[4] = { 0, 0, 0, 0 };
    long rc;

    int16_t st = query(DOMID_SELF, &q);
    check(st == GNTST_okay && q.nr_frames == 1 && q.max_nr_frames >= 2,
          "query_size DOMID_SELF -> one frame in use (INITIAL_NR_GRANT_FRAMES, "
          "GT grant_table_init), room for more",
          "status %d, nr %u, max %u", st, q.nr_frames, q.max_nr_frames);
    uint32_t max = q.max_nr_frames;
    check_eq("query_size of domain 0 -> GNTST_permission_denied (xsm_grant_query_size: "
             "XSM_TARGET)", query(0, &q), GNTST_permission_denied);
    check_eq("query_size of a domain that does not exist -> GNTST_bad_domain",
             query(NO_DOM, &q), GNTST_bad_domain);
    rc = gnttab(GNTTABOP_query_size, &q, 2);
    check_eq("query_size with count 2 -> -EINVAL (GT gnttab_query_size)", rc, -XEN_EINVAL);

    struct gnttab_setup_table s = { DOMID_SELF, 2, 0x7777, frames };
    rc = gnttab(GNTTABOP_setup_table, &s, 1);
    check(rc == 0 && s.status == GNTST_okay && frames[0] && frames[1] && !frames[2],
          "setup_table DOMID_SELF, 2 frames -> GNTST_okay, two frame numbers (GT "
          "gnttab_setup_table)", "rc %ld, status %d, frames 0x%lx 0x%lx", rc, s.status,
          (unsigned long)frames[0], (unsigned long)frames[1]);
    st = query(DOMID_SELF, &q);
    check(st == GNTST_okay && q.nr_frames == 2 && q.max_nr_frames == max,
          "query_size after it -> 2 frames in use (gnttab_grow_table)", "nr %u", q.nr_frames);
    struct gnttab_setup_table s2 = { DOMID_SELF, max + 1, 0x7777, frames + 2 };
    rc = gnttab(GNTTABOP_setup_table, &s2, 1);
    check(rc == 0 && s2.status == GNTST_general_error,
          "setup_table beyond max_nr_frames -> GNTST_general_error", "rc %ld, status %d",
          rc, s2.status);
    s2.nr_frames = 1;
    s2.dom = 0;
    rc = gnttab(GNTTABOP_setup_table, &s2, 1);
    check(rc == 0 && s2.status == GNTST_permission_denied,
          "setup_table for domain 0 -> GNTST_permission_denied (xsm_grant_setup)",
          "rc %ld, status %d", rc, s2.status);
    s2.dom = NO_DOM;
    rc = gnttab(GNTTABOP_setup_table, &s2, 1);
    check(rc == 0 && s2.status == GNTST_bad_domain,
          "setup_table for a domain that does not exist -> GNTST_bad_domain",
          "rc %ld, status %d", rc, s2.status);
    s2.dom = DOMID_SELF;
    s2.frame_list = (uint64_t *)HOLE_VA;
    rc = gnttab(GNTTABOP_setup_table, &s2, 1);
    check_eq("setup_table with its frame list in Xen's hole -> -EFAULT (guest_handle_okay)",
             rc, -XEN_EFAULT);

    uint32_t v = 0;
    rc = get_version(DOMID_SELF, &v);
    check(rc == 0 && v == 1, "get_version DOMID_SELF -> version 1 (the default)",
          "rc %ld, version %u", rc, v);
    check_eq("get_version of a domain that does not exist -> -ESRCH (GT gnttab_get_version)",
             get_version(NO_DOM, &v), -XEN_ESRCH);
    check_eq("get_version of domain 0 -> -EPERM (xsm_grant_query_size)",
             get_version(0, &v), -XEN_EPERM);
    uint64_t sf[2] = { 0, 0 };
    check_eq("get_status_frames of a v1 table, 1 frame -> GNTST_general_error (it has none)",
             status_frames(1, sf), GNTST_general_error);
    check_eq("get_status_frames of a v1 table, 0 frames -> GNTST_okay",
             status_frames(0, sf), GNTST_okay);

    /* Map the two shared frames, as a guest does to write its entries. */
    rc = 0;
    for (int i = 0; i < 2; i++)
        rc |= HYPERVISOR_update_va_mapping((unsigned long)tab_va + i * PAGE_SIZE,
                                           (frames[i] << PAGE_SHIFT) | PTE_MAP,
                                           UVMF_INVLPG | UVMF_LOCAL);
    if (!check_eq("update_va_mapping maps the grant frames setup_table returned", rc, 0))
        return -1;
    gt1 = (volatile struct grant_entry_v1 *)tab_va;
    gt2 = (volatile struct grant_entry_v2 *)tab_va;
    uint16_t busy = GTF_permit_access | GTF_reading | GTF_writing;
    check(gt1[0].flags == busy && gt1[0].domid == 0 &&
              gt1[0].frame == xen_start_info->console.domU.mfn &&
              gt1[1].flags == busy && gt1[1].domid == 0 &&
              gt1[1].frame == xen_start_info->store_mfn,
          "entries 0 and 1: the toolstack's grants of the console and xenstore pages to "
          "domain 0 (xc_dom_gnttab_seed), mapped by its backends",
          "0: 0x%x d%u 0x%x, 1: 0x%x d%u 0x%x", gt1[0].flags, gt1[0].domid, gt1[0].frame,
          gt1[1].flags, gt1[1].domid, gt1[1].frame);
    return 0;
}

/* ------------------------------------------------------------------ */

static void rules_grant_map(unsigned long pt_mfn)
{
    unsigned long mfn_a = virt_to_mfn(page_a);
    uint64_t pte;

    memcpy(page_a, "grant page A....", 16);
    memcpy(page_b, "grant page B....", 16);
    grant_v1(R_A, GTF_permit_access, domid, mfn_a);
    grant_v1(R_RO, GTF_permit_access | GTF_readonly, domid, mfn_a);
    grant_v1(R_DOM0, GTF_permit_access, 0, mfn_a);
    grant_v1(R_PT, GTF_permit_access, domid, pt_mfn);
    grant_v1(R_BADFRAME, GTF_permit_access, domid,
             (uint32_t)(xen_start_info->nr_pages + 0x100000));
    grant_v1(R_INVALID, 0, domid, mfn_a);
    grant_v1(R_SUBPAGE, GTF_permit_access | GTF_sub_page, domid, mfn_a);

    struct gnttab_map_grant_ref m0 = map((unsigned long)map_va[0], GNTMAP_host_map, R_A, domid);
    check(m0.status == GNTST_okay && m0.handle == 0 && m0.dev_bus_addr == mfn_a << PAGE_SHIFT,
          "map_grant_ref host_map of an own grant -> GNTST_okay, handle 0 (the first "
          "maptrack entry), dev_bus_addr = the frame (GT map_grant_ref)",
          "status %d, handle %u, dev 0x%lx", m0.status, m0.handle,
          (unsigned long)m0.dev_bus_addr);
    check(memcmp(map_va[0], "grant page A", 12) == 0, "the host mapping shows the granted page",
          "reads %.12s", (const char *)map_va[0]);
    ((volatile uint8_t *)map_va[0])[100] = 0x5a;
    barrier();
    check(((volatile uint8_t *)page_a)[100] == 0x5a,
          "a write through a writable mapping reaches the page", "%u", page_a[100]);
    check(gt1[R_A].flags == (GTF_permit_access | GTF_reading | GTF_writing),
          "map sets GTF_reading|GTF_writing in the v1 entry (GT _set_status_v1)",
          "flags 0x%x", gt1[R_A].flags);
    pte = pte_of(map_va[0]);
    check(((pte & PTE_MFN_MASK) >> PAGE_SHIFT) == mfn_a &&
              (pte & (_PAGE_PRESENT | _PAGE_RW | _PAGE_NX)) == (_PAGE_PRESENT | _PAGE_RW | _PAGE_NX),
          "the grant PTE: the frame, present, writable, NX (PVGT grant_to_pte_flags)",
          "pte 0x%lx", (unsigned long)pte);

    struct gnttab_map_grant_ref m1 = map((unsigned long)map_va[1],
                                         GNTMAP_host_map | GNTMAP_readonly, R_A, domid);
    pte = pte_of(map_va[1]);
    check(m1.status == GNTST_okay && m1.handle == 1 && (pte & _PAGE_PRESENT) &&
              !(pte & _PAGE_RW),
          "a second, read-only map of the same grant -> GNTST_okay, handle 1, a read-only PTE",
          "status %d, handle %u, pte 0x%lx", m1.status, m1.handle, (unsigned long)pte);

    /* map_grant_ref's refusals, in its order */
    check_eq("map_grant_ref with neither host_map nor device_map -> GNTST_bad_gntref",
             map((unsigned long)map_va[2], 0, R_A, domid).status, GNTST_bad_gntref);
    check_eq("map_grant_ref dom DOMID_SELF -> GNTST_bad_domain (rcu_lock_domain_by_id: not "
             "a domain id)", map((unsigned long)map_va[2], GNTMAP_host_map, R_A,
                                 DOMID_SELF).status, GNTST_bad_domain);
    check_eq("map_grant_ref from a domain that does not exist -> GNTST_bad_domain",
             map((unsigned long)map_va[2], GNTMAP_host_map, R_A, NO_DOM).status,
             GNTST_bad_domain);
    check_eq("map_grant_ref of a ref beyond the table -> GNTST_bad_gntref",
             map((unsigned long)map_va[2], GNTMAP_host_map, 2 * 512, domid).status,
             GNTST_bad_gntref);
    check_eq("map of the console grant, pinned by domain 0 -> GNTST_general_error "
             "(act->domid is not this domain)",
             map((unsigned long)map_va[2], GNTMAP_host_map, 0, domid).status,
             GNTST_general_error);
    check_eq("map_grant_ref of an invalid entry -> GNTST_general_error (_set_status_v1)",
             map((unsigned long)map_va[2], GNTMAP_host_map, R_INVALID, domid).status,
             GNTST_general_error);
#ifdef PVTEST_ORACLE_TCG
    /* Only in scripts/xen_oracle.py --tcg-build: under real Xen the guest is domain 0
     * itself, so this map succeeds; unmap it, or entry R_DOM0 stays pinned and every
     * grant-table v2 check runs against a v1 table (set_version 2 -> -EBUSY). */
    struct gnttab_map_grant_ref m_self = map((unsigned long)map_va[2], GNTMAP_host_map,
                                             R_DOM0, domid);
    check_eq("map_grant_ref of an entry granted to domain 0 -> GNTST_general_error",
             m_self.status, GNTST_general_error);
    if (m_self.status == GNTST_okay)
        unmap((unsigned long)map_va[2], 0, m_self.handle);
#else
    check_eq("map_grant_ref of an entry granted to domain 0 -> GNTST_general_error",
             map((unsigned long)map_va[2], GNTMAP_host_map, R_DOM0, domid).status,
             GNTST_general_error);
#endif
    check_eq("writable map of a GTF_readonly entry -> GNTST_general_error",
             map((unsigned long)map_va[2], GNTMAP_host_map, R_RO, domid).status,
             GNTST_general_error);
    check(gt1[R_RO].flags == (GTF_permit_access | GTF_readonly),
          "... and the entry's flags are left alone", "flags 0x%x", gt1[R_RO].flags);
    check_eq("map of a v1 entry with GTF_sub_page -> GNTST_general_error (mapflag)",
             map((unsigned long)map_va[2], GNTMAP_host_map, R_SUBPAGE, domid).status,
             GNTST_general_error);
    check_eq("map of a grant of a frame not this domain's -> GNTST_bad_page (get_paged_frame)",
             map((unsigned long)map_va[2], GNTMAP_host_map, R_BADFRAME, domid).status,
             GNTST_bad_page);
    check(gt1[R_BADFRAME].flags == GTF_permit_access,
          "... GTF_reading/GTF_writing set and cleared again (reduce_status_for_pin)",
          "flags 0x%x", gt1[R_BADFRAME].flags);
    check_eq("writable map of a pinned page-table frame -> GNTST_general_error (no writable "
             "type)", map((unsigned long)map_va[2], GNTMAP_host_map, R_PT, domid).status,
             GNTST_general_error);
    struct gnttab_map_grant_ref mpt = map((unsigned long)map_va[2],
                                          GNTMAP_host_map | GNTMAP_readonly, R_PT, domid);
    check(mpt.status == GNTST_okay && unmap((unsigned long)map_va[2], 0, mpt.handle) == 0,
          "read-only map of it -> GNTST_okay (and unmapped)", "status %d", mpt.status);
    check_eq("map at an address in Xen's hole -> GNTST_general_error (map_guest_l1e: "
             "__addr_ok)", map(HOLE_VA, GNTMAP_host_map, R_A, domid).status,
             GNTST_general_error);
    check_eq("map at an address with no L2 entry -> GNTST_general_error (map_guest_l1e)",
             map(NOL2_VA, GNTMAP_host_map, R_A, domid).status, GNTST_general_error);

    /* GNTMAP_contains_pte: host_addr is the PTE's machine address */
    uint64_t pte_ma = 0;
    pte_slot((unsigned long)map_va[3], 1, &pte_ma);
    struct gnttab_map_grant_ref mc = map(pte_ma, GNTMAP_host_map | GNTMAP_contains_pte, R_A,
                                         domid);
    invlpg(map_va[3]);
    check(mc.status == GNTST_okay && memcmp(map_va[3], "grant page A", 12) == 0,
          "contains_pte map at an L1 entry's machine address -> GNTST_okay, the page mapped "
          "there (PVGT create_grant_pv_mapping)", "status %d", mc.status);
    check_eq("contains_pte map at a misaligned PTE address -> GNTST_general_error",
             map(pte_ma + 4, GNTMAP_host_map | GNTMAP_contains_pte, R_A, domid).status,
             GNTST_general_error);
    check_eq("contains_pte map in a frame that is no L1 table -> GNTST_general_error "
             "(PGT_l1_page_table)", map(virt_to_maddr(page_b), GNTMAP_host_map |
                                        GNTMAP_contains_pte, R_A, domid).status,
             GNTST_general_error);
    check(unmap(pte_ma, 0, mc.handle) == GNTST_okay && pte_of(map_va[3]) == 0,
          "unmap of the contains_pte mapping by its PTE address -> GNTST_okay, the PTE cleared",
          "pte 0x%lx", (unsigned long)pte_of(map_va[3]));

    /* device mappings */
    struct gnttab_map_grant_ref md = map(0, GNTMAP_device_map, R_A, domid);
    check(md.status == GNTST_okay && md.dev_bus_addr == mfn_a << PAGE_SHIFT,
          "device_map -> GNTST_okay, dev_bus_addr = the frame", "status %d", md.status);
    check_eq("unmap with another dev_bus_addr -> GNTST_bad_dev_addr (GT unmap_common)",
             unmap(0, (mfn_a + 1) << PAGE_SHIFT, md.handle), GNTST_bad_dev_addr);
    check_eq("unmap with its dev_bus_addr -> GNTST_okay",
             unmap(0, mfn_a << PAGE_SHIFT, md.handle), GNTST_okay);

    /* unmap_grant_ref */
    check_eq("unmap of a handle never issued -> GNTST_bad_handle",
             unmap((unsigned long)map_va[0], 0, 0x7fffffff), GNTST_bad_handle);
    check(unmap(0, 0, m0.handle) == GNTST_okay && (pte_of(map_va[0]) & _PAGE_PRESENT),
          "unmap naming neither address -> GNTST_okay and nothing unmapped", "pte 0x%lx",
          (unsigned long)pte_of(map_va[0]));
    check_eq("unmap at an address that does not map the grant -> GNTST_general_error "
             "(PVGT replace_grant_pv_mapping)", unmap((unsigned long)map_va[4], 0, m0.handle),
             GNTST_general_error);
    pte = pte_of(map_va[0]);
    long rc = HYPERVISOR_update_va_mapping((unsigned long)map_va[0], pte & ~_PAGE_RW,
                                           UVMF_INVLPG | UVMF_LOCAL);
    check(rc == 0 && unmap((unsigned long)map_va[0], 0, m0.handle) == GNTST_general_error,
          "unmap of a writable grant whose PTE was made read-only -> GNTST_general_error "
          "(XSA-234: present and writable must match)", "rc %ld", rc);
    HYPERVISOR_update_va_mapping((unsigned long)map_va[0], pte, UVMF_INVLPG | UVMF_LOCAL);
    check(unmap((unsigned long)map_va[0], 0, m0.handle) == GNTST_okay &&
              pte_of(map_va[0]) == 0,
          "unmap with its PTE restored -> GNTST_okay, the PTE cleared", "pte 0x%lx",
          (unsigned long)pte_of(map_va[0]));
    check(gt1[R_A].flags == (GTF_permit_access | GTF_reading),
          "with only read-only mappings left, GTF_writing is cleared (reduce_status_for_pin)",
          "flags 0x%x", gt1[R_A].flags);
    check_eq("unmap of the same handle again -> GNTST_bad_handle",
             unmap((unsigned long)map_va[0], 0, m0.handle), GNTST_bad_handle);
    check_eq("unmap of the read-only mapping -> GNTST_okay",
             unmap((unsigned long)map_va[1], 0, m1.handle), GNTST_okay);
    check(gt1[R_A].flags == GTF_permit_access,
          "no mapping left: GTF_reading cleared too", "flags 0x%x", gt1[R_A].flags);
    struct gnttab_map_grant_ref mn = map((unsigned long)map_va[5], GNTMAP_host_map, R_A, domid);
    check(mn.status == GNTST_okay && mn.handle != m0.handle,
          "a freed handle goes to the tail of the free list (put_maptrack_handle): the next "
          "map gets another", "status %d, handle %u", mn.status, mn.handle);

    /* unmap_and_replace: the PTE at new_addr moves into the grant's place */
    memcpy(repl_page, "replacement.....", 16);
    struct gnttab_unmap_and_replace r = { (unsigned long)map_va[5], (unsigned long)repl_page,
                                          mn.handle, 0x7777 };
    rc = gnttab(GNTTABOP_unmap_and_replace, &r, 1);
    invlpg(map_va[5]);
    check(rc == 0 && r.status == GNTST_okay && memcmp(map_va[5], "replacement", 11) == 0 &&
              pte_of(repl_page) == 0,
          "unmap_and_replace -> GNTST_okay: host_addr maps new_addr's page, new_addr nothing "
          "(steal_linear_address)", "rc %ld, status %d", rc, r.status);
    struct gnttab_map_grant_ref mc2 = map(pte_ma, GNTMAP_host_map | GNTMAP_contains_pte, R_A,
                                          domid);
    struct gnttab_unmap_and_replace r2 = { pte_ma, (unsigned long)map_va[6], mc2.handle,
                                           0x7777 };
    rc = gnttab(GNTTABOP_unmap_and_replace, &r2, 1);
    check(mc2.status == GNTST_okay && rc == 0 && r2.status == GNTST_general_error &&
              (pte_of(map_va[6]) & _PAGE_PRESENT),
          "unmap_and_replace of a contains_pte mapping -> GNTST_general_error, new_addr "
          "untouched", "map %d, rc %ld, status %d", mc2.status, rc, r2.status);
    unmap(pte_ma, 0, mc2.handle);
}

/* ------------------------------------------------------------------ */

static void rules_grant_copy(unsigned long pt_mfn)
{
    unsigned long mfn_a = virt_to_mfn(page_a), mfn_b = virt_to_mfn(page_b);

    memset(page_b + 256, 0, 64);
    check(copy(mfn_a, DOMID_SELF, 0, mfn_b, DOMID_SELF, 256, 12, 0) == GNTST_okay &&
              memcmp(page_b + 256, "grant page A", 12) == 0,
          "copy frame to frame, DOMID_SELF -> GNTST_okay, the bytes copied (GT gnttab_copy)",
          "%.12s", (const char *)page_b + 256);
    check(copy(R_A, (domid_t)domid, 6, mfn_b, DOMID_SELF, 512, 6, GNTCOPY_source_gref) ==
              GNTST_okay && memcmp(page_b + 512, "page A", 6) == 0,
          "copy from an own grant named by domain id -> GNTST_okay", "%.6s",
          (const char *)page_b + 512);
    check(gt1[R_A].flags == GTF_permit_access,
          "after the copy the entry's flags are as before (release_grant_for_copy)",
          "flags 0x%x", gt1[R_A].flags);
    check_eq("copy from a frame named by the domain's id, not DOMID_SELF -> "
             "GNTST_permission_denied (gnttab_copy_lock_domain)",
             copy(mfn_a, (domid_t)domid, 0, mfn_b, DOMID_SELF, 0, 8, 0),
             GNTST_permission_denied);
    check_eq("copy from a grant of a domain that does not exist -> GNTST_bad_domain",
             copy(R_A, NO_DOM, 0, mfn_b, DOMID_SELF, 0, 8, GNTCOPY_source_gref),
             GNTST_bad_domain);
    check_eq("copy past the end of a page -> GNTST_bad_copy_arg (gnttab_copy_buf)",
             copy(mfn_a, DOMID_SELF, 4090, mfn_b, DOMID_SELF, 0, 16, 0), GNTST_bad_copy_arg);
    check_eq("copy into a GTF_readonly grant -> GNTST_general_error",
             copy(mfn_a, DOMID_SELF, 0, R_RO, DOMID_SELF, 0, 8, GNTCOPY_dest_gref),
             GNTST_general_error);
    check_eq("copy from a ref beyond the table -> GNTST_bad_gntref (acquire_grant_for_copy)",
             copy(5000, DOMID_SELF, 0, mfn_b, DOMID_SELF, 0, 8, GNTCOPY_source_gref),
             GNTST_bad_gntref);
    check_eq("copy from a frame not this domain's -> GNTST_bad_page (get_paged_frame)",
             copy(xen_start_info->nr_pages + 0x100000, DOMID_SELF, 0, mfn_b, DOMID_SELF, 0, 8,
                  0), GNTST_bad_page);
    check_eq("copy into a pinned page-table frame -> GNTST_general_error (no writable type)",
             copy(mfn_a, DOMID_SELF, 0, pt_mfn, DOMID_SELF, 0, 8, 0), GNTST_general_error);

    struct gnttab_copy batch[3] = {
        { { mfn_a, DOMID_SELF, 0 }, { mfn_b, DOMID_SELF, 1024 }, 4, 0, 0x7777 },
        { { mfn_a, DOMID_SELF, 0 }, { mfn_b, DOMID_SELF, 4095 }, 4, 0, 0x7777 },
        { { R_A, DOMID_SELF, 0 }, { mfn_b, DOMID_SELF, 1028 }, 4, GNTCOPY_source_gref, 0x7777 },
    };
    long rc = gnttab(GNTTABOP_copy, batch, 3);
    check(rc == 0 && batch[0].status == GNTST_okay && batch[1].status == GNTST_bad_copy_arg &&
              batch[2].status == GNTST_okay && memcmp(page_b + 1024, "grangran", 8) == 0,
          "a batch of three copies -> a status each (okay, bad_copy_arg, okay)",
          "rc %ld, %d %d %d", rc, batch[0].status, batch[1].status, batch[2].status);
}

/* ------------------------------------------------------------------ */

static void rules_grant_v2(void)
{
    unsigned long mfn_a = virt_to_mfn(page_a), mfn_b = virt_to_mfn(page_b);
    volatile uint16_t *gst = (volatile uint16_t *)status_va;
    uint32_t back = 0, v = 0;
    uint64_t sf[2] = { 0, 0 };
    long rc;

    struct gnttab_map_grant_ref m = map((unsigned long)map_va[7], GNTMAP_host_map, R_A, domid);
    rc = set_version(2, &back);
    check(rc == -XEN_EBUSY && back == 1,
          "set_version 2 with an entry past the reserved ones mapped -> -EBUSY, version 1 "
          "written back (GT gnttab_set_version)", "rc %ld, version %u", rc, back);
    unmap((unsigned long)map_va[7], 0, m.handle);
    rc = set_version(3, &back);
    check(rc == -XEN_EINVAL && back == 1, "set_version 3 -> -EINVAL, version 1 written back",
          "rc %ld, version %u", rc, back);

    grant_v1(R_KEPT, GTF_permit_access, domid, mfn_b);      /* a reserved entry */
    rc = set_version(2, &back);
    check(rc == 0 && back == 2, "set_version 2 -> 0: v2 is allowed by default "
          "(gnttab=max-ver:2), never -EOPNOTSUPP", "rc %ld, version %u", rc, back);
    rc = get_version(DOMID_SELF, &v);
    check(rc == 0 && v == 2, "get_version -> 2", "rc %ld, version %u", rc, v);
    check(gt2[R_KEPT].flags == GTF_permit_access && gt2[R_KEPT].domid == domid &&
              gt2[R_KEPT].frame == mfn_b,
          "the reserved entries are kept, converted to v2", "flags 0x%x dom %u frame 0x%lx",
          gt2[R_KEPT].flags, gt2[R_KEPT].domid, (unsigned long)gt2[R_KEPT].frame);
    check(gt2[R_A].flags == 0 && gt2[R_A].frame == 0, "the others are cleared",
          "flags 0x%x", gt2[R_A].flags);
    check_eq("get_status_frames, 1 frame -> GNTST_okay (2 v2 frames need one status frame)",
             status_frames(1, sf), GNTST_okay);
    check_eq("get_status_frames, 2 frames -> GNTST_general_error (there is one)",
             status_frames(2, sf + 1), GNTST_general_error);
    rc = HYPERVISOR_update_va_mapping((unsigned long)status_va,
                                      (sf[0] << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_ACCESSED |
                                      _PAGE_NX, UVMF_INVLPG | UVMF_LOCAL);
    check_eq("update_va_mapping maps the status frame (shared with the domain)", rc, 0);
    check(gt2[0].flags == GTF_permit_access && gst[0] == (GTF_reading | GTF_writing),
          "the console grant's GTF_reading|GTF_writing move to its status entry",
          "flags 0x%x, status 0x%x", gt2[0].flags, gst[0]);

    gt2[R_A].domid = (domid_t)domid;
    gt2[R_A].frame = mfn_a;
    barrier();
    gt2[R_A].flags = GTF_permit_access;
    m = map((unsigned long)map_va[7], GNTMAP_host_map, R_A, domid);
    check(m.status == GNTST_okay && gst[R_A] == (GTF_reading | GTF_writing) &&
              gt2[R_A].flags == GTF_permit_access &&
              memcmp(map_va[7], "grant page A", 12) == 0,
          "a v2 map -> GNTST_okay, GTF_reading|GTF_writing in the status frame, the entry "
          "untouched (_set_status_v2)", "status %d, status entry 0x%x, flags 0x%x", m.status,
          gst[R_A], gt2[R_A].flags);
    check(unmap((unsigned long)map_va[7], 0, m.handle) == GNTST_okay && gst[R_A] == 0,
          "unmap clears the status entry", "status entry 0x%x", gst[R_A]);

    gt2[R_RO].domid = (domid_t)domid;
    gt2[R_RO].page_off = 128;
    gt2[R_RO].length = 64;
    gt2[R_RO].frame = mfn_a;
    barrier();
    gt2[R_RO].flags = GTF_permit_access | GTF_sub_page;
    check_eq("map of a v2 sub-page grant -> GNTST_general_error",
             map((unsigned long)map_va[7], GNTMAP_host_map, R_RO, domid).status,
             GNTST_general_error);
    memcpy(page_a + 128, "sub-page bytes..", 16);
    check(copy(R_RO, DOMID_SELF, 128, mfn_b, DOMID_SELF, 2048, 14, GNTCOPY_source_gref) ==
              GNTST_okay && memcmp(page_b + 2048, "sub-page bytes", 14) == 0,
          "copy inside a sub-page grant -> GNTST_okay (acquire_grant_for_copy)", "%.14s",
          (const char *)page_b + 2048);
    check_eq("copy reaching outside the sub-page -> GNTST_general_error",
             copy(R_RO, DOMID_SELF, 100, mfn_b, DOMID_SELF, 0, 64, GNTCOPY_source_gref),
             GNTST_general_error);
    gt2[R_DOM0].domid = (domid_t)domid;
    gt2[R_DOM0].page_off = (uint16_t)domid;              /* transitive.trans_domid */
    gt2[R_DOM0].frame = R_A;                             /* transitive.gref */
    barrier();
    gt2[R_DOM0].flags = GTF_transitive;
    check_eq("copy through a transitive grant back into its own domain -> "
             "GNTST_general_error (self-referential)",
             copy(R_DOM0, DOMID_SELF, 0, mfn_b, DOMID_SELF, 0, 8, GNTCOPY_source_gref),
             GNTST_general_error);

    check(swap(R_A, R_RO) == GNTST_okay && (gt2[R_A].flags & GTF_sub_page) &&
              !(gt2[R_RO].flags & GTF_sub_page),
          "swap_grant_ref -> GNTST_okay, the entries trade places (GT swap_grant_ref)",
          "flags 0x%x 0x%x", gt2[R_A].flags, gt2[R_RO].flags);
    check_eq("swap_grant_ref of a ref with itself -> GNTST_okay", swap(R_A, R_A), GNTST_okay);
    check_eq("swap_grant_ref of the console grant, pinned by domain 0 -> GNTST_eagain",
             swap(0, R_KEPT), GNTST_eagain);
    check_eq("swap_grant_ref with a ref beyond the table -> GNTST_bad_gntref",
             swap(R_A, 5000), GNTST_bad_gntref);
    m = map((unsigned long)map_va[7], GNTMAP_host_map, R_RO, domid);
    check(m.status == GNTST_okay && swap(R_RO, R_A) == GNTST_eagain,
          "swap_grant_ref of a mapped entry -> GNTST_eagain", "map %d", m.status);
    unmap((unsigned long)map_va[7], 0, m.handle);

    gt2[R_KEPT + 1].frame = 1UL << 32;
    barrier();
    gt2[R_KEPT + 1].flags = GTF_permit_access;
    rc = set_version(1, &back);
    check(rc == -XEN_ERANGE && back == 2,
          "set_version 1 with a reserved entry v1 cannot hold -> -ERANGE", "rc %ld, v %u",
          rc, back);
    gt2[R_KEPT + 1].flags = 0;
    rc = set_version(1, &back);
    check(rc == -XEN_EBUSY && back == 2,
          "set_version 1 with the status frame still mapped -> -EBUSY "
          "(gnttab_unpopulate_status_frames)", "rc %ld, v %u", rc, back);
    HYPERVISOR_update_va_mapping((unsigned long)status_va, 0, UVMF_INVLPG | UVMF_LOCAL);
    rc = set_version(1, &back);
    check(rc == 0 && back == 1 && gt1[R_KEPT].flags == GTF_permit_access &&
              gt1[R_KEPT].domid == domid && gt1[R_KEPT].frame == mfn_b &&
              gt1[0].flags == (GTF_permit_access | GTF_reading | GTF_writing),
          "set_version 1 once unmapped -> 0, the reserved entries converted back",
          "rc %ld, v %u, flags 0x%x frame 0x%x, console 0x%x", rc, back, gt1[R_KEPT].flags,
          gt1[R_KEPT].frame, gt1[0].flags);
    rc = HYPERVISOR_update_va_mapping((unsigned long)status_va,
                                      (sf[0] << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_ACCESSED |
                                      _PAGE_NX, UVMF_INVLPG | UVMF_LOCAL);
    check_eq("the old status frame can no longer be mapped -> -EBUSY (MM get_page_from_l1e: "
             "a freed frame has no owner, could_not_pin)", rc, -XEN_EBUSY);
    check_eq("get_status_frames back in v1 -> GNTST_general_error", status_frames(1, sf),
             GNTST_general_error);
}

/* ------------------------------------------------------------------ */

static void rules_grant_other(void)
{
    unsigned long mfn_a = virt_to_mfn(page_a);
    struct gnttab_query_size q = { DOMID_SELF, 0, 0, 0 };

    check_eq("dump_table -> -ENOSYS (not in 4.17's do_grant_table_op)",
             gnttab(GNTTABOP_dump_table, &q, 1), -XEN_ENOSYS);
    check_eq("grant_table_op unknown command 13 -> -ENOSYS", gnttab(13, &q, 1), -XEN_ENOSYS);
    check_eq("query_size with continuation bits above the command -> -EINVAL",
             gnttab(GNTTABOP_query_size | (1U << 12), &q, 1), -XEN_EINVAL);
    check_eq("a count that is negative as an int -> -EINVAL",
             gnttab(GNTTABOP_query_size, &q, 0x80000000UL), -XEN_EINVAL);
    check_eq("map_grant_ref with its array in Xen's hole -> -EFAULT (guest_handle_okay)",
             gnttab(GNTTABOP_map_grant_ref, (void *)HOLE_VA, 1), -XEN_EFAULT);

    struct gnttab_cache_flush cf = { mfn_a << PAGE_SHIFT, 0, 64, GNTTAB_CACHE_CLEAN };
    check_eq("cache_flush CLEAN of an own frame -> 0 (GT _cache_flush)",
             gnttab(GNTTABOP_cache_flush, &cf, 1), 0);
    cf.op = GNTTAB_CACHE_INVAL;
    check_eq("cache_flush INVAL alone -> -EOPNOTSUPP (x86 invalidate_dcache_va_range)",
             gnttab(GNTTABOP_cache_flush, &cf, 1), -XEN_EOPNOTSUPP);
    cf.op = GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_SOURCE_GREF;
    check_eq("cache_flush with GNTTAB_CACHE_SOURCE_GREF -> -EINVAL",
             gnttab(GNTTABOP_cache_flush, &cf, 1), -XEN_EINVAL);
    cf.op = GNTTAB_CACHE_CLEAN;
    cf.offset = 4000;
    cf.length = 200;
    check_eq("cache_flush past the end of the page -> -EINVAL",
             gnttab(GNTTABOP_cache_flush, &cf, 1), -XEN_EINVAL);

    struct gnttab_transfer t = { xen_start_info->nr_pages + 0x100000, (domid_t)domid, R_A,
                                 0x7777 };
    long rc = gnttab(GNTTABOP_transfer, &t, 1);
    check(rc == 0 && t.status == GNTST_bad_page,
          "transfer of a frame not this domain's -> GNTST_bad_page (GT gnttab_transfer)",
          "rc %ld, status %d", rc, t.status);
    t.mfn = mfn_a;
    t.status = 0x7777;
    rc = gnttab(GNTTABOP_transfer, &t, 1);
    check(rc == 0 && t.status == GNTST_bad_page,
          "transfer of a page still mapped -> GNTST_bad_page (steal_page)", "rc %ld, status %d",
          rc, t.status);

    /* Pages with no mapping left can be given away: to this domain itself through
     * an entry that accepts a transfer, or to nobody (the page is lost). */
    unsigned long xm0 = virt_to_mfn(xfer_page[0]), xm1 = virt_to_mfn(xfer_page[1]);
    unsigned long gfn = 0x1234;
    rc = HYPERVISOR_update_va_mapping((unsigned long)xfer_page[0], 0, UVMF_INVLPG | UVMF_LOCAL);
    rc |= HYPERVISOR_update_va_mapping((unsigned long)xfer_page[1], 0, UVMF_INVLPG | UVMF_LOCAL);
    grant_v1(R_XFER, GTF_accept_transfer, domid, (uint32_t)gfn);
    struct gnttab_transfer tx[2] = {
        { xm0, (domid_t)domid, R_XFER, 0x7777 },
        { xm1, NO_DOM, R_XFER, 0x7777 },
    };
    long rc2 = gnttab(GNTTABOP_transfer, tx, 2);
    uint64_t m2p_entry = 0;
    int m2p_err = read_u64_safe(&((const unsigned long *)MACH2PHYS_VIRT_START)[xm0], &m2p_entry);
    check(rc == 0 && rc2 == 0 && tx[0].status == GNTST_okay &&
              gt1[R_XFER].flags == (GTF_accept_transfer | GTF_transfer_committed |
                                     GTF_transfer_completed) &&
              gt1[R_XFER].frame == xm0 && !m2p_err && m2p_entry == gfn,
          "transfer of an unmapped page to this domain -> GNTST_okay: the entry gets the "
          "frame and GTF_transfer_committed|completed, the M2P maps it to the entry's gfn",
          "rc %ld/%ld, status %d, flags 0x%x, frame 0x%x, m2p 0x%lx", rc, rc2, tx[0].status,
          gt1[R_XFER].flags, gt1[R_XFER].frame, (unsigned long)m2p_entry);
    check_eq("transfer of an unmapped page to a domain that does not exist -> "
             "GNTST_bad_domain (the page is gone all the same)", tx[1].status,
             GNTST_bad_domain);
}

void rules_grants(unsigned long self_domid, unsigned long pinned_pt_mfn)
{
    domid = self_domid;
    section("rules: grant tables (xen/common/grant_table.c, "
            "xen/arch/x86/pv/grant_table.c@stable-4.17)");
    if (rules_grant_setup())
        return;
    rules_grant_map(pinned_pt_mfn);
    rules_grant_copy(pinned_pt_mfn);
    rules_grant_v2();
    rules_grant_other();
}
