/*
 * hypercall_vmcall.S - hypercall mechanism of pvtest-v2-pvh (Xen PVH):
 * VMCALL with the hypercall number in RAX, arguments in RDI, RSI, RDX, R10,
 * R8, result in RAX, pointers guest-virtual (Linux arch/x86/xen/xen-head.S;
 * xen/arch/x86/hvm/hypercall.c@stable-4.17).  No hypercall page: Xen's HVM
 * hypercall page would hold the same stubs (vmx_init_hypercall_page).
 * There is no HYPERVISOR_iret: a PVH guest returns from its interrupts
 * with IRETQ (pvh_entry.S).
 */
#include "xen_abi.h"

        .text
#ifdef PVTEST_ORACLE_TCG
/* Only in scripts/xen_oracle.py --tcg-build --pvh: VMMCALL on an AMD CPU
 * (pvh_entry.S sets hv_vmmcall from CPUID's vendor), VMCALL otherwise. */
.macro HVCALL
        cmpb    $0, hv_vmmcall(%rip)
        jne     1f
        vmcall
        jmp     2f
1:      vmmcall
2:
.endm
#else
.macro HVCALL
        vmcall
.endm
#endif
.macro HYPERCALL name, nr
        .globl HYPERVISOR_\name
        .type HYPERVISOR_\name, @function
HYPERVISOR_\name:
        mov     %rcx, %r10              /* C arg 4 -> hypercall arg 4 */
        mov     $\nr, %eax
        HVCALL
        ret
        .size HYPERVISOR_\name, . - HYPERVISOR_\name
.endm
#include "hypercalls.inc"
/* the calls only an HVM-container guest makes (or makes by name here) */
HYPERCALL hvm_op,                  HC_hvm_op
HYPERCALL grant_table_op,          HC_grant_table_op

/* long xen_hypercall_nr(nr, a1, a2, a3, a4, a5) */
        .globl xen_hypercall_nr
        .type xen_hypercall_nr, @function
xen_hypercall_nr:
        mov     %rdi, %rax
        mov     %rsi, %rdi
        mov     %rdx, %rsi
        mov     %rcx, %rdx
        mov     %r8, %r10
        mov     %r9, %r8
        HVCALL
        ret
        .size xen_hypercall_nr, . - xen_hypercall_nr
#ifdef PVTEST_ORACLE_TCG
        .bss
        .globl hv_vmmcall
hv_vmmcall:
        .byte   0
#endif

        .section .rodata
        .globl hypercall_mechanism
hypercall_mechanism:
        .asciz "vmcall"
