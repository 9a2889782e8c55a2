/*
 * user_selectors.S - the assembly of the selector checks (checks_selectors.c):
 * entering user mode with a chosen CS and SS, the syscall32 callback, the
 * kernel's own IRETQ and far returns, and 32-bit user code.
 */
#include "xen_abi.h"

        .text
/* void run_user_cs(rip, rsp, rflags, cs, ss): run_user (user_rules.S) with the
 * given code and stack selectors in the iret_context. */
        .globl run_user_cs
        .type run_user_cs, @function
run_user_cs:
        push    %rbx
        push    %rbp
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, user_saved_rsp(%rip)
        /* struct iret_context, from the top: ss rsp rflags cs rip flags rcx r11 rax */
        push    %r8
        push    %rsi
        push    %rdx
        push    %rcx
        push    %rdi
        pushq   $0
        pushq   $0
        pushq   $0
        pushq   $0
        mov     $HC_iret, %eax
        syscall
        ud2
        .size run_user_cs, . - run_user_cs

/* The syscall32 callback: notes that it was entered, then the syscall
 * callback's path (the entry is logged as VEC_SYSCALL). */
        .globl xen_syscall32_callback, syscall32_entered
        .type xen_syscall32_callback, @function
xen_syscall32_callback:
        movq    $1, syscall32_entered(%rip)
        jmp     xen_syscall_callback
        .size xen_syscall32_callback, . - xen_syscall32_callback

/* unsigned long kernel_iret_to_self(rflags, out[3]): Linux's iret_to_self
 * (arch/x86/include/asm/sync_core.h) with RFLAGS = rflags in the frame;
 * out = %cs, %ss and RFLAGS after it.  Returns 1 once resumed. */
        .globl kernel_iret_to_self
        .type kernel_iret_to_self, @function
kernel_iret_to_self:
        pushfq
        mov     %ss, %eax
        push    %rax
        lea     8(%rsp), %rax
        push    %rax
        push    %rdi
        mov     %cs, %eax
        push    %rax
        lea     1f(%rip), %rax
        push    %rax
        iretq
1:      mov     %cs, %eax
        mov     %rax, 0(%rsi)
        mov     %ss, %eax
        mov     %rax, 8(%rsi)
        pushfq
        pop     %rax
        mov     %rax, 16(%rsi)
        popfq
        mov     $1, %eax
        ret
        .size kernel_iret_to_self, . - kernel_iret_to_self

/* unsigned long kernel_lret_to_self(void): push %cs and a return address,
 * LRETQ; returns how far RSP moved across the LRETQ (16: RIP and CS). */
        .globl kernel_lret_to_self
        .type kernel_lret_to_self, @function
kernel_lret_to_self:
        mov     %rsp, %rdx
        mov     %cs, %eax
        push    %rax
        lea     1f(%rip), %rax
        push    %rax
        mov     %rsp, %rcx
        lretq
1:      mov     %rsp, %rax
        sub     %rcx, %rax
        mov     %rdx, %rsp
        ret
        .size kernel_lret_to_self, . - kernel_lret_to_self

/* void kernel_iret_rpl0(void): IRETQ to FLAT_KERNEL_CS64 & ~3 (RPL 0), which
 * a ring-3 kernel cannot return to: the #GP handler (selectors_trap) skips the
 * 2-byte iretq and the frame is dropped. */
        .globl kernel_iret_rpl0
        .type kernel_iret_rpl0, @function
kernel_iret_rpl0:
        mov     %rsp, %rdx
        mov     %ss, %eax
        push    %rax
        push    %rdx
        pushfq
        pushq   $(FLAT_KERNEL_CS64 & ~3)
        lea     1f(%rip), %rax
        push    %rax
        iretq
1:      mov     %rdx, %rsp
        ret
        .size kernel_iret_rpl0, . - kernel_iret_rpl0

/* 32-bit user code, copied to the user page by rules_user_run; each entry
 * point ends in the event under test.  Position independent. */
        .section .rodata
        .balign 16
        .globl user32_blob, user32_blob_end, user32_mode, user32_syscall, user32_int80
user32_blob:
        .code32
user32_mode:
        xor     %ebx, %ebx
        .byte   0x4b                    /* dec %ebx; in 64-bit code a REX prefix */
        nop
        int     $0x21
        ud2
        .balign 16
user32_syscall:
        mov     $0x1234, %ebx
        syscall
        ud2
        .balign 16
user32_int80:
        int     $0x80
        ud2
        .balign 16
        .code64
user32_blob_end:

        .data
        .balign 8
syscall32_entered:
        .quad   0
