/*
 * port_xen.c - the Xen x86-64 PV platform layer of pvtest: console (console_io
 * and the PV console ring), P2M/M2P and page-table helpers, event channel
 * upcalls, pvclock time, xenstore ring, trap dispatch, and the "drift layer"
 * that picks the interface each kernel version uses.
 */
#include "pvtest.h"

struct start_info *xen_start_info;
struct shared_info *HYPERVISOR_shared_info;
unsigned long *p2m;
unsigned long boot_rsp;

/* ------------------------------------------------------------------ */
/* Safe accesses: a fault on the marked instruction resumes at the fixup
 * (found in __ex_table by the #PF handler). */

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

static unsigned long extable_fixup(unsigned long rip)
{
    for (const struct extable_entry *e = __start_ex_table; e < __stop_ex_table; e++)
        if (e->insn == rip)
            return e->fixup;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Console: every line goes to CONSOLEIO_write and to the PV console ring
 * (io/console.h).  Output before the ring is mapped is kept and replayed. */

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

/* Map the console ring (a bootstrap element of the initial mapping) and
 * replay what was printed before.  Returns 0 or -1. */
int console_ring_init(void)
{
    void *va = mfn_to_virt(xen_start_info->console.domU.mfn);
    if (!va)
        return -1;
    cons_port = xen_start_info->console.domU.evtchn;
    cons_ring = va;
    ring_write(early_buf, early_len);
    return 0;
}

long console_io_first_rc(void)
{
    return cio_rc;
}

/* ------------------------------------------------------------------ */
/* Frames: P2M (start_info->mfn_list) and the read-only M2P table. */

unsigned long pfn_to_mfn(unsigned long pfn)
{
    if (pfn >= xen_start_info->nr_pages)
        return ~0UL;
    return p2m[pfn];
}

static int m2p_state;   /* 0 untried, 1 readable, -1 faulted */

unsigned long mfn_to_pfn(unsigned long mfn)
{
    if (m2p_state >= 0) {
        uint64_t pfn;
        const unsigned long *m2p = (const unsigned long *)MACH2PHYS_VIRT_START;
        if (read_u64_safe(&m2p[mfn], &pfn) == 0) {
            m2p_state = 1;
            if (pfn < xen_start_info->nr_pages && p2m[pfn] == mfn)
                return pfn;
        } else {
            m2p_state = -1;
        }
    }
    for (unsigned long i = 0; i < xen_start_info->nr_pages; i++)
        if (p2m[i] == mfn)
            return i;
    return ~0UL;
}

int m2p_readable(void)
{
    return m2p_state > 0;
}

unsigned long virt_to_mfn(const void *va)
{
    return pfn_to_mfn(((unsigned long)va - VIRT_BASE) >> PAGE_SHIFT);
}

uint64_t virt_to_maddr(const void *va)
{
    return ((uint64_t)virt_to_mfn(va) << PAGE_SHIFT) |
           ((unsigned long)va & (PAGE_SIZE - 1));
}

/* Only frames of the initial mapping (pfn -> VIRT_BASE + pfn * 4K). */
void *mfn_to_virt(unsigned long mfn)
{
    unsigned long pfn = mfn_to_pfn(mfn);
    if (pfn == ~0UL)
        return 0;
    return (void *)(VIRT_BASE + (pfn << PAGE_SHIFT));
}

uint64_t *current_l4;

uint64_t *l4_table(void)
{
    if (!current_l4)
        current_l4 = (uint64_t *)xen_start_info->pt_base;
    return current_l4;
}

/* Pointer to the entry for va at `level` (4 = L4 ... 1 = L1), and its
 * machine address; 0 if an upper level is not present. */
uint64_t *pte_slot(unsigned long va, int level, uint64_t *maddr)
{
    uint64_t *table = l4_table();
    unsigned long table_mfn = virt_to_mfn(table);
    for (int lvl = 4;; lvl--) {
        unsigned idx = (va >> (PAGE_SHIFT + 9 * (lvl - 1))) & 511;
        if (lvl == level) {
            if (maddr)
                *maddr = (table_mfn << PAGE_SHIFT) + idx * 8;
            return &table[idx];
        }
        uint64_t e = table[idx];
        if (!(e & _PAGE_PRESENT) || (lvl == 2 && (e & 0x80)))
            return 0;
        table_mfn = (e & PTE_MFN_MASK) >> PAGE_SHIFT;
        table = mfn_to_virt(table_mfn);
        if (!table)
            return 0;
    }
}

uint64_t lookup_pte(unsigned long va)
{
    uint64_t *p = pte_slot(va, 1, 0);
    return p ? *p : 0;
}

long set_page_ro(void *va, int ro)
{
    uint64_t pte = lookup_pte((unsigned long)va);
    if (!(pte & _PAGE_PRESENT))
        return -XEN_EINVAL;
    pte = ro ? (pte & ~_PAGE_RW) : (pte | _PAGE_RW);
    return HYPERVISOR_update_va_mapping((unsigned long)va, pte, UVMF_INVLPG | UVMF_LOCAL);
}

/* ------------------------------------------------------------------ */
/* Drift layer: the same operation through each version's interface. */

long pv_evtchn_op(int cmd, void *arg, size_t size)
{
#if PVTEST_VERSION == 1
    struct evtchn_op op;
    memset(&op, 0, sizeof(op));
    op.cmd = (uint32_t)cmd;
    memcpy(&op.u, arg, size);
    long rc = HYPERVISOR_event_channel_op_compat(&op);
    memcpy(arg, &op.u, size);
    return rc;
#else
    (void)size;
    return HYPERVISOR_event_channel_op(cmd, arg);
#endif
}

long pv_block(void)
{
#if PVTEST_VERSION == 1
    return HYPERVISOR_sched_op_compat(SCHEDOP_block, 0);
#else
    return HYPERVISOR_sched_op(SCHEDOP_block, 0);
#endif
}

long pv_yield(void)
{
#if PVTEST_VERSION == 1
    return HYPERVISOR_sched_op_compat(SCHEDOP_yield, 0);
#else
    return HYPERVISOR_sched_op(SCHEDOP_yield, 0);
#endif
}

long pv_shutdown(unsigned reason)
{
#if PVTEST_VERSION == 1
    return HYPERVISOR_sched_op_compat(SCHEDOP_shutdown, reason);
#else
    struct sched_shutdown s = { reason };
    return HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
#endif
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
#if PVTEST_VERSION == 1
    return HYPERVISOR_set_timer_op(abs_ns);
#else
    struct vcpu_set_singleshot_timer t = { abs_ns, 0 };
    return HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 0, &t);
#endif
}

