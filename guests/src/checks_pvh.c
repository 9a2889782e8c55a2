/*
 * checks_pvh.c - the checks of the PVH build (pvtest-v2-pvh), one family
 * per function: the checks of checks_xen.c that apply to a PVH guest
 * (xen_version, memory_op, event channels, timers, faults, xenstore, the
 * console ring, bad calls), with the PVH way of reaching each (vmcall, HVM
 * params, add_to_physmap, the callback vector through the guest's own IDT,
 * hlt as idle), plus what only a PVH guest meets: the 32-bit entry state
 * and hvm_start_info (xen.git docs/misc/pvh.pandoc), the HVM CPUID leaves,
 * the local APIC, and PV-only hypercalls that are not there.
 */
#include "pvh.h"

#define MS 1000000ULL
#define RFLAGS_IF (1UL << 9)
#define RFLAGS_TF (1UL << 8)
#define RFLAGS_VM (1UL << 17)

extern uint64_t pvh_l2[4 * 512];

static uint32_t cpuid_xen_version;
static evtchn_port_t timer_port, closed_port;
static uint64_t console_pfn, store_pfn;
static uint8_t shared_info_page[PAGE_SIZE] __page_aligned;
/* Grant frame 0 goes to this guest frame, above RAM, in the identity map
 * (as Linux PVH takes its grant frames from unpopulated space). */
#define GRANT_GPFN 0xe0000UL
/* Not mapped by pvh_entry.S (L4 slot 128 is empty). */
#define UNMAPPED_VA 0x0000400000000000UL

static int memchr_nul(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i])
            return 1;
    return 0;
}

static const struct hvm_memmap_table_entry *memmap(void)
{
    return phys_to_virt(pvh_start_info->memmap_paddr);
}

/* The memory-map type of physical address pa (0: not in the map). */
static uint32_t memmap_type(uint64_t pa)
{
    const struct hvm_memmap_table_entry *m = memmap();
    for (uint32_t i = 0; i < pvh_start_info->memmap_entries; i++)
        if (pa >= m[i].addr && pa - m[i].addr < m[i].size)
            return m[i].type;
    return 0;
}

/* ------------------------------------------------------------------ */

void checks_pvh_boot(void)
{
    struct hvm_start_info *si = pvh_start_info;
    long rc;

    printk("pvtest: hvm_start_info at 0x%lx: magic 0x%x version %u flags 0x%x, "
           "%u modules, rsdp 0x%lx, %u memmap entries\n", (unsigned long)pvh_entry_ebx,
           si->magic, si->version, si->flags, si->nr_modules,
           (unsigned long)si->rsdp_paddr, si->memmap_entries);
    printk("pvtest:   entry CR0 0x%lx CR4 0x%lx CS 0x%lx EFLAGS 0x%lx\n",
           (unsigned long)pvh_entry_cr0, (unsigned long)pvh_entry_cr4,
           (unsigned long)pvh_entry_cs, (unsigned long)pvh_entry_eflags);

    section("boot: PVH start of day (pvh.pandoc, hvm/start_info.h)");
    check_eqx("hvm_start_info magic (EBX points at it)", si->magic,
              XEN_HVM_START_MAGIC_VALUE);
    check(si->version >= 1, "hvm_start_info version 1 or later", "version %u", si->version);
    check_eqx("entry CR0: PE set, every other writable bit clear (ET reads 1)",
              pvh_entry_cr0 & ~0x10UL, 1);
    check_eqx("entry CR4: all bits clear", pvh_entry_cr4, 0);
    check(!(pvh_entry_eflags & (RFLAGS_IF | RFLAGS_TF | RFLAGS_VM)),
          "entry EFLAGS: IF, TF and VM clear", "eflags 0x%lx", (unsigned long)pvh_entry_eflags);
    check_eqx("paging on with the guest's own page tables (CR3 = its L4)", read_cr(3),
              virt_to_phys(pvh_l4));

    const char *cmd = si->cmdline_paddr ? phys_to_virt(si->cmdline_paddr) : "";
    check(si->cmdline_paddr && memchr_nul(cmd, 1024), "command line is a NUL-terminated string",
          "cmdline_paddr 0x%lx", (unsigned long)si->cmdline_paddr);
    printk("pvtest: command line \"%s\"\n", cmd);

    const struct hvm_memmap_table_entry *m = memmap();
    uint64_t ram = 0, prev_end = 0;
    int ordered = 1;
    for (uint32_t i = 0; i < si->memmap_entries && i < 64; i++) {
        printk("pvtest: memmap %016lx-%016lx type %u\n", (unsigned long)m[i].addr,
               (unsigned long)(m[i].addr + m[i].size), m[i].type);
        if (m[i].type == XEN_HVM_MEMMAP_TYPE_RAM)
            ram += m[i].size;
        if (m[i].addr < prev_end)
            ordered = 0;
        prev_end = m[i].addr + m[i].size;
    }
    check(si->memmap_paddr && si->memmap_entries >= 1 && ram > 0 && ordered,
          "memory map in hvm_start_info: RAM, entries sorted and disjoint",
          "%u entries, RAM 0x%lx, ordered %d", si->memmap_entries, (unsigned long)ram, ordered);
    check(memmap_type(virt_to_phys(_text)) == XEN_HVM_MEMMAP_TYPE_RAM &&
              memmap_type(virt_to_phys(_end) - 1) == XEN_HVM_MEMMAP_TYPE_RAM,
          "the kernel image lies in RAM of the memory map", "types %u, %u",
          memmap_type(virt_to_phys(_text)), memmap_type(virt_to_phys(_end) - 1));

    const char *rsdp = si->rsdp_paddr ? phys_to_virt(si->rsdp_paddr) : 0;
    uint8_t sum = 0;
    for (int i = 0; rsdp && i < 20; i++)
        sum = (uint8_t)(sum + (uint8_t)rsdp[i]);
    check(rsdp && memcmp(rsdp, "RSD PTR ", 8) == 0 && sum == 0,
          "rsdp_paddr points at an ACPI RSDP (signature, checksum)", "rsdp 0x%lx, sum %u",
          (unsigned long)si->rsdp_paddr, sum);
    check_eq("no modules without an initrd", si->nr_modules, 0);

    uint64_t cons_evtchn = 0, store_evtchn = 0;
    rc = hvm_get_param(HVM_PARAM_CONSOLE_PFN, &console_pfn);
    long rc2 = hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &cons_evtchn);
    check(rc == 0 && rc2 == 0 && console_pfn && cons_evtchn,
          "HVMOP_get_param CONSOLE_PFN and CONSOLE_EVTCHN", "rc %ld/%ld, pfn 0x%lx, port %lu",
          rc, rc2, (unsigned long)console_pfn, (unsigned long)cons_evtchn);
    rc = hvm_get_param(HVM_PARAM_STORE_PFN, &store_pfn);
    rc2 = hvm_get_param(HVM_PARAM_STORE_EVTCHN, &store_evtchn);
    check(rc == 0 && rc2 == 0 && store_pfn && store_evtchn,
          "HVMOP_get_param STORE_PFN and STORE_EVTCHN", "rc %ld/%ld, pfn 0x%lx, port %lu",
          rc, rc2, (unsigned long)store_pfn, (unsigned long)store_evtchn);
    printk("pvtest: console pfn 0x%lx evtchn %lu, xenstore pfn 0x%lx evtchn %lu\n",
           (unsigned long)console_pfn, (unsigned long)cons_evtchn, (unsigned long)store_pfn,
           (unsigned long)store_evtchn);
    check(memmap_type(console_pfn << PAGE_SHIFT) != XEN_HVM_MEMMAP_TYPE_RAM &&
              memmap_type(store_pfn << PAGE_SHIFT) != XEN_HVM_MEMMAP_TYPE_RAM &&
              console_pfn < (2UL << 30 >> PAGE_SHIFT) && store_pfn < (2UL << 30 >> PAGE_SHIFT),
          "console and xenstore frames are not RAM the map offers the guest",
          "types %u, %u", memmap_type(console_pfn << PAGE_SHIFT),
          memmap_type(store_pfn << PAGE_SHIFT));
    pvh_xenstore_init(store_pfn, (evtchn_port_t)store_evtchn);

    rc = pvh_map_shared_info(shared_info_page);
    if (!check_eq("XENMEM_add_to_physmap puts shared_info in a guest frame", rc, 0))
        fatal("cannot continue without shared_info");
    volatile struct vcpu_time_info *t = &vcpu0()->time;
    check(t->tsc_to_system_mul != 0 && t->version != 0,
          "the mapped shared_info carries vcpu_info[0]'s pvclock",
          "mul %u version %u", t->tsc_to_system_mul, t->version);

    pvh_console_init(console_pfn, (evtchn_port_t)cons_evtchn);
    volatile struct xencons_interface *cr = phys_to_virt(console_pfn << PAGE_SHIFT);
    check(cr->out_prod != 0, "console ring (HVM_PARAM_CONSOLE_PFN) takes the early output",
          "out_prod %u", cr->out_prod);
    long cio = console_io_first_rc();
    if (cio == -XEN_EPERM)
        check_skip("console_io CONSOLEIO_write",
                   "not permitted for this domain (-EPERM), as on a non-debug Xen");
    else
        check_eq("console_io CONSOLEIO_write", cio, 0);
}

/* ------------------------------------------------------------------ */

void checks_pvh_cpu(void)
{
    uint32_t r[4];
    uint64_t v;

    section("CPU state (native: the guest's own IDT, CR0, MSRs)");
    cpuid(XEN_CPUID_FIRST_LEAF, 0, r);
    char sig[13];
    memcpy(sig, &r[1], 4);
    memcpy(sig + 4, &r[2], 4);
    memcpy(sig + 8, &r[3], 4);
    sig[12] = 0;
    check(r[1] == XEN_CPUID_SIGNATURE_EBX && r[2] == XEN_CPUID_SIGNATURE_ECX &&
              r[3] == XEN_CPUID_SIGNATURE_EDX,
          "CPUID 0x40000000 signature is XenVMMXenVMM (plain cpuid, no forced emulation)",
          "got \"%s\"", sig);
    check(r[0] >= XEN_CPUID_FIRST_LEAF + 4 && r[0] < XEN_CPUID_FIRST_LEAF + 0x100,
          "CPUID 0x40000000 max leaf covers 0x40000004 (HVM features)", "got 0x%x", r[0]);
    uint32_t max = r[0];
    cpuid(XEN_CPUID_FIRST_LEAF + 1, 0, r);
    cpuid_xen_version = r[0];
    if (max >= XEN_CPUID_FIRST_LEAF + 4) {
        cpuid(XEN_CPUID_FIRST_LEAF + 4, 0, r);
        printk("pvtest: cpuid 0x40000004 eax 0x%x ebx 0x%x\n", r[0], r[1]);
        check((r[0] & XEN_HVM_CPUID_VCPU_ID_PRESENT) && r[1] == 0,
              "CPUID 0x40000004: vCPU id present, vCPU 0", "eax 0x%x ebx 0x%x", r[0], r[1]);
    }
    cpuid(1, 0, r);
    check(r[2] & (1U << 31), "CPUID 1 ECX has the hypervisor bit", "ecx 0x%x", r[2]);
    check(r[3] & (1U << 9), "CPUID 1 EDX has the local APIC bit", "edx 0x%x", r[3]);

    int err = rdmsr_safe(0x1b, &v);
    check(!err && (v & ~0xfffUL) == LAPIC_BASE && (v & (1UL << 11)) && (v & (1UL << 8)),
          "IA32_APIC_BASE: 0xfee00000, enabled, BSP", "fault %d, value 0x%lx", err,
          (unsigned long)v);
    uint32_t lver = *(volatile uint32_t *)(LAPIC_BASE + 0x30);
    check_eqx("local APIC version register (Xen's vlapic: 0x50014)", lver, 0x50014);

    unsigned long gp0 = faults.count[13];
    err = rdmsr_safe(0x12345678, &v);
    check(err && faults.count[13] == gp0 + 1 && faults.error == 0,
          "RDMSR of an MSR the platform has not got raises #GP(0) through the IDT",
          "fault %d, #GP count %lu, error 0x%lx", err, faults.count[13] - gp0, faults.error);

    unsigned long nm0 = faults.count[7];
    __asm__ __volatile__("mov %%cr0, %%rax; or $8, %%rax; mov %%rax, %%cr0" ::: "rax", "memory");
    __asm__ __volatile__("fnop" ::: "memory");
    check_eq("with CR0.TS set natively, the first x87 instruction raises #NM",
             (long)(faults.count[7] - nm0), 1);
    __asm__ __volatile__("fnop" ::: "memory");
    check_eq("no #NM once the handler cleared TS with clts", (long)(faults.count[7] - nm0), 1);
}

/* ------------------------------------------------------------------ */

static void force_evtchn_callback(void)
{
    (void)HYPERVISOR_xen_version(XENVER_version, 0);
}

void checks_pvh_events(void)
{
    long rc;
    struct vcpu_info *vi = vcpu0();

    section("events (the HVM_PARAM_CALLBACK_IRQ vector)");
    rc = hvm_set_param(HVM_PARAM_CALLBACK_IRQ,
                       (HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | VEC_UPCALL);
    check_eq("HVMOP_set_param CALLBACK_IRQ: type vector, 0xf3", rc, 0);
    uint64_t cb = 0;
    rc = hvm_get_param(HVM_PARAM_CALLBACK_IRQ, &cb);
    check(rc == 0 && cb == ((HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | VEC_UPCALL),
          "HVMOP_get_param CALLBACK_IRQ reads it back", "rc %ld, value 0x%lx", rc,
          (unsigned long)cb);
    rc = HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, 0);
    check_eq("VCPUOP_stop_periodic_timer", rc, 0);

    struct evtchn_bind_virq bv = { VIRQ_TIMER, 0, 0 };
    rc = pv_evtchn_op(EVTCHNOP_bind_virq, &bv, sizeof(bv));
    timer_port = bv.port;
    check(rc == 0 && timer_port > 0 && timer_port < MAX_TRACKED_PORTS,
          "event_channel_op bind_virq VIRQ_TIMER", "rc %ld, port %u", rc, timer_port);

    evtchn_port_t sp = 0, rp = 0;
    rc = pv_loopback(&sp, &rp);
    check(rc == 0 && rp < MAX_TRACKED_PORTS && sp < MAX_TRACKED_PORTS,
          "alloc_unbound + bind_interdomain give a loopback pair", "rc %ld, ports %u/%u",
          rc, sp, rp);
    printk("pvtest: timer port %u, loopback send %u -> receive %u\n", timer_port, sp, rp);
    evtchn_clear_mask(sp);
    evtchn_clear_mask(rp);

    cli();
    unsigned long u0 = upcalls;
    uint32_t c0 = evt_count[rp];
    rc = pv_send(sp);
    check_eq("EVTCHNOP_send to self", rc, 0);
    check(evtchn_is_pending(rp) && vi->evtchn_upcall_pending,
          "send sets the port's pending bit and evtchn_upcall_pending",
          "pending %d, upcall_pending %d", evtchn_is_pending(rp),
          vi->evtchn_upcall_pending);
    force_evtchn_callback();
    check_eq("no upcall while RFLAGS.IF is clear", (long)(upcalls - u0), 0);

    vi->evtchn_upcall_mask = 1;         /* a PV notion: Xen ignores it for HVM */
    barrier();
    sti();
    __asm__ __volatile__("nop" ::: "memory");
    cli();
    check(evt_count[rp] == c0 + 1 && upcalls == u0 + 1,
          "sti delivers the pending event through the callback vector",
          "port count %u, upcalls %lu", evt_count[rp] - c0, upcalls - u0);
    check(!evtchn_is_pending(rp) && !vi->evtchn_upcall_pending,
          "the handler cleared the pending bits", "port %d, upcall_pending %d",
          evtchn_is_pending(rp), vi->evtchn_upcall_pending);
    check(upcalls == u0 + 1, "vcpu_info evtchn_upcall_mask does not hold the vector back",
          "upcalls %lu", upcalls - u0);
    vi->evtchn_upcall_mask = 0;
    check(last_upcall.cs == KERNEL_CS && last_upcall.ss == KERNEL_DS,
          "upcall frame: the guest's own CS 0x08 and SS 0x10 (no privilege change)",
          "cs 0x%lx ss 0x%lx", last_upcall.cs, last_upcall.ss);
    check(last_upcall.rip >= (unsigned long)_text && last_upcall.rip < (unsigned long)_etext,
          "upcall frame RIP is in kernel text", "rip 0x%lx", last_upcall.rip);
    check(last_upcall.rflags & RFLAGS_IF, "upcall frame RFLAGS.IF set (interrupts were on)",
          "rflags 0x%lx", last_upcall.rflags);

    evtchn_mask(rp);
    c0 = evt_count[rp];
    u0 = upcalls;
    sti();
    pv_send(sp);
    force_evtchn_callback();
    cli();
    check(evtchn_is_pending(rp) && evt_count[rp] == c0 && upcalls == u0,
          "a port masked in shared_info stays pending without an upcall",
          "pending %d, delivered %u, upcalls %lu", evtchn_is_pending(rp), evt_count[rp] - c0,
          upcalls - u0);
    struct evtchn_unmask um = { rp };
    sti();
    rc = pv_evtchn_op(EVTCHNOP_unmask, &um, sizeof(um));
    __asm__ __volatile__("nop" ::: "memory");
    cli();
    check(rc == 0 && evt_count[rp] == c0 + 1,
          "EVTCHNOP_unmask clears the mask and delivers the pending event",
          "rc %ld, delivered %u", rc, evt_count[rp] - c0);

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

void checks_pvh_time(void)
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

    /* singleshot timer, idling with sti; hlt (Linux's safe_halt) */
    evtchn_clear_mask(timer_port);
    uint32_t c0 = evt_count[timer_port];
    uint64_t deadline = pv_time_now() + 2 * MS;
    rc = pv_set_timer(deadline);
    check_eq("VCPUOP_set_singleshot_timer arms a singleshot timer", rc, 0);
    int halts = 0;
    while (evt_count[timer_port] == c0 && halts < 1000) {
        __asm__ __volatile__("sti; hlt; cli" ::: "memory");
        halts++;
    }
    uint64_t now = pv_time_now();
    check(evt_count[timer_port] != c0, "VIRQ_TIMER upcall wakes a hlt after the singleshot timer",
          "no timer event in %d halts", halts);
    check(now >= deadline, "time advanced past the deadline across hlt",
          "now %lu, deadline %lu", (unsigned long)now, (unsigned long)deadline);

    /* periodic timer: it runs while the vCPU runs (Xen stops it when the vCPU
     * is switched out by a block or hlt: xen/common/sched/core.c
     * sched_context_switch), so wait for its ticks running, interrupts on */
    struct vcpu_set_periodic_timer pt = { 1 * MS };   /* Xen's minimum period */
    c0 = evt_count[timer_port];
    uint64_t start = pv_time_now();
    rc = HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &pt);
    check_eq("VCPUOP_set_periodic_timer 1 ms", rc, 0);
    sti();
    while (evt_count[timer_port] - c0 < 3 && pv_time_now() - start < 1000 * MS)
        (void)pv_yield();     /* runnable: the periodic timer goes on */
    cli();
    uint64_t elapsed = pv_time_now() - start;
    check(evt_count[timer_port] - c0 >= 3 && elapsed >= 2 * pt.period_ns,
          "periodic timer ticks 3 times over at least 2 periods while running",
          "ticks %u, elapsed %lu ns", evt_count[timer_port] - c0, (unsigned long)elapsed);
    /* SCHEDOP_block is woken by the singleshot timer, not the periodic one */
    uint64_t dl2 = pv_time_now() + 10 * MS;
    rc = pv_set_timer(dl2);
    int nblocks = 0;
    long block_rc = 0;
    while (pv_time_now() < dl2 && nblocks < 1000) {
        long r = pv_block();
        if (nblocks++ == 0)
            block_rc = r;
        sti();
        __asm__ __volatile__("nop" ::: "memory");
        cli();
    }
    check_eq("sched_op SCHEDOP_block", block_rc, 0);
    check(pv_time_now() >= dl2 && nblocks == 1,
          "a periodic timer (1 ms) does not wake a blocked vCPU; the singleshot (10 ms) does",
          "%d blocks", nblocks);
    rc = HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, 0);
    check_eq("VCPUOP_stop_periodic_timer", rc, 0);
    rc = HYPERVISOR_vcpu_op(VCPUOP_stop_singleshot_timer, 0, 0);
    check_eq("VCPUOP_stop_singleshot_timer", rc, 0);
    rc = pv_yield();
    check_eq("sched_op SCHEDOP_yield", rc, 0);
    evtchn_mask(timer_port);
}

/* ------------------------------------------------------------------ */

void checks_pvh_faults(void)
{
    section("faults (through the guest's own IDT)");
    unsigned long pf0 = faults.count[14];
    int fx0 = faults.fixups;
    uint64_t v;
    int err = read_u64_safe((void *)UNMAPPED_VA, &v);
    check(err && faults.count[14] == pf0 + 1 && faults.fixups == fx0 + 1,
          "#PF on an unmapped read is fixed up through the exception table",
          "fault %d, #PF count %lu", err, faults.count[14] - pf0);
    check_eqx("#PF: CR2 holds the faulting address", faults.cr2, UNMAPPED_VA);
    check((faults.error & 3) == 0, "#PF error code says not-present read",
          "error 0x%lx", faults.error);

    /* a read-only 2 MiB identity page at 3 GiB: clear RW in its L2 entry */
    const unsigned long ro_va = 3UL << 30;
    volatile uint64_t *pde = &pvh_l2[ro_va >> 21];
    uint64_t old = *pde;
    *pde = old & ~_PAGE_RW;
    __asm__ __volatile__("invlpg (%0)" :: "r"(ro_va) : "memory");
    err = write_u64_safe((void *)ro_va, 2);
    check(err && (faults.error & 3) == 3 && faults.cr2 == ro_va,
          "#PF on a write to a read-only page (error code P|W)",
          "fault %d, error 0x%lx, cr2 0x%lx", err, faults.error, faults.cr2);
    *pde = old;
    __asm__ __volatile__("invlpg (%0)" :: "r"(ro_va) : "memory");

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
          "RAX, RCX, RDX, R11 survive the exception frame and IRETQ",
          "rcx 0x%lx r11 0x%lx rax 0x%lx rdx 0x%lx", rcx, r11, rax, rdx);

    unsigned long bp0 = faults.count[3], after;
    __asm__ __volatile__("int3\n1: lea 1b(%%rip), %0" : "=r"(after) :: "memory");
    check(faults.count[3] == bp0 + 1 && faults.rip == after,
          "int3 -> #BP handler with RIP after the int3, back through IRETQ",
          "count %lu, rip 0x%lx (expected 0x%lx)", faults.count[3] - bp0, faults.rip, after);
    check(faults.cs == KERNEL_CS && faults.ss == KERNEL_DS,
          "exception frame CS 0x08, SS 0x10: the guest's own selectors",
          "cs 0x%lx ss 0x%lx", faults.cs, faults.ss);
    check(!(faults.rflags & RFLAGS_IF), "exception frame RFLAGS.IF clear (interrupts off)",
          "rflags 0x%lx", faults.rflags);
}

/* ------------------------------------------------------------------ */

void checks_pvh_memory_version(void)
{
    long rc;
    domid_t self = DOMID_SELF;

    section("memory_op and xen_version");
    long cur = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
    long max = HYPERVISOR_memory_op(XENMEM_maximum_reservation, &self);
    check(cur > 0 && max >= cur, "XENMEM_current/maximum_reservation",
          "max %ld, current %ld", max, cur);

    static struct e820entry map[64];
    struct xen_memory_map mm = { 64, map };
    rc = HYPERVISOR_memory_op(XENMEM_memory_map, &mm);
    int same = rc == 0 && mm.nr_entries == pvh_start_info->memmap_entries;
    const struct hvm_memmap_table_entry *m = memmap();
    for (unsigned i = 0; same && i < mm.nr_entries; i++)
        same = map[i].addr == m[i].addr && map[i].size == m[i].size &&
               map[i].type == m[i].type;
    check(same, "XENMEM_memory_map returns the map hvm_start_info gave",
          "rc %ld, %u entries (start info: %u)", rc, mm.nr_entries,
          pvh_start_info->memmap_entries);

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
    check(rc == 0 && (fi.submap & (1U << XENFEAT_auto_translated_physmap)) &&
              (fi.submap & (1U << XENFEAT_hvm_callback_vector)),
          "XENVER_get_features: auto_translated_physmap and hvm_callback_vector",
          "rc %ld, submap 0x%x", rc, fi.submap);
}

/* ------------------------------------------------------------------ */

void checks_pvh_grants(void)
{
    long rc;

    section("grant table (auto-translated: frames by add_to_physmap)");
    struct gnttab_query_size q = { DOMID_SELF, 0, 0, 0 };
    rc = HYPERVISOR_grant_table_op(GNTTABOP_query_size, &q, 1);
    printk("pvtest: grant table %u of %u frames\n", q.nr_frames, q.max_nr_frames);
    check(rc == 0 && q.status == GNTST_okay && q.nr_frames >= 1 &&
              q.max_nr_frames >= q.nr_frames,
          "GNTTABOP_query_size", "rc %ld, status %d, %u of %u frames", rc, q.status,
          q.nr_frames, q.max_nr_frames);

    struct xen_add_to_physmap x = { DOMID_SELF, 0, XENMAPSPACE_grant_table, 0, GRANT_GPFN };
    rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
    check_eq("XENMEM_add_to_physmap grant frame 0 at a guest frame above RAM", rc, 0);
    if (rc)
        return;
    /* the identity map reaches it (pvh_entry.S) */
    volatile struct grant_entry_v1 *gt =
        (volatile struct grant_entry_v1 *)(GRANT_GPFN << PAGE_SHIFT);
    const uint16_t busy = GTF_permit_access | GTF_reading | GTF_writing;
    check(gt[GNTTAB_RESERVED_CONSOLE].flags == busy && gt[GNTTAB_RESERVED_CONSOLE].domid == 0 &&
              gt[GNTTAB_RESERVED_CONSOLE].frame == console_pfn,
          "grant entry 0 (reserved console) grants the console frame to domain 0",
          "flags 0x%x domid %u frame 0x%x", gt[0].flags, gt[0].domid, gt[0].frame);
    check(gt[GNTTAB_RESERVED_XENSTORE].flags == busy &&
              gt[GNTTAB_RESERVED_XENSTORE].domid == 0 &&
              gt[GNTTAB_RESERVED_XENSTORE].frame == store_pfn,
          "grant entry 1 (reserved xenstore) grants the xenstore frame to domain 0",
          "flags 0x%x domid %u frame 0x%x", gt[1].flags, gt[1].domid, gt[1].frame);
    x.idx = 0x80000000UL;     /* XENMAPIDX_grant_table_status: v1 has no status frames */
    x.gpfn = GRANT_GPFN + 1;
    rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
    check_eq("add_to_physmap of a status frame with grant table v1 -> -EINVAL", rc,
             -XEN_EINVAL);
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

void checks_pvh_xenstore(void)
{
    char buf[128];
    uint32_t type = 0;

    section("xenstore (HVM_PARAM_STORE_PFN/EVTCHN)");
    long n = xs_request(XS_READ, "domid", 6, buf, sizeof(buf), &type);
    check(n > 0 && type == XS_READ && all_digits(buf), "XS_READ domid returns a number",
          "len %ld, type %u, \"%s\"", n, type, n >= 0 ? buf : "");
    if (n > 0)
        printk("pvtest: xenstore domid = %s\n", buf);

    static const char path[] = "data/pvtest";
    static const char value[] = "hello from pvtest-v2-pvh";
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

void checks_pvh_bad_calls(void)
{
    long rc;

    section("deliberate bad calls (ABI error codes)");
    if (console_io_usable()) {
        rc = HYPERVISOR_console_io(CONSOLEIO_write, 16, (const char *)0x0000800000000000UL);
        check_eq("console_io write from a non-canonical buffer -> -EFAULT", rc, -XEN_EFAULT);
        rc = HYPERVISOR_console_io(CONSOLEIO_write, 16, (const char *)UNMAPPED_VA);
        check_eq("console_io write from an unmapped buffer -> -EFAULT", rc, -XEN_EFAULT);
    } else {
        check_skip("console_io write from a non-canonical buffer -> -EFAULT",
                   "console_io not permitted");
        check_skip("console_io write from an unmapped buffer -> -EFAULT",
                   "console_io not permitted");
    }
    rc = HYPERVISOR_memory_op(XENMEM_current_reservation, (void *)UNMAPPED_VA);
    check_eq("memory_op with an unmapped argument -> -EFAULT", rc, -XEN_EFAULT);
    rc = xen_hypercall_nr(HC_UNASSIGNED, 0, 0, 0, 0, 0);
    check_eq("unassigned hypercall number 45 -> -ENOSYS", rc, -XEN_ENOSYS);

    /* PV-only hypercalls are not in the hvm64 table (include/hypercall-defs.c) */
    static const struct trap_info none[1];
    rc = HYPERVISOR_set_trap_table(none);
    check_eq("set_trap_table (PV only) -> -ENOSYS", rc, -XEN_ENOSYS);
    struct mmu_update u = { 0, 0 };
    unsigned done = 0;
    rc = HYPERVISOR_mmu_update(&u, 1, &done, DOMID_SELF);
    check_eq("mmu_update (PV only) -> -ENOSYS", rc, -XEN_ENOSYS);
    rc = HYPERVISOR_update_va_mapping((unsigned long)_text, 0, UVMF_INVLPG);
    check_eq("update_va_mapping (PV only) -> -ENOSYS", rc, -XEN_ENOSYS);
    rc = HYPERVISOR_stack_switch(KERNEL_DS, (unsigned long)boot_stack_top);
    check_eq("stack_switch (PV only) -> -ENOSYS", rc, -XEN_ENOSYS);
    rc = xen_hypercall_nr(HC_iret, 0, 0, 0, 0, 0);
    check_eq("iret (PV only) -> -ENOSYS", rc, -XEN_ENOSYS);
#ifdef PVTEST_ORACLE_TCG
    /* Only in scripts/xen_oracle.py --tcg-build (docs/xen-oracle.md, difference 26):
     * mmuext_op is in the hvm64 table (include/hypercall-defs.c), but do_mmuext_op
     * (arch/x86/mm.c) wants a PV page owner before it reads an entry: DOMID_SELF
     * names this PVH domain -> -EINVAL, nothing done, *done untouched. */
    struct mmuext_op mx[2] = { { 13, 0, 0, 0 }, { 0, 0, 0, 0 } };
    done = 7;
    rc = HYPERVISOR_mmuext_op(mx, 1, &done, DOMID_SELF);
    check(rc == -XEN_EINVAL && done == 7,
          "mmuext_op MMUEXT_SET_LDT from PVH -> -EINVAL, done untouched (do_mmuext_op: "
          "!is_pv_domain(pg_owner))", "rc %ld, done %u", rc, done);
    mx[0].cmd = MMUEXT_PIN_L1_TABLE;
    mx[0].arg1 = virt_to_phys(_text) >> PAGE_SHIFT;
    rc = HYPERVISOR_mmuext_op(mx, 1, &done, DOMID_SELF);
    check(rc == -XEN_EINVAL && done == 7,
          "mmuext_op PIN_L1_TABLE from PVH -> -EINVAL too (the pin/unpin-only branch "
          "needs a PV page owner)", "rc %ld, done %u", rc, done);
#endif

    struct xen_hvm_param p = { 5, 0, HVM_PARAM_STORE_PFN, 0 };
    rc = HYPERVISOR_hvm_op(HVMOP_get_param, &p);
    check_eq("HVMOP_get_param for a domain that does not exist -> -ESRCH", rc, -XEN_ESRCH);
    rc = hvm_set_param(HVM_PARAM_STORE_PFN, 1);
    check_eq("HVMOP_set_param STORE_PFN (the toolstack's) -> -EPERM", rc, -XEN_EPERM);
    uint64_t v = 0;
    rc = hvm_get_param(0xffff, &v);
    check_eq("HVMOP_get_param of an index beyond HVM_NR_PARAMS -> -EINVAL", rc, -XEN_EINVAL);
    struct xen_add_to_physmap x = { DOMID_SELF, 0, XENMAPSPACE_shared_info, 1,
                                    virt_to_phys(shared_info_page) >> PAGE_SHIFT };
    rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
    check_eq("add_to_physmap shared_info with idx 1 -> -EINVAL", rc, -XEN_EINVAL);

    struct vcpu_set_periodic_timer pt = { 100 };
    rc = HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &pt);
    check_eq("VCPUOP_set_periodic_timer below 1 ms -> -EINVAL", rc, -XEN_EINVAL);
    rc = pv_send(closed_port);
    check_eq("EVTCHNOP_send on a closed port -> -EINVAL", rc, -XEN_EINVAL);
    struct xen_feature_info fi = { 1, 0 };
    rc = HYPERVISOR_xen_version(XENVER_get_features, &fi);
    check_eq("XENVER_get_features submap 1 -> -EINVAL", rc, -XEN_EINVAL);
}
