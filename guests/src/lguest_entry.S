/*
 * lguest_entry.S - pvtest-lguest start of day and trap entries (x86-32,
 * ring 1).  The Launcher enters at _start in the host's linear mapping with
 * ESI = 0 (boot_params), CS = __KERNEL_CS|1, DS/ES/SS = __KERNEL_DS|1
 * (arch/x86/lguest/head_32.S, tools/lguest/lguest.c).
 *
 * Hypercalls: int $0x1f, EAX = call, EBX, ECX, EDX, ESI = arguments
 * (arch/x86/include/asm/lguest_hcall.h).  Interrupt return: the EFLAGS
 * word of the frame goes to lguest_data.irq_enabled, then the iret at
 * lguest_noirq_iret (arch/x86/lguest/head_32.S lguest_iret).
 */
        .section .text.entry, "ax"
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        movl    %esi, boot_params_pa
        call    lguest_main
1:      jmp     1b

/* unsigned long hcall(unsigned long call, a1, a2, a3, a4) */
        .text
        .globl hcall
hcall:
        pushl   %ebx
        pushl   %esi
        movl    12(%esp), %eax
        movl    16(%esp), %ebx
        movl    20(%esp), %ecx
        movl    24(%esp), %edx
        movl    28(%esp), %esi
        int     $0x1f
        popl    %esi
        popl    %ebx
        ret

/* int enter_user(eip, esp): iret to ring 3 (__USER_CS/__USER_DS) at eip with
 * esp; returns 1 when a trap handler calls resume_kernel() */
        .globl enter_user
enter_user:
        pushl   %ebp
        pushl   %ebx
        pushl   %esi
        pushl   %edi
        movl    %esp, saved_kernel_esp
        movl    20(%esp), %eax
        movl    24(%esp), %edx
        pushl   $0x7b
        pushl   %edx
        pushl   $0x202
        pushl   $0x73
        pushl   %eax
        iret

/* back on enter_user's stack, from a trap handler (the trap frame is dropped) */
        .globl resume_kernel
resume_kernel:
        movl    saved_kernel_esp, %esp
        movl    $0x69, %eax
        movl    %eax, %ds
        movl    %eax, %es
        popl    %edi
        popl    %esi
        popl    %ebx
        popl    %ebp
        movl    $1, %eax
        ret

        .data
        .balign 4
saved_kernel_esp:
        .long   0
        .text

/* trap entries: push a dummy error code where the CPU pushes none, the
 * vector, the registers; call lguest_trap(struct trap_frame *) */
.macro TRAP vec, err
        .globl trap_\vec
trap_\vec:
.if \err == 0
        pushl   $0
.endif
        pushl   $\vec
        jmp     trap_common
.endm
        TRAP 0, 0
        TRAP 3, 0
        TRAP 6, 0
        TRAP 7, 0
        TRAP 13, 1
        TRAP 14, 1
        TRAP 32, 0
        TRAP 128, 0

trap_common:
        pushal
        pushl   %ds                     /* from ring 3 they hold user selectors */
        pushl   %es                     /* (or null ones after the iret to ring 3) */
        movl    $0x69, %eax             /* __KERNEL_DS|1 */
        movl    %eax, %ds
        movl    %eax, %es
        leal    8(%esp), %eax           /* struct trap_frame: the pushal area on */
        pushl   %eax
        call    lguest_trap
        addl    $4, %esp
        popl    %es
        popl    %ds
        popal
        addl    $8, %esp
        /* lguest_iret: irq_enabled = the frame's EFLAGS.IF, then iret */
        pushl   %eax
        movl    12(%esp), %eax
        andl    $0x200, %eax
        movl    %eax, lguest_data
        popl    %eax
        .globl lguest_noirq_iret
lguest_noirq_iret:
        iret

        .section .stack, "aw", @nobits
        .balign 4096
        .space  16384
        .globl stack_top
stack_top:
