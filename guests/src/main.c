/*
 * main.c - pvtest's boot sequence and its test-suite style reporting:
 *   pvtest: ok 12 - <check>
 *   pvtest: FAIL 13 - <check> (got X, expected Y)
 *   pvtest: N passed, M failed
 * then SCHEDOP_shutdown: poweroff if everything passed, crash otherwise.
 */
#include "pvtest.h"

static unsigned nchecks, npassed, nfailed;

void section(const char *name)
{
    printk("pvtest: # %s\n", name);
}

static int report(int ok, const char *name, const char *detail)
{
    nchecks++;
    if (ok) {
        npassed++;
        printk("pvtest: ok %u - %s\n", nchecks, name);
    } else {
        nfailed++;
        printk("pvtest: FAIL %u - %s (%s)\n", nchecks, name, detail);
    }
    return ok;
}

int check(int ok, const char *name, const char *fmt, ...)
{
    char detail[160] = "";
    if (!ok) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
    }
    return report(ok, name, detail);
}

int check_eq(const char *name, long got, long expected)
{
    return check(got == expected, name, "got %ld, expected %ld", got, expected);
}

int check_eqx(const char *name, unsigned long got, unsigned long expected)
{
    return check(got == expected, name, "got 0x%lx, expected 0x%lx", got, expected);
}

void check_skip(const char *name, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    nchecks++;
    npassed++;
    printk("pvtest: ok %u - %s # SKIP %s\n", nchecks, name, why);
}

static void __attribute__((noreturn)) finish(void)
{
    printk("pvtest: %u passed, %u failed\n", npassed, nfailed);
    if (nfailed)
        printk("pvtest: shutting down: crash\n");
    else
        printk("pvtest: shutting down: poweroff\n");
    pv_shutdown_loop(nfailed ? SHUTDOWN_crash : SHUTDOWN_poweroff);
}

void fatal(const char *fmt, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    nchecks++;
    nfailed++;
    printk("pvtest: FAIL %u - fatal: %s\n", nchecks, buf);
    finish();
}

#ifdef PVH
/* The PVH build (pvtest-v2-pvh): pvh_entry.S enters here in long mode with
 * the guest-physical address of hvm_start_info (port_pvh.c, checks_pvh.c). */
#include "pvh.h"

void pvtest_main(uint32_t start_info_pa);
void pvtest_main(uint32_t start_info_pa)
{
    pvh_start_info = phys_to_virt(start_info_pa);
    pvh_install_idt();
    printk("pvtest: pvtest-v%d-pvh booting (Xen x86-64 PVH reference guest, "
           "hypercalls via %s)\n", PVTEST_VERSION, hypercall_mechanism);
    checks_pvh_boot();
    checks_pvh_cpu();
    checks_pvh_events();
    checks_pvh_time();
    checks_pvh_faults();
    checks_pvh_memory_version();
    checks_pvh_grants();
    checks_pvh_xenstore();
    checks_pvh_bad_calls();
    finish();
}
#else
#ifndef SMP
#define SMP 0
#endif
#if SMP
void checks_smp(void);      /* checks_smp.c (the SMP build) */
#endif
void pvtest_main(struct start_info *si, unsigned long rsp);
void pvtest_main(struct start_info *si, unsigned long rsp)
{
    xen_start_info = si;
    p2m = (unsigned long *)si->mfn_list;
    boot_rsp = rsp;

#if POC
    printk("pvtest: pvtest-v%d-poc booting (Xen x86-64 PV proof-of-concept guest: XSA "
           "fixes, hypercalls via %s)\n", PVTEST_VERSION, hypercall_mechanism);
    unsigned bad = checks_poc(install_trap_table());
    printk("pvtest: shutting down: %s\n", bad ? "crash" : "poweroff");
    pv_shutdown_loop(bad ? SHUTDOWN_crash : SHUTDOWN_poweroff);
#endif
#if RULES
    printk("pvtest: pvtest-v%d-rules booting (Xen x86-64 PV reference guest with the "
           "hostile checks, hypercalls via %s)\n", PVTEST_VERSION, hypercall_mechanism);
#else
    printk("pvtest: pvtest-v%d%s booting (Xen x86-64 PV reference guest, "
           "hypercalls via %s)\n", PVTEST_VERSION, FAIL_CHECK ? "-fail" : "",
           hypercall_mechanism);
#endif
    long trap_rc = install_trap_table();
    checks_boot(trap_rc);
    checks_cpu();
    checks_mmu();
    checks_events();
    checks_time();
    checks_faults();
    checks_memory_version();
    checks_xenstore();
    checks_bad_calls();
#if RULES
    checks_rules();
    checks_privops();
    checks_selectors();
    checks_selectors2();
    checks_ldt();
    checks_debugreg();
    checks_debugreg_hc();
    rules_pagetypes();      /* last of the rules: it pins and unpins tables */
    rules_segdesc();        /* GDT pages and CR3 loads, after the page types */
    rules_cr3();
    rules_pagerefs();       /* gives a page back and takes one: last */
#endif
#if SMP
    checks_smp();           /* last: it switches the domain to FIFO events */
#endif
#if FAIL_CHECK
    section("deliberate failure");
    check_eq("deliberate failure (FAIL_CHECK build)", 1, 2);
#endif
    finish();
}
#endif /* PVH */
