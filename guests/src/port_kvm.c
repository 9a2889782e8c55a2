/*
 * port_kvm.c - pvtest-kvm: the built-in reference guest's KVM port (x86-64,
 * ring 0, on pvmon's minimal emulated PC: docs/kvm.md).
 *
 * Entered at the PVH note (kvm_entry.S), as pvmon boots every KVM guest and
 * Firecracker boots a vmlinux with the note.  It installs its own IDT and
 * checks the answers of every part of KVM's paravirtual interface a guest
 * sees, each expected answer with its source:
 *
 *   [cpuid.rst]     Linux 6.12 Documentation/virt/kvm/x86/cpuid.rst
 *   [msr.rst]       Documentation/virt/kvm/x86/msr.rst
 *   [hypercalls]    Documentation/virt/kvm/x86/hypercalls.rst
 *   [kvm_para.h]    include/uapi/linux/kvm_para.h, arch/x86/include/uapi/asm/kvm_para.h
 *   [x86.c]         arch/x86/kvm/x86.c (kvm_set_msr_common, kvm_emulate_hypercall)
 *   [lapic.c]       arch/x86/kvm/lapic.c, lapic.h (APIC_BUS_CYCLE_NS 1, PV EOI)
 *   [ioapic]        arch/x86/kvm/ioapic.h (IOAPIC_VERSION_ID 0x11, 24 pins)
 *   [SDM]           Intel SDM vol. 3A ch. 11 (APIC), ch. 6 (exceptions)
 *   [8250]          Linux drivers/tty/serial/8250/8250_port.c (autoconfig), QEMU serial.c
 *   [pvh]           xen.git docs/misc/pvh.pandoc, hvm/start_info.h
 *   [pvmon]         docs/kvm.md: what pvmon's PC chose where KVM leaves it to the VMM
 *
 * Feature-dependent checks adapt: a feature the host offers in CPUID
 * 0x40000001 must work; one it does not offer must fail the way KVM fails
 * it (its MSRs #GP, its hypercall -KVM_ENOSYS), so the guest passes on every
 * KVM release and says which behaviour it met.
 *
 *   pvtest: ok N - <check> / pvtest: FAIL N - <check> (detail)
 *   pvtest: P passed, F failed
 * Every check passed: power off the way pvmon's PC offers it (no ACPI S5:
 * hlt with interrupts disabled, as Linux's "System halted").  A failed
 * check ends in a triple fault (a KVM host sees a shutdown exit).
 * Console: COM1 (0x3F8), polled.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifndef FAIL_CHECK
#define FAIL_CHECK 0
#endif

#define VIRT_BASE 0xffffffff80000000UL
#define KERNEL_CS 0x08
#define RFLAGS_IF (1UL << 9)

/* [kvm_para.h] */
#define KVM_CPUID_SIGNATURE 0x40000000
#define KVM_CPUID_FEATURES  0x40000001
#define KVM_FEATURE_CLOCKSOURCE        0
#define KVM_FEATURE_NOP_IO_DELAY       1
#define KVM_FEATURE_MMU_OP             2
#define KVM_FEATURE_CLOCKSOURCE2       3
#define KVM_FEATURE_ASYNC_PF           4
#define KVM_FEATURE_STEAL_TIME         5
#define KVM_FEATURE_PV_EOI             6
#define KVM_FEATURE_PV_UNHALT          7
#define KVM_FEATURE_PV_TLB_FLUSH       9
#define KVM_FEATURE_ASYNC_PF_VMEXIT    10
#define KVM_FEATURE_PV_SEND_IPI        11
#define KVM_FEATURE_POLL_CONTROL       12
#define KVM_FEATURE_PV_SCHED_YIELD     13
#define KVM_FEATURE_ASYNC_PF_INT       14
#define KVM_FEATURE_MSI_EXT_DEST_ID    15
#define KVM_FEATURE_HC_MAP_GPA_RANGE   16
#define KVM_FEATURE_MIGRATION_CONTROL  17
#define KVM_FEATURE_CLOCKSOURCE_STABLE_BIT 24
#define KVM_FEATURES_DEFINED 0x0103ffffU   /* bits 0-17 (8 unused) and 24 */

#define MSR_KVM_WALL_CLOCK      0x11
#define MSR_KVM_SYSTEM_TIME     0x12
#define MSR_KVM_WALL_CLOCK_NEW  0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_ASYNC_PF_EN     0x4b564d02
#define MSR_KVM_STEAL_TIME      0x4b564d03
#define MSR_KVM_PV_EOI_EN       0x4b564d04
#define MSR_KVM_POLL_CONTROL    0x4b564d05
#define MSR_KVM_ASYNC_PF_INT    0x4b564d06
#define MSR_KVM_ASYNC_PF_ACK    0x4b564d07
#define MSR_KVM_MIGRATION_CONTROL 0x4b564d08
#define MSR_IA32_APIC_BASE      0x1b
#define MSR_IA32_TSC_DEADLINE   0x6e0

#define KVM_HC_VAPIC_POLL_IRQ   1
#define KVM_HC_MMU_OP           2
#define KVM_HC_FEATURES         3
#define KVM_HC_KICK_CPU         5
#define KVM_HC_CLOCK_PAIRING    9
#define KVM_HC_SEND_IPI         10
#define KVM_HC_SCHED_YIELD      11
#define KVM_HC_MAP_GPA_RANGE    12
#define KVM_ENOSYS              1000
#define KVM_EOPNOTSUPP          95

/* the local APIC [SDM table 11-1] and the I/O APIC */
#define LAPIC_BASE 0xfee00000UL
#define APIC_ID    0x020
#define APIC_LVR   0x030
#define APIC_TPR   0x080
#define APIC_EOI   0x0b0
#define APIC_SVR   0x0f0
#define APIC_ISR   0x100
#define APIC_IRR   0x200
#define APIC_ICR   0x300
#define APIC_ICR2  0x310
#define APIC_LVTT  0x320
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR  0x3e0
#define LVT_MASKED (1U << 16)
#define LVT_TSC_DEADLINE (2U << 17)
#define IOAPIC_BASE 0xfec00000UL

/* vectors (kvm_entry.S) */
#define VEC_UART     0xe4
#define VEC_ONESHOT  0xee
#define VEC_DEADLINE 0xef
#define VEC_PVIPI    0xf0
#define VEC_SELF     0xf6
#define VEC_SPURIOUS 0xff

#define COM1 0x3f8

/* ------------------------------------------------------------------ I/O */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t mmio_read32(unsigned long pa) { return *(volatile uint32_t *)pa; }
static inline void mmio_write32(unsigned long pa, uint32_t v) { *(volatile uint32_t *)pa = v; }
static inline uint32_t apic_read(unsigned reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void apic_write(unsigned reg, uint32_t v) { mmio_write32(LAPIC_BASE + reg, v); }
static uint32_t ioapic_read(unsigned idx)
{
    mmio_write32(IOAPIC_BASE, idx);
    return mmio_read32(IOAPIC_BASE + 0x10);
}
static void ioapic_write(unsigned idx, uint32_t v)
{
    mmio_write32(IOAPIC_BASE, idx);
    mmio_write32(IOAPIC_BASE + 0x10, v);
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                         : "0"(leaf), "2"(sub));
}

static unsigned long phys(const volatile void *va) { return (unsigned long)va - VIRT_BASE; }
static void *virt(unsigned long pa) { return (void *)(pa + VIRT_BASE); }

static void putc_console(char c)
{
    while (!(inb(COM1 + 5) & 0x20))     /* LSR.THRE */
        ;
    outb(COM1, (uint8_t)c);
}

static void put_num(char **p, char *end, unsigned long v, unsigned base, int neg)
{
    char tmp[24];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    if (neg && *p < end) *(*p)++ = '-';
    while (n && *p < end) *(*p)++ = tmp[--n];
}

/* %s %u %x %d (with an optional l: every integer argument is a long) */
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
        case 'd': { long v = va_arg(ap, long); put_num(&p, end, v < 0 ? -(unsigned long)v : (unsigned long)v, 10, v < 0); break; }
        default: *p++ = *fmt; break;
        }
    }
    *p = 0;
}

static void printk(const char *fmt, ...)
{
    char buf[240];
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (char *s = buf; *s; s++)
        putc_console(*s);
}

static void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

static int memeq(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n; n--)
        if (*p++ != *q++)
            return 0;
    return 1;
}

/* ------------------------------------------------------------ reporting */
static unsigned nchecks, npassed, nfailed;

