/*
 * xen_entry.S - Xen x86-64 PV entry points of pvtest: the boot entry and the
 * exception/event/failsafe/syscall callbacks.  Everything else is C.
 *
 * Boot (xen.h "start-of-day"): RSI = virtual address of start_info, RSP on
 * the bootstrap stack inside the initial mapping, event delivery masked.
 *
 * Exception and event frames on x86-64 PV: Xen pushes on the kernel stack,
 * from low to high address, RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS,
 * and enters the handler with RCX and R11 not holding the interrupted values
 * (they are in the frame).  We return with HYPERVISOR_iret (xen_iret, in the
 * hypercall mechanism file).
 */
#include "xen_abi.h"

        .section .text.entry, "ax", @progbits
        .globl _start
        .type _start, @function
_start:
        cld
        mov     %rsp, %r12              /* bootstrap stack, for the checks */
        mov     %rsi, %r13              /* start_info */
        lea     __bss_start(%rip), %rdi
        lea     __bss_stop(%rip), %rcx
        sub     %rdi, %rcx
        xor     %eax, %eax
        rep stosb
        lea     boot_stack_top(%rip), %rsp
        mov     %r13, %rdi
        mov     %r12, %rsi
        call    pvtest_main
        ud2
        .size _start, . - _start

        .text
/* Common tail: RSP points at vector, error, rip, cs, rflags, rsp, ss with
 * the interrupted RCX/R11 back in their registers. */
        .type trap_common, @function
trap_common:
        push    %rax
        push    %rbx
        push    %rcx
        push    %rdx
        push    %rsi
        push    %rdi
        push    %rbp
        push    %r8
        push    %r9
        push    %r10
        push    %r11
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, %rdi              /* struct trap_frame * */
        mov     %rsp, %rbx
        and     $-16, %rsp
#if RULES
        cld                             /* a #UD from user code may arrive with DF set */
#endif
        call    trap_dispatch
        mov     %rbx, %rsp
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %r11
        pop     %r10
        pop     %r9
        pop     %r8
        pop     %rbp
        pop     %rdi
        pop     %rsi
        pop     %rdx
        pop     %rcx
        pop     %rbx
        pop     %rax
        add     $16, %rsp               /* vector, error */
        jmp     xen_iret
        .size trap_common, . - trap_common

.macro XEN_TRAP name, vector, has_error
        .globl \name
        .type \name, @function
\name:
        pop     %rcx
        pop     %r11
        .if \has_error == 0
        pushq   $0
        .endif
        pushq   $\vector
        jmp     trap_common
        .size \name, . - \name
.endm

        XEN_TRAP xen_trap_0,  0,  0     /* #DE */
        XEN_TRAP xen_trap_1,  1,  0     /* #DB */
        XEN_TRAP xen_trap_3,  3,  0     /* #BP */
        XEN_TRAP xen_trap_4,  4,  0     /* #OF */
        XEN_TRAP xen_trap_5,  5,  0     /* #BR */
        XEN_TRAP xen_trap_6,  6,  0     /* #UD */
        XEN_TRAP xen_trap_7,  7,  0     /* #NM */
        XEN_TRAP xen_trap_9,  9,  0
        XEN_TRAP xen_trap_10, 10, 1     /* #TS */
        XEN_TRAP xen_trap_11, 11, 1     /* #NP */
        XEN_TRAP xen_trap_12, 12, 1     /* #SS */
        XEN_TRAP xen_trap_13, 13, 1     /* #GP */
        XEN_TRAP xen_trap_14, 14, 1     /* #PF */
        XEN_TRAP xen_trap_16, 16, 0     /* #MF */
        XEN_TRAP xen_trap_17, 17, 1     /* #AC */
        XEN_TRAP xen_trap_19, 19, 0     /* #XM */
        XEN_TRAP xen_event_callback, 0x100, 0
#if RULES
        /* software-interrupt vectors the rules checks install (checks_rules.c) */
        XEN_TRAP xen_trap_32, 32, 0
        XEN_TRAP xen_trap_33, 33, 0
        XEN_TRAP xen_trap_34, 34, 0
        XEN_TRAP xen_trap_128, 128, 0
#endif

/* Failsafe callback: frame is RCX, R11, DS, ES, FS, GS, RIP, CS, RFLAGS,
 * RSP, SS.  Xen could not restore our state; report and crash. */
        .globl xen_failsafe_callback
        .type xen_failsafe_callback, @function
xen_failsafe_callback:
        mov     %rsp, %rdi
        and     $-16, %rsp
        call    failsafe_dispatch
        ud2
        .size xen_failsafe_callback, . - xen_failsafe_callback

#if RULES
/* Syscall callback: the frame is an exception frame without error code
 * (RCX, R11, RIP, CS, RFLAGS, RSP, SS).  The error slot carries RFLAGS at
 * entry (the checks look at DF, which Xen clears), then trap_common. */
        .globl xen_syscall_callback
        .type xen_syscall_callback, @function
xen_syscall_callback:
        pop     %rcx
        pop     %r11
        pushfq
        pushq   $0x101
        cld
        jmp     trap_common
        .size xen_syscall_callback, . - xen_syscall_callback
#else
/* Syscall callback (a 64-bit user process issued SYSCALL).  pvtest runs no
 * user code, so reaching it is an error. */
        .globl xen_syscall_callback
        .type xen_syscall_callback, @function
xen_syscall_callback:
        mov     %rsp, %rdi
        and     $-16, %rsp
        call    syscall_dispatch
        ud2
        .size xen_syscall_callback, . - xen_syscall_callback
#endif

        .section .stack, "aw", @nobits
        .balign 4096
        .globl boot_stack
boot_stack:
        .skip 65536
        .globl boot_stack_top
boot_stack_top:
