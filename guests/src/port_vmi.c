/*
 * port_vmi.c - pvtest-vmi: the built-in reference guest's VMI port (x86-32,
 * ring 0, VMI API 3.0 as Linux 2.6.21-2.6.36 used it: arch/x86/kernel/vmi_32.c).
 *
 * It finds the option ROM the way probe_vmi_rom/check_vmi_rom do (0xC0000 to
 * 0xE0000 in 2 KiB steps, 0xAA55, "cVmi", API 3.0, the GPL license string, the
 * PCI header), calls vmi_init, fetches every call with get_reloc, and runs its
 * checks through the ROM with regparm(3) calls: CPUID, control registers,
 * descriptor tables, the virtual interrupt flag, the MMU (AllocatePage,
 * SetPxE, SetLinearMapping, SetCR3/SetCR0, InvalPage, FlushTLB), time
 * (GetCycleFrequency, GetCycleCounter, GetWallclockTime, SetAlarm one-shot and
 * periodic on IRQ0, Halt, CancelAlarm), traps through its own IDT returning by
 * the ROM's IRET, and Shutdown.  Console: COM1 (0x3F8).
 *   pvtest: ok N - <check> / pvtest: FAIL N - <check> (detail)
 * A failed check ends in a triple fault (VMI has no crash report).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifndef FAIL_CHECK
#define FAIL_CHECK 0
#endif

#define REGPARM __attribute__((regparm(3)))
typedef uint32_t (*vmi_fn)(uint32_t, uint32_t, uint32_t, uint32_t, uint32_t) REGPARM;
typedef uint64_t (*vmi_fn64)(uint32_t, uint32_t, uint32_t, uint32_t, uint32_t) REGPARM;
typedef uint32_t (*vmi_init_fn)(void) REGPARM;

enum { CPUID = 0, WRMSR = 1, RDMSR = 2, SetGDT = 3, SetIDT = 5, GetGDT = 7, GetIDT = 9,
       WriteGDTEntry = 11, WriteIDTEntry = 13, UpdateKernelStack = 14, SetCR0 = 15,
       SetCR3 = 17, SetCR4 = 18, GetCR0 = 19, GetCR2 = 20, GetCR3 = 21, GetCR4 = 22,
       RDTSC = 27, EnableInterrupts = 29, DisableInterrupts = 30, GetInterruptMask = 31,
       SetInterruptMask = 32, IRET = 33, SYSEXIT = 34, Halt = 35, Shutdown = 37,
       SetPxE = 38, AllocatePage = 44, ReleasePage = 45, InvalPage = 46, FlushTLB = 47,
       SetLinearMapping = 48, GetCycleFrequency = 66, GetCycleCounter = 67, SetAlarm = 68,
       CancelAlarm = 69, GetWallclockTime = 70, SetLazyMode = 73, NCALLS = 74 };

void vmi_cpuid(uint32_t fn, uint32_t leaf, uint32_t sub, uint32_t out[4]);
uint32_t vmi_reloc(uint32_t get_reloc, uint32_t nr, uint32_t *type);
extern char trap_3[], trap_6[], trap_14[], trap_32[];

uint32_t vmi_call_eip[NCALLS], vmi_call_type[NCALLS];
uint32_t vmi_iret;

#define CALL(n, a, b, c) (((vmi_fn)vmi_call_eip[n])((a), (b), (c), 0, 0))
#define CALL5(n, a, b, c, d, e) (((vmi_fn)vmi_call_eip[n])((a), (b), (c), (d), (e)))
#define CALL64(n, a) (((vmi_fn64)vmi_call_eip[n])((a), 0, 0, 0, 0))

/* ------------------------------------------------------------------ I/O */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_console(char c)
{
    while (!(inb(0x3FD) & 0x20))
        ;
    outb(0x3F8, (uint8_t)c);
}

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

/* ----------------------------------------------------------- the traps */
struct trap_frame {
    uint32_t edi, esi, ebp, esp_, ebx, edx, ecx, eax;
    uint32_t vec, err, eip, cs, eflags;
};
volatile unsigned trap_count[256];
volatile uint32_t fixup_eip, last_cr2, last_mask, ticks;

void vmi_trap(struct trap_frame *f)
{
    trap_count[f->vec & 0xFF]++;
    last_mask = CALL(GetInterruptMask, 0, 0, 0);
    if (f->vec == 14)
        last_cr2 = CALL(GetCR2, 0, 0, 0);
    if (f->vec == 32)
        ticks++;
    if ((f->vec == 6 || f->vec == 14) && fixup_eip) {
        f->eip = fixup_eip;
        fixup_eip = 0;
    }
}

