/*
 * user_rules.S - the pieces of the rules checks (checks_rules.c) that must be
 * assembly: entering guest user mode, an iret issued inside a multicall, and
 * the user-mode code itself.
 */
#include "xen_abi.h"

        .text
/* void run_user(rip, rsp, rflags): enter guest user mode at rip with the
 * given stack and RFLAGS (IF = events enabled) through HYPERVISOR_iret with
 * a user CS (RPL 3: Xen switches to the user page tables).  The kernel comes
 * back by an iret to user_return with RSP = user_saved_rsp, which
 * checks_rules.c arranges from whatever entry user code ends in. */
        .globl run_user
        .type run_user, @function
run_user:
        push    %rbx
        push    %rbp
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, user_saved_rsp(%rip)
        /* struct iret_context, from the top: ss rsp rflags cs rip flags rcx r11 rax */
        pushq   $FLAT_USER_SS64
        push    %rsi
        push    %rdx
        pushq   $FLAT_USER_CS64
        push    %rdi
        pushq   $0
        pushq   $0
        pushq   $0
        pushq   $0
        mov     $HC_iret, %eax
        syscall
        ud2
        .size run_user, . - run_user

        .globl user_return
        .type user_return, @function
user_return:
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %rbp
        pop     %rbx
        ret
        .size user_return, . - user_return

/* long multicall_with_iret(calls, n, rax): a multicall whose batch holds an
 * iret, issued with an iret_context on top of the stack that resumes at 1:
 * with this function's own RSP (the return address on top) and RAX = rax,
 * events masked (RFLAGS.IF clear) and a kernel CS (RPL 0: stay in kernel
 * mode).  Returns what RAX holds there.  If the multicall returns normally
 * instead (the iret not honoured), the context is popped and 0xbad0bad0bad0
 * returned, so the check fails without upsetting the stack. */
        .globl multicall_with_iret
        .type multicall_with_iret, @function
multicall_with_iret:
        mov     %rsp, %r9
        lea     1f(%rip), %rax
        pushq   $FLAT_KERNEL_SS64
        push    %r9
        pushq   $2
        pushq   $(FLAT_KERNEL_CS64 & ~3)
        push    %rax
        pushq   $0
        pushq   $0
        pushq   $0
        push    %rdx
        mov     $HC_multicall, %eax
        syscall
        add     $72, %rsp
        movabs  $0xbad0bad0bad0, %rax
1:      ret
        .size multicall_with_iret, . - multicall_with_iret

/* User-mode code, copied to a user page by checks_rules.c: each entry point
 * ends in the event under test (the kernel never returns to the next
 * instruction).  Position independent. */
        .section .rodata
        .balign 16
        .globl user_blob, user_blob_end
        .globl user_int20, user_int21, user_int22, user_int80, user_syscall, user_syscall_df
user_blob:
user_int20:
        int     $0x20                   /* trap table DPL 1: #GP from user mode */
        ud2
        .balign 16
user_int21:
        int     $0x21                   /* DPL 3: delivered */
        ud2
        .balign 16
user_int22:
        int     $0x22                   /* DPL 0: #GP */
        ud2
        .balign 16
user_int80:
        int     $0x80
        ud2
        .balign 16
user_syscall:
        pushfq
        pop     %rbx                    /* RFLAGS as user code sees them */
        syscall
        ud2
        .balign 16
user_syscall_df:
        std
        pushfq
        pop     %rbx
        syscall
        ud2
        .balign 16
        /* port I/O from user mode (checks_privops.c): AL read from port 0x80
         * ends up in RBX, then a DPL-3 int $0x21 reports it */
        .globl user_in80, user_out80
user_in80:
        mov     $0x12345678, %eax
        in      $0x80, %al
        mov     %rax, %rbx
        int     $0x21
        ud2
        .balign 16
user_out80:
        mov     $0x5a, %eax
        out     %al, $0x80
        mov     %rax, %rbx
        int     $0x21
        ud2
        .balign 16
        .globl user_cli
user_cli:
        cli
        int     $0x21
        ud2
        .balign 16
        /* string port I/O from user mode (checks_privio.c): port 0x80,
         * each ends in int $0x21 with a summary in RBX, or in a fault */
        .globl user_sio_ins, user_sio_rep_ins, user_sio_ins_ro, user_sio_outs
user_sio_ins:
        lea     -0x80(%rsp), %rdi       /* 5 bytes */
        mov     $0x80, %edx             /* 5 bytes: the insb at +10 */
        insb
        int     $0x21
        ud2
        .balign 16
user_sio_rep_ins:
        lea     -0x80(%rsp), %rdi
        movq    $0, (%rdi)
        mov     %rdi, %rsi
        mov     $2, %ecx
        mov     $0x80, %edx
        rep insl
        mov     (%rsi), %rax
        xor     %ebx, %ebx
        cmp     $-1, %rax
        sete    %bl                     /* RBX = (all ones) << 16 | RCX << 8 | RDI delta */
        shl     $8, %rbx
        or      %rcx, %rbx
        shl     $8, %rbx
        sub     %rsi, %rdi
        or      %rdi, %rbx
        int     $0x21
        ud2
        .balign 16
user_sio_ins_ro:
        lea     0(%rip), %rdi           /* 7 bytes: RDI = the read-only code page */
        mov     $0x80, %edx             /* the insb at +12 */
        insb
        int     $0x21
        ud2
        .balign 16
user_sio_outs:
        lea     0(%rip), %rsi
        mov     %rsi, %rbx
        mov     $2, %ecx
        mov     $0x80, %edx
        rep outsb
        sub     %rbx, %rsi
        mov     %rsi, %rbx              /* RBX = RSI delta */
        int     $0x21
        ud2
        .balign 16
        /* rdtsc / rdtscp / wbinvd from user mode (checks_privio.c) */
        .globl user_rdtsc, user_rdtscp, user_wbinvd
user_rdtsc:
        rdtsc
        int     $0x21
        ud2
        .balign 16
user_rdtscp:
        rdtscp
        int     $0x21
        ud2
        .balign 16
user_wbinvd:
        wbinvd
        int     $0x21
        ud2
        .balign 16
        .globl user_rdpmc
user_rdpmc:
        xor     %ecx, %ecx
        rdpmc
        int     $0x21
        ud2
        .balign 16
        .globl user_pushf, user_popf_pushf
user_pushf:
        pushfq
        pop     %rbx
        int     $0x21
        ud2
        .balign 16
user_popf_pushf:
        pushq   $0x3002                 /* IOPL 3, IF clear */
        popfq
        pushfq
        pop     %rbx
        int     $0x21
        ud2
        .balign 16
user_blob_end:
