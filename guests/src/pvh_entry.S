/*
 * pvh_entry.S - Xen PVH entry points of pvtest-v2-pvh: the 32-bit entry at
 * XEN_ELFNOTE_PHYS32_ENTRY, the way into long mode, and the native IDT
 * stubs (exceptions and the event-upcall vector).  Everything else is C
 * (port_pvh.c, checks_pvh.c).
 *
 * Start of day (xen.git docs/misc/pvh.pandoc, stable-4.17): 32-bit protected
 * mode, paging off, CS a flat 32-bit code segment, DS/ES/SS flat data, EBX =
 * guest-physical address of struct hvm_start_info, EFLAGS with IF clear, no
 * stack.  As Linux's arch/x86/platform/pvh/head.S does, the stub builds its
 * own GDT and page tables, enables PAE and EFER.LME, turns paging on and
 * jumps to the kernel's virtual addresses:
 *
 *   identity:  0 .. 4 GiB  (2 MiB pages; the LAPIC page and frames mapped
 *                           above RAM with add_to_physmap are reachable)
 *   kernel:    VIRT_BASE .. VIRT_BASE + 2 GiB -> physical 0 .. 2 GiB
 *
 * so physical address p is at VIRT_BASE + p for every RAM frame.
 *
 * Exceptions and interrupts arrive with the CPU's 64-bit frame ([error
 * code], RIP, CS, RFLAGS, RSP, SS) on the current stack (no privilege
 * change, no IST, so no TSS is needed); the stubs build struct trap_frame
 * and return with IRETQ.
 */
#include "xen_abi.h"
#include "pvh.h"

#define PA(x) ((x) - 0xffffffff80000000)

        .section .text.entry, "ax", @progbits
/*
 * _start (ELF e_entry): what a Xen *PV* boot of this image would enter.
 * pvtest-v2-pvh has no PV entry: say so on console_io and crash
 * (SCHEDOP_shutdown), through the PV hypercall mechanism (syscall).
 */
        .code64
        .globl _start
        .type _start, @function
_start:
        mov     $HC_console_io, %eax
        xor     %edi, %edi                      /* CONSOLEIO_write */
        mov     $pv_refusal_end - pv_refusal, %esi
        lea     pv_refusal(%rip), %rdx
        syscall
        mov     $HC_sched_op, %eax
        mov     $SCHEDOP_shutdown, %edi
        lea     pv_crash_reason(%rip), %rsi
        syscall
        ud2
        .size _start, . - _start

/* The PVH entry (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit, physical addresses. */
        .code32
        .globl pvh_start
        .type pvh_start, @function
pvh_start:
        cld
        cli
        mov     %ebx, %esi                      /* hvm_start_info */
        mov     %cr0, %ebp
        mov     %cs, %edx
        /* clear bss (the page tables and the entry record live there) */
        mov     $PA(__bss_start), %edi
        mov     $PA(__bss_stop), %ecx
        sub     %edi, %ecx
        xor     %eax, %eax
        rep stosb
        mov     %esi, PA(pvh_entry_ebx)
        mov     %ebp, PA(pvh_entry_cr0)
        mov     %edx, PA(pvh_entry_cs)
        mov     $PA(boot_stack_top), %esp       /* no stack at entry: the boot stack */
        pushfl
        popl    PA(pvh_entry_eflags)
        mov     %cr4, %eax
        mov     %eax, PA(pvh_entry_cr4)

        /* L2: 4 pages of 512 2-MiB entries, identity 0 .. 4 GiB */
        mov     $PA(pvh_l2), %edi
        xor     %ecx, %ecx
1:      mov     %ecx, %eax
        shl     $21, %eax
        or      $0x83, %eax                     /* P | RW | PS */
        mov     %eax, (%edi,%ecx,8)
        mov     %ecx, %eax
        shr     $11, %eax                       /* bits 32+ of (i << 21) */
        mov     %eax, 4(%edi,%ecx,8)
        inc     %ecx
        cmp     $2048, %ecx
        jb      1b
        /* L3: [0..3] the identity L2 pages; [510], [511] the first two again */
        mov     $PA(pvh_l3), %edi
        mov     $PA(pvh_l2) + 3, %eax
        mov     %eax, 0(%edi)
        add     $4096, %eax
        mov     %eax, 8(%edi)
        add     $4096, %eax
        mov     %eax, 16(%edi)
        add     $4096, %eax
        mov     %eax, 24(%edi)
        mov     $PA(pvh_l2) + 3, %eax
        mov     %eax, 510*8(%edi)
        add     $4096, %eax
        mov     %eax, 511*8(%edi)
        /* L4: [0] identity, [511] the kernel's VIRT_BASE */
        mov     $PA(pvh_l4), %edi
        mov     $PA(pvh_l3) + 3, %eax
        mov     %eax, 0(%edi)
        mov     %eax, 511*8(%edi)

        lgdt    PA(pvh_gdt_desc)
        mov     $KERNEL_DS, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     %cr4, %eax
        or      $(1 << 5), %eax                 /* PAE */
        mov     %eax, %cr4
        mov     $PA(pvh_l4), %eax
        mov     %eax, %cr3
        mov     $0xc0000080, %ecx               /* EFER */
        rdmsr
        or      $(1 << 8), %eax                 /* LME */
        wrmsr
        mov     %cr0, %eax
        or      $0x80010001, %eax               /* PG | WP | PE */
        mov     %eax, %cr0
        ljmp    $KERNEL_CS, $PA(pvh_long)

        .code64
