/*
 * port_lguest.c - pvtest-lguest: the built-in reference guest's lguest port
 * (x86-32, ring 1, final mainline lguest ABI of Linux 4.1-4.13).
 *
 * Boot: the Launcher's boot_params at physical 0 (hardware_subarch 1), the
 * kernel at 1 MiB entered at ring 1 in the host's linear mapping.  Every
 * call is the guest's side of arch/x86/lguest/boot.c: LGUEST_INIT first,
 * then page tables, descriptor tables, stack, TS, the clock event, HALT,
 * SEND_INTERRUPTS, the asynchronous hypercall ring, SHUTDOWN.  The console
 * is the Launcher's virtio-PCI console (00:01.0), written a byte at a time
 * through the VIRTIO_PCI_CAP_PCI_CFG window into emerg_wr, as
 * early_put_chars does.  Output:
 *   pvtest: ok N - <check> / pvtest: FAIL N - <check> (detail)
 *   pvtest: P passed, F failed
 * then LHCALL_SHUTDOWN("Power down", POWEROFF), or with a failure message
 * (a panic, as Linux's panic notifier does).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifndef FAIL_CHECK
#define FAIL_CHECK 0
#endif

/* arch/x86/include/asm/lguest_hcall.h (final numbering) */
#define LHCALL_FLUSH_ASYNC      0
#define LHCALL_LGUEST_INIT      1
#define LHCALL_SHUTDOWN         2
#define LHCALL_NEW_PGTABLE      4
#define LHCALL_FLUSH_TLB        5
#define LHCALL_LOAD_IDT_ENTRY   6
#define LHCALL_SET_STACK        7
#define LHCALL_TS               8
#define LHCALL_SET_CLOCKEVENT   9
#define LHCALL_HALT             10
#define LHCALL_SET_PMD          13      /* PAE hosts only */
#define LHCALL_SET_PTE          14
#define LHCALL_SET_PGD          15
#define LHCALL_LOAD_TLS         16
#define LHCALL_LOAD_GDT_ENTRY   18
#define LHCALL_SEND_INTERRUPTS  19
#define LHCALL_NOTIFY           17      /* 2.6.2x-4.0 only: early console, virtqueue kicks */
#define LGUEST_SHUTDOWN_POWEROFF 1
#define LHCALL_RING_SIZE        64
#define X86_EFLAGS_IF           0x200
#define KERNEL_CS               0x61
#define KERNEL_DS               0x69

/* include/linux/lguest.h, i386 */
struct hcall_args { uint32_t arg0, arg1, arg2, arg3, arg4; };
struct lguest_data {
    uint32_t irq_enabled;
    uint32_t blocked_interrupts[1];
    uint32_t cr2;
    struct { int32_t tv_sec, tv_nsec; } time;
    int32_t irq_pending;
    uint8_t hcall_status[LHCALL_RING_SIZE];
    struct hcall_args hcalls[LHCALL_RING_SIZE];
    uint32_t reserve_mem;
    uint32_t tsc_khz;
    uint32_t noirq_iret;
    uint32_t kernel_address;
    uint32_t syscall_vec;
};
_Static_assert(__builtin_offsetof(struct lguest_data, hcalls) == 0x58, "hcalls");
_Static_assert(sizeof(struct lguest_data) == 0x56c, "lguest_data");

struct trap_frame {             /* lguest_entry.S trap_common */
    uint32_t edi, esi, ebp, esp_, ebx, edx, ecx, eax;
    uint32_t vec, err, eip, cs, eflags;
};

unsigned long hcall(unsigned long call, unsigned long a1, unsigned long a2,
                    unsigned long a3, unsigned long a4);
extern char lguest_noirq_iret[], _end[];
extern char trap_0[], trap_3[], trap_6[], trap_7[], trap_13[], trap_14[], trap_32[],
    trap_128[];

