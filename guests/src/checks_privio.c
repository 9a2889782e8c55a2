/*
 * checks_privio.c - string port I/O (INS/OUTS) and the other privileged
 * instructions of the "Not done" list, as Xen 4.17 emulates them for a 64-bit
 * PV kernel that does not run in ring 0 (pvtest-v2-rules, RULES=1;
 * docs/xen-rules.md "Privileged operations").  Every INS/OUTS of a PV guest
 * raises #GP in hardware and Xen emulates it: pv_emulate_privileged_op,
 * rep_ins / rep_outs (xen/arch/x86/pv/emul-priv-op.c@stable-4.17), with the
 * REP rules of x86_emulate (xen/arch/x86/x86_emulate/x86_emulate.c@stable-4.17:
 * cases 0x6c/0x6e, get_rep_prefix, put_rep_prefix).  A fault these checks
 * provoke in the kernel is caught by privio_trap (called from privops_trap)
 * and resumes after the instruction.
 */
#include "pvtest.h"

#define PIO_PORT        0x80
#define PIO_UNMAPPED    0x10000UL
#define PIO_NONCANON    0x0000800000000000UL
#define PIO_XEN_RANGE   0xffff800000000000UL   /* canonical, below HYPERVISOR_VIRT_END */
#define PIO_USER_VA     0x400000UL              /* checks_rules.c USER_VA */
#define PFEC_W          2UL
#define PFEC_U          4UL

extern const char user_sio_ins[], user_sio_rep_ins[], user_sio_ins_ro[], user_sio_outs[];
extern const char user_rdtsc[], user_rdtscp[], user_wbinvd[], user_rdpmc[];
extern const char user_pushf[], user_popf_pushf[];

/* Where a fault is expected, where to resume, and what arrived. */
volatile unsigned long privio_rip, privio_fix, privio_vec, privio_err, privio_cr2, privio_n;

int privio_trap(struct trap_frame *f)
{
    if ((f->vector != 6 && f->vector != 12 && f->vector != 13 && f->vector != 14) ||
        !privio_rip ||
        f->rip != privio_rip)
        return 0;
    privio_vec = f->vector;
    privio_err = f->error;
    privio_cr2 = f->vector == 14 ? vcpu0()->cr2 : 0;
    privio_n++;
    f->rip = privio_fix;
    privio_rip = 0;
    return 1;
}

/* One string instruction in kernel mode with RCX, RSI, RDI given and DX =
 * port 0x80; they come back as the instruction (or its fault) left them.
 * Returns the vector it raised at the instruction, 0 if none. */
struct sio { unsigned long rcx, rsi, rdi; };

