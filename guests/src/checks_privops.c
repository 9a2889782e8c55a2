/*
 * checks_privops.c - privileged instructions of the guest kernel as Xen 4.17
 * emulates them for a 64-bit PV kernel that does not run in ring 0
 * (pvtest-v2-rules, RULES=1; docs/xen-rules.md "Privileged operations").
 * Each check names the xen.git file (stable-4.17) its expected answer comes
 * from.  A #GP these checks provoke is caught by privops_trap (called from
 * rules_trap) and resumes after the instruction.
 */
#include "pvtest.h"

#define MSR_FS_BASE        0xc0000100U
#define MSR_GS_BASE        0xc0000101U
#define MSR_SHADOW_GS_BASE 0xc0000102U
#define NONCANON           0x0000800000000000UL
#define CANON_TEST         0x00007f0000001000UL

/* The instruction whose #GP (or #SS) is expected, where to resume, what arrived. */
volatile unsigned long privops_gp_rip, privops_gp_fix, privops_gp_err, privops_gp_n,
    privops_gp_vec;

int privops_trap(struct trap_frame *f)
{
    if ((f->vector != 13 && f->vector != 12) || !privops_gp_rip || f->rip != privops_gp_rip)
        return 0;
    privops_gp_err = f->error;
    privops_gp_vec = f->vector;
    privops_gp_n++;
    f->rip = privops_gp_fix;
    privops_gp_rip = 0;
    return 1;
}

/* wrmsr / rdmsr that report a #GP (1) instead of dying of it. */
static int wrmsr_gp(uint32_t msr, uint64_t val)
{
    unsigned long n0 = privops_gp_n;
    __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                         "mov %%r11, privops_gp_rip(%%rip)\n\t"
                         "lea 2f(%%rip), %%r11\n\t"
                         "mov %%r11, privops_gp_fix(%%rip)\n"
                         "1: wrmsr\n"
                         "2:\n\t"
                         "movq $0, privops_gp_rip(%%rip)\n"
                         : : "c"(msr), "a"((uint32_t)val), "d"((uint32_t)(val >> 32))
                         : "r11", "memory");
    return privops_gp_n != n0;
}

static int rdmsr_gp(uint32_t msr, uint64_t *out)
{
    unsigned long n0 = privops_gp_n;
    uint32_t lo = 0, hi = 0;
    __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                         "mov %%r11, privops_gp_rip(%%rip)\n\t"
                         "lea 2f(%%rip), %%r11\n\t"
                         "mov %%r11, privops_gp_fix(%%rip)\n"
                         "1: rdmsr\n"
                         "2:\n\t"
                         "movq $0, privops_gp_rip(%%rip)\n"
                         : "+a"(lo), "+d"(hi) : "c"(msr) : "r11", "memory");
    *out = ((uint64_t)hi << 32) | lo;
    return privops_gp_n != n0;
}

/* emul-priv-op.c write_msr: MSR_FS_BASE / MSR_GS_BASE / MSR_SHADOW_GS_BASE
 * with !is_canonical_address(val) -> break -> #GP(0); read_msr answers the
 * bases, the shadow one from v->arch.pv.gs_base_user. */
static void privops_msr_bases(void)
{
    static const struct { uint32_t msr; const char *name; } m[] = {
        { MSR_FS_BASE, "FS_BASE" }, { MSR_GS_BASE, "GS_BASE" },
        { MSR_SHADOW_GS_BASE, "SHADOW_GS_BASE" },
    };
    char name[128];
    for (unsigned i = 0; i < 3; i++) {
        uint64_t before = 0, after = 0, back = 0;
        int rd = rdmsr_gp(m[i].msr, &before);
        snprintf(name, sizeof name, "rdmsr %s from the kernel -> its value, no #GP "
                 "(emul-priv-op.c read_msr)", m[i].name);
        check(!rd, name, "#GP %d", rd);
        privops_gp_err = ~0UL;
        int gp = wrmsr_gp(m[i].msr, NONCANON);
        snprintf(name, sizeof name, "wrmsr %s non-canonical 0x%lx -> #GP(0) "
                 "(emul-priv-op.c write_msr)", m[i].name, NONCANON);
        check(gp && privops_gp_err == 0, name, "#GP %d, error 0x%lx", gp, privops_gp_err);
        rdmsr_gp(m[i].msr, &after);
        snprintf(name, sizeof name, "... and %s is unchanged", m[i].name);
        check_eqx(name, after, before);
        gp = wrmsr_gp(m[i].msr, CANON_TEST);
        rdmsr_gp(m[i].msr, &back);
        snprintf(name, sizeof name, "wrmsr %s canonical -> read back", m[i].name);
        check(!gp && back == CANON_TEST, name, "#GP %d, read 0x%lx", gp, (unsigned long)back);
        wrmsr_gp(m[i].msr, before);
    }
    /* The shadow base is the user GS base Xen keeps (gs_base_user): the one
     * set_segment_base(SEGBASE_GS_USER) sets in kernel mode. */
    uint64_t shadow0 = 0, shadow = 0;
    rdmsr_gp(MSR_SHADOW_GS_BASE, &shadow0);
    long rc = HYPERVISOR_set_segment_base(SEGBASE_GS_USER, CANON_TEST + 0x2000);
    rdmsr_gp(MSR_SHADOW_GS_BASE, &shadow);
    check(rc == 0 && shadow == CANON_TEST + 0x2000,
          "rdmsr SHADOW_GS_BASE reads the base set_segment_base(SEGBASE_GS_USER) set "
          "(emul-priv-op.c read_msr: gs_base_user)", "rc %ld, read 0x%lx", rc,
          (unsigned long)shadow);
    HYPERVISOR_set_segment_base(SEGBASE_GS_USER, shadow0);
}