struct lguest_data lguest_data = {
    .blocked_interrupts = { 1 },        /* the timer, until time_init */
    .syscall_vec = 0x80,
    .kernel_address = 0xC0000000,
};
uint32_t boot_params_pa;

#ifdef PAE
/* PAE (a PAE host, mode "pae"): a PDPT, page directories, 64-bit entries */
typedef uint64_t pte_t;
#define PTRS 512
static uint64_t pdpt[4] __attribute__((aligned(32)));
static uint64_t pds[4][512] __attribute__((aligned(4096)));
static uint64_t ptables[4][512] __attribute__((aligned(4096)));
static uint64_t alias_pt[512] __attribute__((aligned(4096)));
#define pgdir pdpt
#else
typedef uint32_t pte_t;
#define PTRS 1024
static uint32_t pgdir[1024] __attribute__((aligned(4096)));
static uint32_t ptables[2][1024] __attribute__((aligned(4096)));
static uint32_t alias_pt[1024] __attribute__((aligned(4096)));
#endif
static uint8_t data_page[4096] __attribute__((aligned(4096)));
static const char power_down[] = "Power down";

/* ------------------------------------------------------------------ I/O */
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

#define PCI_ADDR(dev, reg) (0x80000000u | ((dev) << 11) | ((reg) & 0xFC))
static uint32_t pci_read(unsigned dev, unsigned reg)
{
    outl(0xCF8, PCI_ADDR(dev, reg));
    return inl(0xCFC);
}
static void pci_write(unsigned dev, unsigned reg, uint32_t v)
{
    outl(0xCF8, PCI_ADDR(dev, reg));
    outl(0xCFC, v);
}

static unsigned cons_cfg_cap;           /* VIRTIO_PCI_CAP_PCI_CFG offset, 0: none */
static unsigned cons_dev_bar, cons_dev_off;

/* arch/x86/lguest/boot.c probe_pci_console: find the console's device
 * config and the PCI config access window */
static int probe_console(void)
{
    if (pci_read(1, 0) != 0x10431AF4)
        return 0;
    unsigned cap = pci_read(1, 0x34) & 0xFF;
    while (cap) {
        uint32_t w0 = pci_read(1, cap);
        unsigned type = (w0 >> 24) & 0xFF;
        if ((w0 & 0xFF) == 0x09 && type == 4) {          /* DEVICE_CFG */
            cons_dev_bar = pci_read(1, cap + 4) & 0xFF;
            cons_dev_off = pci_read(1, cap + 8);
        } else if ((w0 & 0xFF) == 0x09 && type == 5) {   /* PCI_CFG */
            cons_cfg_cap = cap;
        }
        cap = (w0 >> 8) & 0xFF;
    }
    return cons_cfg_cap != 0;
}

static void putc_console(char c)
{
    if (!cons_cfg_cap)
        return;
    /* virtio_pci_cfg_cap: bar, offset, length, then pci_cfg_data */
    pci_write(1, cons_cfg_cap + 4, cons_dev_bar);
    pci_write(1, cons_cfg_cap + 8, cons_dev_off + 8);   /* emerg_wr */
    pci_write(1, cons_cfg_cap + 12, 4);
    pci_write(1, cons_cfg_cap + 16, (uint8_t)c);
}

/* ------------------------------------------------------------- printing */
static void put_num(char **p, char *end, unsigned long v, unsigned base, int neg)
{
    char tmp[12];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    if (neg && *p < end) *(*p)++ = '-';
    while (n && *p < end) *(*p)++ = tmp[--n];
}

static void vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
    char *p = buf, *end = buf + cap - 1;
    for (; *fmt && p < end; fmt++) {
        if (*fmt != '%') { *p++ = *fmt; continue; }
        fmt++;
        if (*fmt == 'l') fmt++;
        switch (*fmt) {
        case 's': { const char *s = va_arg(ap, const char *); while (*s && p < end) *p++ = *s++; break; }
        case 'u': put_num(&p, end, va_arg(ap, unsigned long), 10, 0); break;
        case 'x': put_num(&p, end, va_arg(ap, unsigned long), 16, 0); break;
        case 'd': { long v = va_arg(ap, long); put_num(&p, end, v < 0 ? -v : v, 10, v < 0); break; }
        default: *p++ = *fmt; break;
        }
    }
    *p = 0;
}

