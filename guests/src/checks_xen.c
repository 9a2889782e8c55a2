/*
 * checks_xen.c - the checks pvtest runs, one family per function.  Each
 * check states the Xen ABI behaviour it expects; the hypercall mechanism and
 * the interface drift between v1 and v2 live in the port files.
 */
#include "pvtest.h"

#define V1 (PVTEST_VERSION == 1)
#define MS 1000000ULL
#define PTE_FLAGS (_PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY)

static uint32_t cpuid_xen_version;
static evtchn_port_t timer_port, closed_port;

/* ------------------------------------------------------------------ */
/* Virtual IDT: DPL 3 for the vectors the kernel raises with int3/into. */

#define TRAP(v, dpl) { v, dpl, FLAT_KERNEL_CS64, (unsigned long)xen_trap_##v }
static const struct trap_info trap_table[] = {
    TRAP(0, 0), TRAP(1, 0), TRAP(3, 3), TRAP(4, 3), TRAP(5, 0), TRAP(6, 0),
    TRAP(7, 0), TRAP(9, 0), TRAP(10, 0), TRAP(11, 0), TRAP(12, 0), TRAP(13, 0),
    TRAP(14, 0), TRAP(16, 0), TRAP(17, 0), TRAP(19, 0),
    { 0, 0, 0, 0 },     /* terminator: address 0 */
};

long install_trap_table(void)
{
    return HYPERVISOR_set_trap_table(trap_table);
}

/* ------------------------------------------------------------------ */
/* Pages the checks use, all inside the kernel image. */

static uint8_t shared_info_slot[PAGE_SIZE] __page_aligned;
static uint64_t l1_page[512] __page_aligned;
static uint64_t l4_copy[512] __page_aligned;
static uint64_t gdt_page[512] __page_aligned;
static uint64_t page_a[512] __page_aligned;
static uint64_t page_b[512] __page_aligned;
static uint64_t page_c[512] __page_aligned;
static uint64_t ro_page[512] __page_aligned;

#define MAGIC_A 0xa1a1a1a1a1a1a1a1UL
#define MAGIC_B 0xb2b2b2b2b2b2b2b2UL
#define MAGIC_C 0xc3c3c3c3c3c3c3c3UL

static int memchr_nul(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i])
            return 1;
    return 0;
}

static int mapped_rw_to(const void *va, unsigned long mfn)
{
    uint64_t pte = lookup_pte((unsigned long)va);
    return (pte & (_PAGE_PRESENT | _PAGE_RW)) == (_PAGE_PRESENT | _PAGE_RW) &&
           ((pte & PTE_MFN_MASK) >> PAGE_SHIFT) == mfn;
}

/* ------------------------------------------------------------------ */

void checks_boot(long trap_rc)
{
    struct start_info *si = xen_start_info;
    char magic[33];

    memcpy(magic, si->magic, 32);
    magic[32] = 0;
    printk("pvtest: start_info %p: magic \"%s\" nr_pages %lu flags 0x%x\n",
           si, magic, si->nr_pages, si->flags);
    printk("pvtest:   shared_info maddr 0x%lx, pt_base 0x%lx (%lu frames), "
           "mfn_list 0x%lx\n", si->shared_info, si->pt_base, si->nr_pt_frames,
           si->mfn_list);
    printk("pvtest:   xenstore mfn 0x%lx evtchn %u, console mfn 0x%lx evtchn %u, "
           "entry rsp 0x%lx\n", si->store_mfn, si->store_evtchn,
           si->console.domU.mfn, si->console.domU.evtchn, boot_rsp);

    section("boot: start of day (xen.h layout)");
    check_eq("set_trap_table installs the virtual IDT", trap_rc, 0);
    check(strncmp(magic, "xen-", 4) == 0 && strlen(magic) > 7 &&
              memcmp(magic + strlen(magic) - 7, "-x86_64", 7) == 0,
          "start_info magic is xen-<version>-x86_64", "got \"%s\"", magic);
    check(si->nr_pages > 0 && si->mfn_list >= VIRT_BASE, "start_info nr_pages and mfn_list",
          "nr_pages %lu, mfn_list 0x%lx", si->nr_pages, si->mfn_list);

    long rc = HYPERVISOR_update_va_mapping((unsigned long)shared_info_slot,
                                           (si->shared_info & PTE_MFN_MASK) | PTE_FLAGS,
                                           UVMF_INVLPG | UVMF_LOCAL);
    if (!check_eq("update_va_mapping maps the shared_info frame", rc, 0))
        fatal("cannot continue without shared_info");
    HYPERVISOR_shared_info = (struct shared_info *)shared_info_slot;

    check(console_ring_init() == 0, "console ring page (console.domU.mfn) found via M2P/P2M",
          "mfn 0x%lx", si->console.domU.mfn);
    check(m2p_readable(), "M2P table readable at 0xffff800000000000", "read faulted");
    check((si->pt_base & (PAGE_SIZE - 1)) == 0 && si->pt_base > (unsigned long)_end,
          "pt_base is page-aligned and follows the kernel image", "pt_base 0x%lx", si->pt_base);

    unsigned long text_mfn = virt_to_mfn(_text);
    uint64_t pte = lookup_pte((unsigned long)_text);
    check((pte & _PAGE_PRESENT) && ((pte & PTE_MFN_MASK) >> PAGE_SHIFT) == text_mfn,
          "bootstrap page tables map _text to the frame P2M names",
          "pte 0x%lx, p2m mfn 0x%lx", (unsigned long)pte, text_mfn);
    check_eqx("M2P maps _text's frame back to its pfn", mfn_to_pfn(text_mfn),
              ((unsigned long)_text - VIRT_BASE) >> PAGE_SHIFT);
    pte = lookup_pte(si->pt_base);
    check((pte & _PAGE_PRESENT) && !(pte & _PAGE_RW),
          "bootstrap page tables are mapped read-only", "pte 0x%lx", (unsigned long)pte);
    check(boot_rsp > si->pt_base && mapped_rw_to((void *)(boot_rsp - 8),
                                                  virt_to_mfn((void *)(boot_rsp - 8))),
          "entry RSP is on a writable bootstrap stack after the page tables",
          "rsp 0x%lx", boot_rsp);
    check(mapped_rw_to(si, virt_to_mfn(si)), "start_info page is mapped writable", "pte 0x%lx",
          (unsigned long)lookup_pte((unsigned long)si));
    void *xs = mfn_to_virt(si->store_mfn);
    check(xs && mapped_rw_to(xs, si->store_mfn),
          "xenstore ring page is mapped writable in the initial mapping", "va %p", xs);
    void *cons = mfn_to_virt(si->console.domU.mfn);
    check(cons && mapped_rw_to(cons, si->console.domU.mfn),
          "console ring page is mapped writable in the initial mapping", "va %p", cons);
    check_eq("event delivery starts masked (evtchn_upcall_mask = 1)",
             vcpu0()->evtchn_upcall_mask, 1);
#if V1
    check(hypercall_page[0] != 0xcc,
          "hypercall page was filled by the domain builder", "still int3");
#endif
    long cio = console_io_first_rc();
    if (cio == -XEN_EPERM)
        check_skip("console_io CONSOLEIO_write",
                   "not permitted for this domain (-EPERM), as on a non-debug Xen");
    else
        check_eq("console_io CONSOLEIO_write", cio, 0);
}

