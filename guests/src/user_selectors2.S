/*
 * user_selectors2.S - the assembly of checks_selectors2.c: a HYPERVISOR_iret
 * that stays in kernel mode with chosen selectors, the sysenter callback, and
 * the user code that executes sysenter (64-bit and 32-bit).
 */
#include "xen_abi.h"

        .text
/* unsigned long sel2_kernel_iret(cs, ss, out[2]): HYPERVISOR_iret from the
 * kernel (CS RPL 0-2: it stays in kernel mode) to sel2_iret_target with CS =
 * cs, SS = ss, this RSP and events masked (RFLAGS.IF clear).  There: out =
 * %cs, %ss; an int $0x21 (its frame is noted by selectors2_trap); back to
 * FLAT_KERNEL_CS64/SS64 by another HYPERVISOR_iret; returns 1.
 * If the IRETQ Xen returns with faults, selectors2_trap resumes at
 * sel2_iret_fixup with this RSP: returns 0. */
        .globl sel2_kernel_iret, sel2_iret_target, sel2_after_int, sel2_iret_fixup
        .type sel2_kernel_iret, @function
sel2_kernel_iret:
        push    %rbx
        mov     %rsp, sel2_iret_rsp(%rip)
        lea     sel2_iret_rsp(%rip), %rax       /* a failsafe callback resumes at the */
        mov     %rax, sel2_fs_rsp_addr(%rip)    /* fixup with this RSP */
        lea     sel2_iret_fixup(%rip), %rax
        mov     %rax, sel2_fs_resume(%rip)
        mov     %rsp, %rbx
        /* struct iret_context, from the top: ss rsp rflags cs rip flags rcx r11 rax */
        push    %rsi
        push    %rbx
        pushq   $2
        push    %rdi
        lea     sel2_iret_target(%rip), %rax
        push    %rax
        pushq   $0
        pushq   $0
        pushq   $0
        pushq   $0
        mov     $HC_iret, %eax
        syscall
        ud2
sel2_iret_target:
        mov     %cs, %eax
        mov     %rax, 0(%rdx)
        mov     %ss, %eax
        mov     %rax, 8(%rdx)
        int     $0x21
sel2_after_int:
        /* back by HYPERVISOR_iret to FLAT_KERNEL_CS64 & ~3 and FLAT_KERNEL_SS64 with
         * RSP = %rbx (no native LRETQ: QEMU TCG, under real Xen, pops its frame with
         * supervisor accesses, which SMAP refuses on the kernel's user-page stack) */
        pushq   $FLAT_KERNEL_SS64
        push    %rbx
        pushq   $2
        pushq   $(FLAT_KERNEL_CS64 & ~3)
        lea     1f(%rip), %rax
        push    %rax
        pushq   $0
        pushq   $0
        pushq   $0
        pushq   $0
        mov     $HC_iret, %eax
        syscall
        ud2
1:      mov     $1, %eax
        pop     %rbx
        ret
sel2_iret_fixup:
        mov     sel2_iret_rsp(%rip), %rsp
        xor     %eax, %eax
        pop     %rbx
        ret
        .size sel2_kernel_iret, . - sel2_kernel_iret

/* The failsafe callback registered around the faulting irets (Xen before 4.7
 * enters it when the IRETQ it returns with faults): copies its frame (RCX,
 * R11, DS, ES, FS, GS, RIP, CS, RFLAGS, RSP, SS) to sel2_fs_frame, counts it,
 * and resumes in kernel mode at sel2_fs_resume with the RSP held at
 * *sel2_fs_rsp_addr, events masked. */
        .globl xen_sel2_failsafe
        .type xen_sel2_failsafe, @function
xen_sel2_failsafe:
        cld
        lea     sel2_fs_frame(%rip), %rdi
        mov     %rsp, %rsi
        mov     $11, %ecx
        rep movsq
        incq    sel2_fs_n(%rip)
        mov     sel2_fs_rsp_addr(%rip), %rax
        pushq   $FLAT_KERNEL_SS64
        pushq   (%rax)
        pushq   $2
        pushq   $(FLAT_KERNEL_CS64 & ~3)
        pushq   sel2_fs_resume(%rip)
        pushq   $0
        pushq   $0
        pushq   $0
        pushq   $0
        mov     $HC_iret, %eax
        syscall
        ud2
        .size xen_sel2_failsafe, . - xen_sel2_failsafe

/* The sysenter callback: notes that it was entered, then the syscall
 * callback's path (the entry is logged as VEC_SYSCALL, with RFLAGS at entry
 * in the error slot). */
        .globl xen_sysenter_callback
        .type xen_sysenter_callback, @function
xen_sysenter_callback:
        movq    $1, sysenter_entered(%rip)
        jmp     xen_syscall_callback
        .size xen_sysenter_callback, . - xen_sysenter_callback

/* User code, copied to the user page by rules_user_run; position independent.
 * It starts 0x40 bytes in, past the 32-bit code checks_selectors.c ran at the
 * same user address: pvmon's engine kept executing that old code in
 * compatibility mode after the kernel rewrote the page through its own
 * mapping (a stale translation; docs/xen-rules.md "Segment selectors"). */
        .section .rodata
        .balign 16
        .globl user2_blob, user2_blob_end, user2_int21, user2_sysenter64, user2_sysenter32
user2_blob:
        .fill   0x40, 1, 0xcc
user2_int21:
        int     $0x21                   /* reached only if the iret did not fault */
        ud2
        .balign 16
user2_sysenter64:
        mov     $0x5e64, %ebx
        std
        sysenter
        ud2
        .balign 16
        .code32
user2_sysenter32:
        mov     $0x5e32, %ebx
        sysenter
        ud2
        .balign 16
        .code64
user2_blob_end:

        .data
        .balign 8
        .globl sysenter_entered, sel2_iret_rsp, sel2_fs_frame, sel2_fs_n, sel2_fs_resume
        .globl sel2_fs_rsp_addr
sysenter_entered:
        .quad   0
sel2_iret_rsp:
        .quad   0
sel2_fs_frame:
        .fill   11, 8, 0
sel2_fs_n:
        .quad   0
sel2_fs_resume:
        .quad   0
sel2_fs_rsp_addr:
        .quad   0
