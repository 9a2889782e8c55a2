/*
 * hypercall_syscall.S - hypercall mechanism of pvtest-v2 ("newer kernel"):
 * issue SYSCALL directly with the hypercall number in RAX, arguments in RDI,
 * RSI, RDX, R10, R8, result in RAX; RCX and R11 are clobbered (xen.h).
 * No hypercall page is used, so the image carries no HYPERCALL_PAGE note.
 */
#include "xen_abi.h"

        .text
.macro HYPERCALL name, nr
        .globl HYPERVISOR_\name
        .type HYPERVISOR_\name, @function
HYPERVISOR_\name:
        mov     %rcx, %r10              /* C arg 4 -> hypercall arg 4 */
        mov     $\nr, %eax
        syscall
        ret
        .size HYPERVISOR_\name, . - HYPERVISOR_\name
.endm
#include "hypercalls.inc"

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
        syscall
        ret
        .size xen_hypercall_nr, . - xen_hypercall_nr

/* Return from an exception or event frame: RSP points at rip, cs, rflags,
 * rsp, ss; RAX, RCX, R11 hold the values to restore.  Build the rest of
 * struct iret_context (arch-x86/xen-x86_64.h) and issue HYPERVISOR_iret. */
        .globl xen_iret
        .type xen_iret, @function
xen_iret:
        pushq   $0                      /* flags */
        push    %rcx
        push    %r11
        push    %rax
        mov     $HC_iret, %eax
        syscall
        ud2                             /* iret does not return here */
        .size xen_iret, . - xen_iret

        .section .rodata
        .globl hypercall_mechanism
hypercall_mechanism:
        .asciz "syscall"