/* ------------------------------------------------------------------ */

static uint64_t fs_word = 0x0123456789abcdefUL;
static uint64_t gs_word = 0xfedcba9876543210UL;
static uint64_t gs_user_word;

void checks_cpu(void)
{
    long rc;

    section("CPU state");
    rc = pv_register_callbacks();
    check_eq(V1 ? "set_callbacks registers event, failsafe and syscall callbacks"
                : "callback_op registers event, failsafe and syscall callbacks", rc, 0);
    rc = HYPERVISOR_stack_switch(FLAT_KERNEL_SS64, (unsigned long)boot_stack_top);
    check_eq("stack_switch sets the kernel stack", rc, 0);

    unsigned long nm0 = faults.count[7];
    rc = HYPERVISOR_fpu_taskswitch(1);
    check_eq("fpu_taskswitch(1) sets CR0.TS", rc, 0);
    __asm__ __volatile__("fnop" ::: "memory");
    check_eq("first x87 instruction after fpu_taskswitch(1) raises #NM",
             (long)(faults.count[7] - nm0), 1);
    __asm__ __volatile__("fnop" ::: "memory");
    check_eq("no #NM once the handler cleared TS with fpu_taskswitch(0)",
             (long)(faults.count[7] - nm0), 1);

    uint64_t v;
    rc = HYPERVISOR_set_segment_base(SEGBASE_FS, (unsigned long)&fs_word);
    check_eq("set_segment_base FS", rc, 0);
    __asm__ __volatile__("movq %%fs:0, %0" : "=r"(v));
    check_eqx("FS-relative load reads through the new FS base", v, fs_word);
    rc = HYPERVISOR_set_segment_base(SEGBASE_GS_KERNEL, (unsigned long)&gs_word);
    check_eq("set_segment_base GS (kernel)", rc, 0);
    __asm__ __volatile__("movq %%gs:0, %0" : "=r"(v));
    check_eqx("GS-relative load reads through the new GS base", v, gs_word);
    rc = HYPERVISOR_set_segment_base(SEGBASE_GS_USER, (unsigned long)&gs_user_word);
    check_eq("set_segment_base GS (user)", rc, 0);

    /* A one-page GDT: entry 1 a flat data segment, entry 2 filled later by
     * update_descriptor.  Descriptor pages must have no writable mapping. */
    const uint64_t flat_data = 0x00cff2000000ffffUL;   /* DPL 3, 4 GiB */
    const uint64_t small_data = 0x0041f20000002345UL;  /* DPL 3, limit 0x12345 */
    memset(gdt_page, 0, sizeof(gdt_page));
    gdt_page[1] = flat_data;
    rc = set_page_ro(gdt_page, 1);
    check_eq("update_va_mapping makes the GDT page read-only", rc, 0);
    unsigned long frames[1] = { virt_to_mfn(gdt_page) };
    rc = HYPERVISOR_set_gdt(frames, 512);
    check_eq("set_gdt installs a one-page GDT", rc, 0);
    rc = HYPERVISOR_update_descriptor(virt_to_maddr(&gdt_page[2]), small_data);
    check_eq("update_descriptor writes GDT entry 2", rc, 0);
    check_eqx("GDT entry 2 reads back the new descriptor",
              ((volatile uint64_t *)gdt_page)[2] & ~(1UL << 40), small_data);

    uint32_t r[4];
    unsigned long ud0 = faults.count[6];
    xen_cpuid(XEN_CPUID_FIRST_LEAF, 0, r);
    char sig[13];
    memcpy(sig, &r[1], 4);
    memcpy(sig + 4, &r[2], 4);
    memcpy(sig + 8, &r[3], 4);
    sig[12] = 0;
    check(r[1] == XEN_CPUID_SIGNATURE_EBX && r[2] == XEN_CPUID_SIGNATURE_ECX &&
              r[3] == XEN_CPUID_SIGNATURE_EDX,
          "forced-emulation CPUID 0x40000000 signature is XenVMMXenVMM", "got \"%s\"", sig);
    check(r[0] >= XEN_CPUID_FIRST_LEAF + 2 && r[0] < XEN_CPUID_FIRST_LEAF + 0x100,
          "CPUID 0x40000000 max leaf covers 0x40000002", "got 0x%x", r[0]);
    check_eq("forced-emulation prefix runs CPUID without a #UD",
             (long)(faults.count[6] - ud0), 0);
    xen_cpuid(XEN_CPUID_FIRST_LEAF + 1, 0, r);
    cpuid_xen_version = r[0];
    xen_cpuid(XEN_CPUID_FIRST_LEAF + 2, 0, r);
    printk("pvtest: cpuid 0x40000001 eax 0x%x, 0x40000002 eax %u ebx 0x%x\n",
           cpuid_xen_version, r[0], r[1]);
    xen_cpuid(1, 0, r);
    check(r[2] & (1U << 31), "CPUID 1 ECX has the hypervisor bit", "ecx 0x%x", r[2]);
}

/* ------------------------------------------------------------------ */

static long mmuext1(unsigned cmd, unsigned long arg1)
{
    struct mmuext_op op = { cmd, 0, arg1, 0 };
    unsigned done = 0;
    return HYPERVISOR_mmuext_op(&op, 1, &done, DOMID_SELF);
}

static long mmu_update1(uint64_t ptr, uint64_t val, unsigned *done)
{
    struct mmu_update u = { ptr | MMU_NORMAL_PT_UPDATE, val };
    *done = 0;
    return HYPERVISOR_mmu_update(&u, 1, done, DOMID_SELF);
}

static uint64_t read_or(unsigned long va, uint64_t dflt)
{
    uint64_t v;
    return read_u64_safe((void *)va, &v) ? dflt : v;
}

static const uint64_t alias_probe = 0x5a5a0123456789a5UL;

void checks_mmu(void)
{
    long rc;
    unsigned done;
    uint64_t l2_ma = 0;
    unsigned long tva = 0;

    section("MMU");
    for (unsigned slot = 256; slot < 512; slot++) {
        unsigned long va = VIRT_BASE + ((unsigned long)slot << 21);
        uint64_t *e = pte_slot(va, 2, &l2_ma);
        if (e && !(*e & _PAGE_PRESENT)) {
            tva = va;
            break;
        }
    }
    if (!check(tva != 0, "found a free 2 MiB slot in the kernel's L2 table", "none"))
        return;
    printk("pvtest: test mapping at 0x%lx (L2 entry maddr 0x%lx)\n", tva,
           (unsigned long)l2_ma);

    page_a[0] = MAGIC_A;
    page_b[0] = MAGIC_B;
    page_c[0] = MAGIC_C;
    uint64_t pte_a = virt_to_maddr(page_a) | PTE_FLAGS;
    uint64_t pte_b = virt_to_maddr(page_b) | PTE_FLAGS;
    uint64_t pte_c = virt_to_maddr(page_c) | PTE_FLAGS;

    memset(l1_page, 0, sizeof(l1_page));
    l1_page[0] = pte_a;
    rc = set_page_ro(l1_page, 1);
    check_eq("update_va_mapping UVMF_INVLPG makes the new L1 page read-only", rc, 0);
    rc = mmuext1(MMUEXT_PIN_L1_TABLE, virt_to_mfn(l1_page));
    check_eq("mmuext_op pin L1", rc, 0);
    rc = set_page_ro(l1_page, 0);
    check(rc < 0, "update_va_mapping refuses a writable mapping of a pinned L1",
          "rc %ld", rc);
    if (rc == 0)
        set_page_ro(l1_page, 1);

    rc = mmu_update1(l2_ma, virt_to_maddr(l1_page) | _PAGE_PRESENT | _PAGE_RW |
                                _PAGE_ACCESSED, &done);
    check(rc == 0 && done == 1, "mmu_update writes an L2 entry (hooks the pinned L1)",
          "rc %ld, done %u", rc, done);
    check_eqx("the new mapping reads the target page", read_or(tva, 0), MAGIC_A);

    rc = mmu_update1(virt_to_maddr(&l1_page[1]), pte_b, &done);
    check(rc == 0 && done == 1, "mmu_update writes an L1 PTE", "rc %ld, done %u", rc, done);
    check_eqx("the PTE written by mmu_update maps its page", read_or(tva + PAGE_SIZE, 0),
              MAGIC_B);

    rc = mmu_update1(virt_to_maddr(&l1_page[0]), pte_c, &done);
    long rc2 = mmuext1(MMUEXT_INVLPG_LOCAL, tva);
    check_eq("mmuext_op INVLPG_LOCAL", rc2, 0);
    check_eqx("after mmu_update + INVLPG_LOCAL the remapped page is visible",
              read_or(tva, 0), MAGIC_C);

    rc = mmu_update1(virt_to_maddr(&l1_page[1]), pte_a, &done);
    rc2 = mmuext1(MMUEXT_TLB_FLUSH_LOCAL, 0);
    check_eq("mmuext_op TLB_FLUSH_LOCAL", rc2, 0);
    check_eqx("after mmu_update + TLB_FLUSH_LOCAL the remapped page is visible",
              read_or(tva + PAGE_SIZE, 0), MAGIC_A);

    rc = HYPERVISOR_update_va_mapping(tva, pte_b, UVMF_INVLPG | UVMF_LOCAL);
    check_eq("update_va_mapping UVMF_INVLPG remaps the test address", rc, 0);
    check_eqx("the remapped address reads the new page", read_or(tva, 0), MAGIC_B);
    int werr = write_u64_safe((void *)tva, 0x77);
    check(!werr && page_b[0] == 0x77, "a write through the new mapping lands in the page",
          "fault %d, page word 0x%lx", werr, (unsigned long)page_b[0]);

    struct multicall_entry mc[2] = {
        { HC_xen_version, 0xdead, { XENVER_version, 0 } },
        { HC_update_va_mapping, 0xdead, { tva, pte_c, UVMF_INVLPG | UVMF_LOCAL } },
    };
    rc = HYPERVISOR_multicall(mc, 2);
    check_eq("multicall of two calls", rc, 0);
    check_eqx("multicall entry 0 (xen_version) matches a direct call", mc[0].result,
              (unsigned long)HYPERVISOR_xen_version(XENVER_version, 0));
    check(mc[1].result == 0 && read_or(tva, 0) == MAGIC_C,
          "multicall entry 1 (update_va_mapping) took effect", "result %ld",
          (long)mc[1].result);

    rc = mmu_update1(l2_ma, 0, &done);
    mmuext1(MMUEXT_TLB_FLUSH_LOCAL, 0);
    uint64_t dummy;
    int err = read_u64_safe((void *)tva, &dummy);
    check(rc == 0 && err, "clearing the L2 entry with mmu_update unmaps the test address",
          "rc %ld, read faulted %d", rc, err);
    rc = mmuext1(MMUEXT_UNPIN_TABLE, virt_to_mfn(l1_page));
    check_eq("mmuext_op unpin L1", rc, 0);
    rc = set_page_ro(l1_page, 0);
    check_eq("an unpinned page can be mapped writable again", rc, 0);

    /* NEW_BASEPTR: a copy of the boot L4 with the kernel's L3 also hooked
     * into a spare slot, so the switch is observable. */
    uint64_t *l4 = l4_table();
    unsigned alias = 0;
    for (unsigned s = 510; s >= 272; s--)
        if (!(l4[s] & _PAGE_PRESENT)) {
            alias = s;
            break;
        }
    memcpy(l4_copy, l4, PAGE_SIZE);
    l4_copy[alias] = l4[511];
    unsigned long alias_va = 0xffff000000000000UL | ((unsigned long)alias << 39) |
                             ((unsigned long)&alias_probe & ((1UL << 39) - 1));
    rc = set_page_ro(l4_copy, 1);
    check_eq("update_va_mapping makes the L4 copy read-only", rc, 0);
    rc = mmuext1(MMUEXT_PIN_L4_TABLE, virt_to_mfn(l4_copy));
    check_eq("mmuext_op pin L4 (copy of the boot L4 plus an alias slot)", rc, 0);
    rc = mmuext1(MMUEXT_NEW_BASEPTR, virt_to_mfn(l4_copy));
    check_eq("mmuext_op NEW_BASEPTR switches to the copied L4", rc, 0);
    if (rc == 0)
        current_l4 = l4_copy;
    check_eqx("the alias slot is live under the new base", read_or(alias_va, 0),
              alias_probe);
    rc = mmuext1(MMUEXT_NEW_BASEPTR, virt_to_mfn((void *)xen_start_info->pt_base));
    check_eq("mmuext_op NEW_BASEPTR back to the boot L4", rc, 0);
    if (rc == 0)
        current_l4 = (uint64_t *)xen_start_info->pt_base;
    err = read_u64_safe((void *)alias_va, &dummy);
    check(err, "the alias slot is gone under the boot L4", "read succeeded");
    rc = mmuext1(MMUEXT_UNPIN_TABLE, virt_to_mfn(l4_copy));
    check_eq("mmuext_op unpin L4", rc, 0);
    set_page_ro(l4_copy, 0);
}

/* ------------------------------------------------------------------ */

static void force_evtchn_callback(void)
{
    /* Any hypercall returns through the event check (as Linux's
     * xen_force_evtchn_callback does). */
    (void)HYPERVISOR_xen_version(XENVER_version, 0);
}

void checks_events(void)
{
    long rc;
    struct vcpu_info *vi = vcpu0();

    section("events");
    rc = HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, 0);
    check_eq("VCPUOP_stop_periodic_timer", rc, 0);

    struct evtchn_bind_virq bv = { VIRQ_TIMER, 0, 0 };
    rc = pv_evtchn_op(EVTCHNOP_bind_virq, &bv, sizeof(bv));
    timer_port = bv.port;
    check(rc == 0 && timer_port > 0 && timer_port < MAX_TRACKED_PORTS,
          V1 ? "event_channel_op_compat bind_virq VIRQ_TIMER"
             : "event_channel_op bind_virq VIRQ_TIMER",
          "rc %ld, port %u", rc, timer_port);

    evtchn_port_t sp = 0, rp = 0;
    rc = pv_loopback(&sp, &rp);
    check(rc == 0 && rp < MAX_TRACKED_PORTS && sp < MAX_TRACKED_PORTS,
          V1 ? "bind_ipi gives a loopback port"
             : "alloc_unbound + bind_interdomain give a loopback pair",
          "rc %ld, ports %u/%u", rc, sp, rp);
    printk("pvtest: timer port %u, loopback send %u -> receive %u\n", timer_port, sp, rp);
    evtchn_clear_mask(sp);
    evtchn_clear_mask(rp);

    vi->evtchn_upcall_mask = 1;
    barrier();
    unsigned long u0 = upcalls;
    uint32_t c0 = evt_count[rp];
    rc = pv_send(sp);
    check_eq("EVTCHNOP_send to self", rc, 0);
    check(evtchn_is_pending(rp) && vi->evtchn_upcall_pending,
          "send sets the port's pending bit and evtchn_upcall_pending",
          "pending %d, upcall_pending %d", evtchn_is_pending(rp),
          vi->evtchn_upcall_pending);
    force_evtchn_callback();
    check_eq("no upcall while evtchn_upcall_mask is set", (long)(upcalls - u0), 0);

    vi->evtchn_upcall_mask = 0;
    barrier();
    if (vi->evtchn_upcall_pending)
        force_evtchn_callback();
    barrier();
    check(evt_count[rp] == c0 + 1 && upcalls > u0,
          "clearing evtchn_upcall_mask delivers the event to the event callback",
          "port count %u, upcalls %lu", evt_count[rp] - c0, upcalls - u0);
    check(!evtchn_is_pending(rp), "the callback cleared the pending bit", "still pending");
    /* create_bounce_frame (x86_64/entry.S): in kernel context CS has its
     * RPL cleared ("kernel context"), bits 32-39 carry saved_upcall_mask. */
    check(last_upcall.cs == (FLAT_KERNEL_CS64 & ~3UL) && last_upcall.ss == FLAT_KERNEL_SS64,
          "upcall frame: CS 0xe030 (kernel context, mask 0), SS 0xe02b",
          "cs 0x%lx ss 0x%lx", last_upcall.cs, last_upcall.ss);
    check(last_upcall.rip >= (unsigned long)_text && last_upcall.rip < (unsigned long)_etext,
          "upcall frame RIP is in kernel text", "rip 0x%lx", last_upcall.rip);
    check(last_upcall.rflags & 0x200, "upcall frame RFLAGS.IF set (events were enabled)",
          "rflags 0x%lx", last_upcall.rflags);
    check_eq("HYPERVISOR_iret restored evtchn_upcall_mask = 0 from RFLAGS.IF",
             vi->evtchn_upcall_mask, 0);

    evtchn_mask(rp);
    c0 = evt_count[rp];
    pv_send(sp);
    force_evtchn_callback();
    check(evtchn_is_pending(rp) && evt_count[rp] == c0,
          "a port masked in shared_info stays pending without an upcall",
          "pending %d, delivered %u", evtchn_is_pending(rp), evt_count[rp] - c0);
    struct evtchn_unmask um = { rp };
    rc = pv_evtchn_op(EVTCHNOP_unmask, &um, sizeof(um));
    barrier();
    check(rc == 0 && evt_count[rp] == c0 + 1,
          "EVTCHNOP_unmask clears the mask and delivers the pending event",
          "rc %ld, delivered %u", rc, evt_count[rp] - c0);
    vi->evtchn_upcall_mask = 1;
    barrier();

    struct evtchn_close cl = { sp };
    rc = pv_evtchn_op(EVTCHNOP_close, &cl, sizeof(cl));
    if (rc == 0 && rp != sp) {
        cl.port = rp;
        rc = pv_evtchn_op(EVTCHNOP_close, &cl, sizeof(cl));
    }
    check_eq("EVTCHNOP_close the loopback", rc, 0);
    closed_port = sp;
}

/* ------------------------------------------------------------------ */

/* Block (events enabled by SCHEDOP_block) until `done` or `limit` blocks. */
#define BLOCK_UNTIL(cond, limit, nblocks, first_rc)                     \
    do {                                                                \
        while (!(cond) && (nblocks) < (limit)) {                        \
            vcpu0()->evtchn_upcall_mask = 1;                            \
            barrier();                                                  \
            long r_ = pv_block();                                       \
            if ((nblocks)++ == 0)                                       \
                (first_rc) = r_;                                        \
            barrier();                                                  \
        }                                                               \
        vcpu0()->evtchn_upcall_mask = 1;                                \
        barrier();                                                      \
    } while (0)

void checks_time(void)
{
    volatile struct vcpu_time_info *t = &vcpu0()->time;
    long rc;

    section("time");
    check(t->tsc_to_system_mul != 0, "pvclock tsc_to_system_mul is set", "0");
    check(!(t->version & 1), "pvclock version is even (no update in progress)",
          "version %u", t->version);
    uint64_t t0 = pv_time_now();
    for (int i = 0; i < 1000; i++)
        (void)rdtsc();
    uint64_t t1 = pv_time_now();
    check(t1 >= t0, "pvclock time is monotonic", "%lu then %lu", (unsigned long)t0,
          (unsigned long)t1);
    printk("pvtest: pvclock mul %u shift %d system_time %lu ns; wallclock %u s "
           "(version %u)\n", t->tsc_to_system_mul, t->tsc_shift,
           (unsigned long)t->system_time, HYPERVISOR_shared_info->wc_sec,
           HYPERVISOR_shared_info->wc_version);

    evtchn_clear_mask(timer_port);
    uint32_t c0 = evt_count[timer_port];
    uint64_t deadline = pv_time_now() + 2 * MS;
    rc = pv_set_timer(deadline);
    check_eq(V1 ? "set_timer_op arms a singleshot timer"
                : "VCPUOP_set_singleshot_timer arms a singleshot timer", rc, 0);
    int nblocks = 0;
    long block_rc = 0;
    BLOCK_UNTIL(pv_time_now() >= deadline && evt_count[timer_port] != c0, 1000, nblocks,
                block_rc);
    uint64_t now = pv_time_now();
    check_eq(V1 ? "sched_op_compat SCHEDOP_block" : "sched_op SCHEDOP_block", block_rc, 0);
    check(evt_count[timer_port] != c0, "VIRQ_TIMER upcall after the singleshot timer",
          "no timer event in %d blocks", nblocks);
    check(now >= deadline, "time advanced past the deadline across SCHEDOP_block",
          "now %lu, deadline %lu", (unsigned long)now, (unsigned long)deadline);

    /* The periodic timer runs while the vCPU runs: Xen stops it when the vCPU
     * is switched out (a block) and re-arms it when it runs again
     * (xen/common/sched/core.c sched_context_switch, vcpu_periodic_timer_work),
     * so wait for its ticks running, with events unmasked. */
    struct vcpu_set_periodic_timer pt = { 1 * MS };   /* Xen's minimum period */
    c0 = evt_count[timer_port];
    uint64_t start = pv_time_now();
    rc = HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &pt);
    check_eq("VCPUOP_set_periodic_timer 1 ms", rc, 0);
    vcpu0()->evtchn_upcall_mask = 0;
    barrier();
    /* SCHEDOP_yield keeps the vCPU runnable (the only one: nothing else is
     * scheduled), so its periodic timer goes on; it is also a cheaper clock
     * than spinning on the TSC under pvmon (1 us per call) */
    while (evt_count[timer_port] - c0 < 3 && pv_time_now() - start < 1000 * MS)
        (void)pv_yield();
    vcpu0()->evtchn_upcall_mask = 1;
    barrier();
    uint64_t elapsed = pv_time_now() - start;
    check(evt_count[timer_port] - c0 >= 3 && elapsed >= 2 * pt.period_ns,
          "periodic timer ticks 3 times over at least 2 periods while running",
          "ticks %u, elapsed %lu ns", evt_count[timer_port] - c0, (unsigned long)elapsed);
    /* ... and a blocked vCPU is woken by the singleshot timer, not the periodic one */
    deadline = pv_time_now() + 10 * MS;
    rc = pv_set_timer(deadline);
    nblocks = 0;
    BLOCK_UNTIL(pv_time_now() >= deadline, 1000, nblocks, block_rc);
    now = pv_time_now();
    check(now >= deadline && nblocks == 1,
          "a periodic timer (1 ms) does not wake a blocked vCPU; the singleshot (10 ms) does",
          "woke at %lu ns before the singleshot deadline after %d blocks",
          (unsigned long)(deadline > now ? deadline - now : 0), nblocks);
    rc = HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, 0);
    check_eq("VCPUOP_stop_periodic_timer", rc, 0);
#if V1
    rc = HYPERVISOR_set_timer_op(0);
    check_eq("set_timer_op(0) cancels the singleshot timer", rc, 0);
#else
    rc = HYPERVISOR_vcpu_op(VCPUOP_stop_singleshot_timer, 0, 0);
    check_eq("VCPUOP_stop_singleshot_timer", rc, 0);
#endif
    rc = pv_yield();
    check_eq(V1 ? "sched_op_compat SCHEDOP_yield" : "sched_op SCHEDOP_yield", rc, 0);
    evtchn_mask(timer_port);
}

/* ------------------------------------------------------------------ */

void checks_faults(void)
{
    section("faults");
    unsigned long pf0 = faults.count[14];
    int fx0 = faults.fixups;
    const unsigned long bad = 0x10000;
    uint64_t v;
    int err = read_u64_safe((void *)bad, &v);
    check(err && faults.count[14] == pf0 + 1 && faults.fixups == fx0 + 1,
          "#PF on an unmapped read is fixed up through the exception table",
          "fault %d, #PF count %lu", err, faults.count[14] - pf0);
    check_eqx("#PF: vcpu_info arch.cr2 holds the faulting address", faults.cr2, bad);
    check((faults.error & 3) == 0, "#PF error code says not-present read",
          "error 0x%lx", faults.error);

    ro_page[0] = 1;
    long rc = set_page_ro(ro_page, 1);
    err = write_u64_safe(ro_page, 2);
    check(rc == 0 && err && (faults.error & 3) == 3 &&
              faults.cr2 == (unsigned long)ro_page && ro_page[0] == 1,
          "#PF on a write to a read-only page (error code P|W), write suppressed",
          "rc %ld, fault %d, error 0x%lx, cr2 0x%lx", rc, err, faults.error, faults.cr2);
    set_page_ro(ro_page, 0);

    unsigned long ud0 = faults.count[6], ud_at;
    faults.expect_ud = 1;
    __asm__ __volatile__("lea 1f(%%rip), %0\n1: ud2" : "=r"(ud_at) :: "memory");
    check(faults.count[6] == ud0 + 1 && faults.rip == ud_at,
          "#UD from ud2 reaches the trap handler with RIP at the ud2",
          "count %lu, rip 0x%lx (ud2 at 0x%lx)", faults.count[6] - ud0, faults.rip, ud_at);

    register unsigned long rcx __asm__("rcx") = 0x1111111111111111UL;
    register unsigned long r11 __asm__("r11") = 0x2222222222222222UL;
    unsigned long rax = 0x3333333333333333UL, rdx = 0x4444444444444444UL;
    faults.expect_ud = 1;
    __asm__ __volatile__("ud2" : "+r"(rcx), "+r"(r11), "+a"(rax), "+d"(rdx) :: "memory");
    check(rcx == 0x1111111111111111UL && r11 == 0x2222222222222222UL &&
              rax == 0x3333333333333333UL && rdx == 0x4444444444444444UL,
          "RAX, RCX, RDX, R11 survive the exception frame and HYPERVISOR_iret",
          "rcx 0x%lx r11 0x%lx rax 0x%lx rdx 0x%lx", rcx, r11, rax, rdx);

    unsigned long bp0 = faults.count[3], after;
    __asm__ __volatile__("int3\n1: lea 1b(%%rip), %0" : "=r"(after) :: "memory");
    check(faults.count[3] == bp0 + 1 && faults.rip == after,
          "int3 -> #BP handler with RIP after the int3, back through HYPERVISOR_iret",
          "count %lu, rip 0x%lx (expected 0x%lx)", faults.count[3] - bp0, faults.rip, after);
    /* Events are masked here, so saved_upcall_mask (CS bits 32-39) is 1 and
     * RFLAGS.IF is clear. */
    check_eqx("exception frame CS: 0xe030 with saved_upcall_mask 1 in bits 32-39",
              faults.cs, (FLAT_KERNEL_CS64 & ~3UL) | (1UL << 32));
    check(!(faults.rflags & 0x200), "exception frame RFLAGS.IF clear (events masked)",
          "rflags 0x%lx", faults.rflags);
}

/* ------------------------------------------------------------------ */

void checks_memory_version(void)
{
    long rc;
    domid_t self = DOMID_SELF;

    section("memory_op and xen_version");
    long cur = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
    check_eq("XENMEM_current_reservation equals start_info nr_pages", cur,
             (long)xen_start_info->nr_pages);
    long max = HYPERVISOR_memory_op(XENMEM_maximum_reservation, &self);
    check(max >= cur && cur > 0, "XENMEM_maximum_reservation >= current reservation",
          "max %ld, current %ld", max, cur);

    static struct e820entry map[16];
    struct xen_memory_map mm = { 16, map };
    rc = HYPERVISOR_memory_op(XENMEM_memory_map, &mm);
    if (rc == -XEN_ENOSYS) {
        check_skip("XENMEM_memory_map",
                   "no map set for this domain (-ENOSYS), as Xen does for plain PV domUs");
    } else {
        unsigned long ram = 0;
        for (unsigned i = 0; rc == 0 && i < mm.nr_entries && i < 16; i++) {
            printk("pvtest: e820 %016lx-%016lx type %u\n", (unsigned long)map[i].addr,
                   (unsigned long)(map[i].addr + map[i].size), map[i].type);
            if (map[i].type == E820_RAM)
                ram += map[i].size;
        }
        check(rc == 0 && mm.nr_entries >= 1 && ram > 0,
              "XENMEM_memory_map returns an E820 map with RAM",
              "rc %ld, entries %u, RAM 0x%lx", rc, mm.nr_entries, ram);
    }

    long ver = HYPERVISOR_xen_version(XENVER_version, 0);
    char extra[17];
    memset(extra, 0x7f, sizeof(extra));
    rc = HYPERVISOR_xen_version(XENVER_extraversion, extra);
    int terminated = memchr_nul(extra, 16);
    extra[16] = 0;
    printk("pvtest: hypervisor Xen %ld.%ld%s\n", ver >> 16, ver & 0xffff,
           terminated ? extra : "?");
    check(ver >= 0 && (ver >> 16) >= 3, "XENVER_version reports Xen 3.0 or later",
          "got 0x%lx", ver);
    check_eqx("XENVER_version matches CPUID leaf 0x40000001", (unsigned long)ver,
              cpuid_xen_version);
    check(rc == 0 && terminated, "XENVER_extraversion returns a NUL-terminated string",
          "rc %ld", rc);
    struct xen_feature_info fi = { 0, 0 };
    rc = HYPERVISOR_xen_version(XENVER_get_features, &fi);
    printk("pvtest: features submap 0 = 0x%x\n", fi.submap);
    check(rc == 0 && !(fi.submap & (1U << XENFEAT_auto_translated_physmap)),
          "XENVER_get_features: no auto_translated_physmap (direct-paging PV)",
          "rc %ld, submap 0x%x", rc, fi.submap);
}

/* ------------------------------------------------------------------ */

static int all_digits(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

void checks_xenstore(void)
{
    char buf[128];
    uint32_t type = 0;

    section("xenstore");
    long n = xs_request(XS_READ, "domid", 6, buf, sizeof(buf), &type);
    check(n > 0 && type == XS_READ && all_digits(buf), "XS_READ domid returns a number",
          "len %ld, type %u, \"%s\"", n, type, n >= 0 ? buf : "");
    if (n > 0)
        printk("pvtest: xenstore domid = %s\n", buf);

    static const char path[] = "data/pvtest";
#if V1
    static const char value[] = "hello from pvtest-v1";
#else
    static const char value[] = "hello from pvtest-v2";
#endif
    char req[64];
    size_t pl = sizeof(path), vl = sizeof(value) - 1;
    memcpy(req, path, pl);              /* path NUL value (no NUL) */
    memcpy(req + pl, value, vl);
    n = xs_request(XS_WRITE, req, (uint32_t)(pl + vl), buf, sizeof(buf), &type);
    check(n >= 0 && type == XS_WRITE && strncmp(buf, "OK", 3) == 0,
          "XS_WRITE data/pvtest", "len %ld, type %u, \"%s\"", n, type, n >= 0 ? buf : "");
    n = xs_request(XS_READ, path, sizeof(path), buf, sizeof(buf), &type);
    check(n == (long)vl && type == XS_READ && memcmp(buf, value, vl) == 0,
          "XS_READ data/pvtest reads back the value written", "len %ld, type %u, \"%s\"",
          n, type, n >= 0 ? buf : "");
}

/* ------------------------------------------------------------------ */

void checks_bad_calls(void)
{
    long rc;

    section("deliberate bad calls (ABI error codes)");
    if (console_io_usable()) {
        rc = HYPERVISOR_console_io(CONSOLEIO_write, 16, (const char *)0x0000800000000000UL);
        check_eq("console_io write from a non-canonical buffer -> -EFAULT", rc, -XEN_EFAULT);
        rc = HYPERVISOR_console_io(CONSOLEIO_write, 16, (const char *)0x10000UL);
        check_eq("console_io write from an unmapped buffer -> -EFAULT", rc, -XEN_EFAULT);
    } else {
        check_skip("console_io write from a non-canonical buffer -> -EFAULT",
                   "console_io not permitted");
        check_skip("console_io write from an unmapped buffer -> -EFAULT",
                   "console_io not permitted");
    }
    rc = HYPERVISOR_memory_op(XENMEM_current_reservation, (void *)0x10000UL);
    check_eq("memory_op with an unmapped argument -> -EFAULT", rc, -XEN_EFAULT);
    rc = xen_hypercall_nr(HC_UNASSIGNED, 0, 0, 0, 0, 0);
    check_eq("unassigned hypercall number 45 -> -ENOSYS", rc, -XEN_ENOSYS);
    rc = mmuext1(MMUEXT_UNASSIGNED, 0);
    check_eq("mmuext_op unknown sub-op 14 -> -ENOSYS (do_mmuext_op default)", rc,
             -XEN_ENOSYS);
    rc = HYPERVISOR_set_segment_base(99, 0);
    check_eq("set_segment_base unknown register -> -EINVAL", rc, -XEN_EINVAL);
    rc = HYPERVISOR_set_segment_base(SEGBASE_FS, 0x0000800000000000UL);
    check_eq("set_segment_base non-canonical FS base -> -EINVAL", rc, -XEN_EINVAL);
    struct vcpu_set_periodic_timer pt = { 100 };
    rc = HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &pt);
    check_eq("VCPUOP_set_periodic_timer below 1 ms -> -EINVAL", rc, -XEN_EINVAL);
    rc = pv_send(closed_port);
    check_eq("EVTCHNOP_send on a closed port -> -EINVAL", rc, -XEN_EINVAL);
    struct xen_feature_info fi = { 1, 0 };
    rc = HYPERVISOR_xen_version(XENVER_get_features, &fi);
    check_eq("XENVER_get_features submap 1 -> -EINVAL", rc, -XEN_EINVAL);
}
