/*
 * checks_debugreg_hc.c - the set_debugreg / get_debugreg hypercalls' rules as
 * Xen 4.17 enforces them on a 64-bit PV guest (pvtest-v2-rules, RULES=1; run
 * after checks_debugreg.c; docs/xen-rules.md "Debug registers").
 *
 * Sources (xen.git, stable-4.17): SD = xen/arch/x86/pv/misc-hypercalls.c
 * (do_set_debugreg(int reg, ...), set_debugreg, do_get_debugreg: any read
 * failure is -ENODEV), RD = xen/arch/x86/x86_emulate.c (x86emul_read_dr),
 * DH = xen/arch/x86/include/asm/debugreg.h (the reserved-bit masks;
 * breakpoint_addr_ok = __addr_ok, xen/arch/x86/include/asm/x86_64/uaccess.h:
 * below 2^47 or at/above HYPERVISOR_VIRT_END).  The hypercalls are made
 * directly (xen_hypercall_nr), no breakpoint is ever armed (no enable bit
 * with an address the guest touches), and everything is put back at the end.
 *
 * debugreg_hc_user_io: an I/O breakpoint hit by a port access from guest user
 * mode.  EP = xen/arch/x86/pv/emul-priv-op.c: Xen emulates the IN/OUT the
 * user process's virtual IOPL allows (guest_io_okay), matches it against the
 * enabled I/O breakpoints (check_guest_io_breakpoint: dr7_emul, CR4.DE, the
 * LEN-aligned port range), and after the instruction sets their B bits in
 * %dr6 with DR_STATUS_RESERVED_ONE and injects #DB (pv_emulate_privileged_op:
 * pv_inject_hw_exception(TRAP_debug)): a trap, delivered through the trap
 * table like any exception from user mode (to the kernel, RIP after the
 * instruction, the frame's CS the user's).
 */
#include "pvtest.h"

#define HC_set_debugreg 8
#define HC_get_debugreg 9
#define XEN_ENODEV      19
#define CR4_DE          (1UL << 3)
#define DR6_DEFAULT     0xffff0ff0UL    /* DR_STATUS_RESERVED_ONE */
#define DR7_DEFAULT     0x400UL         /* DR_CONTROL_RESERVED_ONE */
#define DR7_GD          0x2000UL        /* DR_GENERAL_DETECT */
#define DR7_L(i)        (1UL << (2 * (i)))
#define DR7_RW(i, rw)   ((unsigned long)(rw) << (16 + 4 * (i)))
#define RW_WRITE        1
#define RW_IO           2               /* DR_IO: an I/O breakpoint */
#define ARG_XLAT_START  0xffff820080000000UL    /* vCPU 0's compat translation area */
#define HC_physdev_op   33
#define PHYSDEVOP_set_iopl 6
#define LEN_2           1UL

static long set_dr(unsigned long reg, unsigned long v)
{
    return xen_hypercall_nr(HC_set_debugreg, reg, v, 0, 0, 0);
}

static long get_dr(unsigned long reg)
{
    return xen_hypercall_nr(HC_get_debugreg, reg, 0, 0, 0, 0);
}

/* set_debugreg(reg, v) -> 0, then get_debugreg(reg) -> v */
static void stored(const char *name, unsigned long reg, unsigned long v)
{
    long rc = set_dr(reg, v);
    check(rc == 0 && (unsigned long)get_dr(reg) == v, name, "rc %ld, reads 0x%lx", rc,
          (unsigned long)get_dr(reg));
}

/* set_debugreg(reg, v) -> err, the register as it was */
static void refused(const char *name, unsigned long reg, unsigned long v, long err)
{
    long before = get_dr(reg), rc = set_dr(reg, v);
    check(rc == err && get_dr(reg) == before, name, "rc %ld (want %ld), 0x%lx -> 0x%lx", rc,
          err, (unsigned long)before, (unsigned long)get_dr(reg));
}

static void debugreg_hc_addresses(void)
{
    stored("set_debugreg(0, 2^47 - 1) -> 0, read back (SD breakpoint_addr_ok: "
           "below 2^47)", 0, 0x7fffffffffffUL);
    refused("set_debugreg(1, 2^47) -> -EPERM, %dr1 unchanged (SD: not canonical, "
            "no separate canonical check)", 1, 1UL << 47, -XEN_EPERM);
    refused("set_debugreg(2, HYPERVISOR_VIRT_START) -> -EPERM (SD: Xen's range)",
            2, HYPERVISOR_VIRT_START, -XEN_EPERM);
    refused("set_debugreg(3, HYPERVISOR_VIRT_END - 8) -> -EPERM (SD: below the end)", 3,
            HYPERVISOR_VIRT_END - 8, -XEN_EPERM);
    refused("set_debugreg(0, the compat argument-translation area) -> -EPERM (SD: "
            "__addr_ok, not access_ok; XSA-444, 4.17.3)", 0, ARG_XLAT_START, -XEN_EPERM);
    stored("set_debugreg(3, HYPERVISOR_VIRT_END) -> 0, read back (SD: at or above "
           "the end)", 3, HYPERVISOR_VIRT_END);
    stored("set_debugreg(2, 0xfffffffffffff000) -> 0, read back (SD)", 2, 0xfffffffffffff000UL);
    for (unsigned r = 0; r < 4; r++)
        set_dr(r, 0);
}

static void debugreg_hc_dr6_dr7(void)
{
    long rc;
    refused("set_debugreg(6, 1 << 32) -> -EINVAL (SD: the upper 32 bits are strictly "
            "reserved)", 6, 1UL << 32, -XEN_EINVAL);
    rc = set_dr(6, 0x1001);
    check(rc == 0 && (unsigned long)get_dr(6) == (DR6_DEFAULT | 1),
          "set_debugreg(6, 0x1001) -> 0, reads 0xffff0ff1 (DH DR_STATUS_RESERVED_ZERO: "
          "bit 12 cleared; _ONE: 0xffff0ff0 set)", "rc %ld, reads 0x%lx", rc,
          (unsigned long)get_dr(6));
    refused("set_debugreg(7, 1 << 32) -> -EINVAL (SD)", 7, 1UL << 32, -XEN_EINVAL);
    rc = set_dr(7, 0xd800);
    check(rc == 0 && (unsigned long)get_dr(7) == DR7_DEFAULT,
          "set_debugreg(7, 0xd800) -> 0, reads 0x400 (DH DR_CONTROL_RESERVED_ZERO: "
          "bits 11, 12, 14, 15 cleared, never refused; _ONE: bit 10 set)",
          "rc %ld, reads 0x%lx", rc, (unsigned long)get_dr(7));
    refused("set_debugreg(7, GD) -> -EPERM, %dr7 unchanged (SD: general detect is "
            "privileged)", 7, DR7_DEFAULT | DR7_GD, -XEN_EPERM);
}

static void debugreg_hc_io(unsigned long cr4)
{
    long rc;
    write_cr4(cr4 & ~CR4_DE);
    refused("CR4.DE clear: set_debugreg(7) enabling an I/O breakpoint -> -EPERM (SD: "
            "DR_IO only with CR4.DE)", 7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO),
            -XEN_EPERM);
    refused("CR4.DE clear: an I/O field in a disabled slot while another slot is "
            "enabled -> -EPERM (SD: the loop looks at all four)", 7,
            DR7_DEFAULT | DR7_L(1) | DR7_RW(0, RW_IO), -XEN_EPERM);
    stored("CR4.DE clear: an I/O field with no enable bit at all -> 0, kept as given "
           "(SD: the fields are checked only when %dr7 is active)", 7,
           DR7_DEFAULT | DR7_RW(0, RW_IO));
    write_cr4(cr4 | CR4_DE);
    rc = set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO));
    check(rc == 0 && (unsigned long)get_dr(7) == (DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO)),
          "CR4.DE set: the I/O breakpoint -> 0, read back whole (RD: dr7 | dr7_emul)",
          "rc %ld, reads 0x%lx", rc, (unsigned long)get_dr(7));
    set_dr(7, DR7_DEFAULT);
}