static int check(int ok, const char *name, const char *fmt, ...)
{
    char detail[160] = "";
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

static int check_eq(const char *name, long got, long want)
{
    return check(got == want, name, "got %ld, expected %ld", got, want);
}

static void section(const char *s) { printk("pvtest: # %s\n", s); }

/* ------------------------------------------------------------ the traps */
struct trap_frame {
    unsigned long r15, r14, r13, r12, r11, r10, r9, r8;
    unsigned long rbp, rdi, rsi, rdx, rcx, rbx, rax;
    unsigned long vector, error;
    unsigned long rip, cs, rflags, rsp, ss;
};

struct extable_entry { unsigned long insn, fixup; };
extern const struct extable_entry __start_ex_table[], __stop_ex_table[];

void trap_0(void), trap_1(void), trap_2(void), trap_3(void), trap_4(void), trap_5(void),
    trap_6(void), trap_7(void), trap_8(void), trap_9(void), trap_10(void), trap_11(void),
    trap_12(void), trap_13(void), trap_14(void), trap_15(void), trap_16(void),
    trap_17(void), trap_18(void), trap_19(void), irq_uart(void), irq_oneshot(void),
    irq_deadline(void), irq_pvipi(void), irq_self(void), irq_spurious(void), trap_int80(void);
void run_user(unsigned long rip, unsigned long rsp);
extern char user_return[], user_vmcall[], user_rdmsr[];
extern unsigned long user_saved_rsp;
extern uint64_t gdt[];
extern uint64_t kvm_l3[], kvm_l2[];
extern uint64_t kvm_l4[];
extern uint64_t entry_ebx, entry_cr0, entry_cr4, entry_cs, entry_eflags;

/* What the handlers saw. */
static volatile unsigned long trap_count[256];
static volatile unsigned long last_vector, last_error, last_rip, last_cr2, last_cs;
static volatile unsigned long last_rflags;
static volatile unsigned long irq_tsc;          /* TSC when the last interrupt came */
static volatile uint32_t irq_pv_eoi_word;       /* the PV EOI word as the handler found it */
static volatile unsigned long pv_eois;          /* EOIs done through the PV EOI word */
static volatile uint8_t uart_iir_in_irq;

/* [msr.rst] MSR_KVM_PV_EOI_EN: a 4-byte-aligned word; bit 0 set by the
 * host means "EOI by clearing me" (Linux kvm_guest_apic_eoi_write). */
static volatile uint32_t pv_eoi_word __attribute__((aligned(64)));
static int pv_eoi_on;

static void apic_eoi(void)
{
    if (pv_eoi_on && __atomic_fetch_and(&pv_eoi_word, ~1U, __ATOMIC_SEQ_CST) & 1) {
        pv_eois++;
        return;
    }
    apic_write(APIC_EOI, 0);
}

/* What ring 3 left with (run_user): the vector, its error code, RAX, CS. */
static volatile unsigned long user_vector, user_error, user_rax, user_cs;

void trap_dispatch(struct trap_frame *f)
{
    unsigned vec = f->vector & 0xff;
    trap_count[vec]++;
    last_vector = vec;
    last_error = f->error;
    last_rip = f->rip;
    last_cs = f->cs;
    last_rflags = f->rflags;
    if ((f->cs & 3) == 3) {
        /* from ring 3 (int $0x80 or a fault): back to run_user's caller */
        user_vector = vec;
        user_error = f->error;
        user_rax = f->rax;
        user_cs = f->cs;
        f->rip = (unsigned long)user_return;
        f->cs = KERNEL_CS;
        f->ss = 0x10;
        f->rsp = user_saved_rsp;
        f->rflags = 0x2;
        return;
    }
    if (vec >= 32) {
        irq_tsc = rdtsc();
        irq_pv_eoi_word = pv_eoi_word;
        if (vec == VEC_UART)
            uart_iir_in_irq = inb(COM1 + 2);    /* acknowledges THR empty */
        if (vec != VEC_SPURIOUS)
            apic_eoi();
        return;
    }
    if (vec == 14) {
        unsigned long cr2;
        __asm__ __volatile__("mov %%cr2, %0" : "=r"(cr2));
        last_cr2 = cr2;
    }
    if (vec == 3 || vec == 4)
        return;                                 /* traps: RIP is after the instruction */
    for (const struct extable_entry *e = __start_ex_table; e < __stop_ex_table; e++)
        if (e->insn == f->rip) {
            f->rip = e->fixup;
            return;
        }
    /* an exception nobody expected: report it and stop with a triple fault */
    printk("pvtest: unexpected exception %u error 0x%lx at rip 0x%lx\n", vec, f->error, f->rip);
    printk("pvtest: %u passed, %u failed\n", npassed, nfailed + 1);
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } none = { 0, 0 };
    __asm__ __volatile__("lidt %0; int3" :: "m"(none));
    for (;;)
        ;
}

/* A fault on the instruction at 1: resumes at 3:, which sets err. */
#define EXTABLE_FIXUP(errvar)                                   \
    "2:\n"                                                      \
    ".pushsection .text.fixup, \"ax\"\n"                        \
    "3: movl $1, %[" #errvar "]\n"                              \
    "   jmp 2b\n"                                               \
    ".popsection\n"                                             \
    ".pushsection __ex_table, \"a\"\n"                          \
    ".balign 8\n"                                               \
    ".quad 1b, 3b\n"                                            \
    ".popsection\n"

/* 0, or the exception vector the access raised (#GP 13) */
static int rdmsr_safe(uint32_t msr, uint64_t *out)
{
    int err = 0;
    uint32_t lo = 0, hi = 0;
    __asm__ __volatile__("1: rdmsr\n" EXTABLE_FIXUP(err)
                         : "+a"(lo), "+d"(hi), [err] "+r"(err) : "c"(msr) : "memory");
    *out = ((uint64_t)hi << 32) | lo;
    return err ? (int)last_vector : 0;
}

