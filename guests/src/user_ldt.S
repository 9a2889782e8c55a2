/*
 * user_ldt.S - the user-mode code of the LDT checks (checks_ldt.c), run by
 * rules_user_run (checks_rules.c), which copies it to the user page at
 * offset 0x800.  Position independent.  The parameter word at the start is
 * patched in a copy before each run: the selector the entry point loads.
 * Each entry point ends in int $0x21 (back to the kernel, %rbx logged) or in
 * the fault under test.
 */
        .section .rodata
        .balign 16
        .globl ldt_ublob, ldt_ublob_end, ldt_u_param
        .globl ldt_u_fs, ldt_u_sldt, ldt_u_ljmp, ldt_u_mode, ldt_u_ss
ldt_ublob:
ldt_u_param:                            /* +0: the selector to use (patched) */
        .quad   0
ldt_u_magic:                            /* +8: what a read through the LDT base finds */
        .quad   0x4c44542d4d41474cUL
        .code64
/* mov param, %fs; %rbx = %fs:0 (the base of the LDT descriptor) */
ldt_u_fs:
        mov     ldt_u_param(%rip), %eax
        mov     %eax, %fs
        mov     %fs:0, %rbx
        int     $0x21
        ud2
/* %rbx = the LDTR selector (sldt: not privileged without CR4.UMIP) */
        .balign 16
ldt_u_sldt:
        xor     %ebx, %ebx
        sldt    %bx
        int     $0x21
        ud2
/* ljmp to param:ldt_u_mode (a far pointer m16:32 on the user stack) */
        .balign 16
ldt_u_ljmp:
        lea     ldt_u_mode(%rip), %rax
        sub     $16, %rsp
        mov     %eax, (%rsp)
        mov     ldt_u_param(%rip), %eax
        mov     %ax, 4(%rsp)
        ljmpl   *(%rsp)
        ud2
/* valid 32- and 64-bit code: %ebx = 0xffffffff in compatibility mode
 * (0x4b is dec %ebx there), 0 in 64-bit mode (0x4b is a REX prefix) */
        .balign 16
ldt_u_mode:
        xor     %ebx, %ebx
        .byte   0x4b
        nop
        int     $0x21
        ud2
/* %rbx = %ss (entered with an LDT stack selector) */
        .balign 16
ldt_u_ss:
        mov     %ss, %ebx
        int     $0x21
        ud2
        .balign 16
ldt_ublob_end:
