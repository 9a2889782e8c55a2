/*
 * pvh.h - what the PVH build of pvtest (pvtest-v2-pvh, PVH=1) adds to
 * pvtest.h: the native IDT and GDT selectors, the upcall vector, the state
 * the 32-bit entry records, and the PVH port layer (port_pvh.c).  Usable
 * from assembler.
 */
#ifndef PVTEST_PVH_H
#define PVTEST_PVH_H

#define KERNEL_CS 0x08          /* pvh_entry.S's GDT */
#define KERNEL_DS 0x10
/* The event upcall vector given to HVM_PARAM_CALLBACK_IRQ: Linux's
 * HYPERVISOR_CALLBACK_VECTOR (arch/x86/include/asm/irq_vectors.h). */
#define VEC_UPCALL 0xf3
#define VEC_SPURIOUS 0xff       /* any vector without a handler of its own */
#define LAPIC_BASE 0xfee00000UL

#ifndef __ASSEMBLER__
#include "pvtest.h"

/* pvh_entry.S: entry stubs and what the CPU held at the PVH entry */
void pvh_trap_0(void), pvh_trap_1(void), pvh_trap_2(void), pvh_trap_3(void),
    pvh_trap_4(void), pvh_trap_5(void), pvh_trap_6(void), pvh_trap_7(void),
    pvh_trap_8(void), pvh_trap_9(void), pvh_trap_10(void), pvh_trap_11(void),
    pvh_trap_12(void), pvh_trap_13(void), pvh_trap_14(void), pvh_trap_15(void),
    pvh_trap_16(void), pvh_trap_17(void), pvh_trap_18(void), pvh_trap_19(void),
    pvh_upcall(void), pvh_spurious(void), pvh_start(void);
extern uint64_t pvh_entry_ebx, pvh_entry_cr0, pvh_entry_cr4, pvh_entry_cs,
    pvh_entry_eflags;
extern uint64_t pvh_l4[512];

/* port_pvh.c */
extern struct hvm_start_info *pvh_start_info;
static inline void *phys_to_virt(uint64_t pa)
{
    return (void *)(VIRT_BASE + pa);     /* pvh_entry.S maps 2 GiB there */
}
static inline uint64_t virt_to_phys(const void *va)
{
    return (uint64_t)va - VIRT_BASE;
}
void pvh_install_idt(void);
long HYPERVISOR_hvm_op(int cmd, void *arg);
long HYPERVISOR_grant_table_op(unsigned cmd, void *arg, unsigned count);
long hvm_get_param(unsigned index, uint64_t *value);
long hvm_set_param(unsigned index, uint64_t value);
long pvh_map_shared_info(void *page);
void pvh_console_init(unsigned long pfn, evtchn_port_t port);
void pvh_xenstore_init(unsigned long pfn, evtchn_port_t port);
int xs_usable(void);
static inline void sti(void) { __asm__ __volatile__("sti" ::: "memory"); }
static inline void cli(void) { __asm__ __volatile__("cli" ::: "memory"); }
static inline unsigned long read_rflags(void)
{
    unsigned long f;
    __asm__ __volatile__("pushfq; popq %0" : "=r"(f));
    return f;
}
static inline unsigned long read_cr(int n)
{
    unsigned long v = 0;
    switch (n) {
    case 0: __asm__ __volatile__("mov %%cr0, %0" : "=r"(v)); break;
    case 2: __asm__ __volatile__("mov %%cr2, %0" : "=r"(v)); break;
    case 3: __asm__ __volatile__("mov %%cr3, %0" : "=r"(v)); break;
    case 4: __asm__ __volatile__("mov %%cr4, %0" : "=r"(v)); break;
    }
    return v;
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ __volatile__("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                         : "0"(leaf), "2"(sub));
}
/* RDMSR through the exception table: 0 and *out, or 1 after a #GP. */
int rdmsr_safe(uint32_t msr, uint64_t *out);

/* checks_pvh.c: the check families of the PVH build */
void checks_pvh_boot(void);
void checks_pvh_cpu(void);
void checks_pvh_events(void);
void checks_pvh_time(void);
void checks_pvh_faults(void);
void checks_pvh_memory_version(void);
void checks_pvh_grants(void);
void checks_pvh_xenstore(void);
void checks_pvh_bad_calls(void);
#endif /* !__ASSEMBLER__ */

#endif