long pv_register_callbacks(void)
{
#if PVTEST_VERSION == 1
    return HYPERVISOR_set_callbacks((unsigned long)xen_event_callback,
                                    (unsigned long)xen_failsafe_callback,
                                    (unsigned long)xen_syscall_callback);
#else
    static const struct { uint16_t type; void (*fn)(void); } cb[] = {
        { CALLBACKTYPE_event, xen_event_callback },
        { CALLBACKTYPE_failsafe, xen_failsafe_callback },
        { CALLBACKTYPE_syscall, xen_syscall_callback },
    };
    for (unsigned i = 0; i < 3; i++) {
        struct callback_register r = { cb[i].type, CALLBACKF_mask_events,
                                       (unsigned long)cb[i].fn };
        long rc = HYPERVISOR_callback_op(CALLBACKOP_register, &r);
        if (rc)
            return rc;
    }
    return 0;
#endif
}

long pv_send(evtchn_port_t port)
{
    struct evtchn_send s = { port };
    return pv_evtchn_op(EVTCHNOP_send, &s, sizeof(s));
}

/* A loopback channel: sending on *send makes *recv pending in this domain. */
long pv_loopback(evtchn_port_t *send, evtchn_port_t *recv)
{
#if PVTEST_VERSION == 1
    struct evtchn_bind_ipi b = { 0, 0 };
    long rc = pv_evtchn_op(EVTCHNOP_bind_ipi, &b, sizeof(b));
    *send = *recv = b.port;
    return rc;
#else
    struct evtchn_alloc_unbound a = { DOMID_SELF, DOMID_SELF, 0 };
    long rc = pv_evtchn_op(EVTCHNOP_alloc_unbound, &a, sizeof(a));
    if (rc)
        return rc;
    struct evtchn_bind_interdomain b = { DOMID_SELF, a.port, 0 };
    rc = pv_evtchn_op(EVTCHNOP_bind_interdomain, &b, sizeof(b));
    *recv = a.port;
    *send = b.local_port;
    return rc;
#endif
}

/* ------------------------------------------------------------------ */
/* Events: 2-level event channel ABI (xen.h, shared_info). */

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
/* Xenstore: one request/reply on the xenstore ring (io/xs_wire.h). */

#define XS_WAIT_LIMIT 200000
static uint32_t xs_req_id;

static int xs_wait(volatile uint32_t *a, volatile uint32_t *b, uint32_t need_space,
                   uint32_t need_data)
{
    /* need_space: wait until a - b <= RING - need_space (producer side);
     * need_data: wait until a - b >= need_data (consumer side). */
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
    volatile struct xenstore_domain_interface *x =
        mfn_to_virt(xen_start_info->store_mfn);
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
    pv_send(xen_start_info->store_evtchn);

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
        pv_send(xen_start_info->store_evtchn);
        if (r.req_id != h.req_id)
            continue;               /* a watch event or a stale reply */
        *rtype = r.type;
        return (long)r.len;
    }
}

/* ------------------------------------------------------------------ */
/* Traps */

volatile struct fault_log faults;

void trap_dispatch(struct trap_frame *f)
{
#if RULES
    if (rules_trap(f))
        return;
#endif
    if (f->vector == VEC_EVENT) {
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
    faults.cr2 = HYPERVISOR_shared_info ? vcpu0()->cr2 : 0;
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
    case 7:                         /* lazy FPU: clear CR0.TS and retry */
        HYPERVISOR_fpu_taskswitch(0);
        return;
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
    fatal("unexpected trap %lu at rip 0x%lx (error 0x%lx, cr2 0x%lx)",
          v, f->rip, f->error, faults.cr2);
}

void failsafe_dispatch(unsigned long *frame);
void failsafe_dispatch(unsigned long *frame)
{
    fatal("failsafe callback: rip 0x%lx cs 0x%lx", frame[6], frame[7]);
}

void syscall_dispatch(unsigned long *frame);
void syscall_dispatch(unsigned long *frame)
{
    fatal("unexpected syscall callback: rip 0x%lx", frame[0]);
}