static void printk(const char *fmt, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (!cons_cfg_cap) {
        /* no PCI console: a Launcher before 4.1 prints a NUL-terminated
         * string NOTIFY points at (lguest.c handle_output, early console) */
        hcall(LHCALL_NOTIFY, (uint32_t)buf, 0, 0, 0);
        return;
    }
    for (char *s = buf; *s; s++)
        putc_console(*s);
}

static unsigned nchecks, npassed, nfailed;

static int check(int ok, const char *name, const char *fmt, ...)
{
    char detail[120] = "";
    nchecks++;
    if (ok) {
        npassed++;
        printk("pvtest: ok %u - %s\n", nchecks, name);
    } else {
        va_list ap;
        va_start(ap, fmt);
        vformat(detail, sizeof(detail), fmt, ap);
        va_end(ap);
        nfailed++;
        printk("pvtest: FAIL %u - %s (%s)\n", nchecks, name, detail);
    }
    return ok;
}

static int check_eqx(const char *name, unsigned long got, unsigned long want)
{
    return check(got == want, name, "got 0x%lx, expected 0x%lx", got, want);
}

static void section(const char *s) { printk("pvtest: # %s\n", s); }

/* ------------------------------------------------------------ the traps */
volatile unsigned trap_count[256];
volatile uint32_t last_err, last_cr2, last_irq_enabled, fixup_eip, ticks;

static volatile unsigned user_mode_exits;   /* 1: at the user's int $0x80, 2: at its #GP */
static void leave_user(struct trap_frame *f);

void lguest_trap(struct trap_frame *f)
{
    trap_count[f->vec & 0xFF]++;
    if ((f->cs & 3) == 3 && user_mode_exits == (f->vec == 128 ? 1u : f->vec == 13 ? 2u : 0u))
        leave_user(f);
    last_err = f->err;
    last_irq_enabled = lguest_data.irq_enabled;
    switch (f->vec) {
    case 7:                                   /* #NM: clear TS as Linux's math_state_restore */
        hcall(LHCALL_TS, 0, 0, 0, 0);
        break;
    case 14:
        last_cr2 = lguest_data.cr2;
        /* fall through */
    case 0: case 6: case 13:
        if (fixup_eip) { f->eip = fixup_eip; fixup_eip = 0; }
        break;
    case 32:
        ticks++;
        break;
    }
}

static void set_gate(unsigned vec, void *handler, unsigned type, unsigned dpl)
{
    uint32_t off = (uint32_t)handler;
    uint32_t lo = (KERNEL_CS << 16) | (off & 0xFFFF);
    uint32_t hi = (off & 0xFFFF0000) | 0x8000 | (dpl << 13) | (type << 8);
    hcall(LHCALL_LOAD_IDT_ENTRY, vec, lo, hi, 0);
}

static inline void irq_enable(void)
{
    lguest_data.irq_enabled = X86_EFLAGS_IF;
    __asm__ volatile("" ::: "memory");
    if (lguest_data.irq_pending)
        hcall(LHCALL_SEND_INTERRUPTS, 0, 0, 0, 0);
}

static inline void irq_disable(void)
{
    lguest_data.irq_enabled = 0;
    __asm__ volatile("" ::: "memory");
}

/* ------------------------------------------------------------ the checks */
static void checks_boot(void)
{
    section("boot (the Launcher's boot_params)");
    const uint8_t *bp = (const uint8_t *)boot_params_pa;
    check_eqx("ESI at entry is boot_params (physical 0)", boot_params_pa, 0);
    check_eqx("hardware_subarch is X86_SUBARCH_LGUEST", *(const uint32_t *)(bp + 0x23C), 1);
    check_eqx("one e820 entry", bp[0x1E8], 1);
    check_eqx("e820[0] is RAM from 0", *(const uint32_t *)(bp + 0x2D0 + 16), 1);
    check_eqx("boot protocol version 2.07", *(const uint16_t *)(bp + 0x206), 0x207);
    check((bp[0x211] & 0x40) != 0, "loadflags has KEEP_SEGMENTS", "loadflags 0x%x", bp[0x211]);
    uint32_t cl = *(const uint32_t *)(bp + 0x228);
    check_eqx("command line right after boot_params", cl, 0x1000);
    uint16_t cs, ss;
    __asm__ volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    check_eqx("kernel runs in __KERNEL_CS|1 (ring 1)", cs, KERNEL_CS);
    check_eqx("stack segment __KERNEL_DS|1", ss, KERNEL_DS);
}

static void checks_init(void)
{
    section("LHCALL_LGUEST_INIT (lguest_data)");
    check_eqx("reserve_mem: the Switcher's 4 MiB", lguest_data.reserve_mem, 0x400000);
    check_eqx("tsc_khz 0 (no stable TSC offered)", lguest_data.tsc_khz, 0);
    check(lguest_data.time.tv_sec > 1000000000, "time holds the wallclock",
          "tv_sec %ld", (long)lguest_data.time.tv_sec);
}

static void checks_cpu(void)
{
    section("CPU state");
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    check_eqx("CPUID max leaf 5", a, 5);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    check_eqx("CPUID family 5", (a >> 8) & 0xF, 5);
    check((d & (1 << 13)) != 0, "CPUID PGE on", "edx 0x%lx", (unsigned long)d);
    uint32_t fl;
    __asm__ volatile("pushfl; popl %0" : "=r"(fl));
    check((fl & 0x3000) == 0, "IOPL 0: port I/O traps to the Launcher", "eflags 0x%lx",
          (unsigned long)fl);
    /* a stray cli at ring 1 traps (#GP) and the Launcher skips it */
    __asm__ volatile("cli");
    __asm__ volatile("pushfl; popl %0" : "=r"(fl));
    check((fl & X86_EFLAGS_IF) != 0, "cli is skipped by the Launcher (IF stays on)",
          "eflags 0x%lx", (unsigned long)fl);
    if (cons_cfg_cap)       /* the Launcher with PCI emulation (4.1 on) */
        check(inb(0x64) == 1, "in from port 0x64 reads 1", "-");
    check_eqx("unknown port reads all ones", inl(0x80), 0xFFFFFFFF);
    outb(0x80, 0x12);
}

static void checks_gdt(void)
{
    section("descriptor tables");
    struct __attribute__((packed)) { uint16_t limit; uint32_t base; } g;
    __asm__ volatile("sgdt %0" : "=m"(g));
    check_eqx("the GDT is the host's, in the Switcher", g.base, 0xFFC00000);
    /* a flat DPL 0 data segment at entry 14: the host makes it DPL 1 */
    hcall(LHCALL_LOAD_GDT_ENTRY, 20, 0x0000FFFF, 0x00CF9300, 0);
    uint32_t ar = 0, ok;
    __asm__ volatile("lar %2, %0; setz %b1" : "=r"(ar), "=q"(ok) : "r"(20 * 8 | 1) : "cc");
    check((ok & 1) && ((ar >> 13) & 3) == 1, "LOAD_GDT_ENTRY forces DPL 0 to 1",
          "lar 0x%lx", (unsigned long)ar);
    check((ar & 0x100) != 0, "and sets the accessed bit", "lar 0x%lx", (unsigned long)ar);
    uint16_t fs = 20 * 8 | 1;
    __asm__ volatile("mov %0, %%fs" :: "r"(fs));
    uint32_t v;
    data_page[16] = 0x5a;
    __asm__ volatile("movzbl %%fs:(%1), %0" : "=r"(v) : "r"((uint32_t)data_page + 16));
    check_eqx("the new segment loads and reads", v, 0x5a);
    /* TLS: 3 descriptors, the second with base data_page */
    static uint32_t tls[6];
    uint32_t base = (uint32_t)data_page;
    tls[2] = (base << 16) | 0xFFFF;
    tls[3] = (base & 0xFF000000) | 0x00CF9300 | ((base >> 16) & 0xFF);
    hcall(LHCALL_LOAD_TLS, (uint32_t)tls, 0, 0, 0);
    uint16_t gs = 7 * 8 | 1;
    __asm__ volatile("mov %0, %%gs" :: "r"(gs));
    __asm__ volatile("movzbl %%gs:16, %0" : "=r"(v));
    check_eqx("LOAD_TLS: %gs reads through the TLS base", v, 0x5a);
    hcall(LHCALL_SET_STACK, KERNEL_DS, (uint32_t)&v, 1, 0);
    check(1, "SET_STACK with a ring-1 segment and 1 page is accepted", "-");
}

static void checks_traps(void)
{
    section("traps and the IDT");
    set_gate(0, trap_0, 0xF, 1);       /* direct trap */
    set_gate(3, trap_3, 0xF, 3);       /* direct trap */
    set_gate(6, trap_6, 0xE, 1);       /* reflected by the host */
    set_gate(7, trap_7, 0xF, 1);
    set_gate(13, trap_13, 0xE, 1);
    set_gate(14, trap_14, 0xE, 1);
    set_gate(128, trap_128, 0xF, 3);   /* the system-call vector: direct */
    __asm__ volatile("int3");
    check_eqx("int3 reaches its direct trap gate", trap_count[3], 1);
    __asm__ volatile("int $0x80");
    check_eqx("int $0x80 reaches the system-call gate", trap_count[128], 1);
    irq_enable();
    fixup_eip = 0;
    __asm__ volatile("movl $1f, fixup_eip; ud2; 1:" ::: "memory");
    check_eqx("ud2: #UD reflected to the guest's handler", trap_count[6], 1);
    check_eqx("through an interrupt gate irq_enabled is 0 in the handler",
              last_irq_enabled, 0);
    check_eqx("and the handler's iret restores irq_enabled", lguest_data.irq_enabled,
              X86_EFLAGS_IF);
    volatile uint32_t z = 0, r = 7;
    __asm__ volatile("movl $1f, fixup_eip; xorl %%edx, %%edx; divl %1; 1:"
                     : "+a"(r) : "r"(z) : "edx", "memory");
    check_eqx("divide error: direct trap", trap_count[0], 1);
    /* #GP that is not port I/O: a privileged instruction at ring 1 */
    __asm__ volatile("movl $1f, fixup_eip; hlt; 1:" ::: "memory");
    check_eqx("hlt at ring 1: #GP reflected", trap_count[13], 1);
    /* TS: the next FPU instruction raises #NM, whose handler clears TS */
    hcall(LHCALL_TS, 8, 0, 0, 0);
    __asm__ volatile("fnop");
    check_eqx("LHCALL_TS makes the FPU trap (#NM)", trap_count[7], 1);
    __asm__ volatile("fnop");
    check_eqx("the handler's TS(0) lets it run", trap_count[7], 1);
}

