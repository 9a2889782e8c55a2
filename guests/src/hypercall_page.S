/*
 * hypercall_page.S - hypercall mechanism of pvtest-v1 ("older kernel"):
 * call into the hypercall page the domain builder fills (one 32-byte stub per
 * hypercall number, XEN_ELFNOTE_HYPERCALL_PAGE names the page).  Arguments go
 * in RDI, RSI, RDX, R10, R8; the result comes back in RAX (xen.h).
 */
#include "xen_abi.h"

        .section .text.hypercall_page, "ax", @progbits
        .balign 4096
        .globl hypercall_page
        .type hypercall_page, @function
hypercall_page:
        .fill 4096, 1, 0xcc             /* int3 until the builder fills it */
        .size hypercall_page, 4096

        .text
.macro HYPERCALL name, nr
        .globl HYPERVISOR_\name
        .type HYPERVISOR_\name, @function
HYPERVISOR_\name:
        mov     %rcx, %r10              /* C arg 4 -> hypercall arg 4 */
        call    hypercall_page + \nr * HYPERCALL_STUB_SIZE
        ret
        .size HYPERVISOR_\name, . - HYPERVISOR_\name
.endm
#include "hypercalls.inc"

/* long xen_hypercall_nr(nr, a1, a2, a3, a4, a5) */
        .globl xen_hypercall_nr
        .type xen_hypercall_nr, @function
xen_hypercall_nr:
        shl     $5, %rdi
        lea     hypercall_page(%rip), %rax
        add     %rdi, %rax
        mov     %rsi, %rdi
        mov     %rdx, %rsi
        mov     %rcx, %rdx
        mov     %r8, %r10
        mov     %r9, %r8
        call    *%rax
        ret
        .size xen_hypercall_nr, . - xen_hypercall_nr

/* Return from an exception or event frame: RSP points at rip, cs, rflags,
 * rsp, ss; RAX, RCX, R11 hold the values to restore.  The iret stub in the
 * page pushes rcx, r11, rax on top of our flags word (struct iret_context,
 * arch-x86/xen-x86_64.h). */
        .globl xen_iret
        .type xen_iret, @function
xen_iret:
        pushq   $0                      /* iret_context.flags */
        jmp     hypercall_page + HC_iret * HYPERCALL_STUB_SIZE
        .size xen_iret, . - xen_iret

        .section .rodata
        .globl hypercall_mechanism
hypercall_mechanism:
        .asciz "hypercall page"
