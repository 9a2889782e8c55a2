/*
 * checks_debugreg.c - #DB from the guest's breakpoints as Xen 4.17 raises it
 * for a 64-bit PV kernel (pvtest-v2-rules, RULES=1; docs/xen-rules.md "Debug
 * registers").  Each check names the xen.git file (stable-4.17) its expected
 * answer comes from.  The #DB these checks provoke is caught by debugreg_trap
 * (called from rules_trap), which notes it and returns.
 */
#include "pvtest.h"

#define HC_set_debugreg_nr 8
#define HC_get_debugreg_nr 9
#define HC_physdev_op_nr   33
#define PHYSDEVOP_set_iopl 6
#define CR4_DE             (1UL << 3)
#define RFLAGS_RF          (1UL << 16)
#define RFLAGS_TF          (1UL << 8)
#define DR6_BS             (1UL << 14)      /* DR_STEP */
#define DR6_DEFAULT        0xffff0ff0UL     /* X86_DR6_DEFAULT, DR_STATUS_RESERVED_ONE */
#define DR7_DEFAULT        0x400UL          /* X86_DR7_DEFAULT */
/* %dr7 for breakpoint i: L<i>, R/W (00 insn, 01 write, 11 access, 10 I/O), LEN
 * (00 1 byte, 01 2, 11 4, 10 8): xen/arch/x86/include/asm/debugreg.h */
#define DR7_L(i)           (1UL << (2 * (i)))
#define DR7_RW(i, rw)      ((unsigned long)(rw) << (16 + 4 * (i)))
#define DR7_LEN(i, len)    ((unsigned long)(len) << (18 + 4 * (i)))
#define RW_INSN 0
#define RW_WRITE 1
#define RW_IO 2
#define RW_ACCESS 3
#define LEN_1 0
#define LEN_2 1
#define LEN_8 2
#define LEN_4 3

/* One hypercall through a one-entry multicall (no stub of its own needed). */
static long hc(unsigned long op, unsigned long a0, unsigned long a1)
{
    struct multicall_entry mc = { op, 0, { a0, a1, 0, 0, 0, 0 } };
    long rc = HYPERVISOR_multicall(&mc, 1);
    return rc ? rc : (long)mc.result;
}

static long set_dr(unsigned reg, unsigned long v)
{
    return hc(HC_set_debugreg_nr, reg, v);
}

static unsigned long get_dr(unsigned reg)
{
    return (unsigned long)hc(HC_get_debugreg_nr, reg, 0);
}

static long set_iopl(uint32_t iopl)
{
    uint32_t arg = iopl;
    return hc(HC_physdev_op_nr, PHYSDEVOP_set_iopl, (unsigned long)&arg);
}

/* What the last #DB looked like, and whether to return with RFLAGS.RF set,
 * with the breakpoints disarmed, or with RFLAGS.TF cleared (single-stepping
 * stops). */
volatile unsigned long db_n, db_rip, db_rflags, db_dr6, db_set_rf, db_disarm, db_rcx,
    db_clear_tf;

/* The mov %drN whose #GP or #UD is expected, where to resume, what arrived. */
volatile unsigned long dr_fault_rip, dr_fault_fix, dr_fault_vec, dr_fault_err;

int debugreg_trap(struct trap_frame *f)
{
    if ((f->vector == 13 || f->vector == 6) && dr_fault_rip && f->rip == dr_fault_rip) {
        dr_fault_vec = f->vector;
        dr_fault_err = f->error;
        f->rip = dr_fault_fix;
        dr_fault_rip = 0;
        return 1;
    }
    if (f->vector != 1)
        return 0;
    db_n++;
    db_rip = f->rip;
    db_rflags = f->rflags;
    db_rcx = f->rcx;
    db_dr6 = get_dr(6);
    if (db_set_rf)
        f->rflags |= RFLAGS_RF;
    if (db_disarm)
        set_dr(7, DR7_DEFAULT);
    if (db_clear_tf)
        f->rflags &= ~RFLAGS_TF;
    return 1;
}