/* msr.c guest_rdmsr_xen: every MSR of Xen's range is write-only (#GP on
 * read); guest_wrmsr_xen: only the hypercall-page MSR exists (leaf
 * 0x40000002 EBX), other indices #GP. */
static void privops_msr_xen(void)
{
    uint64_t v;
    int gp = rdmsr_gp(0x40000000U, &v);
    check(gp && privops_gp_err == 0, "rdmsr 0x40000000 (Xen's hypercall-page MSR) -> "
          "#GP(0): write-only (msr.c guest_rdmsr_xen)", "#GP %d", gp);
    gp = wrmsr_gp(0x40000001U, 0);
    check(gp && privops_gp_err == 0, "wrmsr 0x40000001 (no such Xen MSR) -> #GP(0) "
          "(msr.c guest_wrmsr_xen)", "#GP %d", gp);
    gp = wrmsr_gp(0x40000000U, 0x123);
    check(gp, "wrmsr 0x40000000 with a page offset -> #GP(0) (msr.c guest_wrmsr_xen)",
          "#GP %d", gp);
}

/* A load with %rcx = a (and %rbp = a): the vector it raised, 0 if none. */
#define LOAD_FN(name, insn)                                                     \
    static unsigned long name(unsigned long a)                                  \
    {                                                                           \
        unsigned long n0 = privops_gp_n;                                        \
        privops_gp_vec = 0;                                                     \
        privops_gp_err = ~0UL;                                                  \
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privops_gp_rip(%%rip)\n\t"             \
                             "lea 2f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privops_gp_fix(%%rip)\n\t"             \
                             "push %%rbp\n\t"                                   \
                             "mov %%rcx, %%rbp\n"                               \
                             "1: " insn "\n"                                    \
                             "2:\n\t"                                           \
                             "pop %%rbp\n\t"                                    \
                             "movq $0, privops_gp_rip(%%rip)\n"                 \
                             : : "c"(a) : "rax", "r11", "memory");              \
        return privops_gp_n != n0 ? privops_gp_vec : 0;                         \
    }
LOAD_FN(load_rbp, "mov (%%rbp), %%rax")
LOAD_FN(load_rsp_index, "mov (%%rsp,%%rcx,1), %%rax")
LOAD_FN(load_ss_rcx, "mov %%ss:(%%rcx), %%rax")
LOAD_FN(load_rcx, "mov (%%rcx), %%rax")
LOAD_FN(load_ds_rbp, "mov %%ds:(%%rbp), %%rax")

/* Hardware raises #SS(0), not #GP(0), for a non-canonical access through the
 * stack segment (an RSP or RBP base, or an SS override), and Xen passes the
 * #SS on through the trap table (do_trap, xen/arch/x86/traps.c; Intel SDM
 * vol. 3, 6.15 "Interrupt 12").  Only RBP and indexed-RSP forms: with RSP
 * itself non-canonical Xen would have no stack to bounce the fault onto. */
static void privops_stack_segment(void)
{
    static const struct {
        unsigned long (*fn)(unsigned long);
        unsigned long a, vec;
        const char *name;
    } t[] = {
        { load_rbp, NONCANON, 12, "mov (%rbp) at a non-canonical address -> #SS(0), not #GP(0)" },
        { load_rsp_index, 0x8000000000000000UL, 12,
          "mov (%rsp,%rcx) at a non-canonical address -> #SS(0)" },
        { load_ss_rcx, NONCANON, 12, "mov %ss:(%rcx) at a non-canonical address -> #SS(0)" },
        { load_rcx, NONCANON, 13, "mov (%rcx) at a non-canonical address -> #GP(0)" },
        { load_ds_rbp, NONCANON, 13,
          "mov %ds:(%rbp) at a non-canonical address -> #GP(0) (DS, not SS)" },
    };
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++) {
        unsigned long vec = t[i].fn(t[i].a);
        check(vec == t[i].vec && privops_gp_err == 0, t[i].name, "vector %lu, error 0x%lx",
              vec, privops_gp_err);
    }
}

void checks_privops(void)
{
    section("privileged operations (pv/emul-priv-op.c, msr.c)");
    privops_msr_bases();
    privops_msr_xen();
    privops_stack_segment();
}
