/*
 * checks_selectors2.c - the selector rules of a 64-bit PV guest under Xen
 * 4.17 that checks_selectors.c leaves out (pvtest-v2-rules, RULES=1;
 * docs/xen-rules.md "Segment selectors"): a HYPERVISOR_iret that stays in
 * kernel mode loads its selectors; a selector naming no usable descriptor
 * makes Xen's IRETQ fault, and the guest gets that fault at the iret's
 * target; MOV/POP to a data segment register is checked as at CPL 3;
 * sysenter and the SYSENTER MSRs.  Each check names the xen.git file
 * (stable-4.17) or the manual its expected answer comes from.  A fault these
 * checks provoke in the kernel is caught by selectors2_trap (called from
 * rules_trap); user-mode runs go through rules_user_run (checks_rules.c).
 * Xen before 4.7 (xen.git d9b7ef209a) entered the failsafe callback where a
 * faulting IRETQ's exception goes to the guest now: on such a version the iret
 * checks expect that (xen_sel2_failsafe, registered around them, notes it).
 * Loads its own GDT (entries 1 and 2 as checks_xen.c's), which
 * rules_segdesc replaces later.
 */
#include "pvtest.h"

#define SEL2_GDT_FLAT   0x00cff2000000ffffUL    /* 1: flat data, DPL 3 (as checks_xen.c) */
#define SEL2_GDT_SMALL  0x0041f20000002345UL    /* 2: data, limit 0x12345 (as checks_xen.c) */
#define SEL2_GDT_CODE64 0x00affa000000ffffUL    /* 3: 64-bit code, DPL 3 */
#define SEL2_GDT_CODE_NP 0x00af7a000000ffffUL   /* 4: 64-bit code, DPL 3, not present */
#define SEL2_GDT_DATA0_NP 0x00cf12000000ffffUL  /* 5: data, DPL 0, not present */
#define SEL2_GDT_DATA3_NP 0x00cf72000000ffffUL  /* 6: data, DPL 3, not present */
#define SEL_DATA   0x08UL
#define SEL_CODE   0x18UL
#define SEL_CODENP 0x20UL
#define SEL_DATA0NP 0x28UL
#define SEL_DATA3NP 0x30UL
#define XEN_RING0_CS 0xe008UL                   /* desc.c boot_gdt: ring-0 code */
#define XEN_RING0_DS 0xe010UL                   /* ring-0 data */
#define XEN_RESERVED_E018 0xe018UL              /* reserved (zero) */
#define FLAT_USER_SS 0xe02bUL                   /* xen-x86_64.h FLAT_RING3_SS64 */
#define FLAT_USER_CS32 0xe023UL                 /* FLAT_RING3_CS32 */
#define MSR_SYSENTER_CS  0x174U
#define MSR_SYSENTER_ESP 0x175U
#define MSR_SYSENTER_EIP 0x176U
#define RFLAGS_IF 0x200UL
#define RFLAGS_DF 0x400UL
/* rules_user_run copies user code to USER_VA + 0x800 (checks_rules.c) */
#define USER2_VA(sym) (0x400000UL + 0x800UL + (unsigned long)((sym) - user2_blob))

/* user_selectors2.S */
extern const char user2_blob[], user2_blob_end[];
extern const char user2_int21[], user2_sysenter64[], user2_sysenter32[];
extern const char sel2_iret_target[], sel2_after_int[], sel2_iret_fixup[];
extern volatile unsigned long sysenter_entered, sel2_iret_rsp;
unsigned long sel2_kernel_iret(unsigned long cs, unsigned long ss, unsigned long out[2]);
void xen_sysenter_callback(void);
void xen_sel2_failsafe(void);
extern volatile unsigned long sel2_fs_frame[11], sel2_fs_n, sel2_fs_resume, sel2_fs_rsp_addr;

#define VEC_FAILSAFE 0x200UL    /* kernel_iret: the failsafe callback was entered */
/* Xen before 4.7: a faulting IRETQ enters the failsafe callback (x86_64/entry.S
 * .Lfx0, failsafe_callback@RELEASE-4.6.0) */
static int pre47;

static uint64_t sel2_gdt[512] __page_aligned;

/* What selectors2_trap caught: a fault at sel2_match (resumed at sel2_fix, or
 * at sel2_iret_fixup for the iret target), or the int $0x21 after it. */
volatile unsigned long sel2_match, sel2_fix, sel2_vec, sel2_err, sel2_n;
static volatile unsigned long s2_cs, s2_ss, s2_rsp, s2_int_cs, s2_int_ss, s2_int_n;

int selectors2_trap(struct trap_frame *f)
{
    if ((f->cs & 3) == 3)
        return 0;
    if (f->vector == 0x21 && f->rip == (unsigned long)sel2_after_int) {
        s2_int_cs = f->cs;
        s2_int_ss = f->ss;
        s2_int_n++;
        return 1;
    }
    if (f->vector < 11 || f->vector > 13 || !sel2_match || f->rip != sel2_match)
        return 0;
    sel2_vec = f->vector;
    sel2_err = f->error;
    s2_cs = f->cs;
    s2_ss = f->ss;
    s2_rsp = f->rsp;
    sel2_n++;
    sel2_match = 0;
    if (f->rip == (unsigned long)sel2_iret_target) {
        /* the iret's frame: back to the caller of sel2_kernel_iret */
        f->rip = (unsigned long)sel2_iret_fixup;
        f->cs = FLAT_KERNEL_CS64 & ~3UL;
        f->ss = FLAT_KERNEL_SS64;
        f->rsp = sel2_iret_rsp;
    } else {
        f->rip = sel2_fix;
    }
    return 1;
}

static long cb_register(uint16_t type, uint16_t flags, unsigned long addr)
{
    struct callback_register r = { type, flags, addr };
    return HYPERVISOR_callback_op(CALLBACKOP_register, &r);
}

/* ---- 1 and 2: HYPERVISOR_iret in kernel mode ---- */

/* sel2_kernel_iret with the fault catcher armed: the vector (0: none), out
 * as sel2_kernel_iret's. Events stay as they were. */
static unsigned long kernel_iret(unsigned long cs, unsigned long ss, unsigned long out[2])
{
    uint8_t mask = vcpu0()->evtchn_upcall_mask;
    unsigned long fs0 = sel2_fs_n;
    out[0] = out[1] = 0;
    sel2_vec = 0;
    sel2_err = ~0UL;
    sel2_match = (unsigned long)sel2_iret_target;
    unsigned long ok = sel2_kernel_iret(cs, ss, out);
    sel2_match = 0;
    vcpu0()->evtchn_upcall_mask = mask;
    if (ok)
        return 0;
    return sel2_fs_n != fs0 ? VEC_FAILSAFE : sel2_vec;
}

/* A faulting iret in kernel mode gave what the version does: vector vec with
 * error err at its target (4.7 and later), or the failsafe callback with the
 * iret's frame (RIP the target, CS cs with RPL cleared, SS ss; before 4.7). */
static int iret_fault_ok(unsigned long got, unsigned long vec, unsigned long err,
                         unsigned long cs, unsigned long ss)
{
    if (pre47)
        return got == VEC_FAILSAFE && sel2_fs_frame[6] == (unsigned long)sel2_iret_target &&
               (sel2_fs_frame[7] & 0xffff) == (cs & ~3UL) && sel2_fs_frame[10] == (ss | 3) &&
               sel2_fs_frame[9] == sel2_iret_rsp;
    return got == vec && sel2_err == err;
}

static void selectors2_kernel_iret(void)
{
    unsigned long out[2], vec, n0;
    static const struct trap_info table[] = {
        { 0x21, 3, FLAT_KERNEL_CS64, (unsigned long)xen_trap_33 }, { 0, 0, 0, 0 } };
    HYPERVISOR_set_trap_table(table);

    vec = kernel_iret(FLAT_KERNEL_CS64 & ~3UL, FLAT_KERNEL_SS64, out);
    check(vec == 0 && out[0] == FLAT_KERNEL_CS64 && out[1] == FLAT_KERNEL_SS64,
          "HYPERVISOR_iret in kernel mode to CS 0xe030 (Linux's frames) -> %cs 0xe033, %ss "
          "0xe02b (pv/iret.c do_iret: cs | 3, ss | 3)", "vector %lu, cs 0x%lx ss 0x%lx",
          vec, out[0], out[1]);

    n0 = s2_int_n;
    vec = kernel_iret(SEL_CODE, SEL_DATA, out);
    check(vec == 0 && out[0] == (SEL_CODE | 3) && out[1] == (SEL_DATA | 3),
          "HYPERVISOR_iret in kernel mode to a GDT code selector 0x18, SS 0x08 -> the kernel "
          "runs with %cs 0x1b, %ss 0x0b (do_iret forces RPL 3; restore_all_guest's IRETQ "
          "loads their descriptors)", "vector %lu, cs 0x%lx ss 0x%lx", vec, out[0], out[1]);
    check(s2_int_n == n0 + 1 && (s2_int_cs & 0xffff) == SEL_CODE && s2_int_ss == (SEL_DATA | 3),
          "an int $0x21 there: frame CS 0x18 (UREGS_cs, RPL cleared), SS 0x0b "
          "(x86_64/entry.S create_bounce_frame pushes the interrupted ones)",
          "entries %lu, cs 0x%lx ss 0x%lx", s2_int_n - n0, s2_int_cs, s2_int_ss);

    /* 2: a selector that names no usable descriptor: the IRETQ faults in Xen and
     * iret_exit_to_guest's fixup (handle_exception, x86_64/entry.S) reports it on
     * the iret's own frame (commit d9b7ef209a, Xen 4.7: no failsafe callback). */
    cb_register(CALLBACKTYPE_failsafe, CALLBACKF_mask_events, (unsigned long)xen_sel2_failsafe);
    vec = kernel_iret(SEL_CODENP, SEL_DATA, out);
    check(pre47 ? iret_fault_ok(vec, 0, 0, SEL_CODENP, SEL_DATA)
                : vec == 11 && sel2_err == SEL_CODENP && (s2_cs & 0xffff) == SEL_CODENP &&
                      s2_ss == (SEL_DATA | 3) && s2_rsp == sel2_iret_rsp,
          "HYPERVISOR_iret in kernel mode to a not-present code segment -> #NP(0x20) at the "
          "iret's target, frame CS 0x20, SS 0x0b, RSP (entry.S iret_exit_to_guest; before "
          "Xen 4.7 the failsafe callback)", "vector 0x%lx error 0x%lx cs 0x%lx ss 0x%lx rsp ok %d", vec, sel2_err,
          s2_cs, s2_ss, s2_rsp == sel2_iret_rsp);
    vec = kernel_iret(XEN_RING0_CS, FLAT_KERNEL_SS64, out);
    check(iret_fault_ok(vec, 13, XEN_RING0_CS, XEN_RING0_CS, FLAT_KERNEL_SS64),
          "HYPERVISOR_iret in kernel mode to Xen's ring-0 code 0xe008 -> #GP(0xe008) at the "
          "target (desc.c boot_gdt: DPL 0 != RPL 3; traps.c do_general_protection passes it on)",
          "vector %lu error 0x%lx", vec, sel2_err);
    vec = kernel_iret(FLAT_KERNEL_CS64 & ~3UL, SEL_DATA3NP, out);
    check(iret_fault_ok(vec, 12, SEL_DATA3NP, FLAT_KERNEL_CS64, SEL_DATA3NP),
          "HYPERVISOR_iret in kernel mode with SS a not-present data segment -> #SS(0x30) "
          "(SDM IRET)", "vector %lu error 0x%lx", vec, sel2_err);
    vec = kernel_iret(FLAT_KERNEL_CS64 & ~3UL, FLAT_KERNEL_CS64, out);
    check(iret_fault_ok(vec, 13, FLAT_KERNEL_CS64 & ~3UL, FLAT_KERNEL_CS64, FLAT_KERNEL_CS64),
          "HYPERVISOR_iret in kernel mode with SS 0xe033 (code) -> #GP(0xe030) (SDM IRET: SS "
          "must be a writable data segment)", "vector %lu error 0x%lx", vec, sel2_err);
    vec = kernel_iret(FLAT_KERNEL_CS64 & ~3UL, 0, out);
    check(iret_fault_ok(vec, 13, 0, FLAT_KERNEL_CS64, 0),
          "HYPERVISOR_iret in kernel mode with a null SS -> #GP(0) (do_iret makes it 3: a "
          "null SS is allowed only below CPL 3; SDM IRET)", "vector %lu error 0x%lx", vec,
          sel2_err);
}

/* Run 64-bit or 32-bit user code at sym (in user2_blob) with CS cs, SS ss. */
static unsigned long run2(const char *sym, unsigned long cs, unsigned long ss,
                          unsigned long rflags, unsigned long out[10])
{
    return rules_user_run(user2_blob, (unsigned long)(user2_blob_end - user2_blob),
                          (unsigned long)(sym - user2_blob), cs, ss, rflags, out);
}

/* run2 to user2_int21 with CS cs, SS ss, which the IRETQ refuses: 1 when the
 * guest got what the version gives, vector vec with error err at the target
 * on the kernel stack (4.7 and later) or the failsafe callback with CS cs and
 * SS ss in its frame (before); out as run2's, n the entries logged. */
static int user_iret_fault(unsigned long cs, unsigned long ss, unsigned long vec,
                           unsigned long err, unsigned long out[10], unsigned long *n)
{
    unsigned long fs0 = sel2_fs_n;
    sel2_fs_resume = (unsigned long)user_return;
    sel2_fs_rsp_addr = (unsigned long)&user_saved_rsp;
    *n = run2(user2_int21, cs, ss, 2, out);
    if (pre47)
        return *n == 0 && sel2_fs_n == fs0 + 1 &&
               sel2_fs_frame[6] == USER2_VA(user2_int21) &&
               (sel2_fs_frame[7] & 0xffff) == cs && sel2_fs_frame[10] == ss;
    return *n == 1 && out[0] == vec && out[1] == err && out[2] == 0 &&
           (out[5] & 0xffff) == cs && out[6] == ss;
}

static void selectors2_user_iret(void)
{
    unsigned long out[10], n;

    int ok = user_iret_fault(SEL_CODENP | 3, SEL_DATA | 3, 11, SEL_CODENP, out, &n);
    check(ok,
          "HYPERVISOR_iret to user mode with a not-present code segment -> #NP(0x20) on the "
          "kernel stack, frame RIP the target, CS 0x23, SS 0x0b (create_bounce_frame toggles "
          "back to kernel mode)", "entries %lu, vector %lu error 0x%lx rip +%ld cs 0x%lx ss 0x%lx",
          n, out[0], out[1], (long)out[2], out[5], out[6]);
    ok = user_iret_fault(XEN_RING0_CS | 3, FLAT_USER_SS, 13, XEN_RING0_CS, out, &n);
    check(ok,
          "HYPERVISOR_iret to user mode with CS 0xe00b (Xen's ring-0 code) -> #GP(0xe008) at "
          "the target", "entries %lu, vector %lu error 0x%lx rip +%ld", n, out[0], out[1],
          (long)out[2]);
    ok = user_iret_fault(FLAT_USER_CS64, SEL_DATA3NP | 3, 12, SEL_DATA3NP, out, &n);
    check(ok,
          "HYPERVISOR_iret to user mode with a not-present SS -> #SS(0x30), frame SS 0x33",
          "entries %lu, vector %lu error 0x%lx ss 0x%lx", n, out[0], out[1], out[6]);
    ok = user_iret_fault(FLAT_USER_CS64, 3, 13, 0, out, &n);
    check(ok,
          "HYPERVISOR_iret to user mode with a null SS -> #GP(0)",
          "entries %lu, vector %lu error 0x%lx", n, out[0], out[1]);
}

