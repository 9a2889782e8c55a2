/*
 * pvtest.h - shared declarations of the pvtest reference guest.
 *
 * Build variants (one source, -D flags):
 *   PVTEST_VERSION=1  "older kernel": hypercall page, set_callbacks,
 *                     sched_op_compat, event_channel_op_compat, set_timer_op,
 *                     IPI-style loopback event channel.
 *   PVTEST_VERSION=2  "newer kernel": direct syscall, callback_op, sched_op,
 *                     event_channel_op, VCPUOP_set_singleshot_timer,
 *                     alloc_unbound + bind_interdomain loopback.
 *   FAIL_CHECK=1      adds one check that fails on purpose.
 *   RULES=1           adds checks_rules.c: the rules Xen enforces on any
 *                     guest, checked the hostile way (user mode, int $n,
 *                     odd callbacks, an iret inside a multicall).
 *   POC=1             pvtest-v2-poc: instead of the checks, checks_poc.c tries
 *                     what six Xen security advisories were about and says
 *                     whether the hypervisor behaved as vulnerable or fixed.
 */
#ifndef PVTEST_H
#define PVTEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "xen_abi.h"

#ifndef PVTEST_VERSION
#error "build with -DPVTEST_VERSION=1 or 2"
#endif
#ifndef FAIL_CHECK
#define FAIL_CHECK 0
#endif
#ifndef RULES
#define RULES 0
#endif
#ifndef POC
#define POC 0
#endif

#define VIRT_BASE  0xffffffff80000000UL
#define PAGE_SIZE  4096UL
#define PAGE_SHIFT 12
#define __page_aligned __attribute__((aligned(4096)))
#define barrier() __asm__ __volatile__("" ::: "memory")

/* ---- lib.c ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
int vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap);
int snprintf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- hypercall mechanism: hypercall_page.S (v1) / hypercall_syscall.S (v2).
 * Each HYPERVISOR_x issues hypercall x with the C arguments as its
 * arguments 1..5 (RDI, RSI, RDX, R10, R8) and returns RAX. ---- */
long HYPERVISOR_set_trap_table(const struct trap_info *table);
long HYPERVISOR_mmu_update(struct mmu_update *req, unsigned count,
                           unsigned *done, unsigned dom);
long HYPERVISOR_set_gdt(unsigned long *frames, unsigned entries);
long HYPERVISOR_stack_switch(unsigned long ss, unsigned long sp);
long HYPERVISOR_set_callbacks(unsigned long event, unsigned long failsafe,
                              unsigned long syscall);
long HYPERVISOR_fpu_taskswitch(int set);
long HYPERVISOR_sched_op_compat(int cmd, unsigned long arg);
long HYPERVISOR_update_descriptor(uint64_t maddr, uint64_t desc);
long HYPERVISOR_memory_op(unsigned cmd, void *arg);
long HYPERVISOR_multicall(struct multicall_entry *calls, unsigned n);
long HYPERVISOR_update_va_mapping(unsigned long va, uint64_t pte,
                                  unsigned long flags);
long HYPERVISOR_set_timer_op(uint64_t timeout_abs_ns);
long HYPERVISOR_event_channel_op_compat(struct evtchn_op *op);
long HYPERVISOR_xen_version(int cmd, void *arg);
long HYPERVISOR_console_io(int cmd, int count, const char *buf);
long HYPERVISOR_vcpu_op(int cmd, unsigned vcpu, void *arg);
long HYPERVISOR_set_segment_base(int which, unsigned long base);
long HYPERVISOR_mmuext_op(struct mmuext_op *ops, unsigned count,
                          unsigned *done, unsigned dom);
long HYPERVISOR_sched_op(int cmd, void *arg);
long HYPERVISOR_callback_op(int cmd, void *arg);
long HYPERVISOR_event_channel_op(int cmd, void *arg);
/* Any hypercall number (used for the unknown-number check). */
long xen_hypercall_nr(unsigned long nr, unsigned long a1, unsigned long a2,
                      unsigned long a3, unsigned long a4, unsigned long a5);
extern const char hypercall_mechanism[];
#if PVTEST_VERSION == 1
extern unsigned char hypercall_page[];
#endif

/* ---- xen_entry.S: Xen PV entry points ---- */
void xen_trap_0(void), xen_trap_1(void), xen_trap_3(void), xen_trap_4(void),
    xen_trap_5(void), xen_trap_6(void), xen_trap_7(void), xen_trap_9(void),
    xen_trap_10(void), xen_trap_11(void), xen_trap_12(void), xen_trap_13(void),
    xen_trap_14(void), xen_trap_16(void), xen_trap_17(void), xen_trap_19(void);
void xen_event_callback(void);
void xen_failsafe_callback(void);
void xen_syscall_callback(void);
extern char _text[], _etext[], _end[];
extern char boot_stack_top[];

/* Register frame built by xen_entry.S around Xen's PV exception frame.
 * Xen pushes (low to high) rcx, r11, [error code], rip, cs, rflags, rsp,
 * ss; the stub pops rcx/r11 back, pads a missing error code with 0, and
 * pushes the vector and the general registers. */
#define VEC_EVENT 0x100
struct trap_frame {
    unsigned long r15, r14, r13, r12, r11, r10, r9, r8;
    unsigned long rbp, rdi, rsi, rdx, rcx, rbx, rax;
    unsigned long vector, error;
    unsigned long rip, cs, rflags, rsp, ss;
};
void trap_dispatch(struct trap_frame *f);

/* ---- port_xen.c: the Xen PV platform layer ---- */
extern struct start_info *xen_start_info;
extern struct shared_info *HYPERVISOR_shared_info;
extern unsigned long *p2m;                 /* start_info->mfn_list */
extern unsigned long boot_rsp;
extern uint64_t *current_l4;

void con_write(const char *s, size_t n);
void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void console_early_init(void);
int console_ring_init(void);
int console_io_usable(void);
long console_io_first_rc(void);
void con_flush_ring(void);
void __attribute__((noreturn)) pv_shutdown_loop(unsigned reason);

unsigned long pfn_to_mfn(unsigned long pfn);
unsigned long mfn_to_pfn(unsigned long mfn);
int m2p_readable(void);
unsigned long virt_to_mfn(const void *va);
uint64_t virt_to_maddr(const void *va);
void *mfn_to_virt(unsigned long mfn);
uint64_t *l4_table(void);
uint64_t *pte_slot(unsigned long va, int level, uint64_t *maddr);
uint64_t lookup_pte(unsigned long va);
long set_page_ro(void *va, int ro);

int read_u64_safe(const volatile void *p, uint64_t *out);
int write_u64_safe(volatile void *p, uint64_t v);

/* drift layer: same operation, the interface each kernel version uses */
long pv_evtchn_op(int cmd, void *arg, size_t size);
long pv_block(void);
long pv_yield(void);
long pv_shutdown(unsigned reason);
long pv_set_timer(uint64_t abs_ns);
long pv_register_callbacks(void);
long pv_loopback(evtchn_port_t *send, evtchn_port_t *recv);
long pv_send(evtchn_port_t port);

/* events */
#define MAX_TRACKED_PORTS 1024
extern volatile uint32_t evt_count[MAX_TRACKED_PORTS];
extern volatile unsigned long upcalls;
extern volatile struct trap_frame last_upcall;
/* The guest kernel's CR4 (a PV kernel's mov to/from %cr4 is emulated by Xen:
 * pv/emul-priv-op.c read_cr/write_cr). */
static inline unsigned long read_cr4(void)
{
    unsigned long v;
    __asm__ __volatile__("mov %%cr4, %0" : "=r"(v));
    return v;
}

static inline void write_cr4(unsigned long v)
{
    __asm__ __volatile__("mov %0, %%cr4" : : "r"(v) : "memory");
}

static inline struct vcpu_info *vcpu0(void)
{
    return &HYPERVISOR_shared_info->vcpu_info[0];
}
void evtchn_mask(evtchn_port_t p);
void evtchn_clear_mask(evtchn_port_t p);
int evtchn_is_pending(evtchn_port_t p);
void evtchn_clear_pending(evtchn_port_t p);

/* time */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
uint64_t pv_time_now(void);

/* faults recorded by trap_dispatch */
struct fault_log {
    unsigned long count[32];
    unsigned long vector, error, rip, cr2, cs, ss, rflags;
    int expect_ud;          /* skip a ud2 on #UD */
    int fixups;             /* #PF fixed through __ex_table */
};
extern volatile struct fault_log faults;