#define PTE_P 1
#define PTE_RW 2
#define PTE_US 4
static void checks_mmu(void)
{
    uint32_t va = 0x40000000;
#ifdef PAE
    section("page tables (PAE)");
    /* identity map 0-8 MiB through page directory 0, as the guest's own tables */
    for (unsigned t = 0; t < 4; t++) {
        for (unsigned i = 0; i < 512; i++)
            ptables[t][i] = ((uint64_t)(t * 512 + i) << 12) | PTE_P | PTE_RW | PTE_US;
        pds[0][t] = (uint32_t)ptables[t] | PTE_P | PTE_RW | PTE_US;
    }
    for (unsigned g = 0; g < 4; g++)
        pdpt[g] = (uint32_t)pds[g] | PTE_P;
    hcall(LHCALL_NEW_PGTABLE, (uint32_t)pdpt, 0, 0, 0);
    check(1, "NEW_PGTABLE with a PDPT: running on the guest's PAE tables", "-");
    check((pds[3][510] & PTE_P) != 0, "the host mapped the Switcher (PDPT 3, entry 510)",
          "pde 0x%lx", (unsigned long)pds[3][510]);
    /* a new mapping at 1 GiB: native writes, SET_PGD, SET_PMD, SET_PTE (64-bit) */
    hcall(LHCALL_SET_PGD, (uint32_t)pdpt, va >> 30, 0, 0);
    pds[1][0] = (uint32_t)alias_pt | PTE_P | PTE_RW;
    hcall(LHCALL_SET_PMD, (uint32_t)pds[1], 0, 0, 0);
    check(1, "SET_PMD is a call of a PAE host", "-");
#else
    section("page tables");
    /* identity map 0-8 MiB, as the guest's own page tables */
    for (unsigned t = 0; t < 2; t++) {
        for (unsigned i = 0; i < 1024; i++)
            ptables[t][i] = ((t * 1024 + i) << 12) | PTE_P | PTE_RW | PTE_US;
        pgdir[t] = (uint32_t)ptables[t] | PTE_P | PTE_RW | PTE_US;
    }
    hcall(LHCALL_NEW_PGTABLE, (uint32_t)pgdir, 0, 0, 0);
    check(1, "NEW_PGTABLE: running on the guest's page tables", "-");
    check((pgdir[1023] & PTE_P) != 0, "the host mapped the Switcher in the top slot",
          "pde 0x%lx", (unsigned long)pgdir[1023]);
    /* a new mapping at 1 GiB: native write, SET_PGD, SET_PTE */
    pgdir[va >> 22] = (uint32_t)alias_pt | PTE_P | PTE_RW;
    hcall(LHCALL_SET_PGD, (uint32_t)pgdir, va >> 22, 0, 0);
#endif
    alias_pt[0] = (uint32_t)data_page | PTE_P | PTE_RW;
    hcall(LHCALL_SET_PTE, (uint32_t)pgdir, va, (uint32_t)alias_pt[0],
          (uint32_t)((uint64_t)alias_pt[0] >> 32));
    data_page[100] = 0x77;
    __asm__ volatile("" ::: "memory");
    check_eqx("SET_PTE: the alias reads the page", *(volatile uint8_t *)(va + 100), 0x77);
    /* flush_tlb_single is SET_PTE(cr3, addr, 0) after clearing it */
    alias_pt[0] = 0;
    hcall(LHCALL_SET_PTE, (uint32_t)pgdir, va, 0, 0);
    volatile uint32_t got = 0;
    __asm__ volatile("movl $1f, fixup_eip; movl (%1), %0; 1:"
                     : "+r"(got) : "r"(va + 100) : "memory");
    check_eqx("an unmapped access faults (#PF reflected)", trap_count[14], 1);
    check_eqx("lguest_data.cr2 holds the address", last_cr2, va + 100);
    check_eqx("error code: not present, read, supervisor", last_err & 7, 0);
    /* the asynchronous ring: two SET_PTEs queued, run by FLUSH_ASYNC */
    alias_pt[1] = (uint32_t)data_page | PTE_P | PTE_RW;
    alias_pt[2] = (uint32_t)data_page | PTE_P;
    for (unsigned i = 0; i < 2; i++) {
        struct hcall_args *h = &lguest_data.hcalls[i];
        h->arg0 = LHCALL_SET_PTE;
        h->arg1 = (uint32_t)pgdir;
        h->arg2 = va + 4096 * (i + 1);
        h->arg3 = (uint32_t)alias_pt[i + 1];
        h->arg4 = (uint32_t)((uint64_t)alias_pt[i + 1] >> 32);
        __asm__ volatile("" ::: "memory");
        lguest_data.hcall_status[i] = 0;
    }
    check(lguest_data.hcall_status[0] == 0 && lguest_data.hcall_status[1] == 0,
          "two calls queued in the ring", "-");
    hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0, 0);
    check(lguest_data.hcall_status[0] == 0xFF && lguest_data.hcall_status[1] == 0xFF,
          "FLUSH_ASYNC ran them (status 0xff)", "status %u %u",
          lguest_data.hcall_status[0], lguest_data.hcall_status[1]);
    check_eqx("the ring's mappings work", *(volatile uint8_t *)(va + 8192 + 100), 0x77);
    hcall(LHCALL_FLUSH_TLB, 1, 0, 0, 0);
    check_eqx("FLUSH_TLB(1): mappings still there", *(volatile uint8_t *)(va + 4096 + 100), 0x77);
}