/* ---- 3: MOV/POP to DS/ES/FS/GS, checked as at CPL 3 ---- */

/* mov sel to %ds (which 0), %es (1); pop into %fs (2): the vector (0: none). */
static unsigned long load_seg(int which, unsigned long sel)
{
    unsigned long n0 = sel2_n;
    sel2_vec = 0;
    sel2_err = ~0UL;
    if (which == 0)
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_match(%%rip)\n\t"
                             "lea 2f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_fix(%%rip)\n"
                             "1: mov %w0, %%ds\n"
                             "2:\n\t"
                             "movq $0, sel2_match(%%rip)\n" : : "r"(sel) : "r11", "memory");
    else if (which == 1)
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_match(%%rip)\n\t"
                             "lea 2f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_fix(%%rip)\n"
                             "1: mov %w0, %%es\n"
                             "2:\n\t"
                             "movq $0, sel2_match(%%rip)\n" : : "r"(sel) : "r11", "memory");
    else
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_match(%%rip)\n\t"
                             "lea 3f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_fix(%%rip)\n\t"
                             "push %0\n"
                             "1: pop %%fs\n\t"
                             "jmp 4f\n"
                             "3: add $8, %%rsp\n"
                             "4:\n\t"
                             "movq $0, sel2_match(%%rip)\n" : : "r"(sel) : "r11", "memory");
    return sel2_n != n0 ? sel2_vec : 0;
}

static void selectors2_data_segments(void)
{
    unsigned long ds, es, vec, v2;
    __asm__ __volatile__("mov %%ds, %0; mov %%es, %1" : "=r"(ds), "=r"(es));

    vec = load_seg(0, SEL_DATA | 3);
    v2 = load_seg(1, 0);
    unsigned long nds, nes;
    __asm__ __volatile__("mov %%ds, %0; mov %%es, %1" : "=r"(nds), "=r"(nes));
    check(vec == 0 && v2 == 0 && nds == (SEL_DATA | 3) && nes == 0,
          "the kernel loads %ds with a DPL-3 data selector (Linux's __USER_DS) and %es with 0 "
          "(SDM MOV: at CPL 3 a null selector and DPL 3 data load)",
          "vectors %lu %lu, ds 0x%lx es 0x%lx", vec, v2, nds, nes);
    vec = load_seg(0, SEL_DATA0NP);
    check(vec == 13 && sel2_err == SEL_DATA0NP,
          "mov to %ds of a not-present DPL-0 data segment from the kernel -> #GP(0x28), not "
          "#NP: the ring-3 kernel fails the privilege check first (SDM MOV; pv/descriptor-"
          "tables.c check_descriptor leaves a not-present descriptor's DPL 0)",
          "vector %lu error 0x%lx", vec, sel2_err);
    vec = load_seg(1, XEN_RESERVED_E018);
    check(vec == 13 && sel2_err == XEN_RESERVED_E018,
          "mov to %es of 0xe018 (a reserved, empty entry of Xen's GDT) -> #GP(0xe018) "
          "(desc.c boot_gdt)", "vector %lu error 0x%lx", vec, sel2_err);
    vec = load_seg(0, XEN_RING0_DS);
    check(vec == 13 && sel2_err == XEN_RING0_DS,
          "mov to %ds of Xen's ring-0 data 0xe010 -> #GP(0xe010) (desc.c boot_gdt: DPL 0 < "
          "CPL 3)", "vector %lu error 0x%lx", vec, sel2_err);
    vec = load_seg(0, SEL_DATA3NP | 3);
    check(vec == 11 && sel2_err == SEL_DATA3NP,
          "mov to %ds of a not-present DPL-3 data segment -> #NP(0x30) (SDM MOV)",
          "vector %lu error 0x%lx", vec, sel2_err);
    vec = load_seg(2, SEL_DATA0NP);
    check(vec == 13 && sel2_err == SEL_DATA0NP,
          "pop %fs of the not-present DPL-0 data segment -> #GP(0x28) (SDM POP)",
          "vector %lu error 0x%lx", vec, sel2_err);
    __asm__ __volatile__("mov %0, %%ds; mov %1, %%es" : : "r"(ds), "r"(es));
}