static void debugreg_hc_aliases(unsigned long cr4)
{
    long rc;
    write_cr4(cr4 & ~CR4_DE);
    rc = set_dr(4, 0x1);
    check(rc == 0 && (unsigned long)get_dr(6) == (DR6_DEFAULT | 1),
          "CR4.DE clear: set_debugreg(4, 1) -> 0 and %dr6 reads 0xffff0ff1 (SD: %dr4 "
          "falls through to %dr6)", "rc %ld, dr6 0x%lx", rc, (unsigned long)get_dr(6));
    check_eqx("CR4.DE clear: get_debugreg(4) = %dr6 (RD)", get_dr(4), get_dr(6));
    refused("CR4.DE clear: set_debugreg(4, 1 << 32) -> -EINVAL (%dr6's checks)", 4,
            1UL << 32, -XEN_EINVAL);
    rc = set_dr(5, DR7_DEFAULT | DR7_RW(0, RW_WRITE));
    check(rc == 0 && (unsigned long)get_dr(7) == (DR7_DEFAULT | DR7_RW(0, RW_WRITE)),
          "CR4.DE clear: set_debugreg(5, v) -> 0 and %dr7 reads v (SD: %dr5 falls "
          "through to %dr7)", "rc %ld, dr7 0x%lx", rc, (unsigned long)get_dr(7));
    check_eqx("CR4.DE clear: get_debugreg(5) = %dr7 (RD)", get_dr(5), get_dr(7));
    rc = set_dr(5, DR7_DEFAULT | DR7_GD);
    check(rc == -XEN_EPERM && (unsigned long)get_dr(7) == (DR7_DEFAULT | DR7_RW(0, RW_WRITE)),
          "CR4.DE clear: set_debugreg(5, GD) -> -EPERM (%dr7's checks)", "rc %ld, dr7 0x%lx",
          rc, (unsigned long)get_dr(7));
    set_dr(7, DR7_DEFAULT);
    write_cr4(cr4 | CR4_DE);
    check_eq("CR4.DE set: set_debugreg(4) -> -ENODEV (SD)", set_dr(4, 0), -XEN_ENODEV);
    check_eq("CR4.DE set: set_debugreg(5) -> -ENODEV (SD)", set_dr(5, DR7_DEFAULT),
             -XEN_ENODEV);
    check_eq("CR4.DE set: get_debugreg(4) -> -ENODEV (RD ud_fault; do_get_debugreg)",
             get_dr(4), -XEN_ENODEV);
    check_eq("CR4.DE set: get_debugreg(5) -> -ENODEV (RD)", get_dr(5), -XEN_ENODEV);
    write_cr4(cr4);
}

static void debugreg_hc_registers(void)
{
    check_eq("set_debugreg(8) -> -ENODEV (SD default)", set_dr(8, 0), -XEN_ENODEV);
    check_eq("get_debugreg(8) -> -ENODEV (RD default; do_get_debugreg)", get_dr(8),
             -XEN_ENODEV);
    check_eq("get_debugreg(-1) -> -ENODEV (an int, unsigned in x86emul_read_dr)",
             get_dr(0xffffffffUL), -XEN_ENODEV);
    stored("set_debugreg(1 << 32 | 3) is %dr3 (SD do_set_debugreg(int reg): the low "
           "32 bits)", (1UL << 32) | 3, 0x5000);
    check_eqx("... get_debugreg(3) reads it (RD)", get_dr(3), 0x5000);
    set_dr(3, 0);
}

static long iopl(uint32_t level)
{
    uint32_t arg = level;
    return xen_hypercall_nr(HC_physdev_op, PHYSDEVOP_set_iopl, (unsigned long)&arg, 0, 0, 0);
}

