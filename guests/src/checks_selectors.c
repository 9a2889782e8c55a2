/*
 * checks_selectors.c - the segment selectors a 64-bit PV guest sees under
 * Xen 4.17 (pvtest-v2-rules, RULES=1): 32-bit user code under
 * FLAT_RING3_CS32, its syscall and int $0x80, and the kernel's own selectors,
 * with which it executes IRETQ and far returns (Linux's sync_core()).
 * Each check names the xen.git file (stable-4.17) or the manual its expected
 * answer comes from.  The user-mode runs go through checks_rules.c
 * (rules_user_run); a #GP or software interrupt these checks provoke in the
 * kernel is caught by selectors_trap (called from rules_trap).
 */
#include "pvtest.h"

#define FLAT_RING3_CS32 0xe023UL        /* xen-x86_64.h */
#define FLAT_RING3_SS32 0xe02bUL
#define RFLAGS_CF       0x1UL
#define RFLAGS_IF       0x200UL
#define CS_SEL(cs)      ((cs) & 0xffffUL)

/* user_selectors.S */
extern const char user32_blob[], user32_blob_end[];
extern const char user32_mode[], user32_syscall[], user32_int80[];
extern volatile unsigned long syscall32_entered;
void xen_syscall32_callback(void);
unsigned long kernel_iret_to_self(unsigned long rflags, unsigned long out[3]);
unsigned long kernel_lret_to_self(void);
void kernel_iret_rpl0(void);

/* The last kernel-mode entry these checks asked for (selectors_trap). */
static volatile struct { unsigned long armed, vector, error, rip, cs, ss, n; } seen;

int selectors_trap(struct trap_frame *f)
{
    if (!seen.armed || (f->cs & 3) == 3)
        return 0;
    seen.armed = 0;
    seen.vector = f->vector;
    seen.error = f->error;
    seen.rip = f->rip;
    seen.cs = f->cs;
    seen.ss = f->ss;
    seen.n++;
    if (f->vector == 13)
        f->rip += 2;            /* past the iretq (48 cf) */
    return 1;
}

static long cb_register(uint16_t type, uint16_t flags, unsigned long addr)
{
    struct callback_register r = { type, flags, addr };
    return HYPERVISOR_callback_op(CALLBACKOP_register, &r);
}

/* Run the 32-bit user code at sym (in user32_blob) with CS = cs. */
static unsigned long run32(const char *sym, unsigned long cs, unsigned long rflags,
                           unsigned long out[10])
{
    return rules_user_run(user32_blob, (unsigned long)(user32_blob_end - user32_blob),
                          (unsigned long)(sym - user32_blob), cs, FLAT_RING3_SS32, rflags, out);
}

static void selectors_user32(void)
{
    unsigned long out[10], n;
    long rc;
    static const struct trap_info table[] = {
        { 0x21, 3, FLAT_KERNEL_CS64, (unsigned long)xen_trap_33 },
        { 0x80, 3, FLAT_KERNEL_CS64, (unsigned long)xen_trap_128 },
        { 0, 0, 0, 0 } };
    HYPERVISOR_set_trap_table(table);

    /* 0x4b is dec %ebx in 32-bit code and a REX prefix (a no-op here) in 64-bit code */
    n = run32(user32_mode, FLAT_RING3_CS32, 2, out);
    if (!check(n == 1, "HYPERVISOR_iret to FLAT_RING3_CS32 (0xe023) reaches user mode",
               "%lu entries", n))
        return;
    check(out[0] == 0x21 && out[4] == 0xffffffffUL,
          "iret to FLAT_RING3_CS32 runs the process in compatibility mode (desc.c boot_gdt: "
          "0xe023 is 32-bit ring-3 code; 0x4b is dec %ebx)",
          "vector 0x%lx, ebx 0x%lx", out[0], out[4]);
    check(CS_SEL(out[5]) == FLAT_RING3_CS32 && out[6] == FLAT_RING3_SS32,
          "an int $0x21 from 32-bit user code: frame CS 0xe023, SS 0xe02b (create_bounce_frame "
          "pushes the interrupted UREGS_cs/ss)", "cs 0x%lx ss 0x%lx", out[5], out[6]);

    /* syscall from 32-bit code: cstar_enter, switch_to_kernel (x86_64/entry.S) */
    rc = cb_register(CALLBACKTYPE_syscall32, 0, (unsigned long)xen_syscall32_callback);
    syscall32_entered = 0;
    n = run32(user32_syscall, FLAT_RING3_CS32, 2 | RFLAGS_IF, out);
    /* user32_syscall: mov $0x1234, %ebx (5 bytes); syscall (2) */
    check(rc == 0 && n == 1 && out[0] == VEC_SYSCALL && syscall32_entered == 1,
          "syscall from 32-bit user code -> the syscall32 callback (switch_to_kernel picks "
          "syscall32_addr when CS is FLAT_USER_CS32)",
          "rc %ld, vector 0x%lx, syscall32 entered %lu", rc, out[0], syscall32_entered);
    check(out[2] == 7 && out[7] == 7,
          "syscall32 callback: frame RIP and RCX = the address after the syscall",
          "rip +%lu, rcx +%lu (expected +7)", out[2], out[7]);
    check(CS_SEL(out[5]) == FLAT_RING3_CS32 && out[6] == FLAT_RING3_SS32,
          "syscall32 frame: CS FLAT_USER_CS32, SS FLAT_USER_SS32 (cstar_enter pushes them)",
          "cs 0x%lx ss 0x%lx", out[5], out[6]);
    check(out[8] == 1,
          "syscall32 registered without CALLBACKF_mask_events: events masked all the same "
          "(a 64-bit domain takes VGCF_syscall_disables_events, the syscall callback's flag; "
          "callback.c keeps syscall32's for 32-bit domains)", "mask %lu", out[8]);

    rc = cb_register(CALLBACKTYPE_syscall, 0, (unsigned long)xen_syscall_callback);
    rc |= cb_register(CALLBACKTYPE_syscall32, CALLBACKF_mask_events,
                      (unsigned long)xen_syscall32_callback);
    syscall32_entered = 0;
    n = run32(user32_syscall, FLAT_RING3_CS32, 2 | RFLAGS_IF, out);
    check(rc == 0 && n == 1 && syscall32_entered == 1 && out[8] == 0,
          "syscall32 with CALLBACKF_mask_events but the syscall callback without: events "
          "stay enabled (switch_to_kernel: VGCF_syscall_disables_events)",
          "rc %ld, entered %lu, mask %lu", rc, syscall32_entered, out[8]);
    rc = cb_register(CALLBACKTYPE_syscall, CALLBACKF_mask_events,
                     (unsigned long)xen_syscall_callback);
    check_eq("syscall callback registered again with CALLBACKF_mask_events", rc, 0);

    rc = cb_register(CALLBACKTYPE_syscall32, 0, 0);
    syscall32_entered = 0;
    n = run32(user32_syscall, FLAT_RING3_CS32, 2 | RFLAGS_IF, out);
    check(rc == 0 && n == 1 && out[0] == 6 && out[2] == 5 && syscall32_entered == 0 &&
              CS_SEL(out[5]) == FLAT_RING3_CS32,
          "syscall from 32-bit user code with no syscall32 callback -> #UD at the syscall, "
          "not the 64-bit callback (switch_to_kernel: TB_eip == 0)",
          "rc %ld, vector %lu, rip +%lu, cs 0x%lx", rc, out[0], out[2], out[5]);

    n = run32(user32_int80, FLAT_RING3_CS32, 2, out);
    check(n == 1 && out[0] == 0x80 && out[2] == 2 && CS_SEL(out[5]) == FLAT_RING3_CS32,
          "int $0x80 from 32-bit user code -> the trap table's 0x80 handler, RIP after, "
          "CS 0xe023 (int80_direct_trap, as from 64-bit code)",
          "vector 0x%lx, rip +%lu, cs 0x%lx", out[0], out[2], out[5]);

    /* leave the syscall32 callback as pv_register_callbacks had it */
    cb_register(CALLBACKTYPE_syscall32, CALLBACKF_mask_events,
                (unsigned long)xen_syscall_callback);
}