static int wrmsr_safe(uint32_t msr, uint64_t v)
{
    int err = 0;
    __asm__ __volatile__("1: wrmsr\n" EXTABLE_FIXUP(err)
                         : [err] "+r"(err)
                         : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
    return err ? (int)last_vector : 0;
}

static uint64_t rdmsr(uint32_t msr)
{
    uint64_t v;
    rdmsr_safe(msr, &v);
    return v;
}

static int read_u64_safe(unsigned long va, uint64_t *out)
{
    int err = 0;
    uint64_t v = 0;
    __asm__ __volatile__("1: movq (%[p]), %[v]\n" EXTABLE_FIXUP(err)
                         : [v] "+r"(v), [err] "+r"(err) : [p] "r"(va) : "memory");
    *out = v;
    return err ? (int)last_vector : 0;
}

static int ud2_safe(void)
{
    int err = 0;
    __asm__ __volatile__("1: ud2\n" EXTABLE_FIXUP(err) : [err] "+r"(err) :: "memory");
    return err ? (int)last_vector : 0;
}

static int div_safe(unsigned long a, unsigned long b)
{
    int err = 0;
    unsigned long q = a, r = 0;
    __asm__ __volatile__("1: divq %[b]\n" EXTABLE_FIXUP(err)
                         : "+a"(q), "+d"(r), [err] "+r"(err) : [b] "r"(b) : "memory");
    return err ? (int)last_vector : 0;
}

/* [hypercalls]: number in RAX, arguments RBX, RCX, RDX, RSI; result RAX. */
static long kvm_hypercall(unsigned long nr, unsigned long a0, unsigned long a1,
                          unsigned long a2, unsigned long a3)
{
    long ret;
    __asm__ __volatile__("vmcall" : "=a"(ret) : "a"(nr), "b"(a0), "c"(a1), "d"(a2), "S"(a3)
                         : "memory");
    return ret;
}

static long kvm_hypercall_amd(unsigned long nr, unsigned long a0)
{
    long ret;
    __asm__ __volatile__("vmmcall" : "=a"(ret) : "a"(nr), "b"(a0) : "memory");
    return ret;
}

/* ------------------------------------------------------------ the IDT */
struct idt_gate {
    uint16_t off0, sel;
    uint8_t ist, type_attr;
    uint16_t off1;
    uint32_t off2, zero;
};
static struct idt_gate idt[256] __attribute__((aligned(4096)));

static void set_gate(unsigned vec, void (*fn)(void), unsigned dpl)
{
    unsigned long a = (unsigned long)fn;
    idt[vec] = (struct idt_gate){ (uint16_t)a, KERNEL_CS, 0, (uint8_t)(0x8e | (dpl << 5)),
                                  (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0 };
}

static void install_idt(void)
{
    static void (*const traps[20])(void) = {
        trap_0, trap_1, trap_2, trap_3, trap_4, trap_5, trap_6, trap_7, trap_8, trap_9,
        trap_10, trap_11, trap_12, trap_13, trap_14, trap_15, trap_16, trap_17, trap_18,
        trap_19,
    };
    for (unsigned v = 0; v < 256; v++)
        set_gate(v, v < 20 ? traps[v] : irq_spurious, 0);
    set_gate(3, trap_3, 3);
    set_gate(4, trap_4, 3);
    set_gate(VEC_UART, irq_uart, 0);
    set_gate(VEC_ONESHOT, irq_oneshot, 0);
    set_gate(VEC_DEADLINE, irq_deadline, 0);
    set_gate(VEC_PVIPI, irq_pvipi, 0);
    set_gate(VEC_SELF, irq_self, 0);
    set_gate(0x80, trap_int80, 3);
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } d = {
        sizeof(idt) - 1, (uint64_t)idt };
    __asm__ __volatile__("lidt %0" :: "m"(d) : "memory");
}

static inline void sti_hlt_cli(void) { __asm__ __volatile__("sti; hlt; cli" ::: "memory"); }
static inline void sti_nop_cli(void) { __asm__ __volatile__("sti; nop; cli" ::: "memory"); }

/* ------------------------------------------------------------ kvmclock */
/* [msr.rst] struct pvclock_vcpu_time_info (32 bytes), pvclock_wall_clock */
struct pvclock_vcpu_time_info {
    uint32_t version, pad0;
    uint64_t tsc_timestamp, system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags, pad[2];
} __attribute__((packed));
struct pvclock_wall_clock { uint32_t version, sec, nsec; } __attribute__((packed));
/* [msr.rst] MSR_KVM_STEAL_TIME: 64-byte aligned struct kvm_steal_time */
struct kvm_steal_time {
    uint64_t steal;
    uint32_t version, flags;
    uint8_t preempted, u8_pad[3];
    uint32_t pad[11];
};
/* [hypercalls] KVM_HC_CLOCK_PAIRING: struct kvm_clock_pairing */
struct kvm_clock_pairing {
    int64_t sec, nsec;
    uint64_t tsc;
    uint32_t flags, pad[9];
};
_Static_assert(sizeof(struct pvclock_vcpu_time_info) == 32, "time info");
_Static_assert(sizeof(struct kvm_steal_time) == 64, "steal time");
_Static_assert(sizeof(struct kvm_clock_pairing) == 64, "clock pairing");

static volatile struct pvclock_vcpu_time_info kvmclock __attribute__((aligned(64)));
static volatile struct pvclock_vcpu_time_info kvmclock_old __attribute__((aligned(64)));
static volatile struct pvclock_wall_clock wallclock __attribute__((aligned(64)));
static volatile struct kvm_steal_time steal __attribute__((aligned(64)));
static volatile struct kvm_clock_pairing pairing __attribute__((aligned(64)));
static uint8_t async_pf_area[64] __attribute__((aligned(64)));
static int kvmclock_on;

/* Linux pvclock_scale_delta / __pvclock_read_cycles */
static uint64_t scale_delta(uint64_t delta, uint32_t mul, int shift)
{
    if (shift < 0)
        delta >>= -shift;
    else
        delta <<= shift;
    return (uint64_t)(((unsigned __int128)delta * mul) >> 32);
}

/* ns since boot from the kvmclock record (Linux pvclock_clocksource_read) */
static uint64_t kvmclock_ns(const volatile struct pvclock_vcpu_time_info *ti, uint32_t *ver)
{
    uint32_t v;
    uint64_t ns;
    do {
        v = ti->version;
        __asm__ __volatile__("" ::: "memory");
        ns = ti->system_time + scale_delta(rdtsc() - ti->tsc_timestamp,
                                           ti->tsc_to_system_mul, ti->tsc_shift);
        __asm__ __volatile__("" ::: "memory");
    } while ((v & 1) || v != ti->version);
    if (ver)
        *ver = v;
    return ns;
}

/* ------------------------------------------------------------ state */
struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
struct hvm_memmap_entry { uint64_t addr, size; uint32_t type, reserved; };

static uint32_t kvm_features, kvm_hints, kvm_max_leaf;
static int has(unsigned bit) { return (kvm_features >> bit) & 1; }

/* A KVM MSR of a feature: offered -> the access works, else #GP [x86.c:
 * kvm_set_msr_common/kvm_get_msr_common return 1 for a feature the guest's
 * CPUID lacks (guest_pv_has), or do not know the MSR at all]. */
static void check_feature_msr_absent(unsigned bit, uint32_t msr, const char *name)
{
    char label[120];
    uint64_t v;
    int e = rdmsr_safe(msr, &v);
    int ok = e == 13;
    printk("pvtest:   %s not offered: RDMSR 0x%x -> %s\n", name, msr, e ? "#GP" : "read");
    (void)bit;
    char *p = label;
    const char *a = name, *b = " not offered: its MSR raises #GP (x86.c)";
    while (*a) *p++ = *a++;
    while (*b) *p++ = *b++;
    *p = 0;
    check(ok, label, "RDMSR 0x%x gave %s", msr, e ? "another fault" : "a value");
}

/* ================================================================ checks */

static struct hvm_start_info *si;

static void checks_boot(void)
{
    section("boot: the PVH entry as pvmon boots a KVM guest (pvh.pandoc, docs/kvm.md)");
    si = virt(entry_ebx);
    printk("pvtest: hvm_start_info at 0x%lx: magic 0x%x version %u, rsdp 0x%lx, "
           "%u memmap entries; entry CR0 0x%lx CR4 0x%lx CS 0x%lx EFLAGS 0x%lx\n",
           (unsigned long)entry_ebx, si->magic, si->version, (unsigned long)si->rsdp_paddr,
           si->memmap_entries, (unsigned long)entry_cr0, (unsigned long)entry_cr4,
           (unsigned long)entry_cs, (unsigned long)entry_eflags);
    check_eqx("hvm_start_info magic (EBX points at it) [pvh]", si->magic, 0x336ec578);
    check(si->version >= 1, "hvm_start_info version 1 or later [pvh]", "version %u", si->version);
    check_eqx("entry CR0: PE set, paging off [pvh]", entry_cr0 & 0x80000001UL, 1);
    check(!(entry_eflags & ((1 << 9) | (1 << 8) | (1 << 17))),
          "entry EFLAGS: IF, TF and VM clear [pvh]", "eflags 0x%lx", (unsigned long)entry_eflags);
    const char *cmd = si->cmdline_paddr ? virt(si->cmdline_paddr) : "";
    printk("pvtest:   command line \"%s\"\n", cmd);
    unsigned len = 0;
    while (len < 4096 && cmd[len])
        len++;
    check(len < 2048, "command line NUL-terminated within 2048 bytes (COMMAND_LINE_SIZE) "
          "[pvh, docs/kvm.md]", "%u bytes", len);

    const struct hvm_memmap_entry *mm = virt(si->memmap_paddr);
    unsigned n = si->memmap_entries, ram_at_0 = 0, acpi = 0, ram_kernel = 0;
    for (unsigned i = 0; i < n; i++) {
        printk("pvtest:   memmap %u: 0x%lx +0x%lx type %u\n", i, (unsigned long)mm[i].addr,
               (unsigned long)mm[i].size, mm[i].type);
        if (mm[i].type == 1 && mm[i].addr == 0)
            ram_at_0 = 1;
        if (mm[i].type == 3 && mm[i].addr <= si->rsdp_paddr &&
            si->rsdp_paddr < mm[i].addr + mm[i].size)
            acpi = 1;
        if (mm[i].type == 1 && mm[i].addr <= 0x200000 && 0x200000 < mm[i].addr + mm[i].size)
            ram_kernel = 1;
    }
    check(n >= 3 && ram_at_0 && ram_kernel,
          "memory map: RAM at 0 and under the kernel (2 MiB) [pvh]", "%u entries", n);
    check(acpi, "memory map: the RSDP lies in an ACPI (type 3) range [pvh]", "rsdp 0x%lx",
          (unsigned long)si->rsdp_paddr);

    /* ACPI: RSDP -> XSDT -> MADT with the local APIC and an I/O APIC
     * (ACPI 6.x 5.2.5, 5.2.8, 5.2.12); docs/kvm.md "The platform" */
    const uint8_t *rsdp = virt(si->rsdp_paddr);
    unsigned sum = 0;
    for (int i = 0; i < 20; i++)
        sum += rsdp[i];
    check(memeq(rsdp, "RSD PTR ", 8) && (sum & 0xff) == 0,
          "RSDP: signature and checksum (ACPI 5.2.5.3)", "sum 0x%x", sum & 0xff);
    uint64_t xsdt_pa = *(const uint64_t *)(rsdp + 24);
    const uint8_t *xsdt = virt(xsdt_pa);
    int madt_ok = 0;
    uint32_t lapic_addr = 0, ioapic_addr = 0;
    if (rsdp[15] >= 2 && memeq(xsdt, "XSDT", 4)) {
        uint32_t len = *(const uint32_t *)(xsdt + 4);
        for (uint32_t off = 36; off + 8 <= len; off += 8) {
            const uint8_t *t = virt(*(const uint64_t *)(xsdt + off));
            if (!memeq(t, "APIC", 4))
                continue;
            uint32_t tlen = *(const uint32_t *)(t + 4);
            lapic_addr = *(const uint32_t *)(t + 36);
            for (uint32_t o = 44; o + 2 <= tlen; o += t[o + 1] ? t[o + 1] : tlen) {
                if (t[o] == 1)
                    ioapic_addr = *(const uint32_t *)(t + o + 4);
            }
            madt_ok = 1;
        }
    }
    check(madt_ok && lapic_addr == LAPIC_BASE && ioapic_addr == IOAPIC_BASE,
          "MADT (through the XSDT): local APIC 0xfee00000, I/O APIC 0xfec00000",
          "madt %d lapic 0x%x ioapic 0x%x", madt_ok, lapic_addr, ioapic_addr);
}

static void checks_cpu(void)
{
    uint32_t r[4];
    section("cpu: CPUID and the APIC (cpuid.rst, SDM)");
    cpuid(1, 0, r);
    check(r[2] >> 31, "CPUID 1: ECX bit 31, a hypervisor is present", "ecx 0x%x", r[2]);
    check(r[3] & (1 << 9), "CPUID 1: EDX bit 9, a local APIC", "edx 0x%x", r[3]);
    int tsc_deadline = (r[2] >> 24) & 1;
    check(tsc_deadline, "CPUID 1: ECX bit 24, the TSC-deadline timer [pvmon]", "ecx 0x%x", r[2]);

    cpuid(KVM_CPUID_SIGNATURE, 0, r);
    char sig[13];
    *(uint32_t *)&sig[0] = r[1];
    *(uint32_t *)&sig[4] = r[2];
    *(uint32_t *)&sig[8] = r[3];
    sig[12] = 0;
    printk("pvtest:   CPUID 0x40000000: eax 0x%x \"%s\"\n", r[0], sig);
#if FAIL_CHECK
    check(memeq(sig, "XenVMMXenVMM", 12),
          "deliberately failing check: CPUID 0x40000000 says XenVMMXenVMM", "\"%s\"", sig);
#endif
    check(memeq(sig, "KVMKVMKVM\0\0\0", 12),
          "CPUID 0x40000000: EBX ECX EDX \"KVMKVMKVM\\0\\0\\0\" [cpuid.rst, kvm_para.h]",
          "\"%s\"", sig);
    kvm_max_leaf = r[0] ? r[0] : KVM_CPUID_FEATURES;
    check(r[0] == 0 || r[0] >= KVM_CPUID_FEATURES,
          "CPUID 0x40000000: EAX the highest leaf, 0x40000001 (0 before Linux 2.6.35, "
          "Documentation/kvm/cpuid.txt) [cpuid.rst]", "eax 0x%x", r[0]);
    cpuid(KVM_CPUID_FEATURES, 0, r);
    kvm_features = r[0];
    kvm_hints = r[3];
    printk("pvtest:   KVM features 0x%x:%s%s%s%s%s%s%s%s%s%s%s%s%s%s%s; hints 0x%x\n",
           kvm_features,
           has(KVM_FEATURE_CLOCKSOURCE) ? " CLOCKSOURCE" : "",
           has(KVM_FEATURE_NOP_IO_DELAY) ? " NOP_IO_DELAY" : "",
           has(KVM_FEATURE_MMU_OP) ? " MMU_OP" : "",
           has(KVM_FEATURE_CLOCKSOURCE2) ? " CLOCKSOURCE2" : "",
           has(KVM_FEATURE_ASYNC_PF) ? " ASYNC_PF" : "",
           has(KVM_FEATURE_STEAL_TIME) ? " STEAL_TIME" : "",
           has(KVM_FEATURE_PV_EOI) ? " PV_EOI" : "",
           has(KVM_FEATURE_PV_UNHALT) ? " PV_UNHALT" : "",
           has(KVM_FEATURE_PV_TLB_FLUSH) ? " PV_TLB_FLUSH" : "",
           has(KVM_FEATURE_PV_SEND_IPI) ? " PV_SEND_IPI" : "",
           has(KVM_FEATURE_POLL_CONTROL) ? " POLL_CONTROL" : "",
           has(KVM_FEATURE_PV_SCHED_YIELD) ? " PV_SCHED_YIELD" : "",
           has(KVM_FEATURE_ASYNC_PF_INT) ? " ASYNC_PF_INT" : "",
           has(KVM_FEATURE_MIGRATION_CONTROL) ? " MIGRATION_CONTROL" : "",
           has(KVM_FEATURE_CLOCKSOURCE_STABLE_BIT) ? " CLOCKSOURCE_STABLE_BIT" : "",
           kvm_hints);
    check(has(KVM_FEATURE_CLOCKSOURCE) || has(KVM_FEATURE_CLOCKSOURCE2),
          "CPUID 0x40000001: EAX offers kvmclock (CLOCKSOURCE or CLOCKSOURCE2) [cpuid.rst]",
          "eax 0x%x", kvm_features);
    check(!(kvm_features & ~KVM_FEATURES_DEFINED),
          "CPUID 0x40000001: EAX has only the defined bits 0-17 and 24 [cpuid.rst]",
          "eax 0x%x", kvm_features);
    check(!(kvm_hints & ~1U), "CPUID 0x40000001: EDX has only KVM_HINTS_REALTIME (bit 0) "
          "[cpuid.rst]", "edx 0x%x", kvm_hints);
    check(!has(KVM_FEATURE_ASYNC_PF_INT) || has(KVM_FEATURE_ASYNC_PF),
          "CPUID 0x40000001: ASYNC_PF_INT only with ASYNC_PF [cpuid.rst]", "eax 0x%x",
          kvm_features);

    check_eqx("IA32_APIC_BASE: 0xfee00000, BSP and global enable (SDM 11.4.4)",
              rdmsr(MSR_IA32_APIC_BASE), LAPIC_BASE | (1 << 8) | (1 << 11));
    check_eqx("local APIC ID register: 0 [SDM 11.4.6]", apic_read(APIC_ID) >> 24, 0);
    uint32_t lvr = apic_read(APIC_LVR);
    check((lvr & 0xff) == 0x14 && ((lvr >> 16) & 0xff) >= 5,
          "local APIC version 0x14 with at least 6 LVT entries (APIC_VERSION) [lapic.c]",
          "lvr 0x%x", lvr);
    uint32_t iover = ioapic_read(1);
    check_eqx("I/O APIC version register: 24 pins, version 0x11 [ioapic]", iover, 0x00170011);
}

static void checks_kvmclock(void)
{
    section("kvmclock: MSR_KVM_SYSTEM_TIME(_NEW), MSR_KVM_WALL_CLOCK(_NEW) (msr.rst)");
    int newmsrs = has(KVM_FEATURE_CLOCKSOURCE2);
    uint32_t st = newmsrs ? MSR_KVM_SYSTEM_TIME_NEW : MSR_KVM_SYSTEM_TIME;
    uint32_t wc = newmsrs ? MSR_KVM_WALL_CLOCK_NEW : MSR_KVM_WALL_CLOCK;
    printk("pvtest:   kvmclock on MSRs 0x%x and 0x%x (as Linux says \"kvm-clock: Using msrs "
           "%x and %x\")\n", st, wc, st, wc);
    uint64_t pa = phys(&kvmclock) | 1;
    int e = wrmsr_safe(st, pa);
    kvmclock_on = !e;
    check(!e, "WRMSR SYSTEM_TIME: address | enable bit 0 accepted [msr.rst]", "fault %d", e);
    uint64_t back = 0;
    check(!rdmsr_safe(st, &back) && back == pa,
          "RDMSR SYSTEM_TIME returns the value written [x86.c]", "0x%lx", (unsigned long)back);
    uint32_t v1 = kvmclock.version;
    check(v1 && !(v1 & 1), "pvclock_vcpu_time_info.version even and non-zero after the "
          "write [msr.rst]", "version %u", v1);
    uint32_t mul = kvmclock.tsc_to_system_mul;
    int shift = kvmclock.tsc_shift;
    unsigned long khz = 0;
    if (mul) {
        khz = (1000000UL << 32) / mul;          /* Linux pvclock_tsc_khz */
        khz = shift < 0 ? khz << -shift : khz >> shift;
    }
    printk("pvtest:   mul %u shift %d flags 0x%x -> TSC %lu kHz; system_time %lu ns at tsc %lu\n",
           mul, shift, kvmclock.flags, khz, (unsigned long)kvmclock.system_time,
           (unsigned long)kvmclock.tsc_timestamp);
    check(mul != 0 && shift >= -31 && shift <= 31 && khz >= 1000,
          "tsc_to_system_mul/tsc_shift give a TSC rate (at least 1 MHz) [msr.rst]",
          "mul %u shift %d", mul, shift);
    check(!(kvmclock.flags & ~3U), "flags: only PVCLOCK_TSC_STABLE_BIT and "
          "PVCLOCK_GUEST_STOPPED (pvclock-abi.h)", "flags 0x%x", kvmclock.flags);
    uint64_t t1 = kvmclock_ns(&kvmclock, 0);
    for (volatile int i = 0; i < 1000; i++)
        ;
    uint64_t t2 = kvmclock_ns(&kvmclock, 0);
    uint64_t t3 = kvmclock_ns(&kvmclock, 0);
    check(t1 < t2 && t2 <= t3, "kvmclock time (system_time + scaled TSC delta) advances "
          "monotonically across reads [msr.rst]", "%lu %lu %lu", (unsigned long)t1,
          (unsigned long)t2, (unsigned long)t3);
    check(t1 < 1000000000UL, "kvmclock counts from the VM's start (under 1 s here) [msr.rst, pvmon]",
          "%lu ns", (unsigned long)t1);

    /* a second record at another address: the update bumps its version too */
    e = wrmsr_safe(st, phys(&kvmclock_old) | 1);
    check(!e && kvmclock_old.version && !(kvmclock_old.version & 1) &&
          kvmclock_ns(&kvmclock_old, 0) >= t3,
          "SYSTEM_TIME moved to a second record: written, even version, same time line",
          "fault %d version %u", e, kvmclock_old.version);
    wrmsr_safe(st, pa);

    e = wrmsr_safe(wc, phys(&wallclock));
    printk("pvtest:   wall clock: version %u, %u s %u ns since 1970 at kvmclock 0\n",
           wallclock.version, wallclock.sec, wallclock.nsec);
    check(!e && wallclock.version && !(wallclock.version & 1),
          "WRMSR WALL_CLOCK: pvclock_wall_clock written with an even version [msr.rst]",
          "fault %d version %u", e, wallclock.version);
    check(wallclock.sec >= 1577836800U && wallclock.nsec < 1000000000U,
          "wall clock: seconds after 2020-01-01, nsec below 10^9 [msr.rst]", "%u s %u ns",
          wallclock.sec, wallclock.nsec);

    /* the legacy MSRs: still there wherever CLOCKSOURCE is offered */
    if (newmsrs) {
        if (has(KVM_FEATURE_CLOCKSOURCE)) {
            e = wrmsr_safe(MSR_KVM_SYSTEM_TIME, phys(&kvmclock_old) | 1);
            check(!e, "CLOCKSOURCE offered beside CLOCKSOURCE2: the old MSR 0x12 works too "
                  "[msr.rst]", "fault %d", e);
            wrmsr_safe(st, pa);
        } else {
            check_feature_msr_absent(KVM_FEATURE_CLOCKSOURCE, MSR_KVM_SYSTEM_TIME,
                                     "CLOCKSOURCE");
        }
    } else {
        check_feature_msr_absent(KVM_FEATURE_CLOCKSOURCE2, MSR_KVM_SYSTEM_TIME_NEW,
                                 "CLOCKSOURCE2");
    }
}

static void checks_pv_msrs(void)
{
    uint64_t v;
    int e;
    section("paravirtual MSRs: steal time, PV EOI, async PF, poll control (msr.rst, x86.c)");

    if (has(KVM_FEATURE_STEAL_TIME)) {
        check_eq("STEAL_TIME: reserved bits 5:1 -> #GP (KVM_STEAL_RESERVED_MASK) [x86.c]",
                 wrmsr_safe(MSR_KVM_STEAL_TIME, phys(&steal) | 2 | 1), 13);
        e = wrmsr_safe(MSR_KVM_STEAL_TIME, phys(&steal) | 1);
        printk("pvtest:   steal time: version %u steal %lu ns preempted %u\n", steal.version,
               (unsigned long)steal.steal, steal.preempted);
        check(!e && steal.version && !(steal.version & 1),
              "STEAL_TIME enabled at a 64-byte aligned record: written, even version "
              "[msr.rst]", "fault %d version %u", e, steal.version);
        check(!(steal.preempted & ~3U), "kvm_steal_time.preempted: only KVM_VCPU_PREEMPTED "
              "and KVM_VCPU_FLUSH_TLB [kvm_para.h]", "0x%x", steal.preempted);
    } else {
        check_feature_msr_absent(KVM_FEATURE_STEAL_TIME, MSR_KVM_STEAL_TIME, "STEAL_TIME");
        check(1, "STEAL_TIME not offered: no record to read", "");
        check(1, "STEAL_TIME not offered: no preempted flag", "");
    }

    if (has(KVM_FEATURE_PV_EOI)) {
        check_eq("PV_EOI_EN: an address not 4-byte aligned -> #GP (kvm_lapic_set_pv_eoi) "
                 "[lapic.c]", wrmsr_safe(MSR_KVM_PV_EOI_EN, phys(&pv_eoi_word) | 2 | 1), 13);
        e = wrmsr_safe(MSR_KVM_PV_EOI_EN, phys(&pv_eoi_word) | 1);
        pv_eoi_on = !e;
        check(!e, "PV_EOI_EN: the word's address | enable accepted [msr.rst]", "fault %d", e);
    } else {
        check_feature_msr_absent(KVM_FEATURE_PV_EOI, MSR_KVM_PV_EOI_EN, "PV_EOI");
        check(1, "PV_EOI not offered: every EOI goes to the APIC register", "");
    }

    if (has(KVM_FEATURE_ASYNC_PF)) {
        check_eq("ASYNC_PF_EN: reserved bits 5:4 -> #GP (kvm_pv_enable_async_pf) [x86.c]",
                 wrmsr_safe(MSR_KVM_ASYNC_PF_EN, phys(async_pf_area) | 0x30), 13);
        check_eq("ASYNC_PF_EN: 0 (disabled) accepted [msr.rst]",
                 wrmsr_safe(MSR_KVM_ASYNC_PF_EN, 0), 0);
    } else {
        check_feature_msr_absent(KVM_FEATURE_ASYNC_PF, MSR_KVM_ASYNC_PF_EN, "ASYNC_PF");
        check(1, "ASYNC_PF not offered: nothing to disable", "");
    }

    if (has(KVM_FEATURE_ASYNC_PF_INT)) {
        check_eq("ASYNC_PF_INT: a vector above bits 7:0 -> #GP [x86.c]",
                 wrmsr_safe(MSR_KVM_ASYNC_PF_INT, 0x1f3), 13);
        check(!wrmsr_safe(MSR_KVM_ASYNC_PF_INT, 0xf3) && !rdmsr_safe(MSR_KVM_ASYNC_PF_INT, &v)
              && v == 0xf3, "ASYNC_PF_INT: vector 0xf3 accepted and read back [msr.rst]",
              "0x%lx", (unsigned long)v);
    } else {
        check_feature_msr_absent(KVM_FEATURE_ASYNC_PF_INT, MSR_KVM_ASYNC_PF_INT, "ASYNC_PF_INT");
        check(1, "ASYNC_PF_INT not offered: page-ready would come as #PF", "");
    }

    if (has(KVM_FEATURE_POLL_CONTROL)) {
        check(!rdmsr_safe(MSR_KVM_POLL_CONTROL, &v) && v == 1,
              "POLL_CONTROL reads 1 after reset (host-side polling on) [msr.rst, x86.c]",
              "0x%lx", (unsigned long)v);
        check_eq("POLL_CONTROL: bits above 0 -> #GP [x86.c]",
                 wrmsr_safe(MSR_KVM_POLL_CONTROL, 2), 13);
        check(!wrmsr_safe(MSR_KVM_POLL_CONTROL, 0) && !rdmsr_safe(MSR_KVM_POLL_CONTROL, &v)
              && v == 0, "POLL_CONTROL: 0 (polling off) accepted and read back [msr.rst]",
              "0x%lx", (unsigned long)v);
        wrmsr_safe(MSR_KVM_POLL_CONTROL, 1);
    } else {
        check_feature_msr_absent(KVM_FEATURE_POLL_CONTROL, MSR_KVM_POLL_CONTROL, "POLL_CONTROL");
        check(1, "POLL_CONTROL not offered: no reset value to read", "");
        check(1, "POLL_CONTROL not offered: nothing to write", "");
    }

    if (has(KVM_FEATURE_MIGRATION_CONTROL))
        check_eq("MIGRATION_CONTROL: 1 accepted [msr.rst]",
                 wrmsr_safe(MSR_KVM_MIGRATION_CONTROL, 1), 0);
    else
        check_feature_msr_absent(KVM_FEATURE_MIGRATION_CONTROL, MSR_KVM_MIGRATION_CONTROL,
                                 "MIGRATION_CONTROL (a VMM's bit)");

    check_eq("an unknown MSR in KVM's range (0x4b564dff) -> #GP [x86.c]",
             rdmsr_safe(0x4b564dff, &v), 13);
    check_eq("WRMSR of an unknown MSR (0x4b564dff) -> #GP [x86.c]",
             wrmsr_safe(0x4b564dff, 1), 13);
    check_eq("an unknown architectural MSR (0x12345) -> #GP (SDM RDMSR)",
             rdmsr_safe(0x12345, &v), 13);
    check(last_error == 0 && last_cs == KERNEL_CS,
          "#GP from an MSR: error code 0, from CS 0x08 [SDM]", "error 0x%lx cs 0x%lx",
          last_error, last_cs);
}

static void checks_hypercalls(void)
{
    long rc;
    section("hypercalls: vmcall, KVM_HC_* (hypercalls.rst, kvm_para.h, x86.c)");
    check_eq("KVM_HC_VAPIC_POLL_IRQ (1) returns 0 [x86.c]",
             kvm_hypercall(KVM_HC_VAPIC_POLL_IRQ, 0, 0, 0, 0), 0);
    check_eq("an unknown hypercall (0x7fff) -> -KVM_ENOSYS (-1000) [kvm_para.h]",
             kvm_hypercall(0x7fff, 0, 0, 0, 0), -KVM_ENOSYS);
    check_eq("KVM_HC_FEATURES (3, PPC only) on x86 -> -KVM_ENOSYS [hypercalls]",
             kvm_hypercall(KVM_HC_FEATURES, 0, 0, 0, 0), -KVM_ENOSYS);
    rc = kvm_hypercall(KVM_HC_MMU_OP, 0, 0, 0, 0);
    if (has(KVM_FEATURE_MMU_OP))
        /* KVM before 3.3 ran kvm_pv_mmu_op (0 for an empty buffer); pvmon does
         * not model its operations and answers -KVM_ENOSYS (docs/kvm.md) */
        check(rc == 0 || rc == -KVM_ENOSYS, "KVM_HC_MMU_OP (2) with MMU_OP offered: 0 for "
              "an empty buffer, or -KVM_ENOSYS where not modelled [hypercalls]", "rc %ld", rc);
    else
        check_eq("KVM_HC_MMU_OP (2) without MMU_OP (deprecated) -> -KVM_ENOSYS [hypercalls]",
                 rc, -KVM_ENOSYS);
    check_eq("vmmcall (AMD's instruction) works as vmcall (kvm_fix_hypercall) [x86.c]",
             kvm_hypercall_amd(0x7fff, 0), -KVM_ENOSYS);

    /* register preservation: "No other registers will be clobbered" [hypercalls] */
    {
        unsigned long b = 0x1111, c = 0x2222, d = 0x3333, s = 0x4444, di = 0x5555;
        unsigned long r8v = 0x8888, r11v = 0xbbbb, ret;
        register unsigned long r8 __asm__("r8") = r8v;
        register unsigned long r11 __asm__("r11") = r11v;
        __asm__ __volatile__("vmcall"
                             : "=a"(ret), "+b"(b), "+c"(c), "+d"(d), "+S"(s), "+D"(di),
                               "+r"(r8), "+r"(r11)
                             : "a"(0x7fffUL) : "memory");
        check(b == 0x1111 && c == 0x2222 && d == 0x3333 && s == 0x4444 && di == 0x5555 &&
              r8 == 0x8888 && r11 == 0xbbbb,
              "vmcall leaves RBX RCX RDX RSI RDI R8 R11 as they were [hypercalls]",
              "rbx 0x%lx rcx 0x%lx rdx 0x%lx rsi 0x%lx", b, c, d, s);
    }

    rc = kvm_hypercall(KVM_HC_SCHED_YIELD, 0, 0, 0, 0);
    if (has(KVM_FEATURE_PV_SCHED_YIELD))
        check_eq("KVM_HC_SCHED_YIELD (11) to APIC id 0 returns 0 (PV_SCHED_YIELD offered) "
                 "[hypercalls]", rc, 0);
    else
        check_eq("KVM_HC_SCHED_YIELD without PV_SCHED_YIELD -> -KVM_ENOSYS [x86.c]", rc,
                 -KVM_ENOSYS);

    rc = kvm_hypercall(KVM_HC_KICK_CPU, 0, 0, 0, 0);
    if (has(KVM_FEATURE_PV_UNHALT))
        check_eq("KVM_HC_KICK_CPU (5) returns 0 (PV_UNHALT offered) [hypercalls]", rc, 0);
    else
        check_eq("KVM_HC_KICK_CPU without PV_UNHALT -> -KVM_ENOSYS [x86.c]", rc, -KVM_ENOSYS);

    rc = kvm_hypercall(KVM_HC_MAP_GPA_RANGE, 0, 1, 0, 0);
    if (has(KVM_FEATURE_HC_MAP_GPA_RANGE))
        check(rc == 0 || rc == -KVM_ENOSYS, "KVM_HC_MAP_GPA_RANGE (12) with its bit: handled "
              "by the VMM [hypercalls]", "rc %ld", rc);
    else
        check_eq("KVM_HC_MAP_GPA_RANGE without HC_MAP_GPA_RANGE -> -KVM_ENOSYS "
                 "(no VMM exit) [x86.c]", rc, -KVM_ENOSYS);

    /* KVM_HC_CLOCK_PAIRING (9), Linux 4.11+: no feature bit; ENOSYS before */
    memset((void *)&pairing, 0, sizeof(pairing));
    rc = kvm_hypercall(KVM_HC_CLOCK_PAIRING, phys(&pairing), 0, 0, 0);
    printk("pvtest:   KVM_HC_CLOCK_PAIRING -> %ld: sec %ld nsec %ld tsc %lu\n", rc,
           (long)pairing.sec, (long)pairing.nsec, (unsigned long)pairing.tsc);
    if (rc == -KVM_ENOSYS) {
        check(1, "KVM_HC_CLOCK_PAIRING unknown to this host (before Linux 4.11): -KVM_ENOSYS",
              "");
        check(1, "KVM_HC_CLOCK_PAIRING unknown: no clock type to refuse", "");
    } else {
        check(rc == 0 && pairing.sec >= 1577836800 && pairing.nsec >= 0 &&
              pairing.nsec < 1000000000 && pairing.tsc,
              "KVM_HC_CLOCK_PAIRING (9), KVM_CLOCK_PAIRING_WALLCLOCK: sec, nsec, tsc "
              "filled [hypercalls]", "rc %ld", rc);
        check_eq("KVM_HC_CLOCK_PAIRING with an unknown clock type -> -KVM_EOPNOTSUPP "
                 "[hypercalls]", kvm_hypercall(KVM_HC_CLOCK_PAIRING, phys(&pairing), 1, 0, 0),
                 -KVM_EOPNOTSUPP);
    }
}

/* [SDM 7.7] the 64-bit TSS: RSP0 is the stack ring 3's interrupts land on */
struct tss64 {
    uint32_t r0;
    uint64_t rsp0, rsp1, rsp2, r1, ist[7], r2;
    uint16_t r3, iomap;
} __attribute__((packed));
_Static_assert(sizeof(struct tss64) == 104, "tss");
static struct tss64 tss __attribute__((aligned(64)));
static uint8_t ring0_stack[8192] __attribute__((aligned(16)));
static uint8_t user_stack[4096] __attribute__((aligned(16)));

static void checks_user(void)
{
    section("user mode: vmcall and RDMSR from CPL 3 (x86.c, SDM)");
    unsigned long base = (unsigned long)&tss, limit = sizeof(tss) - 1;
    tss.rsp0 = (unsigned long)(ring0_stack + sizeof(ring0_stack));
    tss.iomap = sizeof(tss);
    gdt[5] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
             (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[6] = base >> 32;
    __asm__ __volatile__("ltr %w0" :: "r"(0x28) : "memory");
    /* the kernel's 2 MiB page (physical 0x200000) user-accessible on its way
     * down from VIRT_BASE: L4[511], L3[510], L2[1] get U/S */
    kvm_l4[511] |= 4;
    kvm_l3[510] |= 4;
    kvm_l2[1] |= 4;
    unsigned long cr3;
    __asm__ __volatile__("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) :: "memory");

    unsigned long top = (unsigned long)(user_stack + sizeof(user_stack));
    run_user((unsigned long)user_vmcall, top);
    check(user_vector == 0x80 && user_cs == 0x23,
          "ring 3 entered by IRETQ, back through int $0x80 (a DPL 3 gate, RSP0 from the TSS)",
          "vector 0x%lx cs 0x%lx", user_vector, user_cs);
    check_eq("vmcall from CPL 3 -> -KVM_EPERM (-1) (kvm_emulate_hypercall) [x86.c]",
             (long)user_rax, -1);
    run_user((unsigned long)user_rdmsr, top);
    check(user_vector == 13 && user_error == 0 && user_cs == 0x23,
          "RDMSR of a KVM MSR from CPL 3 -> #GP(0) [SDM RDMSR]", "vector %lu error 0x%lx",
          user_vector, user_error);

    kvm_l4[511] &= ~4UL;
    kvm_l3[510] &= ~4UL;
    kvm_l2[1] &= ~4UL;
    __asm__ __volatile__("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) :: "memory");
}

static void checks_interrupts(void)
{
    long rc;
    section("interrupts: the local APIC, self-IPI, KVM_HC_SEND_IPI, the I/O APIC (SDM 11)");
    apic_write(APIC_SVR, 0x100 | VEC_SPURIOUS);
    check_eqx("APIC SVR: software enable and spurious vector read back [SDM 11.9]",
              apic_read(APIC_SVR) & 0x1ff, 0x100 | VEC_SPURIOUS);
    apic_write(APIC_TPR, 0);

    /* self-IPI through the ICR (Linux's irq_work vector), held by IF=0 */
    apic_write(APIC_ICR2, 0);
    apic_write(APIC_ICR, (1 << 18) | VEC_SELF);      /* shorthand self, fixed */
    check((apic_read(APIC_IRR + 0x10 * (VEC_SELF / 32)) >> (VEC_SELF % 32)) & 1,
          "self-IPI: pending in the IRR while RFLAGS.IF is clear [SDM 11.8.4]", "");
    check_eq("self-IPI: not delivered with interrupts disabled", trap_count[VEC_SELF], 0);
    check(!(apic_read(APIC_ICR) & (1 << 12)), "ICR delivery status idle after the send "
          "[SDM 11.6.1]", "icr 0x%x", apic_read(APIC_ICR));
    sti_nop_cli();
    check_eq("self-IPI: delivered through the IDT once interrupts are enabled",
             trap_count[VEC_SELF], 1);
    check(last_cs == KERNEL_CS && (last_rflags & RFLAGS_IF),
          "interrupt frame: CS 0x08, the interrupted RFLAGS with IF set [SDM 6.14]",
          "cs 0x%lx rflags 0x%lx", last_cs, last_rflags);
    if (pv_eoi_on) {
        check(irq_pv_eoi_word & 1, "PV EOI: the host set bit 0 of the word for an edge "
              "interrupt alone in service (apic_sync_pv_eoi_to_guest) [lapic.c]",
              "word 0x%x", irq_pv_eoi_word);
        check(pv_eois == 1 && !(pv_eoi_word & 1), "PV EOI: the guest cleared the bit "
              "instead of writing the EOI register [msr.rst]", "pv eois %lu", pv_eois);
    } else {
        check(!(irq_pv_eoi_word & 1), "no PV EOI: the word stays untouched", "");
        check(pv_eois == 0, "no PV EOI: EOI through the APIC register", "");
    }
    check_eqx("ISR clear after the EOI (PV or register) [SDM 11.8.5]",
              apic_read(APIC_ISR + 0x10 * (VEC_SELF / 32)), 0);

    /* TPR: a priority class at or above the vector's holds it back */
    apic_write(APIC_TPR, 0xf0);
    apic_write(APIC_ICR, (1 << 18) | VEC_SELF);
    sti_nop_cli();
    check_eq("TPR 0xf0 holds back vector 0xf6 [SDM 11.8.3.1]", trap_count[VEC_SELF], 1);
    apic_write(APIC_TPR, 0);
    sti_nop_cli();
    check_eq("lowering the TPR delivers it", trap_count[VEC_SELF], 2);

    /* KVM_HC_SEND_IPI (10): bitmap of APIC ids from min, ICR low [hypercalls] */
    rc = kvm_hypercall(KVM_HC_SEND_IPI, 1, 0, 0, VEC_PVIPI);
    if (has(KVM_FEATURE_PV_SEND_IPI)) {
        check_eq("KVM_HC_SEND_IPI to APIC id 0 returns 1, the vCPUs reached [hypercalls]",
                 rc, 1);
        sti_nop_cli();
        check_eq("KVM_HC_SEND_IPI: vector 0xf0 delivered", trap_count[VEC_PVIPI], 1);
        check_eq("KVM_HC_SEND_IPI to an empty bitmap reaches no one [hypercalls]",
                 kvm_hypercall(KVM_HC_SEND_IPI, 0, 0, 0, VEC_PVIPI), 0);
    } else {
        check_eq("KVM_HC_SEND_IPI without PV_SEND_IPI -> -KVM_ENOSYS [x86.c]", rc, -KVM_ENOSYS);
        sti_nop_cli();
        check_eq("KVM_HC_SEND_IPI refused: nothing delivered", trap_count[VEC_PVIPI], 0);
        check(1, "KVM_HC_SEND_IPI refused: no bitmap to test", "");
    }

    /* COM1's THR-empty interrupt through I/O APIC pin 4 (the ACPI COM1's GSI) */
    ioapic_write(0x10 + 2 * 4 + 1, 0);               /* destination APIC id 0 */
    ioapic_write(0x10 + 2 * 4, VEC_UART);            /* fixed, edge, high, unmasked */
    check_eqx("I/O APIC redirection entry 4 reads back [ioapic]", ioapic_read(0x18) & 0x1ffff,
              VEC_UART);
    outb(COM1 + 1, 0x02);                            /* IER: THRI */
    sti_nop_cli();
    unsigned long uart_irqs = trap_count[VEC_UART];
    uint8_t iir_after = inb(COM1 + 2);
    outb(COM1 + 1, 0);
    ioapic_write(0x10 + 2 * 4, LVT_MASKED | VEC_UART);
    check_eq("UART THR-empty interrupt: one, through I/O APIC pin 4 to vector 0xe4",
             uart_irqs, 1);
    check_eqx("UART IIR in the handler: THR empty (0x02) [8250]", uart_iir_in_irq & 0x0f, 0x02);
    check_eqx("UART IIR after reading it once: no interrupt (0x01) [8250]", iir_after & 0x0f,
              0x01);
}

static void checks_time(void)
{
    section("time: TSC-deadline and one-shot LAPIC timers, hlt, kvmclock (SDM 11.5.4, lapic.c)");
    uint32_t ver;
    uint64_t ns0 = kvmclock_ns(&kvmclock, &ver);
    uint64_t t0 = rdtsc();
    uint64_t deadline = t0 + 200000;
    apic_write(APIC_LVTT, LVT_TSC_DEADLINE | VEC_DEADLINE);
    wrmsr_safe(MSR_IA32_TSC_DEADLINE, deadline);
    uint64_t armed = rdmsr(MSR_IA32_TSC_DEADLINE);
    sti_hlt_cli();
    uint64_t t1 = rdtsc();
    uint64_t ns1 = kvmclock_ns(&kvmclock, 0);
    check_eqx("IA32_TSC_DEADLINE reads back while armed [SDM 11.5.4.1]", armed, deadline);
    check_eq("TSC-deadline timer: one interrupt on vector 0xef woke hlt (IF=1)",
             trap_count[VEC_DEADLINE], 1);
    check(irq_tsc >= deadline, "TSC-deadline interrupt came at or after the deadline "
          "(virtual time)", "irq at tsc %lu, deadline %lu", (unsigned long)irq_tsc,
          (unsigned long)deadline);
    check_eqx("IA32_TSC_DEADLINE reads 0 after it fired (disarmed) [SDM 11.5.4.1]",
              rdmsr(MSR_IA32_TSC_DEADLINE), 0);
    check(ns1 > ns0 && ns1 - ns0 >= scale_delta(t1 - t0, kvmclock.tsc_to_system_mul,
                                                kvmclock.tsc_shift) - 1,
          "kvmclock advanced across the sleep as the TSC did", "%lu -> %lu ns",
          (unsigned long)ns0, (unsigned long)ns1);
    /* KVM may rewrite the record while the vCPU sleeps (a move to another host
     * CPU, a master-clock update); pvmon writes it once per MSR write */
    printk("pvtest:   kvmclock version %u before the sleep, %u after\n", ver,
           kvmclock.version);
    check(!(kvmclock.version & 1) && kvmclock.version >= ver,
          "kvmclock record consistent after the sleep: even version, never older [msr.rst]",
          "version %u -> %u", ver, kvmclock.version);

    /* a deadline in the past fires at once */
    wrmsr_safe(MSR_IA32_TSC_DEADLINE, 1);
    sti_nop_cli();
    check_eq("a TSC deadline already passed fires at once [SDM 11.5.4.1]",
             trap_count[VEC_DEADLINE], 2);
    /* a masked LVT does not */
    apic_write(APIC_LVTT, LVT_MASKED | LVT_TSC_DEADLINE | VEC_DEADLINE);
    wrmsr_safe(MSR_IA32_TSC_DEADLINE, 1);
    sti_nop_cli();
    check_eq("masked LVT timer: the deadline passes with no interrupt [SDM 11.5.1]",
             trap_count[VEC_DEADLINE], 2);

    /* one-shot: TMICT counts down at the APIC bus clock / divider; KVM's
     * bus cycle is 1 ns (APIC_BUS_CYCLE_NS 1) [lapic.c] */
    apic_write(APIC_TDCR, 0xb);                      /* divide by 1 */
    apic_write(APIC_LVTT, VEC_ONESHOT);              /* one-shot, unmasked */
    uint64_t o0 = kvmclock_ns(&kvmclock, 0);
    apic_write(APIC_TMICT, 100000);
    uint32_t cc = apic_read(APIC_TMCCT);
    sti_hlt_cli();
    uint64_t o1 = kvmclock_ns(&kvmclock, 0);
    uint64_t took = o1 - o0;
    printk("pvtest:   one-shot of 100000 bus cycles at divide 1 took %lu ns\n",
           (unsigned long)took);
    check(cc > 0 && cc <= 100000, "TMCCT counts down from TMICT while armed [SDM 11.5.4]",
          "tmcct %u", cc);
    check_eq("one-shot LAPIC timer: one interrupt on vector 0xee woke hlt",
             trap_count[VEC_ONESHOT], 1);
    check(took >= 100000 && took < 150000, "one-shot of 100000 cycles at divide 1 takes "
          "100 us: KVM's APIC bus runs at 1 GHz (APIC_BUS_CYCLE_NS 1) [lapic.c]",
          "took %lu ns", (unsigned long)took);
    check_eqx("TMCCT reads 0 after the one-shot fired [SDM 11.5.4]", apic_read(APIC_TMCCT), 0);
    apic_write(APIC_LVTT, LVT_MASKED);

    /* hlt with IF=1 and a timer far off: wakes at the deadline, not before */
    apic_write(APIC_LVTT, LVT_TSC_DEADLINE | VEC_DEADLINE);
    uint64_t far = rdtsc() + 5000000;
    wrmsr_safe(MSR_IA32_TSC_DEADLINE, far);
    sti_hlt_cli();
    check(trap_count[VEC_DEADLINE] == 3 && rdtsc() >= far,
          "hlt with IF=1 sleeps until the next timer (5 ms of virtual time)",
          "count %lu", trap_count[VEC_DEADLINE]);
    apic_write(APIC_LVTT, LVT_MASKED);
}

static void checks_faults(void)
{
    section("faults: exceptions through the guest's IDT (SDM 6)");
    uint64_t v;
    unsigned long gp = trap_count[13];
    check_eq("#PF on a read above the 4 GiB identity map (not present)",
             read_u64_safe(0x100000000UL, &v), 14);
    check(last_cr2 == 0x100000000UL && last_error == 0,
          "#PF: CR2 the address, error code 0 (read, not present, supervisor) [SDM 6.15]",
          "cr2 0x%lx error 0x%lx", last_cr2, last_error);
    check_eq("#UD on ud2 (not a hypercall instruction): the guest's own", ud2_safe(), 6);
    check_eq("#DE on a divide by zero", div_safe(1, 0), 0);
    unsigned long bp = trap_count[3];
    __asm__ __volatile__("int3" ::: "memory");
    check_eq("#BP: int3 through the IDT returns after it", trap_count[3], bp + 1);
    check_eq("no stray #GP on the way", trap_count[13], gp);
    check_eq("no spurious vector delivered", trap_count[VEC_SPURIOUS], 0);
}

static void checks_console(void)
{
    section("console and devices: the 8250 UART at 0x3F8, i8042, open bus ([8250], docs/kvm.md)");
    check_eqx("UART LSR: THR empty and transmitter empty (0x60) [8250]",
              inb(COM1 + 5) & 0x60, 0x60);
    outb(COM1 + 7, 0xa5);
    check_eqx("UART scratch register reads back [8250 autoconfig]", inb(COM1 + 7), 0xa5);
    outb(COM1 + 1, 0xff);
    uint8_t ier = inb(COM1 + 1);
    outb(COM1 + 1, 0);
    check_eqx("UART IER keeps its low nibble only (QEMU serial.c)", ier, 0x0f);
    uint8_t mcr = inb(COM1 + 4);
    outb(COM1 + 4, 0x10 | 0x0a);                     /* LOOP | OUT2 | RTS */
    uint8_t msr = inb(COM1 + 6) & 0xf0;
    outb(COM1, 'K');
    uint8_t lsr = inb(COM1 + 5);
    uint8_t rbr = inb(COM1);
    uint8_t lsr2 = inb(COM1 + 5);
    outb(COM1 + 4, mcr);
    check_eqx("UART loopback: MSR & 0xf0 = 0x90 (DCD from OUT2, CTS from RTS), the probe "
              "Linux's autoconfig makes [8250]", msr, 0x90);
    check((lsr & 1) && rbr == 'K' && !(lsr2 & 1),
          "UART loopback: a byte sent comes back in RBR, LSR.DR then clear [8250]",
          "lsr 0x%x rbr 0x%x lsr 0x%x", lsr, rbr, lsr2);
    outb(COM1 + 2, 0x01);                            /* FCR: FIFO enable */
    uint8_t iir = inb(COM1 + 2);
    outb(COM1 + 2, 0x00);
    check_eqx("UART FIFO enabled: IIR bits 7:6 read 11 (a 16550A) [8250]", iir & 0xc0, 0xc0);
    check_eqx("i8042 status: output and input buffers empty (bits 1:0) [pvmon]",
              inb(0x64) & 3, 0);
    check_eqx("a port with no device (COM2 LSR, 0x2fd) floats high [pvmon]", inb(0x2fd), 0xff);
    check_eqx("open bus: a read where no RAM or device is (0xf0000000) is all ones "
              "[pvmon]", *(volatile uint32_t *)0xf0000000UL, 0xffffffff);
}

static void __attribute__((noreturn)) finish(void)
{
    printk("pvtest: %u passed, %u failed\n", npassed, nfailed);
    if (nfailed) {
        /* no crash report on KVM: a triple fault (the host sees a shutdown exit) */
        printk("pvtest: a check failed: triple fault\n");
        struct __attribute__((packed)) { uint16_t limit; uint64_t base; } none = { 0, 0 };
        __asm__ __volatile__("lidt %0; int3" :: "m"(none));
    } else {
        /* pvmon's PC has no ACPI S5: power off as Linux's "System halted" does */
        printk("pvtest: powering off (hlt with interrupts disabled)\n");
    }
    for (;;)
        __asm__ __volatile__("cli; hlt");
}

void __attribute__((noreturn)) kvm_main(unsigned long start_info_pa)
{
    uint32_t r[4];
    (void)start_info_pa;
    printk("pvtest: pvtest-kvm, the KVM reference guest: PVH entry, console on COM1\n");
    install_idt();
    cpuid(KVM_CPUID_SIGNATURE, 0, r);
    if (r[1] != 0x4b4d564b || r[2] != 0x564b4d56 || r[3] != 0x4d) {
        /* before any device is touched: another hypervisor's PC may have none */
        printk("pvtest: no KVM signature in CPUID 0x40000000: not a KVM host\n");
        nfailed++;
        finish();
    }
    checks_boot();
    checks_cpu();
    checks_kvmclock();
    checks_pv_msrs();
    checks_hypercalls();
    checks_user();
    checks_interrupts();
    checks_time();
    checks_faults();
    checks_console();
    finish();
}