/* ---------------------------------------------------------- user mode */
#define USER_CS (14 * 8 | 3)            /* __USER_CS */
#define USER_DS (15 * 8 | 3)            /* __USER_DS */
static uint8_t user_kstack[4096] __attribute__((aligned(4096)));
static uint8_t user_stack[4096] __attribute__((aligned(4096)));
volatile uint32_t user_cs_seen, user_ebx_seen, user_frame_at;
int enter_user(uint32_t eip, uint32_t esp);            /* lguest_entry.S */
void resume_kernel(void) __attribute__((noreturn));

/* the trap handler's way back from a user-mode excursion */
static void leave_user(struct trap_frame *f)
{
    user_cs_seen = f->cs;
    user_ebx_seen = f->ebx;
    user_frame_at = (uint32_t)f;
    resume_kernel();
}

void user_code(void);
__asm__(".text\n.globl user_code\nuser_code:\n"
        "  movl $0x5a5a, %ebx\n"
        "  int $0x80\n"
        "  cli\n"                          /* #GP at ring 3: not the Launcher's */
        "1: jmp 1b\n");

static int run_user(void)
{
    return enter_user((uint32_t)user_code, (uint32_t)user_stack + sizeof(user_stack));
}

static void checks_user(void)
{
    section("user mode (ring 3)");
    hcall(LHCALL_LOAD_GDT_ENTRY, 14, 0x0000FFFF, 0x00CFFA00, 0);     /* user code, DPL 3 */
    hcall(LHCALL_LOAD_GDT_ENTRY, 15, 0x0000FFFF, 0x00CFF200, 0);     /* user data, DPL 3 */
    hcall(LHCALL_SET_STACK, KERNEL_DS, (uint32_t)user_kstack + sizeof(user_kstack), 1, 0);
    user_mode_exits = 1;
    run_user();
    check_eqx("int $0x80 from ring 3 reaches the direct gate", user_cs_seen, USER_CS);
    check_eqx("with the user's registers", user_ebx_seen, 0x5a5a);
    check(user_frame_at >= (uint32_t)user_kstack &&
          user_frame_at < (uint32_t)user_kstack + sizeof(user_kstack),
          "on the SET_STACK kernel stack", "frame at 0x%lx", (unsigned long)user_frame_at);
    user_mode_exits = 2;
    unsigned gp = trap_count[13];
    run_user();
    irq_enable();          /* the #GP came through an interrupt gate */
    check_eqx("cli at ring 3: #GP reflected (not emulated)", trap_count[13], gp + 1);
    check_eqx("from the user code segment", user_cs_seen, USER_CS);
    user_mode_exits = 0;
}

static uint64_t time_ns(void)
{
    int32_t s, n;
    do {
        s = lguest_data.time.tv_sec;
        n = lguest_data.time.tv_nsec;
    } while (s != lguest_data.time.tv_sec);
    return (uint64_t)s * 1000000000ull + (uint32_t)n;
}