#define SIO_FN(name, insn)                                                      \
    static unsigned long name(struct sio *s)                                    \
    {                                                                           \
        unsigned long n0 = privio_n;                                            \
        privio_vec = 0;                                                         \
        privio_err = ~0UL;                                                      \
        privio_cr2 = 0;                                                         \
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privio_rip(%%rip)\n\t"                 \
                             "lea 2f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privio_fix(%%rip)\n"                   \
                             "1: " insn "\n"                                    \
                             "2:\n\t"                                           \
                             "cld\n\t"                                          \
                             "movq $0, privio_rip(%%rip)\n"                     \
                             : "+c"(s->rcx), "+S"(s->rsi), "+D"(s->rdi)         \
                             : "d"((unsigned long)PIO_PORT) : "r11", "memory", "cc"); \
        return privio_n != n0 ? privio_vec : 0;                                 \
    }
SIO_FN(k_insb, "insb")
SIO_FN(k_insw, "insw")
SIO_FN(k_insl, "insl")
SIO_FN(k_rep_insb, "rep insb")
SIO_FN(k_std_rep_insb, "std\n\trep insb")       /* the fault-free DF case only */
SIO_FN(k_addr32_rep_insb, ".byte 0x67\n\trep insb")
SIO_FN(k_outsb, "outsb")
SIO_FN(k_outsl, "outsl")
SIO_FN(k_rep_outsb, "rep outsb")
SIO_FN(k_ss_outsb, ".byte 0x36\n\toutsb")
SIO_FN(k_fs_outsb, ".byte 0x64\n\toutsb")

/* PHYSDEVOP_set_iopl through a one-entry multicall */
#define PIO_HC_physdev_op_nr   33
#define PIO_PHYSDEVOP_set_iopl 6
static long pio_set_iopl(uint32_t iopl)
{
    uint32_t arg = iopl;
    struct multicall_entry mc = { PIO_HC_physdev_op_nr, 0,
                                  { PIO_PHYSDEVOP_set_iopl, (unsigned long)&arg, 0, 0, 0, 0 } };
    long rc = HYPERVISOR_multicall(&mc, 1);
    return rc ? rc : (long)mc.result;
}

static long hc_vm_assist(unsigned long cmd, unsigned long type)
{
    struct multicall_entry mc = { 21 /* vm_assist */, 0, { cmd, type, 0, 0, 0, 0 } };
    long rc = HYPERVISOR_multicall(&mc, 1);
    return rc ? rc : (long)mc.result;
}

/* three pages: 0 and 1 writable, 2 read-only (for the faults at its start) */
static uint8_t pio_buf[3 * 4096] __page_aligned;

static int all_bytes(const uint8_t *p, unsigned n, uint8_t v)
{
    for (unsigned i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

/* INS/OUTS from the kernel (assumed CPL 1: allowed by a virtual IOPL >= 1). */
static void privio_kernel(void)
{
    uint8_t *buf = pio_buf, *ro = pio_buf + 2 * 4096;
    struct sio s;
    unsigned long vec;

    pio_set_iopl(1);
    memset(buf, 0x5a, 64);
    s = (struct sio){ 0, 0, (unsigned long)buf };
    vec = k_insb(&s);
    check(vec == 0 && buf[0] == 0xff && buf[1] == 0x5a && s.rdi == (unsigned long)buf + 1,
          "IOPL 1: insb from the kernel stores 0xff (a domU has no ports), RDI + 1 "
          "(emul-priv-op.c rep_ins, guest_io_read)", "vector %lu byte 0x%x rdi +%ld",
          vec, buf[0], (long)(s.rdi - (unsigned long)buf));
    s = (struct sio){ 0, 0, (unsigned long)buf + 8 };
    vec = k_insw(&s);
    check(vec == 0 && all_bytes(buf + 8, 2, 0xff) && buf[10] == 0x5a &&
              s.rdi == (unsigned long)buf + 10,
          "insw stores 2 bytes, RDI + 2 (x86_emulate.c: op_bytes 2)", "vector %lu rdi +%ld",
          vec, (long)(s.rdi - (unsigned long)buf - 8));
    s = (struct sio){ 0, 0, (unsigned long)buf + 16 };
    vec = k_insl(&s);
    check(vec == 0 && all_bytes(buf + 16, 4, 0xff) && buf[20] == 0x5a &&
              s.rdi == (unsigned long)buf + 20,
          "insl stores 4 bytes, RDI + 4", "vector %lu rdi +%ld", vec,
          (long)(s.rdi - (unsigned long)buf - 16));
    memset(buf, 0x5a, 64);
    s = (struct sio){ 5, 0, (unsigned long)buf };
    vec = k_rep_insb(&s);
    check(vec == 0 && all_bytes(buf, 5, 0xff) && buf[5] == 0x5a && s.rcx == 0 &&
              s.rdi == (unsigned long)buf + 5,
          "rep insb with RCX 5: 5 bytes, RCX 0, RDI + 5 (x86_emulate.c put_rep_prefix)",
          "vector %lu rcx %lu rdi +%ld", vec, s.rcx, (long)(s.rdi - (unsigned long)buf));
    memset(buf, 0x5a, 64);
    s = (struct sio){ 3, 0, (unsigned long)buf + 10 };
    vec = k_std_rep_insb(&s);
    check(vec == 0 && all_bytes(buf + 8, 3, 0xff) && buf[7] == 0x5a && buf[11] == 0x5a &&
              s.rcx == 0 && s.rdi == (unsigned long)buf + 7,
          "std; rep insb with RCX 3 fills downwards, RDI - 3 (register_address_adjust: DF)",
          "vector %lu rcx %lu rdi %+ld", vec, s.rcx, (long)(s.rdi - (unsigned long)buf - 10));
    s = (struct sio){ 4, (unsigned long)buf, 0 };
    vec = k_rep_outsb(&s);
    check(vec == 0 && s.rcx == 0 && s.rsi == (unsigned long)buf + 4,
          "rep outsb with RCX 4: RCX 0, RSI + 4 (rep_outs: guest_io_write drops it)",
          "vector %lu rcx %lu rsi +%ld", vec, s.rcx, (long)(s.rsi - (unsigned long)buf));
    s = (struct sio){ 0, (unsigned long)buf, 0 };
    vec = k_outsl(&s);
    check(vec == 0 && s.rsi == (unsigned long)buf + 4, "outsl: RSI + 4", "vector %lu rsi +%ld",
          vec, (long)(s.rsi - (unsigned long)buf));
    s = (struct sio){ 0xffffffff00000000UL, 0, 0xffffffff12345678UL };
    vec = k_addr32_rep_insb(&s);
    check(vec == 0 && s.rcx == 0 && s.rdi == 0x12345678UL,
          "addr32 rep insb with ECX 0 does nothing but zero-extend RCX and RDI "
          "(x86_emulate.c get_rep_prefix)", "vector %lu rcx 0x%lx rdi 0x%lx", vec, s.rcx, s.rdi);

    memset(buf, 0x5a, 8192);
    s = (struct sio){ 8192, 0, (unsigned long)buf };
    vec = k_rep_insb(&s);
    check(vec == 0 && all_bytes(buf, 8192, 0xff) && s.rcx == 0 &&
              s.rdi == (unsigned long)buf + 8192,
          "rep insb of 8192 bytes completes (Xen may stop and resume it at "
          "hypercall_preempt_check; the guest cannot tell)", "vector %lu rcx %lu", vec, s.rcx);

    /* the memory side: faults as rep_ins/rep_outs raise them */
    long rc = set_page_ro(ro, 1);
    check_eq("pio: a read-only page after two writable ones", rc, 0);
    s = (struct sio){ 0, 0, PIO_UNMAPPED };
    vec = k_insb(&s);
    check(vec == 14 && privio_err == PFEC_W && privio_cr2 == PIO_UNMAPPED &&
              s.rdi == PIO_UNMAPPED,
          "insb to an unmapped address -> #PF, error W, CR2 the address, RDI unchanged "
          "(rep_ins: x86_emul_pagefault(PFEC_write_access))", "vector %lu error 0x%lx cr2 0x%lx",
          vec, privio_err, privio_cr2);
    uint8_t ro0 = ro[0];
    s = (struct sio){ 0, 0, (unsigned long)ro };
    vec = k_insb(&s);
    check(vec == 14 && privio_err == PFEC_W && privio_cr2 == (unsigned long)ro && ro[0] == ro0,
          "insb to a read-only page -> #PF error W without P (rep_ins: Xen's error code, "
          "not the hardware's P|W)", "vector %lu error 0x%lx cr2 0x%lx", vec, privio_err,
          privio_cr2);
    memset(ro - 8, 0x5a, 8);
    s = (struct sio){ 0, 0, (unsigned long)ro - 2 };
    vec = k_insl(&s);
    check(vec == 14 && privio_cr2 == (unsigned long)ro && all_bytes(ro - 2, 2, 0xff) &&
              s.rdi == (unsigned long)ro - 2,
          "insl across into a read-only page -> #PF at the page, the 2 bytes before it "
          "written (copy_to_guest_ll copies bytewise; CR2 addr + bytes - rc)",
          "vector %lu cr2 0x%lx bytes 0x%x 0x%x", vec, privio_cr2, ro[-2], ro[-1]);
    memset(ro - 8, 0x5a, 8);
    s = (struct sio){ 8, 0, (unsigned long)ro - 3 };
    vec = k_rep_insb(&s);
    check(vec == 14 && privio_cr2 == (unsigned long)ro && all_bytes(ro - 3, 3, 0xff) &&
              s.rcx == 5 && s.rdi == (unsigned long)ro,
          "rep insb of 8 reaching a read-only page after 3: #PF at the rep insb, "
          "RCX 5, RDI advanced by 3 (put_rep_prefix keeps the done reps)",
          "vector %lu cr2 0x%lx rcx %lu rdi %+ld", vec, privio_cr2, s.rcx,
          (long)(s.rdi - (unsigned long)ro));
    s = (struct sio){ 0, PIO_UNMAPPED, 0 };
    vec = k_outsb(&s);
    check(vec == 14 && privio_err == 0 && privio_cr2 == PIO_UNMAPPED,
          "outsb from an unmapped address -> #PF, error 0 (rep_outs: x86_emul_pagefault(0))",
          "vector %lu error 0x%lx cr2 0x%lx", vec, privio_err, privio_cr2);
    s = (struct sio){ 0, 0, PIO_XEN_RANGE };
    vec = k_insb(&s);
    check(vec == 13 && privio_err == 0, "insb into Xen's range (0xffff800000000000) -> "
          "#GP(0), not #PF (pv_emul_virt_to_linear: __addr_ok)", "vector %lu error 0x%lx",
          vec, privio_err);
    s = (struct sio){ 0, PIO_NONCANON, 0 };
    vec = k_outsb(&s);
    check(vec == 13 && privio_err == 0, "outsb from a non-canonical address -> #GP(0)",
          "vector %lu error 0x%lx", vec, privio_err);
    s = (struct sio){ 0, PIO_NONCANON, 0 };
    vec = k_ss_outsb(&s);
    check(vec == 13 && privio_err == 0, "outsb %ss:(%rsi) non-canonical -> #GP(0): "
          "x86_emulate ignores an SS override in 64-bit mode, so pv_emul_virt_to_linear "
          "sees x86_seg_ds", "vector %lu error 0x%lx", vec, privio_err);
    set_page_ro(ro, 0);

    /* an FS override takes the FS base (read_segment: read_fs_base) */
    uint32_t lo, hi;
    __asm__ __volatile__("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xc0000100U));
    unsigned long fs0 = ((unsigned long)hi << 32) | lo;
    HYPERVISOR_set_segment_base(SEGBASE_FS, (unsigned long)buf);
    s = (struct sio){ 0, 16, 0 };
    vec = k_fs_outsb(&s);
    HYPERVISOR_set_segment_base(SEGBASE_FS, fs0);
    check(vec == 0 && s.rsi == 17, "outsb %fs:(%rsi) reads through the FS base "
          "(rep_outs: read_segment)", "vector %lu rsi %lu", vec, s.rsi);

    /* refused: guest_io_okay comes before the memory side */
    pio_set_iopl(0);
    memset(buf, 0x5a, 64);
    s = (struct sio){ 0, 0, (unsigned long)buf };
    vec = k_insb(&s);
    check(vec == 13 && privio_err == 0 && buf[0] == 0x5a && s.rdi == (unsigned long)buf,
          "IOPL 0: insb from the kernel -> #GP(0), memory and RDI untouched "
          "(rep_ins: guest_io_okay first)", "vector %lu error 0x%lx byte 0x%x", vec,
          privio_err, buf[0]);
    s = (struct sio){ 4, 0, (unsigned long)buf };
    vec = k_rep_insb(&s);
    check(vec == 13 && s.rcx == 4 && buf[0] == 0x5a, "IOPL 0: rep insb -> #GP(0), RCX kept",
          "vector %lu rcx %lu", vec, s.rcx);
    s = (struct sio){ 0, PIO_UNMAPPED, 0 };
    vec = k_outsb(&s);
    check(vec == 13 && privio_err == 0, "IOPL 0: outsb from an unmapped address -> #GP(0), "
          "not #PF (the port is checked first)", "vector %lu error 0x%lx", vec, privio_err);
    s = (struct sio){ 0, 0, (unsigned long)buf };
    vec = k_rep_insb(&s);
    check(vec == 0 && buf[0] == 0x5a, "IOPL 0: rep insb with RCX 0 completes, no #GP "
          "(get_rep_prefix skips it before the port check)", "vector %lu", vec);
}

#define PIO_PHYSDEVOP_set_iobitmap 7
static uint8_t pio_iobmp[8192] __page_aligned;

static long pio_set_iobitmap(const void *bitmap, uint32_t nr_ports)
{
    struct { unsigned long bitmap; uint32_t nr_ports, pad; } arg = {
        (unsigned long)bitmap, nr_ports, 0 };
    struct multicall_entry mc = { PIO_HC_physdev_op_nr, 0,
                                  { PIO_PHYSDEVOP_set_iobitmap, (unsigned long)&arg,
                                    0, 0, 0, 0 } };
    long rc = HYPERVISOR_multicall(&mc, 1);
    return rc ? rc : (long)mc.result;
}

SIO_FN(k_in80_al, "in %%dx, %%al")

/* The port is checked once, before the first element (rep_ins: guest_io_okay
 * ahead of the loop): an INS that overwrites its own I/O bitmap goes on. */
static void privio_bitmap(void)
{
    struct sio s;
    unsigned long vec;

    memset(pio_iobmp, 0xff, sizeof pio_iobmp);
    pio_iobmp[PIO_PORT >> 3] &= (uint8_t)~(1u << (PIO_PORT & 7));
    pio_set_iopl(0);
    check_eq("pio: set_iobitmap with port 0x80 allowed", pio_set_iobitmap(pio_iobmp, 0x100), 0);
    s = (struct sio){ 2, 0, (unsigned long)&pio_iobmp[PIO_PORT >> 3] };
    vec = k_rep_insb(&s);
    check(vec == 0 && s.rcx == 0 && pio_iobmp[PIO_PORT >> 3] == 0xff &&
              pio_iobmp[(PIO_PORT >> 3) + 1] == 0xff,
          "IOPL 0, port allowed by the bitmap: rep insb of 2 writing 0xff over that bitmap "
          "byte completes both (guest_io_okay is asked once, before the loop)",
          "vector %lu rcx %lu", vec, s.rcx);
    s = (struct sio){ 0, 0, 0 };
    vec = k_in80_al(&s);
    check(vec == 13 && privio_err == 0, "... after which in from port 0x80 -> #GP(0)",
          "vector %lu", vec);
    pio_set_iopl(1);
    vec = k_in80_al(&s);
    check(vec == 0, "... and with IOPL 1 the next in is allowed (no refusal left over)",
          "vector %lu", vec);
    pio_set_iobitmap(pio_iobmp, 0);
    pio_set_iopl(0);
}

/* From guest user mode (assumed CPL 3: a virtual IOPL of 3). */
static void privio_user(void)
{
    unsigned long e[5];
    if (!rules_user_entry(user_sio_ins, 2, e)) {
        check_skip("ins/outs from user mode", "user mode not set up");
        return;
    }
    check(e[0] == 13 && e[1] == 0 && e[2] == 10,
          "IOPL 0: insb from user mode -> #GP(0) at the insb (guest_io_okay)",
          "vector %lu error 0x%lx at +%lu", e[0], e[1], e[2]);
    pio_set_iopl(3);
    rules_user_entry(user_sio_rep_ins, 2, e);
    check(e[0] == 0x21 && e[4] == 0x010008,
          "IOPL 3: rep insl x2 from user mode: 8 bytes of 0xff, RCX 0, RDI + 8",
          "vector 0x%lx rbx 0x%lx", e[0], e[4]);
    rules_user_entry(user_sio_ins_ro, 2, e);
    unsigned long want_cr2 = PIO_USER_VA + (unsigned long)(user_sio_ins_ro - user_blob) + 7;
    unsigned long cr2 = vcpu0()->cr2;
    check(e[0] == 14 && e[1] == (PFEC_W | PFEC_U) && e[2] == 12 && cr2 == want_cr2,
          "IOPL 3: insb from user mode into its read-only code page -> #PF error W|U "
          "(rep_ins; pv_inject_event sets U), not the hardware's P|W|U",
          "vector %lu error 0x%lx at +%lu cr2 0x%lx", e[0], e[1], e[2], cr2);
    rules_user_entry(user_sio_outs, 2, e);
    check(e[0] == 0x21 && e[4] == 2, "IOPL 3: rep outsb x2 from user mode: RSI + 2",
          "vector 0x%lx rbx 0x%lx", e[0], e[4]);
    pio_set_iopl(0);
}

/* One instruction in kernel mode: the vector it raised (0: none); RAX, RCX,
 * RDX come back as it left them. */
#define KOP_FN(name, insn)                                                      \
    static unsigned long name(unsigned long *rax, unsigned long *rcx,           \
                              unsigned long *rdx)                               \
    {                                                                           \
        unsigned long n0 = privio_n;                                            \
        privio_vec = 0;                                                         \
        privio_err = ~0UL;                                                      \
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privio_rip(%%rip)\n\t"                 \
                             "lea 2f(%%rip), %%r11\n\t"                         \
                             "mov %%r11, privio_fix(%%rip)\n"                   \
                             "1: " insn "\n"                                    \
                             "2:\n\t"                                           \
                             "movq $0, privio_rip(%%rip)\n"                     \
                             : "+a"(*rax), "+c"(*rcx), "+d"(*rdx)               \
                             : : "r11", "memory");                              \
        return privio_n != n0 ? privio_vec : 0;                                 \
    }
KOP_FN(k_rdtsc, "rdtsc")
KOP_FN(k_rdtscp, "rdtscp")
KOP_FN(k_wbinvd, "wbinvd")
KOP_FN(k_invd, "invd")
KOP_FN(k_rd_cr4, "mov %%cr4, %%rax")
KOP_FN(k_wr_cr4, "mov %%rax, %%cr4")

#define CR4_TSD (1UL << 2)

/* wbinvd (x86_emulate.c: !mode_ring0() -> #GP; emul-priv-op.c cache_op:
 * ignored without cache-flush permission), invd (not in validate's list: #GP) and rdtsc/rdtscp with CR4.TSD
 * (x86_emulate.c rdtsc: !mode_ring0() && TSD -> #GP(0); rdtscp reads
 * MSR_TSC_AUX first, #GP for a policy without RDTSCP/RDPID: msr.c
 * guest_rdmsr; without TSD the hardware runs both, Xen sees nothing). */
static void privio_misc(void)
{
    unsigned long a = 0, c = 0, d = 0, vec, e[5];

    vec = k_wbinvd(&a, &c, &d);
    check(vec == 0, "wbinvd from the kernel is ignored, no fault (emul-priv-op.c cache_op: "
          "no cache-flush permission)", "vector %lu", vec);
    vec = k_invd(&a, &c, &d);
    check(vec == 13, "invd from the kernel -> #GP(0) (emul-priv-op.c validate: only "
          "wbinvd is emulated; INVD is not in its list)", "vector %lu", vec);
    if (rules_user_entry(user_wbinvd, 2, e))
        check(e[0] == 13 && e[1] == 0 && e[2] == 0, "wbinvd from user mode -> #GP(0) "
              "(x86_emulate.c: !mode_ring0())", "vector %lu error 0x%lx at +%lu",
              e[0], e[1], e[2]);

    /* CR4.TSD is the guest's (PV_CR4_GUEST_MASK; the policy has TSC) */
    unsigned long cr4 = 0;
    k_rd_cr4(&cr4, &c, &d);
    a = cr4 | CR4_TSD;
    k_wr_cr4(&a, &c, &d);
    unsigned long back = 0;
    k_rd_cr4(&back, &c, &d);
    check(back & CR4_TSD, "mov to %cr4 sets TSD (pv_fixup_guest_cr4: guest-controllable)",
          "cr4 0x%lx", back);
    a = 0;
    d = 0;
    vec = k_rdtsc(&a, &c, &d);
    check(vec == 0 && (a | d), "CR4.TSD: rdtsc from the kernel works (x86_emulate.c rdtsc: "
          "mode_ring0)", "vector %lu", vec);
    vec = k_rdtscp(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "CR4.TSD: rdtscp from the kernel -> #GP(0) (its "
          "MSR_TSC_AUX read: msr.c guest_rdmsr, no RDTSCP in the policy)",
          "vector %lu error 0x%lx", vec, privio_err);
    rules_user_entry(user_rdtsc, 2, e);
    check(e[0] == 13 && e[1] == 0 && e[2] == 0, "CR4.TSD: rdtsc from user mode -> #GP(0) "
          "(x86_emulate.c rdtsc: !mode_ring0, TSD)", "vector %lu error 0x%lx at +%lu",
          e[0], e[1], e[2]);
    rules_user_entry(user_rdtscp, 2, e);
    check(e[0] == 13 && e[1] == 0 && e[2] == 0, "CR4.TSD: rdtscp from user mode -> #GP(0)",
          "vector %lu error 0x%lx at +%lu", e[0], e[1], e[2]);
    a = cr4 & ~CR4_TSD;
    k_wr_cr4(&a, &c, &d);
    rules_user_entry(user_rdtsc, 2, e);
    check(e[0] == 0x21, "without CR4.TSD rdtsc from user mode runs", "vector %lu", e[0]);
    vec = k_rdtscp(&a, &c, &d);
    check(vec == 0, "without CR4.TSD rdtscp from the kernel runs (natively under Xen, "
          "whatever CPUID says)", "vector %lu", vec);
    rules_user_entry(user_rdtscp, 2, e);
    check(e[0] == 0x21, "without CR4.TSD rdtscp from user mode runs", "vector %lu", e[0]);
    a = cr4;
    k_wr_cr4(&a, &c, &d);
}

KOP_FN(k_hlt, "hlt")
KOP_FN(k_invlpg, "invlpg (%%rax)")
KOP_FN(k_swapgs, "swapgs")
KOP_FN(k_lidt, "lidt (%%rax)")
KOP_FN(k_lgdt, "lgdt (%%rax)")
KOP_FN(k_lldt, "lldt %%cx")
KOP_FN(k_ltr, "ltr %%cx")
KOP_FN(k_lmsw, "lmsw %%cx")
KOP_FN(k_clts, "clts")
KOP_FN(k_rd_cr0, "mov %%cr0, %%rax")
KOP_FN(k_rdpmc, "rdpmc")
KOP_FN(k_xsetbv, "xsetbv")

/* Instructions only ring 0 may execute and Xen does not emulate for a PV
 * kernel (validate() answers X86EMUL_UNHANDLEABLE, pv/emul-priv-op.c): the
 * kernel runs in ring 3, so the hardware's #GP(0) reaches it
 * (do_general_protection, traps.c).  clts is emulated (x86_emulate.c clts:
 * write_cr(0) -> do_fpu_taskswitch). */
static void privio_ring0_only(void)
{
    struct { unsigned short lim; unsigned long base; } __attribute__((packed)) dt;
    unsigned long a, c, d, vec;

    __asm__ __volatile__("sidt %0" : "=m"(dt));
    a = (unsigned long)&dt; c = 0; d = 0;
    vec = k_lidt(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "lidt from the kernel -> #GP(0) (validate: "
          "not emulated)", "vector %lu error 0x%lx", vec, privio_err);
    __asm__ __volatile__("sgdt %0" : "=m"(dt));
    a = (unsigned long)&dt;
    vec = k_lgdt(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "lgdt from the kernel -> #GP(0)",
          "vector %lu error 0x%lx", vec, privio_err);
    c = 0;
    vec = k_lldt(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "lldt from the kernel -> #GP(0)",
          "vector %lu error 0x%lx", vec, privio_err);
    c = 0;
    vec = k_ltr(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "ltr from the kernel -> #GP(0)",
          "vector %lu error 0x%lx", vec, privio_err);
    a = 0;
    k_rd_cr0(&a, &c, &d);
    c = a & 0xffff;
    vec = k_lmsw(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "lmsw from the kernel -> #GP(0)",
          "vector %lu error 0x%lx", vec, privio_err);
    a = (unsigned long)pio_buf;
    vec = k_invlpg(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "invlpg from the kernel -> #GP(0) (a PV kernel "
          "flushes with mmuext_op)", "vector %lu error 0x%lx", vec, privio_err);
    vec = k_swapgs(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "swapgs from the kernel -> #GP(0)",
          "vector %lu error 0x%lx", vec, privio_err);
    vec = k_hlt(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "hlt from the kernel -> #GP(0) (a PV kernel "
          "blocks with SCHEDOP_block)", "vector %lu error 0x%lx", vec, privio_err);
    c = 0;
    vec = k_rdpmc(&a, &c, &d);
    check(vec == 13 && privio_err == 0, "rdpmc from the kernel -> #GP(0) (ring 3 and "
          "CR4.PCE never set: pv_make_cr4; validate: not emulated)", "vector %lu error 0x%lx",
          vec, privio_err);
    unsigned long e[5];
    if (rules_user_entry(user_rdpmc, 2, e))
        check(e[0] == 13 && e[1] == 0 && e[2] == 2, "rdpmc from user mode -> #GP(0)",
              "vector %lu error 0x%lx at +%lu", e[0], e[1], e[2]);
    a = 1; c = 0; d = 0;
    vec = k_xsetbv(&a, &c, &d);
    check(vec == 6, "xsetbv from the kernel -> #UD: the guest's CR4.OSXSAVE is clear "
          "(x86_emulate.c xsetbv; the policy has no XSAVE)", "vector %lu", vec);
    HYPERVISOR_fpu_taskswitch(1);
    unsigned long cr0 = 0;
    k_rd_cr0(&cr0, &c, &d);
    vec = k_clts(&a, &c, &d);
    unsigned long after = 0;
    k_rd_cr0(&after, &c, &d);
    check(vec == 0 && (cr0 & 8) && !(after & 8), "clts from the kernel clears CR0.TS "
          "(x86_emulate.c clts, write_cr: do_fpu_taskswitch)", "vector %lu cr0 0x%lx -> 0x%lx",
          vec, cr0, after);
}

KOP_FN(k_popf_pushf, "push %%rcx\n\tpopfq\n\tpushfq\n\tpop %%rax\n\tpush $0x202\n\tpopfq")

/* The flags a PV guest sees: it runs in ring 3 with the hardware IOPL 0 and
 * IF always set (pv_emulate_privileged_op asserts both; do_iret, pv/iret.c:
 * rflags & ~IOPL | IF), so popf changes neither IF nor IOPL (the CPU ignores
 * them at CPL 3 with IOPL 0) and pushf always shows IF 1, IOPL 0. */
static void privio_flags(void)
{
    unsigned long a = 0, c, d = 0, vec, e[5];
    c = 0x3002;         /* IOPL 3, IF clear */
    vec = k_popf_pushf(&a, &c, &d);
    check(vec == 0 && (a & 0x3200) == 0x200, "popf of IF 0, IOPL 3 in the kernel changes "
          "neither: pushf shows IF 1, IOPL 0 (ring 3, hardware IOPL 0)",
          "vector %lu rflags 0x%lx", vec, a);
    if (!rules_user_entry(user_pushf, 2, e))
        return;
    check(e[0] == 0x21 && (e[4] & 0x3200) == 0x200, "user mode entered with IF 0 sees IF 1 "
          "in pushf (do_iret: | X86_EFLAGS_IF; the mask holds the guest's IF)",
          "vector 0x%lx rflags 0x%lx", e[0], e[4]);
    check_eq("vm_assist enable architectural_iopl (flags)",
             hc_vm_assist(0, 4), 0);
    pio_set_iopl(0);
    rules_user_entry(user_pushf, 0x202 | 0x3000, e);
    check(e[0] == 0x21 && (e[4] & 0x3000) == 0, "architectural_iopl: user mode entered with "
          "IOPL 3 sees IOPL 0 in pushf (do_iret keeps it virtual)", "vector 0x%lx rflags 0x%lx",
          e[0], e[4]);
    rules_user_entry(user_popf_pushf, 0x202, e);
    check(e[0] == 0x21 && (e[4] & 0x3200) == 0x200, "popf of IF 0, IOPL 3 in user mode "
          "changes neither", "vector 0x%lx rflags 0x%lx", e[0], e[4]);
    hc_vm_assist(1, 4);
    pio_set_iopl(0);
}

void checks_privio(void)
{
    section("string port I/O (pv/emul-priv-op.c rep_ins, rep_outs)");
    privio_kernel();
    privio_bitmap();
    privio_user();
    pio_set_iopl(0);
    section("wbinvd, rdtsc and CR4.TSD (pv/emul-priv-op.c, x86_emulate.c)");
    privio_misc();
    section("ring-0 instructions Xen does not emulate (pv/emul-priv-op.c validate)");
    privio_ring0_only();
    section("flags a PV guest sees (pv/iret.c do_iret, emul-priv-op.c)");
    privio_flags();
}
