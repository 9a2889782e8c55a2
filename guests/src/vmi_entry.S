/*
 * vmi_entry.S - pvtest-vmi start of day and trap entries (x86-32, ring 0).
 * pvmon enters _start in 32-bit protected mode, paging off, flat segments
 * (VMI defines no boot protocol; Linux booted through the PC BIOS).
 * Trap handlers return through the ROM's IRET entry, which Linux reaches by
 * a patched jmp (arch/x86/kernel/vmi_32.c: IRET is JUMP_REL).
 */
        .section .text.entry, "ax"
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        call    vmi_main
1:      jmp     1b

        .text
/* CPUID through the ROM: void vmi_cpuid(fn, leaf, sub, uint32_t out[4]) */
        .globl vmi_cpuid
vmi_cpuid:
        pushl   %ebx
        pushl   %esi
        movl    12(%esp), %esi
        movl    16(%esp), %eax
        movl    20(%esp), %ecx
        call    *%esi
        movl    24(%esp), %esi
        movl    %eax, 0(%esi)
        movl    %ebx, 4(%esi)
        movl    %ecx, 8(%esi)
        movl    %edx, 12(%esi)
        popl    %esi
        popl    %ebx
        ret

/* uint32_t vmi_reloc(get_reloc, nr, uint32_t *type): EAX = nr -> EDX:EAX */
        .globl vmi_reloc
vmi_reloc:
        movl    8(%esp), %eax
        call    *4(%esp)
        movl    12(%esp), %ecx
        movl    %edx, (%ecx)
        ret

.macro TRAP vec, err
        .globl trap_\vec
trap_\vec:
.if \err == 0
        pushl   $0
.endif
        pushl   $\vec
        jmp     trap_common
.endm
        TRAP 3, 0
        TRAP 6, 0
        TRAP 14, 1
        TRAP 32, 0

trap_common:
        pushal
        pushl   %esp
        call    vmi_trap
        addl    $4, %esp
        popal
        addl    $8, %esp
        jmp     *vmi_iret               /* the ROM's IRET (JUMP_REL) */

        .section .stack, "aw", @nobits
        .balign 4096
        .space  16384
        .globl stack_top
stack_top:
