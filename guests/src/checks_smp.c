/* pvtest-v2-smp: the checks of an SMP Xen PV domain (run it with --vcpus 2 or
 * more; with one vCPU they are skipped).  vCPU 0 brings up vCPU 1 with
 * VCPUOP_initialise/up, yields to it while it spins, and then checks the
 * runstate accounting of both (steal time) and the per-vCPU FIFO event
 * channel queues.  Each expected answer names its source in xen.git
 * stable-4.17.
 *
 * The FIFO checks switch the domain to the FIFO ABI (the first
 * EVTCHNOP_init_control does), so they run last: the 2-level upcall
 * handler of the other checks finds nothing to do afterwards, and the
 * console needs no incoming event. */
#include "pvtest.h"

#if SMP

/* ---- xen/include/public/vcpu.h ---- */
#define VCPUOP_initialise                 0
#define VCPUOP_up                         1
#define VCPUOP_down                       2
#define VCPUOP_is_up                      3
#define VCPUOP_get_runstate_info          4
#define VCPUOP_register_runstate_memory_area 5
#define RUNSTATE_running  0
#define RUNSTATE_runnable 1
#define RUNSTATE_blocked  2
#define RUNSTATE_offline  3
#define XEN_RUNSTATE_UPDATE (1ULL << 63)
struct vcpu_runstate_info {
    int state;
    uint64_t state_entry_time;
    uint64_t time[4];
};
_Static_assert(sizeof(struct vcpu_runstate_info) == 48, "vcpu_runstate_info");
struct vcpu_register_runstate_memory_area { uint64_t addr; };   /* addr.v */

/* ---- xen/include/public/xen.h: vm_assist ---- */
#define HYPERVISOR_vm_assist_nr           21
#define VMASST_CMD_enable                 0
#define VMASST_TYPE_runstate_update_flag  5

/* ---- xen/include/public/arch-x86/xen.h: struct vcpu_guest_context, 64-bit
 * (5168 bytes); only the fields set here, by offset ---- */
#define CTX_SIZE          5168
#define CTX_FLAGS         512
#define CTX_USER_REGS     520     /* struct cpu_user_regs (xen-x86_64.h) */
#define CTX_RIP           (CTX_USER_REGS + 128)
#define CTX_CS            (CTX_USER_REGS + 136)
#define CTX_RFLAGS        (CTX_USER_REGS + 144)
#define CTX_RSP           (CTX_USER_REGS + 152)
#define CTX_SS            (CTX_USER_REGS + 160)
#define CTX_KERNEL_SS     4968
#define CTX_KERNEL_SP     4976
#define CTX_CTRLREG       4984
#define VGCF_in_kernel    (1 << 2)

/* ---- xen/include/public/event_channel.h: the FIFO ABI ---- */
#define EVTCHNOP_bind_vcpu       8
#define EVTCHNOP_init_control   11
#define EVTCHNOP_expand_array   12
struct evtchn_init_control {
    uint64_t control_gfn;
    uint32_t offset;
    uint32_t vcpu;
    uint8_t link_bits;
    uint8_t _pad[7];
};
struct evtchn_expand_array { uint64_t array_gfn; };
struct evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; };
struct evtchn_fifo_control_block {
    uint32_t ready;
    uint32_t _rsvd;
    uint32_t head[16];
};
#define EVTCHN_FIFO_PENDING  (1U << 31)
#define EVTCHN_FIFO_MASKED   (1U << 30)
#define EVTCHN_FIFO_LINKED   (1U << 29)
#define EVTCHN_FIFO_BUSY     (1U << 28)
#define EVTCHN_FIFO_LINK_MASK ((1U << 17) - 1)
#define EVTCHN_FIFO_PRIORITY_DEFAULT 7

static uint8_t ctx[CTX_SIZE] __attribute__((aligned(16)));
static uint8_t ap_stack[8192] __attribute__((aligned(16)));
static volatile struct vcpu_runstate_info rs0 __attribute__((aligned(64)));
static volatile struct vcpu_runstate_info rs1 __attribute__((aligned(64)));
static uint8_t cb[2][4096] __attribute__((aligned(4096)));   /* a control block each */
static volatile uint32_t event_array[1024] __attribute__((aligned(4096)));

static volatile int ap_started, ap_go, ap_done;
#define AP_SPINS 300000UL

static inline void put64(unsigned off, uint64_t v) { memcpy(ctx + off, &v, 8); }

/* vCPU 1's code: say it runs, wait for vCPU 0's go (so vCPU 0 sees it up
 * however the two are scheduled), spin (vCPU 0 waits runnable meanwhile),
 * take itself down.  No trap table, no callbacks, events masked: it needs
 * none. */
static void __attribute__((noreturn, used)) ap_main(void)
{
    ap_started = 1;
    while (!ap_go)
        ;
    for (volatile unsigned long i = 0; i < AP_SPINS; i++)
        ;
    ap_done = 1;
    HYPERVISOR_vcpu_op(VCPUOP_down, 1, 0);
    for (;;)
        ;
}

static unsigned count_vcpus(void)
{
    unsigned n = 0;
    while (n < XEN_LEGACY_MAX_VCPUS && HYPERVISOR_vcpu_op(VCPUOP_is_up, n, 0) >= 0)
        n++;
    return n;
}