pvh_long:
        movabs  $pvh_high, %rax
        jmp     *%rax
pvh_high:
        lgdt    pvh_gdt_desc64(%rip)            /* the GDT at its virtual address */
        xor     %eax, %eax
        mov     %eax, %fs
        mov     %eax, %gs
        lea     boot_stack_top(%rip), %rsp
#ifdef PVTEST_ORACLE_TCG
        /* Only in scripts/xen_oracle.py --tcg-build --pvh: real Xen runs a PVH dom0
         * on QEMU's AMD CPU (SVM), where VMCALL is #UD and the hypercall is VMMCALL
         * (Xen's #UD intercept emulates it only across vendors: svm.c
         * svm_cpuid_policy_changed); hypercall_vmcall.S picks it by this flag. */
        xor     %eax, %eax
        cpuid
        cmp     $0x68747541, %ebx               /* "Auth" of AuthenticAMD */
        sete    hv_vmmcall(%rip)
#endif
        mov     pvh_entry_ebx(%rip), %edi       /* hvm_start_info, physical */
        call    pvtest_main
        ud2
        .size pvh_start, . - pvh_start

        .section .rodata
pv_refusal:
        .ascii  "pvtest-v2-pvh is a Xen PVH kernel with no PV entry: boot it with --mode pvh\n"
pv_refusal_end:
        .balign 4
pv_crash_reason:
        .long   SHUTDOWN_crash

/* GDT: null, 64-bit kernel code (0x08), flat data (0x10) */
        .balign 16
pvh_gdt:
        .quad   0
        .quad   0x00af9a000000ffff
        .quad   0x00cf92000000ffff
pvh_gdt_end:
        .balign 8
        .word   0
pvh_gdt_desc:                                   /* 32-bit lgdt: physical base */
        .word   pvh_gdt_end - pvh_gdt - 1
        .long   PA(pvh_gdt)
        .balign 8
        .word   0, 0, 0
pvh_gdt_desc64:
        .word   pvh_gdt_end - pvh_gdt - 1
        .quad   pvh_gdt

        .text
/* Common tail: RSP points at vector, error, rip, cs, rflags, rsp, ss. */
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
        cld
        mov     %rsp, %rdi                      /* struct trap_frame * */
        mov     %rsp, %rbx
        and     $-16, %rsp
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
        add     $16, %rsp                       /* vector, error */
        iretq
        .size trap_common, . - trap_common

.macro PVH_TRAP name, vector, has_error
        .globl \name
        .type \name, @function
\name:
        .if \has_error == 0
        pushq   $0
        .endif
        pushq   $\vector
        jmp     trap_common
        .size \name, . - \name
.endm

        PVH_TRAP pvh_trap_0,  0,  0     /* #DE */
        PVH_TRAP pvh_trap_1,  1,  0     /* #DB */
        PVH_TRAP pvh_trap_2,  2,  0     /* NMI */
        PVH_TRAP pvh_trap_3,  3,  0     /* #BP */
        PVH_TRAP pvh_trap_4,  4,  0     /* #OF */
        PVH_TRAP pvh_trap_5,  5,  0     /* #BR */
        PVH_TRAP pvh_trap_6,  6,  0     /* #UD */
        PVH_TRAP pvh_trap_7,  7,  0     /* #NM */
        PVH_TRAP pvh_trap_8,  8,  1     /* #DF */
        PVH_TRAP pvh_trap_9,  9,  0
        PVH_TRAP pvh_trap_10, 10, 1     /* #TS */
        PVH_TRAP pvh_trap_11, 11, 1     /* #NP */
        PVH_TRAP pvh_trap_12, 12, 1     /* #SS */
        PVH_TRAP pvh_trap_13, 13, 1     /* #GP */
        PVH_TRAP pvh_trap_14, 14, 1     /* #PF */
        PVH_TRAP pvh_trap_15, 15, 0
        PVH_TRAP pvh_trap_16, 16, 0     /* #MF */
        PVH_TRAP pvh_trap_17, 17, 1     /* #AC */
        PVH_TRAP pvh_trap_18, 18, 0     /* #MC */
        PVH_TRAP pvh_trap_19, 19, 0     /* #XM */
        PVH_TRAP pvh_upcall, VEC_UPCALL, 0   /* HVM_PARAM_CALLBACK_IRQ vector */
        PVH_TRAP pvh_spurious, 0xff, 0  /* any other vector */

        .section .stack, "aw", @nobits
        .balign 4096
        .globl boot_stack
boot_stack:
        .skip 65536
        .globl boot_stack_top
boot_stack_top:

        .section .bss
        .balign 4096
        .globl pvh_l4, pvh_l3, pvh_l2
pvh_l4: .skip 4096
pvh_l3: .skip 4096
pvh_l2: .skip 4 * 4096
        .balign 8
        .globl pvh_entry_ebx, pvh_entry_cr0, pvh_entry_cr4, pvh_entry_cs, pvh_entry_eflags
pvh_entry_ebx:    .quad 0
pvh_entry_cr0:    .quad 0
pvh_entry_cr4:    .quad 0
pvh_entry_cs:     .quad 0
pvh_entry_eflags: .quad 0