static void checks_time(void)
{
    section("time and the clock event");
    set_gate(32, trap_32, 0xE, 1);
    lguest_data.blocked_interrupts[0] &= ~1u;          /* time_init: unblock IRQ 0 */
    uint64_t t0 = time_ns();
    irq_disable();
    hcall(LHCALL_SET_CLOCKEVENT, 1000000, 0, 0, 0);    /* 1 ms */
    hcall(LHCALL_HALT, 0, 0, 0, 0);
    check_eqx("HALT sleeps until the clock event (IRQ 0 delivered)", ticks, 1);
    uint64_t t1 = time_ns();
    check(t1 - t0 >= 1000000, "lguest_data.time moved by the 1 ms delta", "%lu ns",
          (unsigned long)(t1 - t0));
    check_eqx("after the handler's iret interrupts are on", lguest_data.irq_enabled,
              X86_EFLAGS_IF);
    /* with interrupts off, a due interrupt only sets irq_pending */
    irq_disable();
    hcall(LHCALL_SET_CLOCKEVENT, 200, 0, 0, 0);
    for (unsigned i = 0; i < 1000 && !lguest_data.irq_pending; i++)
        hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0, 0);
    check_eqx("irq_pending set while irq_enabled is 0", lguest_data.irq_pending, X86_EFLAGS_IF);
    check_eqx("and the interrupt waits", ticks, 1);
    irq_enable();                                     /* SEND_INTERRUPTS */
    check_eqx("SEND_INTERRUPTS delivers it", ticks, 2);
    check_eqx("irq_pending cleared", lguest_data.irq_pending, 0);
    /* blocked_interrupts masks IRQ 0 */
    lguest_data.blocked_interrupts[0] |= 1;
    hcall(LHCALL_SET_CLOCKEVENT, 200, 0, 0, 0);
    for (unsigned i = 0; i < 100; i++)
        hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0, 0);
    check_eqx("a blocked IRQ is not delivered", ticks, 2);
    lguest_data.blocked_interrupts[0] &= ~1u;
    hcall(LHCALL_SEND_INTERRUPTS, 0, 0, 0, 0);
    check_eqx("unblocked, it is", ticks, 3);
    hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0, 0);         /* cancel */
}

void __attribute__((noreturn)) lguest_main(void)
{
    /* lguest_entry (head_32.S): LGUEST_INIT first */
    lguest_data.noirq_iret = (uint32_t)lguest_noirq_iret;
    for (unsigned i = 0; i < LHCALL_RING_SIZE; i++)
        lguest_data.hcall_status[i] = 0xFF;
    hcall(LHCALL_LGUEST_INIT, (uint32_t)&lguest_data, 0, 0, 0);
    int cons = probe_console();
#ifdef PAE
#define PAGING "PAE"
#else
#define PAGING "non-PAE"
#endif
    printk("pvtest-lguest booting (lguest, int $0x1f, ring 1, %s; console: %s)\n", PAGING,
           cons ? "virtio-PCI emerg_wr" : "LHCALL_NOTIFY");
    section("console");
    check(1, "console found (virtio-PCI at 00:01.0 from 4.1, else NOTIFY)", "%d", cons);
    checks_boot();
    checks_init();
    checks_cpu();
    checks_gdt();
    checks_traps();
    checks_mmu();
    checks_user();
    checks_time();
#if FAIL_CHECK
    check_eqx("deliberate failure (FAIL_CHECK build)", 1, 2);
#endif
    printk("pvtest: %u passed, %u failed\n", npassed, nfailed);
    if (nfailed) {
        static const char msg[] = "pvtest: checks failed";
        printk("pvtest: shutting down: crash\n");
        hcall(LHCALL_SHUTDOWN, (uint32_t)msg, LGUEST_SHUTDOWN_POWEROFF, 0, 0);
    } else {
        printk("pvtest: shutting down: poweroff\n");
        hcall(LHCALL_SHUTDOWN, (uint32_t)power_down, LGUEST_SHUTDOWN_POWEROFF, 0, 0);
    }
    for (;;)
        ;
}