/* Run insn with %rax = *rax, %rdx = 0x80: *at = its address, *after = the
 * next one's; returns %rax afterwards. */
#define DB_FN(name, insn)                                                       \
    static unsigned long name(unsigned long rax, unsigned long *at,             \
                              unsigned long *after)                             \
    {                                                                           \
        unsigned long a = rax, p1, p2;                                          \
        __asm__ __volatile__("lea 1f(%%rip), %0\n\t"                            \
                             "lea 2f(%%rip), %1\n"                              \
                             "1: " insn "\n"                                    \
                             "2:\n"                                             \
                             : "=&r"(p1), "=&r"(p2), "+a"(a) : "d"(0x80UL)     \
                             : "memory");                                       \
        *at = p1;                                                               \
        *after = p2;                                                            \
        return a;                                                               \
    }
DB_FN(db_out80, "out %%al, %%dx")
DB_FN(db_in80, "in $0x80, %%al")
DB_FN(db_in81, "in $0x81, %%al")
DB_FN(db_in71, "in $0x71, %%al")
DB_FN(db_inw7e, "in $0x7e, %%ax")

/* I/O breakpoints (%dr7 R/W = 10b): Xen matches each emulated IN/OUT against
 * the ones enabled in dr7_emul (check_guest_io_breakpoint, width from LEN,
 * address aligned down) and after the instruction sets their B0-B3 in %dr6
 * with DR_STATUS_RESERVED_ONE and injects #DB: a trap, RIP after the
 * instruction (pv_emulate_privileged_op; pv/emul-priv-op.c). */
static void debugreg_io(void)
{
    unsigned long at, after, n0, v;
    unsigned long cr4 = read_cr4();
    long rc;

    set_iopl(1);
    write_cr4(cr4 | CR4_DE);
    set_dr(6, 0);
    set_dr(0, 0x80);
    rc = set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO) | DR7_LEN(0, LEN_1));
    check(rc == 0 && get_dr(7) == (DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO)),
          "set_debugreg(7) with an I/O breakpoint on port 0x80 (CR4.DE set) -> 0, read back",
          "rc %ld dr7 0x%lx", rc, get_dr(7));
    n0 = db_n;
    db_out80(0x5a, &at, &after);
    check(db_n == n0 + 1 && db_rip == after,
          "out to port 0x80 with an I/O breakpoint there -> #DB after the instruction "
          "(pv_emulate_privileged_op)", "#DB %lu, rip 0x%lx (out at 0x%lx, next 0x%lx)",
          db_n - n0, db_rip, at, after);
    check_eqx("... %dr6 = B0 | DR_STATUS_RESERVED_ONE", db_dr6, DR6_DEFAULT | 1);
    set_dr(6, 0);
    n0 = db_n;
    v = db_in80(0x1234, &at, &after);
    check(db_n == n0 + 1 && db_rip == after && v == 0x12ff,
          "in from port 0x80 -> #DB after the instruction, %al already loaded "
          "(a domU reads all ones: guest_io_read)", "#DB %lu, rip 0x%lx (next 0x%lx), rax 0x%lx",
          db_n - n0, db_rip, after, v);
    n0 = db_n;
    db_in81(0, &at, &after);
    check_eq("in from port 0x81 (outside the 1-byte breakpoint) -> no #DB",
             (long)(db_n - n0), 0);

    /* breakpoint 1: address 0x72 with LEN 4 covers 0x70-0x73 (aligned down) */
    set_dr(1, 0x72);
    set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO) | DR7_L(1) | DR7_RW(1, RW_IO) |
           DR7_LEN(1, LEN_4));
    set_dr(6, 0);
    n0 = db_n;
    db_in71(0, &at, &after);
    check(db_n == n0 + 1 && db_dr6 == (DR6_DEFAULT | 2),
          "in from port 0x71, breakpoint 1 at 0x72 with LEN 4 (0x70-0x73 aligned down) -> "
          "#DB, %dr6 B1 (check_guest_io_breakpoint)", "#DB %lu, dr6 0x%lx", db_n - n0, db_dr6);
    n0 = db_n;
    db_inw7e(0, &at, &after);
    check_eq("in %ax from port 0x7e (0x7e-0x7f, beside both) -> no #DB",
             (long)(db_n - n0), 0);
    n0 = db_n;
    db_out80(0, &at, &after);
    check(db_n == n0 + 1 && db_dr6 == (DR6_DEFAULT | 3),
          "a second hit ORs into %dr6 (B0 added to B1: dr6 |= bpmatch)", "#DB %lu, dr6 0x%lx",
          db_n - n0, db_dr6);

    /* no CR4.DE: check_guest_io_breakpoint returns 0 */
    write_cr4(cr4 & ~CR4_DE);
    n0 = db_n;
    db_out80(0, &at, &after);
    check_eq("out to port 0x80 with CR4.DE cleared -> no #DB (check_guest_io_breakpoint)",
             (long)(db_n - n0), 0);
    write_cr4(cr4 | CR4_DE);
    /* disabled: R/W = 10b without the enable bit */
    set_dr(7, DR7_DEFAULT | DR7_RW(0, RW_IO));
    n0 = db_n;
    db_out80(0, &at, &after);
    check_eq("out to port 0x80 with the I/O breakpoint not enabled -> no #DB",
             (long)(db_n - n0), 0);

    set_dr(7, DR7_DEFAULT);
    set_dr(6, 0);
    set_dr(0, 0);
    set_dr(1, 0);
    write_cr4(cr4);
    set_iopl(0);
}

/* db_insn_fn(x) = x + 1, its add at db_insn_target (an instruction breakpoint's
 * address). */
__asm__(".text\n"
        "db_insn_fn:\n\t"
        "mov %rdi, %rax\n"
        "db_insn_target:\n\t"
        "add $1, %rax\n\t"
        "ret\n");
unsigned long db_insn_fn(unsigned long x);
extern const char db_insn_target[];

/* Instruction breakpoints (%dr7 R/W = 00b): Xen loads %dr0-3 and %dr7 into
 * the hardware while %dr7 enables one (activate_debugregs, traps.c); the #DB
 * is a fault, RIP at the instruction, which do_debug passes on with the
 * hardware's %dr6 merged into the vCPU's (traps.c). RFLAGS.RF set in the
 * frame lets the instruction run once (Intel SDM vol. 3, 18.3.1.1). */
static void debugreg_insn(void)
{
    unsigned long n0, v, target = (unsigned long)db_insn_target;
    long rc;

    set_dr(6, 0);
    set_dr(0, target);
    rc = set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_INSN) | DR7_LEN(0, LEN_1));
    check_eq("set_debugreg(7) enabling an instruction breakpoint -> 0", rc, 0);
    db_set_rf = 1;
    n0 = db_n;
    v = db_insn_fn(41);
    check(db_n == n0 + 1 && db_rip == target,
          "an instruction breakpoint -> #DB at the instruction, before it runs (a fault: "
          "do_debug, traps.c)", "#DB %lu, rip 0x%lx (breakpoint 0x%lx)", db_n - n0, db_rip,
          target);
    check_eqx("... %dr6 = B0 | the reserved ones (do_debug merges the hardware's)",
              db_dr6, DR6_DEFAULT | 1);
    check_eq("... RFLAGS.RF set in the frame: the instruction then runs once", (long)v, 42);
    n0 = db_n;
    db_insn_fn(0);
    check_eq("RF lasts one instruction: the next execution hits again", (long)(db_n - n0), 1);
    set_dr(7, DR7_DEFAULT | DR7_RW(0, RW_INSN));
    n0 = db_n;
    db_insn_fn(0);
    check_eq("the same breakpoint with its enable bit clear -> no #DB", (long)(db_n - n0), 0);
    set_dr(7, DR7_DEFAULT | (DR7_L(0) << 1));
    n0 = db_n;
    db_insn_fn(0);
    check_eq("enabled by G0 instead of L0 -> #DB (either enables it)", (long)(db_n - n0), 1);
    set_dr(7, DR7_DEFAULT);
    n0 = db_n;
    db_insn_fn(0);
    check_eq("set_debugreg(7, 0x400) removes it -> no #DB", (long)(db_n - n0), 0);
    db_set_rf = 0;
    set_dr(0, 0);
    set_dr(6, 0);
}

/* Run one access (insn, the variable's address in %rcx, %rax = v): *after =
 * the next instruction's address; returns %rax afterwards. */
#define DB_MEM_FN(name, insn)                                                   \
    static unsigned long name(volatile void *p, unsigned long v,                \
                              unsigned long *after)                             \
    {                                                                           \
        unsigned long a = v, p2;                                                \
        __asm__ __volatile__("lea 2f(%%rip), %0\n"                              \
                             insn "\n"                                          \
                             "2:\n"                                             \
                             : "=&r"(p2), "+a"(a) : "c"(p) : "memory");         \
        *after = p2;                                                            \
        return a;                                                               \
    }
DB_MEM_FN(db_store8, "mov %%rax, (%%rcx)")
DB_MEM_FN(db_store1, "mov %%al, (%%rcx)")
DB_MEM_FN(db_load4, "mov (%%rcx), %%eax")

static volatile uint64_t db_var[4] __attribute__((aligned(32)));

/* Data breakpoints (%dr7 R/W = 01b writes, 11b reads and writes): traps, RIP
 * after the access, which has happened (Intel SDM vol. 3, 18.2.4-18.2.5: a
 * LEN-wide range from the address with its low bits ignored); do_debug passes
 * the #DB on with the matching B bits (traps.c). An access Xen makes itself
 * for a hypercall takes #DB in Xen context, which do_debug logs and drops. */
static void debugreg_data(void)
{
    unsigned long n0, after, v;
    volatile uint64_t *p = db_var;
    long rc;

    set_dr(6, 0);
    set_dr(0, (unsigned long)&p[1]);
    rc = set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_WRITE) | DR7_LEN(0, LEN_8));
    check_eq("set_debugreg(7) enabling an 8-byte write breakpoint -> 0", rc, 0);
    n0 = db_n;
    db_store8(&p[1], 0x1122, &after);
    check(db_n == n0 + 1 && db_rip == after && p[1] == 0x1122,
          "a store to a write breakpoint -> #DB after it, the store done (a trap: do_debug, "
          "traps.c)", "#DB %lu rip 0x%lx (next 0x%lx) value 0x%lx", db_n - n0, db_rip, after,
          (unsigned long)p[1]);
    check_eqx("... %dr6 = B0 | the reserved ones", db_dr6, DR6_DEFAULT | 1);
    n0 = db_n;
    v = db_load4(&p[1], 0, &after);
    check(db_n == n0 && v == 0x1122, "a load under a write-only breakpoint -> no #DB",
          "#DB %lu", db_n - n0);
    n0 = db_n;
    db_store8(&p[2], 0, &after);
    db_store8(&p[0], 0, &after);
    check_eq("stores beside the 8 bytes watched -> no #DB", (long)(db_n - n0), 0);

    /* breakpoint 1: reads and writes, 4 bytes at &p[2] + 2: low bits ignored */
    set_dr(6, 0);
    set_dr(7, DR7_DEFAULT);
    set_dr(1, (unsigned long)&p[2] + 2);
    set_dr(7, DR7_DEFAULT | DR7_L(1) | DR7_RW(1, RW_ACCESS) | DR7_LEN(1, LEN_4));
    n0 = db_n;
    db_load4(&p[2], 0, &after);
    check(db_n == n0 + 1 && db_rip == after && db_dr6 == (DR6_DEFAULT | 2),
          "a load under a 4-byte read/write breakpoint whose address has its low bits set "
          "(they are ignored) -> #DB after it, %dr6 B1", "#DB %lu rip 0x%lx dr6 0x%lx",
          db_n - n0, db_rip, db_dr6);
    n0 = db_n;
    db_store1((volatile uint8_t *)&p[2] + 4, 0, &after);
    check_eq("a 1-byte store just past that range -> no #DB", (long)(db_n - n0), 0);

    /* Xen context: a hypercall writing the watched word (the multicall's
     * result) raises no #DB in the guest. */
    {
        static struct multicall_entry mc __attribute__((aligned(32)));
        mc.op = HC_get_debugreg_nr;
        mc.args[0] = 7;
        set_dr(7, DR7_DEFAULT);
        set_dr(2, (unsigned long)&mc.result);
        set_dr(7, DR7_DEFAULT | DR7_L(2) | DR7_RW(2, RW_WRITE) | DR7_LEN(2, LEN_8));
        n0 = db_n;
        rc = HYPERVISOR_multicall(&mc, 1);
        check(rc == 0 && db_n == n0 && mc.result == (DR7_DEFAULT | DR7_L(2) |
                                                     DR7_RW(2, RW_WRITE) | DR7_LEN(2, LEN_8)),
              "a hypercall writing a word under a write breakpoint (a multicall's result) -> "
              "no #DB (do_debug drops a #DB in Xen context)", "rc %ld #DB %lu result 0x%lx",
              rc, db_n - n0, (unsigned long)mc.result);
        n0 = db_n;
        *(volatile unsigned long *)&mc.result = 0;
        check_eq("... and the guest's own store there -> #DB", (long)(db_n - n0), 1);
    }
    set_dr(7, DR7_DEFAULT);
    set_dr(0, 0);
    set_dr(1, 0);
    set_dr(2, 0);
    set_dr(6, 0);
}

