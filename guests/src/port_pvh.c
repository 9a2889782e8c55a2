/*
 * port_pvh.c - the Xen PVH platform layer of pvtest (pvtest-v2-pvh): the
 * native IDT and trap dispatch, the console (console_io and the PV console
 * ring found through HVM_PARAM_CONSOLE_PFN/EVTCHN), shared_info placed in
 * the guest's own physmap with XENMEM_add_to_physmap, event-channel
 * upcalls arriving as the HVM_PARAM_CALLBACK_IRQ vector, pvclock time, the
 * xenstore ring (HVM_PARAM_STORE_PFN/EVTCHN) and the v2 interfaces of the
 * drift layer (sched_op, event_channel_op, VCPUOP_set_singleshot_timer).
 *
 * The same operations as port_xen.c where Xen offers them to both modes
 * (console ring, 2-level events, pvclock, xenstore ring are copies of its
 * code, so that the PV images stay byte-for-byte as they are); what differs
 * is how the guest finds its pages (guest-physical frames, HVM params) and
 * how it takes interrupts (its own IDT, RFLAGS.IF as the event mask).
 */
#include "pvh.h"

struct hvm_start_info *pvh_start_info;
struct shared_info *HYPERVISOR_shared_info;

/* ------------------------------------------------------------------ */
/* Safe accesses: a fault on the marked instruction resumes at the fixup
 * (found in __ex_table by the #PF and #GP handlers). */

struct extable_entry { unsigned long insn, fixup; };
extern const struct extable_entry __start_ex_table[], __stop_ex_table[];

int read_u64_safe(const volatile void *p, uint64_t *out)
{
    int err = 0;
    uint64_t v = 0;
    __asm__ __volatile__("1: movq (%[p]), %[v]\n"
                         "2:\n"
                         ".pushsection .text.fixup, \"ax\"\n"
                         "3: movl $1, %[err]\n"
                         "   jmp 2b\n"
                         ".popsection\n"
                         ".pushsection __ex_table, \"a\"\n"
                         ".balign 8\n"
                         ".quad 1b, 3b\n"
                         ".popsection\n"
                         : [v] "+r"(v), [err] "+r"(err)
                         : [p] "r"(p)
                         : "memory");
    *out = v;
    return err;
}

int write_u64_safe(volatile void *p, uint64_t v)
{
    int err = 0;
    __asm__ __volatile__("1: movq %[v], (%[p])\n"
                         "2:\n"
                         ".pushsection .text.fixup, \"ax\"\n"
                         "3: movl $1, %[err]\n"
                         "   jmp 2b\n"
                         ".popsection\n"
                         ".pushsection __ex_table, \"a\"\n"
                         ".balign 8\n"
                         ".quad 1b, 3b\n"
                         ".popsection\n"
                         : [err] "+r"(err)
                         : [p] "r"(p), [v] "r"(v)
                         : "memory");
    return err;
}

int rdmsr_safe(uint32_t msr, uint64_t *out)
{
    int err = 0;
    uint32_t lo = 0, hi = 0;
    __asm__ __volatile__("1: rdmsr\n"
                         "2:\n"
                         ".pushsection .text.fixup, \"ax\"\n"
                         "3: movl $1, %[err]\n"
                         "   jmp 2b\n"
                         ".popsection\n"
                         ".pushsection __ex_table, \"a\"\n"
                         ".balign 8\n"
                         ".quad 1b, 3b\n"
                         ".popsection\n"
                         : "+a"(lo), "+d"(hi), [err] "+r"(err)
                         : "c"(msr)
                         : "memory");
    *out = ((uint64_t)hi << 32) | lo;
    return err;
}

static unsigned long extable_fixup(unsigned long rip)
{
    for (const struct extable_entry *e = __start_ex_table; e < __stop_ex_table; e++)
        if (e->insn == rip)
            return e->fixup;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The native IDT: 64-bit interrupt gates (SDM vol. 3, 6.14.1), DPL 0 but
 * for #BP and #OF (int3/into), no IST. */

struct idt_gate {
    uint16_t off0, sel;
    uint8_t ist, type_attr;
    uint16_t off1;
    uint32_t off2, zero;
};
_Static_assert(sizeof(struct idt_gate) == 16, "idt_gate");
static struct idt_gate idt[256] __page_aligned;

static void set_gate(unsigned vec, void (*fn)(void), unsigned dpl)
{
    unsigned long a = (unsigned long)fn;
    idt[vec] = (struct idt_gate){ (uint16_t)a, KERNEL_CS, 0,
                                  (uint8_t)(0x8e | (dpl << 5)), (uint16_t)(a >> 16),
                                  (uint32_t)(a >> 32), 0 };
}

void pvh_install_idt(void)
{
    static void (*const traps[20])(void) = {
        pvh_trap_0, pvh_trap_1, pvh_trap_2, pvh_trap_3, pvh_trap_4, pvh_trap_5,
        pvh_trap_6, pvh_trap_7, pvh_trap_8, pvh_trap_9, pvh_trap_10, pvh_trap_11,
        pvh_trap_12, pvh_trap_13, pvh_trap_14, pvh_trap_15, pvh_trap_16, pvh_trap_17,
        pvh_trap_18, pvh_trap_19,
    };
    for (unsigned v = 0; v < 256; v++)
        set_gate(v, v < 20 ? traps[v] : pvh_spurious, 0);
    set_gate(3, pvh_trap_3, 3);
    set_gate(4, pvh_trap_4, 3);
    set_gate(VEC_UPCALL, pvh_upcall, 0);
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } d = {
        sizeof(idt) - 1, (uint64_t)idt };
    __asm__ __volatile__("lidt %0" :: "m"(d) : "memory");
}

/* ------------------------------------------------------------------ */
/* HVM parameters (hvm/params.h) */

long hvm_get_param(unsigned index, uint64_t *value)
{
    struct xen_hvm_param p = { DOMID_SELF, 0, index, 0 };
    long rc = HYPERVISOR_hvm_op(HVMOP_get_param, &p);
    *value = p.value;
    return rc;
}

long hvm_set_param(unsigned index, uint64_t value)
{
    struct xen_hvm_param p = { DOMID_SELF, 0, index, value };
    return HYPERVISOR_hvm_op(HVMOP_set_param, &p);
}

/* shared_info into the guest frame of `page` (memory.h, XENMAPSPACE_shared_info);
 * vcpu_info[0] is at its start until VCPUOP_register_vcpu_info moves it. */
long pvh_map_shared_info(void *page)
{
    struct xen_add_to_physmap x = { DOMID_SELF, 0, XENMAPSPACE_shared_info, 0,
                                    virt_to_phys(page) >> PAGE_SHIFT };
    long rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &x);
    if (rc == 0)
        HYPERVISOR_shared_info = page;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Console: every line goes to CONSOLEIO_write and to the PV console ring
 * (io/console.h).  Output before the ring is known is kept and replayed. */

static volatile struct xencons_interface *cons_ring;
static evtchn_port_t cons_port;
static int cio_state;           /* 0 untried, 1 works, -1 refused */
static long cio_rc;
static int ring_stalled;
static char early_buf[4096];
static size_t early_len;

int console_io_usable(void)
{
    return cio_state > 0;
}

long console_io_first_rc(void)
{
    return cio_rc;
}

static void ring_write(const char *s, size_t n)
{
    volatile struct xencons_interface *r = cons_ring;
    const uint32_t size = sizeof(r->out);
    while (n && !ring_stalled) {
        uint32_t cons = r->out_cons, prod = r->out_prod;
        barrier();
        uint32_t space = size - (prod - cons);
        if (prod - cons > size) {
            ring_stalled = 1;       /* corrupt indexes: stop using the ring */
            return;
        }
        if (space == 0) {
            pv_send(cons_port);
            for (int i = 0; i < 10000 && r->out_prod - r->out_cons >= size; i++)
                pv_yield();
            if (r->out_prod - r->out_cons >= size)
                ring_stalled = 1;   /* nobody drains the ring: drop output */
            continue;
        }
        while (n && space) {
            r->out[prod++ & (size - 1)] = *s++;
            n--;
            space--;
        }
        barrier();                  /* data before index (x86 keeps store order) */
        r->out_prod = prod;
        pv_send(cons_port);
    }
}

void con_write(const char *s, size_t n)
{
    if (cio_state >= 0) {
        long rc = HYPERVISOR_console_io(CONSOLEIO_write, (int)n, s);
        if (cio_state == 0) {
            cio_rc = rc;
            cio_state = rc < 0 ? -1 : 1;
        }
    }
    if (cons_ring) {
        ring_write(s, n);
    } else {
        size_t room = sizeof(early_buf) - early_len;
        if (n > room)
            n = room;
        memcpy(early_buf + early_len, s, n);
        early_len += n;
    }
}

void printk(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(buf))
        n = sizeof(buf) - 1;
    con_write(buf, (size_t)n);
}

/* The ring at guest frame `pfn` (HVM_PARAM_CONSOLE_PFN), kicked on `port`;
 * replays what was printed before. */
void pvh_console_init(unsigned long pfn, evtchn_port_t port)
{
    cons_port = port;
    cons_ring = phys_to_virt((uint64_t)pfn << PAGE_SHIFT);
    ring_write(early_buf, early_len);
}

/* ------------------------------------------------------------------ */
/* Drift layer: the v2 interfaces (pvtest.h). */

long pv_evtchn_op(int cmd, void *arg, size_t size)
{
    (void)size;
    return HYPERVISOR_event_channel_op(cmd, arg);
}

long pv_block(void)
{
    return HYPERVISOR_sched_op(SCHEDOP_block, 0);
}

long pv_yield(void)
{
    return HYPERVISOR_sched_op(SCHEDOP_yield, 0);
}

long pv_shutdown(unsigned reason)
{
    struct sched_shutdown s = { reason };
    return HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
}

void pv_shutdown_loop(unsigned reason)
{
    for (;;) {
        pv_shutdown(reason);
        pv_yield();
    }
}

long pv_set_timer(uint64_t abs_ns)
{
    struct vcpu_set_singleshot_timer t = { abs_ns, 0 };
    return HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 0, &t);
}

long pv_send(evtchn_port_t port)
{
    struct evtchn_send s = { port };
    return pv_evtchn_op(EVTCHNOP_send, &s, sizeof(s));
}

/* A loopback channel: sending on *send makes *recv pending in this domain. */
long pv_loopback(evtchn_port_t *send, evtchn_port_t *recv)
{
    struct evtchn_alloc_unbound a = { DOMID_SELF, DOMID_SELF, 0 };
    long rc = pv_evtchn_op(EVTCHNOP_alloc_unbound, &a, sizeof(a));
    if (rc)
        return rc;
    struct evtchn_bind_interdomain b = { DOMID_SELF, a.port, 0 };
    rc = pv_evtchn_op(EVTCHNOP_bind_interdomain, &b, sizeof(b));
    *recv = a.port;
    *send = b.local_port;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Events: 2-level event channel ABI (xen.h, shared_info).  The upcall is
 * the HVM_PARAM_CALLBACK_IRQ vector, taken when RFLAGS.IF allows; no LAPIC
 * EOI (Xen's global callback vector bypasses the LAPIC). */

volatile uint32_t evt_count[MAX_TRACKED_PORTS];
volatile unsigned long upcalls;
volatile struct trap_frame last_upcall;

void evtchn_mask(evtchn_port_t p)
{
    __atomic_fetch_or(&HYPERVISOR_shared_info->evtchn_mask[p / 64], 1UL << (p % 64),
                      __ATOMIC_SEQ_CST);
}

void evtchn_clear_mask(evtchn_port_t p)
{
    __atomic_fetch_and(&HYPERVISOR_shared_info->evtchn_mask[p / 64], ~(1UL << (p % 64)),
                       __ATOMIC_SEQ_CST);
}

int evtchn_is_pending(evtchn_port_t p)
{
    volatile unsigned long *w = &HYPERVISOR_shared_info->evtchn_pending[p / 64];
    return (*w >> (p % 64)) & 1;
}

void evtchn_clear_pending(evtchn_port_t p)
{
    __atomic_fetch_and(&HYPERVISOR_shared_info->evtchn_pending[p / 64],
                       ~(1UL << (p % 64)), __ATOMIC_SEQ_CST);
}

static void evtchn_do_upcall(struct trap_frame *f)
{
    volatile struct vcpu_info *v = vcpu0();
    struct shared_info *s = HYPERVISOR_shared_info;

    upcalls++;
    last_upcall.rip = f->rip;
    last_upcall.cs = f->cs;
    last_upcall.ss = f->ss;
    last_upcall.rflags = f->rflags;
    last_upcall.rsp = f->rsp;
    if (!s)
        return;
    do {
        v->evtchn_upcall_pending = 0;
        unsigned long sel = __atomic_exchange_n(&vcpu0()->evtchn_pending_sel, 0,
                                                __ATOMIC_SEQ_CST);
        while (sel) {
            unsigned w = (unsigned)__builtin_ctzl(sel);
            sel &= sel - 1;
            for (;;) {
                unsigned long pend = ((volatile unsigned long *)s->evtchn_pending)[w] &
                                     ~((volatile unsigned long *)s->evtchn_mask)[w];
                if (!pend)
                    break;
                unsigned b = (unsigned)__builtin_ctzl(pend);
                __atomic_fetch_and(&s->evtchn_pending[w], ~(1UL << b), __ATOMIC_SEQ_CST);
                unsigned port = w * 64 + b;
                if (port < MAX_TRACKED_PORTS)
                    evt_count[port]++;
            }
        }
    } while (v->evtchn_upcall_pending);
}

/* ------------------------------------------------------------------ */
/* Time: pvclock of vcpu_info[0].time (xen.h, vcpu_time_info). */

uint64_t pv_time_now(void)
{
    volatile struct vcpu_time_info *t = &vcpu0()->time;
    uint32_t ver, mul;
    uint64_t tsc_ts, sys, tsc;
    int8_t shift;
    unsigned long tries = 0;
    do {
        if (++tries > 1000000)
            fatal("pvclock version stays odd (%u)", t->version);
        ver = t->version;
        barrier();
        tsc_ts = t->tsc_timestamp;
        sys = t->system_time;
        mul = t->tsc_to_system_mul;
        shift = t->tsc_shift;
        tsc = rdtsc();
        barrier();
    } while ((ver & 1) || ver != t->version);
    uint64_t delta = tsc - tsc_ts;
    if (shift < 0)
        delta >>= -shift;
    else
        delta <<= shift;
    return sys + (uint64_t)(((unsigned __int128)delta * mul) >> 32);
}

/* ------------------------------------------------------------------ */
/* Xenstore: one request/reply on the xenstore ring (io/xs_wire.h), found
 * through HVM_PARAM_STORE_PFN/EVTCHN. */

#define XS_WAIT_LIMIT 200000
static uint32_t xs_req_id;
static volatile struct xenstore_domain_interface *xs_ring;
static evtchn_port_t xs_port;

void pvh_xenstore_init(unsigned long pfn, evtchn_port_t port)
{
    xs_ring = phys_to_virt((uint64_t)pfn << PAGE_SHIFT);
    xs_port = port;
}

int xs_usable(void)
{
    return xs_ring != 0;
}

static int xs_wait(volatile uint32_t *a, volatile uint32_t *b, uint32_t need_space,
                   uint32_t need_data)
{
    for (int i = 0; i < XS_WAIT_LIMIT; i++) {
        uint32_t d = *a - *b;
        if (need_space ? d <= XENSTORE_RING_SIZE - need_space : d >= need_data)
            return 0;
        pv_yield();
    }
    return -1;
}

long xs_request(uint32_t type, const char *payload, uint32_t len,
                char *reply, uint32_t cap, uint32_t *rtype)
{
    volatile struct xenstore_domain_interface *x = xs_ring;
    if (!x)
        return -1;
    struct xsd_sockmsg h = { type, ++xs_req_id, 0, len };
    if (sizeof(h) + len > XENSTORE_RING_SIZE)
        return -1;
    if (xs_wait(&x->req_prod, &x->req_cons, sizeof(h) + len, 0))
        return -2;
    uint32_t prod = x->req_prod;
    for (uint32_t i = 0; i < sizeof(h); i++)
        x->req[prod++ & (XENSTORE_RING_SIZE - 1)] = ((const char *)&h)[i];
    for (uint32_t i = 0; i < len; i++)
        x->req[prod++ & (XENSTORE_RING_SIZE - 1)] = payload[i];
    barrier();
    x->req_prod = prod;
    pv_send(xs_port);

    for (;;) {
        struct xsd_sockmsg r;
        if (xs_wait(&x->rsp_prod, &x->rsp_cons, 0, sizeof(r)))
            return -3;
        uint32_t cons = x->rsp_cons;
        for (uint32_t i = 0; i < sizeof(r); i++)
            ((char *)&r)[i] = x->rsp[(cons + i) & (XENSTORE_RING_SIZE - 1)];
        if (r.len > XENSTORE_RING_SIZE - sizeof(r))
            return -4;
        if (xs_wait(&x->rsp_prod, &x->rsp_cons, 0, sizeof(r) + r.len))
            return -3;
        cons += sizeof(r);
        uint32_t n = r.len < cap - 1 ? r.len : cap - 1;
        for (uint32_t i = 0; i < r.len; i++) {
            char c = x->rsp[(cons + i) & (XENSTORE_RING_SIZE - 1)];
            if (i < n)
                reply[i] = c;
        }
        reply[n] = 0;
        barrier();
        x->rsp_cons = cons + r.len;
        pv_send(xs_port);
        if (r.req_id != h.req_id)
            continue;               /* a watch event or a stale reply */
        *rtype = r.type;
        return (long)r.len;
    }
}

/* ------------------------------------------------------------------ */
/* Traps: every IDT stub ends here (pvh_entry.S trap_common). */

volatile struct fault_log faults;

void trap_dispatch(struct trap_frame *f)
{
    if (f->vector == VEC_UPCALL) {
        evtchn_do_upcall(f);
        return;
    }
    unsigned long v = f->vector;
    faults.count[v & 31]++;
    faults.vector = v;
    faults.error = f->error;
    faults.rip = f->rip;
    faults.cs = f->cs;
    faults.ss = f->ss;
    faults.rflags = f->rflags;
    faults.cr2 = read_cr(2);
    switch (v) {
    case 3:                         /* int3 is a trap: rip is past it */
        return;
    case 6:
        if (faults.expect_ud) {
            faults.expect_ud = 0;
            f->rip += 2;            /* skip ud2 */
            return;
        }
        break;
    case 7:                         /* CR0.TS: clear it and retry */
        __asm__ __volatile__("clts" ::: "memory");
        return;
    case 13:
    case 14: {
        unsigned long fix = extable_fixup(f->rip);
        if (fix) {
            faults.fixups++;
            f->rip = fix;
            return;
        }
        break;
    }
    }
    fatal("unexpected %s %lu at rip 0x%lx (error 0x%lx, cr2 0x%lx)",
          v == VEC_SPURIOUS ? "interrupt (no handler) or trap" : "trap",
          v, f->rip, f->error, faults.cr2);
}