static void selectors_kernel(void)
{
    unsigned long cs, ss, out[3];

    __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    check(cs == FLAT_KERNEL_CS64 && ss == FLAT_KERNEL_SS64,
          "the kernel reads %cs = FLAT_KERNEL_CS64 0xe033 and %ss = FLAT_KERNEL_SS64 0xe02b "
          "(xen-x86_64.h; create_bounce_frame loads them)", "cs 0x%lx ss 0x%lx", cs, ss);

    /* Linux's sync_core(): iret_to_self pushes %ss, %rsp, RFLAGS, %cs and executes
     * IRETQ, which in the ring-3 kernel is a same-privilege return. */
    unsigned long flags;
    __asm__ volatile("pushfq; pop %0" : "=r"(flags));
    unsigned long ok = kernel_iret_to_self((flags | RFLAGS_CF) & ~RFLAGS_IF, out);
    check(ok == 1 && out[0] == FLAT_KERNEL_CS64 && out[1] == FLAT_KERNEL_SS64,
          "IRETQ to the kernel's own %cs/%ss (sync_core's iret_to_self) stays in the kernel "
          "with CS 0xe033, SS 0xe02b (SDM IRET: same privilege level)",
          "resumed %lu, cs 0x%lx ss 0x%lx", ok, out[0], out[1]);
    check((out[2] & RFLAGS_CF) && (out[2] & RFLAGS_IF) == (flags & RFLAGS_IF),
          "that IRETQ loads CF from the frame but not IF (CPL 3 > IOPL 0: Xen runs the "
          "kernel with hardware IOPL 0)", "rflags 0x%lx (before 0x%lx)", out[2], flags);

    unsigned long moved = kernel_lret_to_self();
    check(moved == 16, "LRETQ to FLAT_KERNEL_CS64 from the kernel: same-privilege far "
          "return, pops RIP and CS only (SDM RET)", "rsp moved by %lu bytes", moved);

    seen.armed = 1;
    unsigned long n0 = seen.n;
    kernel_iret_rpl0();
    check(seen.n == n0 + 1 && seen.vector == 13 && seen.error == (FLAT_KERNEL_CS64 & ~3UL),
          "IRETQ from the kernel to an RPL-0 CS (0xe030) -> #GP(0xe030) (SDM IRET: return "
          "RPL < CPL 3; traps.c do_general_protection passes it on)",
          "entries %lu, vector %lu, error 0x%lx", seen.n - n0, seen.vector, seen.error);
    seen.armed = 0;

    __asm__ volatile("mov %%ss, %%eax; mov %%eax, %%ss; mov %%ss, %0" : "=r"(ss) : : "rax");
    check(ss == FLAT_KERNEL_SS64, "the kernel reloads %ss with 0xe02b (RPL 3 = CPL 3 under Xen)",
          "ss 0x%lx", ss);

    static const struct trap_info table[] = {
        { 0x21, 3, FLAT_KERNEL_CS64, (unsigned long)xen_trap_33 }, { 0, 0, 0, 0 } };
    HYPERVISOR_set_trap_table(table);
    seen.armed = 1;
    n0 = seen.n;
    __asm__ volatile("int $0x21" ::: "memory");
    check(seen.n == n0 + 1 && seen.vector == 0x21 && CS_SEL(seen.cs) == (FLAT_KERNEL_CS64 & ~3UL)
              && seen.ss == FLAT_KERNEL_SS64,
          "int $0x21 in the kernel: frame CS 0xe030 (RPL cleared), SS 0xe02b "
          "(create_bounce_frame)", "vector 0x%lx cs 0x%lx ss 0x%lx", seen.vector, seen.cs,
          seen.ss);
    seen.armed = 0;
}

void checks_selectors(void)
{
    section("selectors: FLAT_RING3_CS32, 32-bit user code, the kernel's own "
            "(xen-x86_64.h, x86_64/entry.S, pv/iret.c@stable-4.17)");
    selectors_kernel();
    selectors_user32();
}