/* mov to/from %drN with %rax: the vector it raised (0 if none); *rax updated. */
#define KDR_FN(name, insn)                                                      \
    static unsigned long name(unsigned long *rax)                               \
    {                                                                           \
        unsigned long a = *rax;                                                 \
        dr_fault_vec = 0;                                                       \
        dr_fault_err = ~0UL;                                                    \
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, dr_fault_rip(%%rip)\n\t"              \
                             "lea 2f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, dr_fault_fix(%%rip)\n"                 \
                             "1: " insn "\n"                                    \
                             "2:\n\t"                                           \
                             "movq $0, dr_fault_rip(%%rip)\n"                  \
                             : "+a"(a) : : "r11", "memory");                    \
        *rax = a;                                                               \
        return dr_fault_vec;                                                    \
    }
KDR_FN(k_write_dr0, "mov %%rax, %%dr0")
KDR_FN(k_write_dr4, "mov %%rax, %%dr4")
KDR_FN(k_write_dr6, "mov %%rax, %%dr6")
KDR_FN(k_write_dr7, "mov %%rax, %%dr7")
KDR_FN(k_read_dr0, "mov %%dr0, %%rax")
KDR_FN(k_read_dr4, "mov %%dr4, %%rax")
KDR_FN(k_read_dr5, "mov %%dr5, %%rax")
KDR_FN(k_read_dr7, "mov %%dr7, %%rax")

/* mov to/from %drN by the kernel: Xen emulates it for its ring-3 kernel
 * (x86emul_write_dr: set_debugreg, -ENODEV -> #UD, any other error -> #GP(0);
 * x86emul_read_dr: #UD for %dr4/%dr5 with CR4.DE; x86_emulate.c). */
static void debugreg_mov(void)
{
    unsigned long v, vec, n0, cr4 = read_cr4();
    unsigned long dr7 = DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_INSN);

    v = (unsigned long)db_insn_target;
    vec = k_write_dr0(&v);
    check(vec == 0 && get_dr(0) == (unsigned long)db_insn_target,
          "mov to %dr0 from the kernel -> set_debugreg, no fault (x86emul_write_dr)",
          "vector %lu dr0 0x%lx", vec, get_dr(0));
    v = dr7 | (1UL << 11);          /* a reserved-zero bit: forced to 0 */
    vec = k_write_dr7(&v);
    check(vec == 0 && get_dr(7) == dr7, "mov to %dr7 -> set_debugreg's forced bits "
          "(DR_CONTROL_RESERVED_ZERO)", "vector %lu dr7 0x%lx", vec, get_dr(7));
    db_set_rf = 1;
    n0 = db_n;
    db_insn_fn(0);
    check_eq("... and the breakpoint it enabled fires (activate_debugregs)",
             (long)(db_n - n0), 1);
    db_set_rf = 0;
    v = 0;
    vec = k_read_dr7(&v);
    check(vec == 0 && v == dr7, "mov from %dr7 -> its value (x86emul_read_dr)",
          "vector %lu value 0x%lx", vec, v);
    v = 0;
    k_read_dr0(&v);
    check_eqx("mov from %dr0 -> its value", v, (unsigned long)db_insn_target);
    v = 0xffff800000000000UL;
    vec = k_write_dr0(&v);
    check(vec == 13 && dr_fault_err == 0 && get_dr(0) == (unsigned long)db_insn_target,
          "mov to %dr0 of an address in Xen's range -> #GP(0) (set_debugreg -EPERM), "
          "unchanged", "vector %lu error 0x%lx", vec, dr_fault_err);
    v = dr7 | (1UL << 13);
    vec = k_write_dr7(&v);
    check(vec == 13 && dr_fault_err == 0, "mov to %dr7 with GD -> #GP(0) (-EPERM)",
          "vector %lu", vec);
    v = 1UL << 32;
    vec = k_write_dr6(&v);
    check(vec == 13, "mov to %dr6 of a value above 32 bits -> #GP(0) (-EINVAL)",
          "vector %lu", vec);
    write_cr4(cr4 & ~CR4_DE);
    v = 0;
    vec = k_read_dr4(&v);
    check(vec == 0 && v == get_dr(6), "mov from %dr4 with CR4.DE clear -> %dr6 "
          "(x86emul_read_dr: the alias)", "vector %lu value 0x%lx", vec, v);
    write_cr4(cr4 | CR4_DE);
    v = 0;
    vec = k_write_dr4(&v);
    check_eq("mov to %dr4 with CR4.DE set -> #UD (set_debugreg -ENODEV)", (long)vec, 6);
    vec = k_read_dr5(&v);
    check_eq("mov from %dr5 with CR4.DE set -> #UD (x86emul_read_dr)", (long)vec, 6);
    write_cr4(cr4);
    set_dr(7, DR7_DEFAULT);
    set_dr(0, 0);
    set_dr(6, 0);
}

/* Run a string I/O instruction on port 0x80 with %rcx = count and %rsi/%rdi =
 * buf, RFLAGS.TF set first when tf: *at = its address; returns %rcx after. */
#define SIO_FN(name, insn)                                                      \
    static unsigned long name(unsigned long count, void *buf, int tf,           \
                              unsigned long *at)                                \
    {                                                                           \
        unsigned long c = count, p;                                             \
        void *b = buf;                                                          \
        __asm__ __volatile__("lea 1f(%%rip), %0\n\t"                            \
                             "test %4, %4\n\t"                                  \
                             "jz 2f\n\t"                                         \
                             "pushfq\n\t"                                       \
                             "orq $0x100, (%%rsp)\n\t"                          \
                             "popfq\n"                                           \
                             "2:\n"                                              \
                             "1: " insn "\n"                                     \
                             : "=&r"(p), "+c"(c), "+S"(b), "+D"(b)              \
                             : "r"((unsigned long)tf), "d"(0x80UL)              \
                             : "memory", "cc");                                 \
        *at = p;                                                                \
        return c;                                                               \
    }