static void debugreg_hc_user_io(unsigned long cr4)
{
    /* user_out80 / user_in80 (user_rules.S): mov $imm32,%eax (5 bytes), then
     * the 2-byte out %al,$0x80 / in $0x80,%al, then int $0x21 */
    const unsigned long after = 7;
    unsigned long e[5];
    iopl(3);
    write_cr4(cr4 | CR4_DE);
    set_dr(6, 0);
    set_dr(0, 0x80);
    long rc = set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO));
    if (!rules_user_entry(user_out80, 2, e)) {
        check_skip("an I/O breakpoint hit from user mode", "user mode not set up");
    } else {
        check(rc == 0 && e[0] == 1 && e[2] == after,
              "user mode, IOPL 3: out to port 0x80 under an I/O breakpoint there -> #DB "
              "after the out, taken from user mode (EP pv_emulate_privileged_op)",
              "rc %ld, vector %lu at +%lu", rc, e[0], e[2]);
        check_eqx("... %dr6 = B0 | DR_STATUS_RESERVED_ONE (EP)", get_dr(6), DR6_DEFAULT | 1);
        set_dr(6, 0);
        rules_user_entry(user_in80, 2, e);
        check(e[0] == 1 && e[2] == after, "user mode: in from port 0x80 -> #DB after the in (EP)",
              "vector %lu at +%lu", e[0], e[2]);
        set_dr(6, 0);
        set_dr(1, 0x81);
        set_dr(7, DR7_DEFAULT | DR7_L(1) | DR7_RW(1, RW_IO) | (LEN_2 << 22));
        rules_user_entry(user_out80, 2, e);
        check(e[0] == 1 && get_dr(6) == (DR6_DEFAULT | 2),
              "user mode: a 2-byte I/O breakpoint at 0x81 covers 0x80-0x81 (EP "
              "check_guest_io_breakpoint aligns it down) -> #DB, %dr6 B1",
              "vector %lu, dr6 0x%lx", e[0], (unsigned long)get_dr(6));
        set_dr(6, 0);
        set_dr(1, 0x82);
        set_dr(7, DR7_DEFAULT | DR7_L(1) | DR7_RW(1, RW_IO));
        rules_user_entry(user_out80, 2, e);
        check(e[0] == 0x21 && e[4] == 0x5a, "user mode: out to port 0x80 with the I/O "
              "breakpoint on port 0x82 -> no #DB, the out emulated (EP "
              "check_guest_io_breakpoint)",
              "vector 0x%lx rbx 0x%lx", e[0], e[4]);
        set_dr(7, DR7_DEFAULT | DR7_L(0) | DR7_RW(0, RW_IO));
        write_cr4(cr4 & ~CR4_DE);
        rules_user_entry(user_out80, 2, e);
        check(e[0] == 0x21, "user mode: the same breakpoint with CR4.DE cleared -> no #DB "
              "(EP check_guest_io_breakpoint)", "vector 0x%lx", e[0]);
        write_cr4(cr4 | CR4_DE);
        iopl(0);
        rules_user_entry(user_out80, 2, e);
        check(e[0] == 13 && e[2] == 5, "user mode, IOPL 0: the out -> #GP(0) at the out, no "
              "#DB (EP guest_io_okay: not emulated)", "vector %lu at +%lu", e[0], e[2]);
    }
    set_dr(7, DR7_DEFAULT);
    set_dr(0, 0);
    set_dr(1, 0);
    set_dr(6, 0);
    iopl(0);
    write_cr4(cr4);
}

void checks_debugreg_hc(void)
{
    section("debug registers: set_debugreg/get_debugreg (pv/misc-hypercalls.c)");
    unsigned long cr4 = read_cr4();
    debugreg_hc_addresses();
    debugreg_hc_dr6_dr7();
    debugreg_hc_io(cr4);
    debugreg_hc_aliases(cr4);
    debugreg_hc_registers();
    debugreg_hc_user_io(cr4);
    write_cr4(cr4);
    set_dr(7, DR7_DEFAULT);
    set_dr(6, 0);
}