static void smp_runstate(void)
{
    section("SMP: bring-up and runstate (steal time)");
    long rc = xen_hypercall_nr(HYPERVISOR_vm_assist_nr, VMASST_CMD_enable,
                               VMASST_TYPE_runstate_update_flag, 0, 0, 0);
    /* xen/common/domain.c vm_assist: type 5 is in VM_ASSIST_VALID for PV */
    check_eq("vm_assist enables runstate_update_flag", rc, 0);
    struct vcpu_register_runstate_memory_area area = { (uint64_t)(unsigned long)&rs0 };
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0, &area);
    check_eq("register_runstate_memory_area for vCPU 0 (itself)", rc, 0);
    area.addr = (uint64_t)(unsigned long)&rs1;
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 1, &area);
    check_eq("register_runstate_memory_area for vCPU 1 (another)", rc, 0);
    /* common/domain.c vcpu_create: a vCPU other than 0 starts offline; the
     * copy for another vCPU is vcpu_runstate_get's (do_vcpu_op) */
    check_eq("vCPU 1 is offline before VCPUOP_up", rs1.state, RUNSTATE_offline);
    check_eq("VCPUOP_is_up(1) before up", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0), 0);

    memset(ctx, 0, sizeof(ctx));
    put64(CTX_FLAGS, VGCF_in_kernel);
    put64(CTX_RIP, (uint64_t)(unsigned long)ap_main);
    put64(CTX_CS, FLAT_KERNEL_CS64);
    put64(CTX_RFLAGS, 0x2);
    /* as after a call: the ABI's alignment at a function's first instruction */
    put64(CTX_RSP, (uint64_t)(unsigned long)(ap_stack + sizeof(ap_stack) - 8));
    put64(CTX_SS, FLAT_KERNEL_SS64);
    put64(CTX_KERNEL_SS, FLAT_KERNEL_SS64);
    put64(CTX_KERNEL_SP, (uint64_t)(unsigned long)(ap_stack + sizeof(ap_stack) - 8));
    put64(CTX_CTRLREG + 3 * 8, (uint64_t)virt_to_mfn(l4_table()) << 12);  /* xen_pfn_to_cr3 */
    HYPERVISOR_shared_info->vcpu_info[1].evtchn_upcall_mask = 1;
    rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx);
    /* arch/x86/domain.c arch_set_info_guest: a canonical context whose CR3
     * is this domain's L4 is accepted */
    check_eq("VCPUOP_initialise vCPU 1", rc, 0);
    check_eq("VCPUOP_up vCPU 1", HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0), 0);
    check_eq("VCPUOP_is_up(1) after up", HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0), 1);
    ap_go = 1;
    /* vCPU 0 stays runnable: it yields until vCPU 1 is done */
    for (unsigned long i = 0; !ap_done && i < 100000000UL; i++)
        pv_yield();
    check(ap_started && ap_done, "vCPU 1 ran its code to the end", "started %d done %d",
          ap_started, ap_done);
    for (unsigned long i = 0; HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0) == 1 && i < 100000UL; i++)
        pv_yield();
    check_eq("VCPUOP_is_up(1) after it took itself down",
             HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0), 0);

    /* sched/core.c vcpu_runstate_change: the time vCPU 0 waited while vCPU 1
     * held the (one) CPU counts as runnable; arch/x86/domain.c
     * update_runstate_area copied it when vCPU 0 ran again, and cleared
     * XEN_RUNSTATE_UPDATE after the copy */
    struct vcpu_runstate_info r0;
    memcpy(&r0, (const void *)&rs0, sizeof(r0));
    check_eq("vCPU 0's runstate area says running", r0.state, RUNSTATE_running);
    check(r0.time[RUNSTATE_runnable] > 0, "vCPU 0 accrued runnable (steal) time",
          "time[runnable] %lu", (unsigned long)r0.time[RUNSTATE_runnable]);
    check(!(r0.state_entry_time & XEN_RUNSTATE_UPDATE),
          "XEN_RUNSTATE_UPDATE is clear after the update", "state_entry_time %#lx",
          (unsigned long)r0.state_entry_time);
    uint64_t sum = r0.time[0] + r0.time[1] + r0.time[2] + r0.time[3];
    check(sum <= r0.state_entry_time, "runstate time[] adds up to at most state_entry_time",
          "sum %lu entry %lu", (unsigned long)sum, (unsigned long)r0.state_entry_time);

    struct vcpu_runstate_info r1;
    rc = HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 1, &r1);
    check_eq("get_runstate_info for vCPU 1", rc, 0);
    /* VCPUOP_down: offline (vcpu_sleep / context switch with VPF_down) */
    check_eq("vCPU 1 is offline after VCPUOP_down", r1.state, RUNSTATE_offline);
    check(r1.time[RUNSTATE_running] > 0, "vCPU 1 accrued running time",
          "time[running] %lu", (unsigned long)r1.time[RUNSTATE_running]);
    check(rs1.state == RUNSTATE_offline, "vCPU 1's area was written as it went down",
          "state %d", rs1.state);
}

static long init_control(void *block, unsigned offset, unsigned vcpu, uint8_t *bits)
{
    struct evtchn_init_control ic = { virt_to_mfn(block), offset, vcpu, 0, { 0 } };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic);
    if (bits)
        *bits = ic.link_bits;
    return rc;
}

static void smp_fifo(unsigned nr)
{
    section("SMP: FIFO event channels per vCPU");
    uint8_t bits = 0;
    /* common/event_fifo.c evtchn_fifo_init_control: domain_vcpu() -ENOENT,
     * an offset not 8-byte aligned or crossing the page -EINVAL */
    check_eq("init_control for a vCPU the domain lacks", init_control(cb[0], 0, nr, 0),
             -XEN_ENOENT);
    check_eq("init_control with an unaligned offset", init_control(cb[0], 4, 0, 0),
             -XEN_EINVAL);
    check_eq("init_control for vCPU 0", init_control(cb[0], 0, 0, &bits), 0);
    check_eq("init_control returns link_bits 17 (EVTCHN_FIFO_LINK_BITS)", bits, 17);
    /* map_control_block: a vCPU's second control block -EINVAL */
    check_eq("a second init_control for vCPU 0", init_control(cb[0], 0, 0, 0), -XEN_EINVAL);
    check_eq("init_control for vCPU 1, from vCPU 0", init_control(cb[1], 0, 1, 0), 0);
    struct evtchn_expand_array ea = { virt_to_mfn((void *)event_array) };
    check_eq("expand_array with one page",
             HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ea), 0);

    volatile struct evtchn_fifo_control_block *c0 = (void *)cb[0], *c1 = (void *)cb[1];
    struct evtchn_bind_ipi bi = { 1, 0 };
    check_eq("bind_ipi on vCPU 1", pv_evtchn_op(EVTCHNOP_bind_ipi, &bi, sizeof(bi)), 0);
    evtchn_port_t ipi = bi.port;
    check_eq("send on vCPU 1's IPI", pv_send(ipi), 0);
    /* evtchn_fifo_set_pending: the queue of the notified vCPU (notify_vcpu_id),
     * at the default priority: head, READY, evtchn_upcall_pending */
    check_eqx("the IPI's word is PENDING|LINKED", event_array[ipi] &
              (EVTCHN_FIFO_PENDING | EVTCHN_FIFO_LINKED | EVTCHN_FIFO_MASKED),
              EVTCHN_FIFO_PENDING | EVTCHN_FIFO_LINKED);
    check_eq("vCPU 1's queue 7 starts with the IPI", c1->head[EVTCHN_FIFO_PRIORITY_DEFAULT],
             ipi);
    check_eqx("vCPU 1's READY has bit 7", c1->ready, 1U << EVTCHN_FIFO_PRIORITY_DEFAULT);
    check(c0->head[EVTCHN_FIFO_PRIORITY_DEFAULT] != ipi, "vCPU 0's queue does not hold it",
          "head %u", c0->head[EVTCHN_FIFO_PRIORITY_DEFAULT]);
    check_eq("vCPU 1's evtchn_upcall_pending is set",
             HYPERVISOR_shared_info->vcpu_info[1].evtchn_upcall_pending, 1);

    /* event_channel.c evtchn_bind_vcpu: -ENOENT for a vCPU the domain lacks,
     * an IPI cannot move (-EINVAL), an interdomain port can */
    evtchn_port_t snd = 0, rcv = 0;
    check_eq("a loopback channel", pv_loopback(&snd, &rcv), 0);
    struct evtchn_bind_vcpu bv = { rcv, nr };
    check_eq("bind_vcpu to a vCPU the domain lacks",
             HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &bv), -XEN_ENOENT);
    bv = (struct evtchn_bind_vcpu){ ipi, 0 };
    check_eq("bind_vcpu of an IPI port",
             HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &bv), -XEN_EINVAL);
    bv = (struct evtchn_bind_vcpu){ rcv, 1 };
    check_eq("bind_vcpu of an interdomain port to vCPU 1",
             HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &bv), 0);
    c1->ready = 0;                  /* as Linux's handler takes it with xchg */
    check_eq("send on the loopback", pv_send(snd), 0);
    /* evtchn_fifo_set_link: linked behind the tail (BUSY clear), and READY
     * left alone: only an empty queue sets it */
    check_eq("it is linked behind vCPU 1's tail", event_array[ipi] & EVTCHN_FIFO_LINK_MASK,
             rcv);
    check_eq("the tail word has BUSY clear", !!(event_array[ipi] & EVTCHN_FIFO_BUSY), 0);
    check_eq("vCPU 1's head is still the IPI", c1->head[EVTCHN_FIFO_PRIORITY_DEFAULT], ipi);
    check_eqx("READY untouched when linking behind a tail", c1->ready, 0);
}

void checks_smp(void);
void checks_smp(void)
{
    unsigned nr = count_vcpus();
    if (nr < 2) {
        section("SMP");
        check_skip("SMP checks", "one vCPU (run with --vcpus 2)");
        return;
    }
    smp_runstate();
    smp_fifo(nr);
}

#endif /* SMP */