SIO_FN(sio_rep_outsb, "rep outsb")
SIO_FN(sio_rep_insb, "rep insb")
SIO_FN(sio_insb, "insb")

/* INS/OUTS are emulated by Xen (a PV kernel runs in ring 3), so their #DB
 * comes from the emulator: rep_ins/rep_outs match the I/O breakpoints once
 * (check_guest_io_breakpoint) and stop after the element that matched;
 * get_rep_prefix moves one element while RFLAGS.TF is set and x86_emulate
 * then single-steps (retire.singlestep, DR_STEP); after an emulation that
 * completed, dr6 |= bpmatch | DR_STATUS_RESERVED_ONE and #DB, a trap whose
 * RIP is where the emulation left it: the instruction itself while a REP has
 * elements left (pv/emul-priv-op.c, x86_emulate/x86_emulate.c). */
static void debugreg_string_io(void)
{
    static unsigned char buf[8] = "abc";
    unsigned long at, n0, left;
    unsigned long cr4 = read_cr4();

    set_iopl(1);
    write_cr4(cr4 | CR4_DE);
    set_dr(6, 0);
    set_dr(0, 0x80);
    set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO) | DR7_LEN(0, LEN_1));
    n0 = db_n;
    db_disarm = 1;
    left = sio_rep_outsb(3, buf, 0, &at);
    db_disarm = 0;
    check(db_n == n0 + 1 && db_rip == at && db_rcx == 2 && left == 0,
          "rep outsb of 3 to port 0x80 with an I/O breakpoint there -> #DB after its first "
          "element, RIP at the instruction, %rcx 2 (rep_outs: bpmatch ends the loop)",
          "#DB %lu, rip 0x%lx (insn 0x%lx), rcx at #DB %lu, after %lu", db_n - n0, db_rip,
          at, db_rcx, left);
    check_eqx("... %dr6 = B0 | DR_STATUS_RESERVED_ONE", db_dr6, DR6_DEFAULT | 1);
    set_dr(7, DR7_DEFAULT);
    set_dr(6, 0);

    n0 = db_n;
    db_clear_tf = 1;
    sio_insb(1, buf, 1, &at);
    db_clear_tf = 0;
    check(db_n == n0 + 1 && db_rip == at + 1 && (db_dr6 & DR6_BS) && buf[0] == 0xff,
          "insb with RFLAGS.TF set -> the element read (all ones), then #DB after it with "
          "%dr6 BS (x86_emulate's singlestep)",
          "#DB %lu, rip 0x%lx (insn 0x%lx), dr6 0x%lx, byte 0x%x", db_n - n0, db_rip, at,
          db_dr6, buf[0]);
    set_dr(6, 0);
    n0 = db_n;
    db_clear_tf = 1;
    left = sio_rep_insb(3, buf, 1, &at);
    db_clear_tf = 0;
    check(db_n == n0 + 1 && db_rip == at && db_rcx == 2 && left == 0 &&
              db_dr6 == (DR6_DEFAULT | DR6_BS),
          "rep insb of 3 with RFLAGS.TF set -> one element, then #DB with RIP at the "
          "instruction and %dr6 BS (get_rep_prefix: max_reps 1)",
          "#DB %lu, rip 0x%lx (insn 0x%lx), rcx at #DB %lu, after %lu, dr6 0x%lx",
          db_n - n0, db_rip, at, db_rcx, left, db_dr6);
    set_dr(6, 0);
    set_dr(0, 0);
    write_cr4(cr4);
    set_iopl(0);
}

void checks_debugreg(void)
{
    section("debug registers (#DB: pv/emul-priv-op.c, traps.c do_debug)");
    debugreg_io();
    debugreg_string_io();
    debugreg_insn();
    debugreg_data();
    debugreg_mov();
}
