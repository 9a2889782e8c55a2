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
    if (privio_trap(f))         /* checks_privio.c: string port I/O */
        return 1;
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

/* msr.c guest_rdmsr_xen: the hypercall-page MSR (leaf 0x40000002 EBX) reads
 * as zero, every other index of Xen's range #GP; guest_wrmsr_xen: only the
 * hypercall-page MSR exists, other indices #GP. */
static void privops_msr_xen(void)
{
    uint64_t v = 0x5a5a;
    int gp = rdmsr_gp(0x40000000U, &v);
    check(!gp && v == 0, "rdmsr 0x40000000 (Xen's hypercall-page MSR) reads as zero "
          "(msr.c guest_rdmsr_xen: \"Write hypercall page MSR. Read as zero.\")",
          "#GP %d value 0x%lx", gp, (unsigned long)v);
    gp = rdmsr_gp(0x40000001U, &v);
    check(gp && privops_gp_err == 0, "rdmsr 0x40000001 (no such Xen MSR) -> #GP(0) "
          "(msr.c guest_rdmsr_xen)", "#GP %d", gp);
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

/* One privileged instruction in kernel mode: the vector it raised (0: none).
 * RAX in and out (the value an in/mov from CRn leaves), RCX / RDX as given. */
#define KINSN_FN(name, insn)                                                    \
    static unsigned long name(unsigned long *rax, unsigned long rcx)            \
    {                                                                           \
        unsigned long n0 = privops_gp_n, a = *rax;                              \
        privops_gp_vec = 0;                                                     \
        privops_gp_err = ~0UL;                                                  \
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privops_gp_rip(%%rip)\n\t"             \
                             "lea 2f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privops_gp_fix(%%rip)\n"               \
                             "1: " insn "\n"                                    \
                             "2:\n\t"                                           \
                             "movq $0, privops_gp_rip(%%rip)\n"                 \
                             : "+a"(a) : "c"(rcx), "d"(0x80UL) : "r11", "memory"); \
        *rax = a;                                                               \
        return privops_gp_n != n0 ? privops_gp_vec : 0;                         \
    }
KINSN_FN(k_in80, "in $0x80, %%al")
KINSN_FN(k_out80, "out %%al, %%dx")
KINSN_FN(k_cli_pushf, "cli\n\tpushfq\n\tpop %%rax\n\tsti")
KINSN_FN(k_read_cr4, "mov %%cr4, %%rax")
KINSN_FN(k_write_cr4, "mov %%rcx, %%cr4")
KINSN_FN(k_read_cr8, "mov %%cr8, %%rax")
KINSN_FN(k_write_cr0, "mov %%rcx, %%cr0")
KINSN_FN(k_read_cr0, "mov %%cr0, %%rax")

#define CR4_DE        (1UL << 3)
#define CR4_PGE       (1UL << 7)
#define CR4_FSGSBASE  (1UL << 16)
#define CR4_OSXSAVE   (1UL << 18)
#define CR0_TS        (1UL << 3)
#define CR0_WP        (1UL << 16)

/* ---- virtual IOPL ------------------------------------------------------- */
#define HC_vm_assist_nr        21
#define HC_physdev_op_nr       33
#define PHYSDEVOP_set_iopl     6
#define PHYSDEVOP_set_iobitmap 7
#define VMASST_CMD_enable      0
#define VMASST_CMD_disable     1
#define VMASST_architectural_iopl 4
#define RFLAGS_IOPL3           0x3000UL

/* One hypercall through a one-entry multicall (no stub of its own needed). */
static long hc(unsigned long op, unsigned long a0, unsigned long a1)
{
    struct multicall_entry mc = { op, 0, { a0, a1, 0, 0, 0, 0 } };
    long rc = HYPERVISOR_multicall(&mc, 1);
    return rc ? rc : (long)mc.result;
}

static long set_iopl(uint32_t iopl)
{
    uint32_t arg = iopl;
    return hc(HC_physdev_op_nr, PHYSDEVOP_set_iopl, (unsigned long)&arg);
}

static long set_iobitmap(const void *bitmap, uint32_t nr_ports)
{
    struct { unsigned long bitmap; uint32_t nr_ports, pad; } arg = {
        (unsigned long)bitmap, nr_ports, 0 };
    return hc(HC_physdev_op_nr, PHYSDEVOP_set_iobitmap, (unsigned long)&arg);
}

static uint8_t iobitmap[8192] __page_aligned;

/* in/out from guest user mode (assumed CPL 3) are allowed by a virtual IOPL
 * of 3 or by the guest's I/O bitmap, else #GP(0) at the instruction
 * (guest_io_okay, pv/emul-priv-op.c); allowed, a domU reads all ones
 * (guest_io_read: no ioports_access). */
static void privops_iopl(void)
{
    unsigned long e[5];
    const unsigned long in80 = 5;       /* mov $imm32,%eax is 5 bytes: the in */
    char name[160];

    check_eq("PHYSDEVOP_set_iopl 4 -> -EINVAL (physdev.c)", set_iopl(4), -XEN_EINVAL);
    check_eq("PHYSDEVOP_set_iopl 0", set_iopl(0), 0);
    if (!rules_user_entry(user_in80, 2, e)) {
        check_skip("in/out from user mode", "user mode not set up");
        return;
    }
    check(e[0] == 13 && e[1] == 0 && e[2] == in80,
          "IOPL 0: in from user mode -> #GP(0) at the in (emul-priv-op.c guest_io_okay)",
          "vector %lu error 0x%lx at +%lu", e[0], e[1], e[2]);
    set_iopl(1);
    rules_user_entry(user_in80, 2, e);
    check(e[0] == 13 && e[1] == 0 && e[2] == in80,
          "IOPL 1: in from user mode (CPL 3) -> #GP(0)", "vector %lu error 0x%lx at +%lu",
          e[0], e[1], e[2]);
    set_iopl(3);
    rules_user_entry(user_in80, 2, e);
    check(e[0] == 0x21 && e[4] == 0x123456ff,
          "IOPL 3: in $0x80,%al from user mode is emulated: AL = 0xff, the rest of RAX kept "
          "(guest_io_read)", "vector 0x%lx rbx 0x%lx", e[0], e[4]);
    check(!(e[3] & RFLAGS_IOPL3), "without architectural_iopl a bounce frame's RFLAGS.IOPL "
          "is 0 (x86_64/entry.S create_bounce_frame)", "rflags 0x%lx", e[3]);
    rules_user_entry(user_out80, 2, e);
    check(e[0] == 0x21 && e[4] == 0x5a, "IOPL 3: out from user mode is emulated (dropped)",
          "vector 0x%lx rbx 0x%lx", e[0], e[4]);

    /* user-mode cli/sti: a no-op with IOPL 3 (validate: X86EMUL_DONE) */
    rules_user_entry(user_cli, 2, e);
    check(e[0] == 0x21, "IOPL 3: cli from user mode is a no-op (emul-priv-op.c validate)",
          "vector %lu at +%lu", e[0], e[2]);
    set_iopl(0);
    rules_user_entry(user_cli, 2, e);
    check(e[0] == 13 && e[1] == 0 && e[2] == 0, "IOPL 0: cli from user mode -> #GP(0)",
          "vector %lu error 0x%lx at +%lu", e[0], e[1], e[2]);

    /* the guest kernel: assumed CPL 1 (0 with architectural_iopl) */
    unsigned long rax = 0x1234;
    unsigned long vec = k_in80(&rax, 0);
    check(vec == 13 && privops_gp_err == 0 && rax == 0x1234,
          "IOPL 0: in from the kernel -> #GP(0), AL untouched (guest_io_okay: kernel CPL 1)",
          "vector %lu error 0x%lx rax 0x%lx", vec, privops_gp_err, rax);
    vec = k_out80(&rax, 0);
    check(vec == 13, "IOPL 0: out from the kernel -> #GP(0)", "vector %lu", vec);
    vec = k_cli_pushf(&rax, 0);
    check(vec == 13 && privops_gp_err == 0, "IOPL 0: cli in the kernel -> #GP(0) "
          "(validate: !iopl_ok)", "vector %lu error 0x%lx", vec, privops_gp_err);
    set_iopl(1);
    rax = 0x1234;
    vec = k_in80(&rax, 0);
    check(vec == 0 && rax == 0x12ff, "IOPL 1: in from the kernel reads 0xff (a domU has "
          "no ports: guest_io_read)", "vector %lu rax 0x%lx", vec, rax);
    vec = k_cli_pushf(&rax, 0);
    check(vec == 0 && (rax & 0x200), "IOPL 1: cli in the kernel is a no-op: RFLAGS.IF "
          "stays set (validate: X86EMUL_DONE)", "vector %lu rflags 0x%lx", vec, rax);
    set_iopl(0);

    /* the I/O bitmap: a clear bit allows the port whatever the IOPL */
    set_iopl(0);
    for (unsigned i = 0; i < sizeof iobitmap; i++)
        iobitmap[i] = 0xff;
    iobitmap[0x80 >> 3] &= (uint8_t)~(1u << (0x80 & 7));
    check_eq("PHYSDEVOP_set_iobitmap 0x100 ports", set_iobitmap(iobitmap, 0x100), 0);
    rules_user_entry(user_in80, 2, e);
    check(e[0] == 0x21 && e[4] == 0x123456ff,
          "IOPL 0, port 0x80 clear in the I/O bitmap: in from user mode is emulated",
          "vector 0x%lx rbx 0x%lx", e[0], e[4]);
    set_iobitmap(iobitmap, 0x80);
    rules_user_entry(user_in80, 2, e);
    check(e[0] == 13 && e[2] == in80,
          "port 0x80 beyond the bitmap's nr_ports (0x80) -> #GP(0)",
          "vector %lu at +%lu", e[0], e[2]);
    iobitmap[0x80 >> 3] = 0xff;
    set_iobitmap(iobitmap, 0x100);
    rules_user_entry(user_in80, 2, e);
    check(e[0] == 13, "port 0x80 set in the I/O bitmap -> #GP(0)", "vector %lu", e[0]);
    check_eq("PHYSDEVOP_set_iobitmap with 65537 ports -> -EINVAL",
             set_iobitmap(iobitmap, 65537), -XEN_EINVAL);
    check_eq("PHYSDEVOP_set_iobitmap in Xen's range -> -EINVAL (guest_handle_okay)",
             set_iobitmap((const void *)0xffff800000000000UL, 16), -XEN_EINVAL);
    set_iobitmap(iobitmap, 0);

    /* VMASST_TYPE_architectural_iopl: iret loads the virtual IOPL from the
     * frame (pv/iret.c), bounce frames carry it (create_bounce_frame). */
    check_eq("vm_assist enable architectural_iopl",
             hc(HC_vm_assist_nr, VMASST_CMD_enable, VMASST_architectural_iopl), 0);
    rules_user_entry(user_in80, 2 | RFLAGS_IOPL3, e);
    snprintf(name, sizeof name, "architectural_iopl: an iret with RFLAGS.IOPL 3 sets the "
             "virtual IOPL: in from user mode is emulated (pv/iret.c)");
    check(e[0] == 0x21 && e[4] == 0x123456ff, name, "vector 0x%lx", e[0]);
    check((e[3] & RFLAGS_IOPL3) == RFLAGS_IOPL3,
          "architectural_iopl: the bounce frame's RFLAGS.IOPL is the virtual IOPL (3)",
          "rflags 0x%lx", e[3]);
    rules_user_entry(user_in80, 2, e);
    check(e[0] == 13, "architectural_iopl: an iret with RFLAGS.IOPL 0 drops it -> #GP(0)",
          "vector %lu", e[0]);
    check_eq("vm_assist disable architectural_iopl",
             hc(HC_vm_assist_nr, VMASST_CMD_disable, VMASST_architectural_iopl), 0);
    rules_user_entry(user_in80, 2 | RFLAGS_IOPL3, e);
    check(e[0] == 13, "without architectural_iopl an iret's RFLAGS.IOPL is ignored -> #GP(0)",
          "vector %lu", e[0]);
    set_iopl(0);

    /* do_vm_assist (common/domain.c), PV64_VM_ASSIST_MASK (asm/domain.h) */
    check_eq("vm_assist enable 4gb_segments (0) -> 0 (kept for 64-bit guests)",
             hc(HC_vm_assist_nr, VMASST_CMD_enable, 0), 0);
    check_eq("vm_assist enable 4gb_segments_notify (1) -> 0",
             hc(HC_vm_assist_nr, VMASST_CMD_enable, 1), 0);
    hc(HC_vm_assist_nr, VMASST_CMD_disable, 0);
    hc(HC_vm_assist_nr, VMASST_CMD_disable, 1);
    check_eq("vm_assist type 6 -> -EINVAL", hc(HC_vm_assist_nr, VMASST_CMD_enable, 6),
             -XEN_EINVAL);
    check_eq("vm_assist command 2 on a valid type -> -ENOSYS",
             hc(HC_vm_assist_nr, 2, 2), -XEN_ENOSYS);
}

/* Control registers (read_cr/write_cr, pv/emul-priv-op.c; pv_fixup_guest_cr4,
 * pv/domain.c): the guest sees its own CR4 (ctrlreg[4]), can change only
 * TSD, DE, FSGSBASE and OSXSAVE, and only those the CPUID policy offers. */
static void privops_cr(void)
{
    unsigned long cr4 = 0, v = 0, vec;
    uint32_t r[4];
    xen_cpuid(7, 0, r);
    int fsgsbase = (r[1] & 1) != 0;
    xen_cpuid(1, 0, r);
    int xsave = (r[2] >> 26) & 1, de = (r[3] >> 2) & 1;

    vec = k_read_cr4(&cr4, 0);
    check(vec == 0, "mov %cr4 from the kernel -> its value (read_cr)", "vector %lu", vec);
    v = 0;
    /* not SMEP: where the write reached the CPU unfiltered (an engine without
     * pvmon's fifth patch) it would stop the kernel's own fetches */
    vec = k_write_cr4(&v, cr4 | CR4_DE | CR4_PGE |
                      (fsgsbase ? 0 : CR4_FSGSBASE) | (xsave ? 0 : CR4_OSXSAVE));
    unsigned long back = 0;
    k_read_cr4(&back, 0);
    check(vec == 0 && !!(back & CR4_DE) == de,
          "mov to %cr4 setting DE keeps it as CPUID offers it (pv_fixup_guest_cr4)",
          "vector %lu cr4 0x%lx", vec, back);
    check(!(back & CR4_PGE), "mov to %cr4 cannot set PGE "
          "(not guest-controllable: PV_CR4_GUEST_MASK)", "cr4 0x%lx", back);
    check(!(back & ((fsgsbase ? 0 : CR4_FSGSBASE) | (xsave ? 0 : CR4_OSXSAVE))),
          "mov to %cr4 cannot set FSGSBASE/OSXSAVE when CPUID hides them "
          "(pv_fixup_guest_cr4: the policy)", "cr4 0x%lx", back);
    v = 0;
    k_write_cr4(&v, cr4);
    vec = k_read_cr8(&v, 0);
    check(vec == 13 && privops_gp_err == 0, "mov %cr8 from the kernel -> #GP(0) (read_cr: "
          "unhandleable)", "vector %lu", vec);
    unsigned long cr0 = 0;
    k_read_cr0(&cr0, 0);
    v = 0;
    vec = k_write_cr0(&v, cr0 ^ CR0_WP);
    check(vec == 13 && privops_gp_err == 0, "mov to %cr0 changing WP -> #GP(0) "
          "(write_cr: \"unmodifiable CR0 flags\")", "vector %lu", vec);
    v = 0;
    vec = k_write_cr0(&v, cr0 | CR0_TS);
    unsigned long ts = 0;
    k_read_cr0(&ts, 0);
    k_write_cr0(&v, cr0 & ~CR0_TS);
    check(vec == 0 && (ts & CR0_TS), "mov to %cr0 changing only TS is do_fpu_taskswitch",
          "vector %lu cr0 0x%lx", vec, ts);
}

void checks_privops(void)
{
    section("privileged operations (pv/emul-priv-op.c, msr.c)");
    privops_msr_bases();
    privops_msr_xen();
    privops_stack_segment();
    privops_iopl();
    privops_cr();
    checks_privio();
}