/* ------------------------------------------------------------ the tables */
static uint64_t gdt[4] __attribute__((aligned(8))) = {
    0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull, 0,
};
static uint64_t idt[256] __attribute__((aligned(8)));
struct __attribute__((packed)) dtr { uint16_t limit; uint32_t base; };
static uint32_t pgdir[1024] __attribute__((aligned(4096)));
static uint32_t ptable[2][1024] __attribute__((aligned(4096)));
static uint32_t alias_pt[1024] __attribute__((aligned(4096)));
static uint8_t data_page[4096] __attribute__((aligned(4096)));

static void set_gate(unsigned vec, void *h, unsigned type)
{
    uint32_t off = (uint32_t)h;
    CALL5(WriteIDTEntry, (uint32_t)idt, vec, (0x08u << 16) | (off & 0xFFFF),
          (off & 0xFFFF0000) | 0x8000 | (type << 8), 0);
}

/* ------------------------------------------------------------ the checks */
static uint32_t rom;

static int find_rom(void)
{
    for (uint32_t a = 0xC0000; a < 0xE0000; a += 2048) {
        const uint8_t *p = (const uint8_t *)a;
        if (*(const uint16_t *)p != 0xAA55 || *(const uint32_t *)(p + 8) != 0x696d5663)
            continue;
        rom = a;
        return 1;
    }
    return 0;
}

static void checks_rom(void)
{
    section("the VMI option ROM");
    const uint8_t *p = (const uint8_t *)rom;
    check_eqx("API major 3", p[0x0D], 3);
    check_eqx("API minor 0", p[0x0C], 0);
    const char *lic = (const char *)(rom + *(const uint16_t *)(p + 0x16));
    check(lic[0] == 'G' && lic[1] == 'P' && lic[2] == 'L' && (lic[3] == 0 ||
          (lic[3] == ' ' && lic[4] == 'v' && lic[5] == '2' && lic[6] == 0)),
          "license string GPL v2", "%s", lic);
    const uint8_t *pci = (const uint8_t *)(rom + *(const uint16_t *)(p + 0x18));
    check(pci[0] == 'P' && pci[1] == 'C' && pci[2] == 'I' && pci[3] == 'R',
          "PCI header PCIR", "-");
    check_eqx("PCI vendor VMware", *(const uint16_t *)(pci + 4), 0x15AD);
    check_eqx("PCI device VMI", *(const uint16_t *)(pci + 6), 0x0801);
    uint8_t sum = 0;
    for (unsigned i = 0; i < p[2] * 512u; i++)
        sum += p[i];
    check_eqx("byte sum over rom_length is 0 (the 2006 spec's checksum)", sum, 0);
    uint32_t r = ((vmi_init_fn)(rom + 0x80))();
    check_eqx("vmi_init succeeds (0)", r, 0);
    unsigned callrel = 0;
    for (unsigned n = 0; n < NCALLS; n++) {
        vmi_call_eip[n] = vmi_reloc(rom + 0x88, n, &vmi_call_type[n]);
        callrel += (vmi_call_type[n] & 0xFF) == 1;
    }
    vmi_iret = vmi_call_eip[IRET];
    check_eqx("get_reloc: CPUID is CALL_REL", vmi_call_type[CPUID] & 0xFF, 1);
    check_eqx("get_reloc: IRET is JUMP_REL", vmi_call_type[IRET] & 0xFF, 2);
    check_eqx("get_reloc: undefined call 50 is NONE", vmi_call_type[50] & 0xFF, 0);
    check(vmi_call_eip[CPUID] >= rom && vmi_call_eip[CPUID] < rom + p[2] * 512u,
          "call targets lie in the ROM", "0x%lx", (unsigned long)vmi_call_eip[CPUID]);
    check_eqx("the 59 defined calls but IRET/SYSEXIT are CALL_REL", callrel, 59);
}

static void checks_cpu(void)
{
    section("CPU state");
    uint32_t r[4];
    vmi_cpuid(vmi_call_eip[CPUID], 0, 0, r);
    check_eqx("CPUID through the ROM: vendor GenuineIntel", r[1], 0x756E6547);
    uint32_t cr0 = CALL(GetCR0, 0, 0, 0);
    check((cr0 & 1) && !(cr0 & 0x80000000), "GetCR0: protected mode, paging off", "0x%lx",
          (unsigned long)cr0);
    CALL(SetCR4, 0x10, 0, 0);              /* PSE */
    check_eqx("SetCR4/GetCR4", CALL(GetCR4, 0, 0, 0), 0x10);
    CALL(SetCR4, 0, 0, 0);
    uint64_t tsc = ((vmi_fn64)vmi_call_eip[RDMSR])(0, 0, 0x10, 0, 0);
    check(tsc != 0, "RDMSR(TSC) through the ROM", "-");
    uint64_t t1 = CALL64(RDTSC, 0), t2 = CALL64(RDTSC, 0);
    check(t2 > t1, "RDTSC moves", "-");
    struct dtr g = { sizeof(gdt) - 1, (uint32_t)gdt }, g2 = { 0, 0 };
    CALL(SetGDT, (uint32_t)&g, 0, 0);
    CALL(GetGDT, (uint32_t)&g2, 0, 0);
    check(g2.base == g.base && g2.limit == g.limit, "SetGDT/GetGDT", "base 0x%lx",
          (unsigned long)g2.base);
    __asm__ volatile("ljmp $0x08, $1f; 1: mov $0x10, %%eax; mov %%eax, %%ds; "
                     "mov %%eax, %%es; mov %%eax, %%ss" ::: "eax", "memory");
    CALL5(WriteGDTEntry, (uint32_t)gdt, 3, 0x0000FFFF, 0x00CF9200, 0);
    check_eqx("WriteGDTEntry writes the table", (uint32_t)(gdt[3] >> 32), 0x00CF9200);
    CALL(UpdateKernelStack, 0x10, (uint32_t)&g, 0);
    check(1, "UpdateKernelStack", "-");
}

static void checks_irq(void)
{
    section("the virtual interrupt flag and traps");
    set_gate(3, trap_3, 0xF);
    set_gate(6, trap_6, 0xE);
    set_gate(14, trap_14, 0xE);
    set_gate(32, trap_32, 0xE);
    struct dtr i = { sizeof(idt) - 1, (uint32_t)idt }, i2 = { 0, 0 };
    CALL(SetIDT, (uint32_t)&i, 0, 0);
    CALL(GetIDT, (uint32_t)&i2, 0, 0);
    check(i2.base == i.base, "SetIDT/GetIDT", "-");
    check_eqx("interrupts start disabled", CALL(GetInterruptMask, 0, 0, 0), 0);
    CALL(EnableInterrupts, 0, 0, 0);
    check_eqx("EnableInterrupts", CALL(GetInterruptMask, 0, 0, 0), 0x200);
    CALL(DisableInterrupts, 0, 0, 0);
    check_eqx("DisableInterrupts", CALL(GetInterruptMask, 0, 0, 0), 0);
    CALL(SetInterruptMask, 0x200, 0, 0);
    check_eqx("SetInterruptMask(0x200)", CALL(GetInterruptMask, 0, 0, 0), 0x200);
    __asm__ volatile("int3");
    check_eqx("int3 through the guest's IDT, back by the ROM's IRET", trap_count[3], 1);
    check_eqx("a trap gate leaves the virtual IF on", last_mask, 0x200);
    __asm__ volatile("movl $1f, fixup_eip; ud2; 1:" ::: "memory");
    check_eqx("#UD through an interrupt gate", trap_count[6], 1);
    check_eqx("which clears the virtual IF in the handler", last_mask, 0);
    check_eqx("and IRET restores it", CALL(GetInterruptMask, 0, 0, 0), 0x200);
}