/* ---- 4: sysenter and the SYSENTER MSRs ---- */

static unsigned long msr_gp(int write, uint32_t msr)
{
    unsigned long n0 = sel2_n;
    uint32_t lo = 0, hi = 0;
    sel2_vec = 0;
    if (write)
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_match(%%rip)\n\t"
                             "lea 2f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_fix(%%rip)\n"
                             "1: wrmsr\n"
                             "2:\n\t"
                             "movq $0, sel2_match(%%rip)\n"
                             : : "c"(msr), "a"(lo), "d"(hi) : "r11", "memory");
    else
        __asm__ __volatile__("lea 1f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_match(%%rip)\n\t"
                             "lea 2f(%%rip), %%r11\n\t"
                             "mov %%r11, sel2_fix(%%rip)\n"
                             "1: rdmsr\n"
                             "2:\n\t"
                             "movq $0, sel2_match(%%rip)\n"
                             : "+a"(lo), "+d"(hi) : "c"(msr) : "r11", "memory");
    return sel2_n != n0 ? sel2_vec : 0;
}

static void selectors2_sysenter(void)
{
    unsigned long out[10], n;
    long rc;
    const unsigned long va64 = USER2_VA(user2_sysenter64), va32 = USER2_VA(user2_sysenter32);

    rc = cb_register(CALLBACKTYPE_sysenter, 0, (unsigned long)xen_sysenter_callback);
    sysenter_entered = 0;
    n = run2(user2_sysenter64, FLAT_USER_CS64, FLAT_USER_SS, 2 | RFLAGS_IF, out);
    check(rc == 0 && n == 1 && out[0] == VEC_SYSCALL && sysenter_entered == 1,
          "sysenter from 64-bit user code -> the sysenter callback (x86_64/entry.S "
          "sysenter_entry; pvmon's CPUID vendor is Intel, whose CPUs run SYSENTER in long mode)",
          "rc %ld, entries %lu, vector 0x%lx, entered %lu", rc, n, out[0], sysenter_entered);
    check(out[2] + va64 == 0 && (out[5] & 0xffff) == 3 && out[9] == 0 && out[6] == FLAT_USER_SS,
          "sysenter frame: RIP 0, CS 3, RSP 0, SS 0xe02b (sysenter_entry pushes FLAT_USER_SS, "
          "a null RSP, a ring-3 null CS and a null RIP)",
          "rip 0x%lx cs 0x%lx rsp 0x%lx ss 0x%lx", out[2] + va64, out[5], out[9], out[6]);
    check(out[4] == 0x5e64 && (out[1] & RFLAGS_DF) && out[8] == 0,
          "sysenter callback registered without CALLBACKF_mask_events: events stay enabled, "
          "DF is kept (pv/callback.c sysenter_disables_events; create_bounce_frame clears "
          "TF, NT, RF, VM, AC only)", "rbx 0x%lx, rflags at entry 0x%lx, mask %lu", out[4], out[1],
          out[8]);

    rc = cb_register(CALLBACKTYPE_sysenter, CALLBACKF_mask_events,
                     (unsigned long)xen_sysenter_callback);
    sysenter_entered = 0;
    n = run2(user2_sysenter32, FLAT_USER_CS32, FLAT_USER_SS, 2 | RFLAGS_IF, out);
    check(rc == 0 && n == 1 && sysenter_entered == 1 && out[2] + va32 == 0 &&
              (out[5] & 0xffff) == 3 && out[4] == 0x5e32 && out[8] == 1,
          "sysenter from 32-bit user code -> the same callback and frame, events masked with "
          "CALLBACKF_mask_events (a 64-bit domain never takes compat_sysenter)",
          "rc %ld, entries %lu, entered %lu, rip 0x%lx cs 0x%lx rbx 0x%lx mask %lu", rc, n,
          sysenter_entered, out[2] + va32, out[5], out[4], out[8]);

    rc = cb_register(CALLBACKTYPE_sysenter, 0, 0);
    sysenter_entered = 0;
    n = run2(user2_sysenter64, FLAT_USER_CS64, FLAT_USER_SS, 2 | RFLAGS_IF, out);
    check(rc == 0 && n == 1 && out[0] == 13 && out[1] == 0 && out[2] + va64 == 0 &&
              (out[5] & 0xffff) == 3 && sysenter_entered == 0,
          "sysenter with no sysenter callback -> #GP(0) through the trap table, frame RIP 0, "
          "CS 3 (entry.S sysenter_gpf)", "entries %lu, vector %lu error 0x%lx rip 0x%lx cs 0x%lx",
          n, out[0], out[1], out[2] + va64, out[5]);
    cb_register(CALLBACKTYPE_sysenter, CALLBACKF_mask_events,
                (unsigned long)xen_syscall_callback);

    static const struct { uint32_t msr; const char *rd, *wr; } m[] = {
        { MSR_SYSENTER_CS, "rdmsr SYSENTER_CS (0x174) -> #GP (pv/emul-priv-op.c read_msr: "
          "not emulated)", "wrmsr SYSENTER_CS -> #GP (write_msr: not emulated)" },
        { MSR_SYSENTER_ESP, "rdmsr SYSENTER_ESP (0x175) -> #GP", "wrmsr SYSENTER_ESP -> #GP" },
        { MSR_SYSENTER_EIP, "rdmsr SYSENTER_EIP (0x176) -> #GP", "wrmsr SYSENTER_EIP -> #GP" },
    };
    for (unsigned i = 0; i < 3; i++) {
        unsigned long v = msr_gp(0, m[i].msr);
        check(v == 13, m[i].rd, "vector %lu", v);
        v = msr_gp(1, m[i].msr);
        check(v == 13, m[i].wr, "vector %lu", v);
    }
}

void checks_selectors2(void)
{
    section("selectors: iret selectors and faults, data segments, sysenter "
            "(pv/iret.c, x86_64/entry.S@stable-4.17)");
    memset(sel2_gdt, 0, PAGE_SIZE);
    sel2_gdt[1] = SEL2_GDT_FLAT;
    sel2_gdt[2] = SEL2_GDT_SMALL;
    sel2_gdt[3] = SEL2_GDT_CODE64;
    sel2_gdt[4] = SEL2_GDT_CODE_NP;
    sel2_gdt[5] = SEL2_GDT_DATA0_NP;
    sel2_gdt[6] = SEL2_GDT_DATA3_NP;
    long rc = set_page_ro(sel2_gdt, 1);
    unsigned long frames[1] = { virt_to_mfn(sel2_gdt) };
    if (!rc)
        rc = HYPERVISOR_set_gdt(frames, 512);
    if (!check_eq("set_gdt of these checks' GDT (code, data, not-present entries) -> 0", rc, 0))
        return;
    pre47 = HYPERVISOR_xen_version(XENVER_version, 0) < ((4L << 16) | 7);
    selectors2_kernel_iret();
    selectors2_user_iret();
    cb_register(CALLBACKTYPE_failsafe, CALLBACKF_mask_events,
                (unsigned long)xen_failsafe_callback);
    selectors2_data_segments();
    selectors2_sysenter();
}