/* xenstore */
long xs_request(uint32_t type, const char *payload, uint32_t len,
                char *reply, uint32_t cap, uint32_t *rtype);

/* CPUID through the forced-emulation prefix: ud2; .ascii "xen"; cpuid */
static inline void xen_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ __volatile__("ud2a; .ascii \"xen\"; cpuid"
                         : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                         : "0"(leaf), "2"(sub));
}

/* ---- main.c: reporting ---- */
void section(const char *name);
int check(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int check_eq(const char *name, long got, long expected);
int check_eqx(const char *name, unsigned long got, unsigned long expected);
void check_skip(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* ---- checks_xen.c: the check families ---- */
void checks_boot(long trap_rc);
void checks_cpu(void);
void checks_mmu(void);
void checks_events(void);
void checks_time(void);
void checks_faults(void);
void checks_memory_version(void);
void checks_xenstore(void);
void checks_bad_calls(void);
long install_trap_table(void);
#if POC
/* ---- checks_poc.c: returns the number of steps that went wrong ---- */
unsigned checks_poc(long trap_rc);
/* poc_xsa12.c: vCPU 1 brought up with %dr7 = dr7; its get_debugreg(7) in *seen */
long poc_xsa12(unsigned long dr7, unsigned long *seen);
#endif
#if RULES
/* ---- checks_rules.c ---- */
#define VEC_SYSCALL 0x101           /* the syscall callback, through trap_common */
void checks_rules(void);
int rules_trap(struct trap_frame *f);   /* 1: handled */
/* checks_grants.c: grant tables v1/v2 (the domain's id; a pinned page-table frame) */
void rules_grants(unsigned long self_domid, unsigned long pinned_pt_mfn);
/* checks_pagetypes.c: page types and type counts of L1-L4 tables (run last) */
void rules_pagetypes(void);

/* checks_segdesc.c: descriptor pages (PGT_seg_desc_page) and CR3 loads (after pagetypes) */
void rules_segdesc(void);
void rules_cr3(void);

/* checks_pagerefs.c: general page references when memory is given back (after segdesc) */
void rules_pagerefs(void);
void xen_trap_32(void), xen_trap_33(void), xen_trap_34(void), xen_trap_128(void);
/* checks_privops.c: privileged instructions (a #GP it provoked: 1) */
void checks_privops(void);
int privops_trap(struct trap_frame *f);
/* checks_debugreg.c: #DB from breakpoints (a #DB it provoked: 1) */
void checks_debugreg(void);
int debugreg_trap(struct trap_frame *f);
/* checks_debugreg_hc.c: the set_debugreg/get_debugreg hypercalls' rules */
void checks_debugreg_hc(void);
/* checks_privio.c: string port I/O and the rest of the privileged operations */
void checks_privio(void);
int privio_trap(struct trap_frame *f);
unsigned long rules_user_entry(const char *sym, unsigned long rflags, unsigned long out[5]);
extern const char user_in80[], user_out80[], user_cli[];
/* user_rules.S */
void run_user(unsigned long rip, unsigned long rsp, unsigned long rflags);
void user_return(void);
long multicall_with_iret(struct multicall_entry *calls, unsigned n, unsigned long rax);
extern unsigned long user_saved_rsp;
extern const char user_blob[], user_blob_end[];
extern const char user_int20[], user_int21[], user_int22[], user_int80[],
    user_syscall[], user_syscall_df[];
/* checks_selectors.c, user_selectors.S: selectors, 32-bit user code */
void checks_selectors(void);
int selectors_trap(struct trap_frame *f);
unsigned long rules_user_run(const void *code, unsigned long n, unsigned long entry,
                             unsigned long cs, unsigned long ss, unsigned long rflags,
                             unsigned long out[10]);
void run_user_cs(unsigned long rip, unsigned long rsp, unsigned long rflags,
                 unsigned long cs, unsigned long ss);
/* checks_selectors2.c, user_selectors2.S: iret selectors and faults, data
 * segment loads, sysenter */
void checks_selectors2(void);
int selectors2_trap(struct trap_frame *f);
/* checks_ldt.c, user_ldt.S: the LDT (MMUEXT_SET_LDT, lazily mapped pages) */
void checks_ldt(void);
#endif

#endif