static void checks_mmu(void)
{
    section("MMU");
    for (unsigned t = 0; t < 2; t++)
        CALL5(AllocatePage, (uint32_t)ptable[t] >> 12, 0x41, 0, 0, 0);   /* VMI_PAGE_L1 */
    CALL5(AllocatePage, (uint32_t)pgdir >> 12, 0x42, 0, 0, 0);           /* VMI_PAGE_L2 */
    for (unsigned t = 0; t < 2; t++) {
        for (unsigned i = 0; i < 1024; i++)
            CALL(SetPxE, ((t * 1024 + i) << 12) | 3, (uint32_t)&ptable[t][i], 1);
        CALL(SetPxE, (uint32_t)ptable[t] | 3, (uint32_t)&pgdir[t], 2);
    }
    check_eqx("SetPxE wrote the entries", ptable[1][5], ((1024 + 5) << 12) | 3);
    CALL5(SetLinearMapping, 0, 0, 2048, 0, 0);
    CALL(SetCR3, (uint32_t)pgdir, 0, 0);
    CALL(SetCR0, CALL(GetCR0, 0, 0, 0) | 0x80000000, 0, 0);
    check((CALL(GetCR0, 0, 0, 0) & 0x80000000) != 0, "SetCR0: paging on", "-");
    check_eqx("GetCR3", CALL(GetCR3, 0, 0, 0), (uint32_t)pgdir);
    uint32_t va = 0x40000000;
    CALL5(AllocatePage, (uint32_t)alias_pt >> 12, 0x41, 0, 0, 0);
    CALL(SetPxE, (uint32_t)alias_pt | 3, (uint32_t)&pgdir[va >> 22], 2);
    CALL(SetPxE, (uint32_t)data_page | 3, (uint32_t)&alias_pt[0], 1 | 0x10 | va);
    data_page[7] = 0x42;
    __asm__ volatile("" ::: "memory");
    check_eqx("a mapping made by SetPxE reads", *(volatile uint8_t *)(va + 7), 0x42);
    CALL(SetPxE, 0, (uint32_t)&alias_pt[0], 1 | 0x10 | va);
    CALL(InvalPage, va, 0, 0);
    volatile uint32_t got = 0;
    __asm__ volatile("movl $1f, fixup_eip; movl (%1), %0; 1:" : "+r"(got) : "r"(va + 7)
                     : "memory");
    check_eqx("cleared + InvalPage: #PF", trap_count[14], 1);
    check_eqx("GetCR2 in the handler", last_cr2, va + 7);
    CALL(FlushTLB, 1, 0, 0);
    CALL(SetLazyMode, 1, 0, 0);
    CALL(SetLazyMode, 0, 0, 0);
    CALL(ReleasePage, (uint32_t)alias_pt >> 12, 0x41, 0);
    check(1, "FlushTLB, SetLazyMode, ReleasePage", "-");
}

static void checks_time(void)
{
    section("time and alarms");
    uint64_t hz = CALL64(GetCycleFrequency, 0);
    check(hz == 1000000000ull, "GetCycleFrequency: 1e9 (cycles are ns)", "-");
    uint64_t wc = CALL64(GetWallclockTime, 0);
    check(wc > 1000000000ull * 1000000000ull, "GetWallclockTime in ns since 1970", "-");
    uint64_t now = CALL64(GetCycleCounter, 0);
    /* one-shot: absolute expiry in cycles, IRQ0 */
    uint64_t exp = now + 1000000;
    CALL5(SetAlarm, 0, (uint32_t)exp, (uint32_t)(exp >> 32), 0, 0);
    CALL(EnableInterrupts, 0, 0, 0);
    CALL(Halt, 0, 0, 0);
    check_eqx("Halt until the one-shot alarm: IRQ0 delivered", ticks, 1);
    uint64_t later = CALL64(GetCycleCounter, 0);
    check(later >= exp, "the REAL counter reached the expiry", "-");
    check_eqx("a fired one-shot is disarmed (CancelAlarm 0)", CALL(CancelAlarm, 0, 0, 0), 0);
    exp = later + 100000;
    CALL5(SetAlarm, 0x100, (uint32_t)exp, (uint32_t)(exp >> 32), 100000, 0);
    CALL(Halt, 0, 0, 0);
    CALL(Halt, 0, 0, 0);
    check_eqx("a periodic alarm fires each period", ticks, 3);
    check_eqx("CancelAlarm of an armed alarm returns 1", CALL(CancelAlarm, 0, 0, 0), 1);
    CALL(DisableInterrupts, 0, 0, 0);
}

void __attribute__((noreturn)) vmi_main(void)
{
    int found = find_rom();
    printk("pvtest-vmi booting (VMI API 3.0 ROM at 0x%lx)\n", (unsigned long)rom);
    section("console");
    check(1, "COM1 console", "-");
    check(found, "the ROM found by the 0xC0000-0xE0000 scan", "-");
    if (!found)
        for (;;)
            __asm__ volatile("hlt");
    checks_rom();
    checks_cpu();
    checks_irq();
    checks_mmu();
    checks_time();
#if FAIL_CHECK
    check_eqx("deliberate failure (FAIL_CHECK build)", 1, 2);
#endif
    printk("pvtest: %u passed, %u failed\n", npassed, nfailed);
    if (nfailed) {
        printk("pvtest: shutting down: crash (triple fault)\n");
        struct dtr none = { 0, 0 };
        CALL(SetIDT, (uint32_t)&none, 0, 0);
        __asm__ volatile("int3");
    }
    printk("pvtest: shutting down: poweroff\n");
    CALL(Shutdown, 0, 0, 0);
    for (;;)
        ;
}
