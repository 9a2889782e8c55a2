/*
 * kvm_entry.S - entry points of pvtest-kvm, the KVM reference guest: the
 * 32-bit PVH entry (the way pvmon boots every KVM guest, as Firecracker boots
 * a vmlinux with the note: docs/kvm.md "Boot"), the way into long mode, the
 * ELF notes, and the IDT stubs.  Everything else is C (port_kvm.c).
 *
 * Start of day (xen.git docs/misc/pvh.pandoc, the contract Linux's
 * arch/x86/platform/pvh/head.S relies on under KVM too): 32-bit protected
 * mode, paging off, CS a flat 32-bit code segment, DS/ES/SS flat data, EBX =
 * guest-physical address of struct hvm_start_info, EFLAGS with IF clear, no
 * stack.  The stub clears bss, builds a GDT (64-bit code 0x08, data 0x10)
 * and page tables (identity 0 .. 4 GiB with 2 MiB pages, so the I/O APIC at
 * 0xFEC00000 and the local APIC at 0xFEE00000 are reachable; VIRT_BASE ..
 * VIRT_BASE + 2 GiB -> physical 0 .. 2 GiB), enables PAE, EFER.LME, paging
 * and CR0.WP, and calls kvm_main in long mode.
 *
 * Exceptions and interrupts arrive with the CPU's 64-bit frame ([error
 * code], RIP, CS, RFLAGS, RSP, SS) on the current stack (CPL 0 only, no IST,
 * so no TSS); the stubs build struct trap_frame and return with IRETQ.
 */

#define PA(x) ((x) - 0xffffffff80000000)
#define KERNEL_CS 0x08
#define KERNEL_DS 0x10

/* The Xen ELF notes a PVH kernel carries (elfnote.h; Linux emits
 * XEN_ELFNOTE_PHYS32_ENTRY from arch/x86/platform/pvh/head.S): name "Xen",
 * namesz, descsz, type, each padded to 4 bytes. */
#define XEN_NOTE(type, desc)                                    \
        .balign 4; .long 2f - 1f; .long 4f - 3f; .long type;    \
        1: .asciz "Xen"; 2: .balign 4; 3: desc; 4: .balign 4

        .section .note.Xen, "a", @note
        XEN_NOTE(6, .asciz "pvtest-kvm")                /* GUEST_OS */
        XEN_NOTE(7, .asciz "1")                         /* GUEST_VERSION */
        XEN_NOTE(5, .asciz "xen-3.0")                   /* XEN_VERSION */
        XEN_NOTE(8, .asciz "generic")                   /* LOADER */
        XEN_NOTE(3, .quad 0xffffffff80000000)           /* VIRT_BASE */
        XEN_NOTE(4, .quad 0)                            /* PADDR_OFFSET */
        XEN_NOTE(18, .long kvm_start - 0xffffffff80000000)   /* PHYS32_ENTRY */

        .section .text.entry, "ax", @progbits
/*
 * _start (ELF e_entry): what a Xen *PV* boot of this image would enter.
 * pvtest-kvm is a KVM guest: say so on console_io (hypercall 18) and crash
 * (sched_op 29, SCHEDOP_shutdown 2, SHUTDOWN_crash 3) by syscall, the
 * 64-bit PV hypercall mechanism.
 */
        .code64
        .globl _start
        .type _start, @function
_start:
        mov     $18, %eax                       /* __HYPERVISOR_console_io */
        xor     %edi, %edi                      /* CONSOLEIO_write */
        mov     $pv_refusal_end - pv_refusal, %esi
        lea     pv_refusal(%rip), %rdx
        syscall
        mov     $29, %eax                       /* __HYPERVISOR_sched_op */
        mov     $2, %edi                        /* SCHEDOP_shutdown */
        lea     pv_crash_reason(%rip), %rsi
        syscall
        ud2
        .size _start, . - _start

/* The PVH entry (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit, physical addresses. */
        .code32
        .globl kvm_start
        .type kvm_start, @function
kvm_start:
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
        mov     %esi, PA(entry_ebx)
        mov     %ebp, PA(entry_cr0)
        mov     %edx, PA(entry_cs)
        mov     $PA(boot_stack_top), %esp       /* no stack at entry: the boot stack */
        pushfl
        popl    PA(entry_eflags)
        mov     %cr4, %eax
        mov     %eax, PA(entry_cr4)

        /* L2: 4 pages of 512 2-MiB entries, identity 0 .. 4 GiB */
        mov     $PA(kvm_l2), %edi
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
        mov     $PA(kvm_l3), %edi
        mov     $PA(kvm_l2) + 3, %eax
        mov     %eax, 0(%edi)
        add     $4096, %eax
        mov     %eax, 8(%edi)
        add     $4096, %eax
        mov     %eax, 16(%edi)
        add     $4096, %eax
        mov     %eax, 24(%edi)
        mov     $PA(kvm_l2) + 3, %eax
        mov     %eax, 510*8(%edi)
        add     $4096, %eax
        mov     %eax, 511*8(%edi)
        /* L4: [0] identity, [511] the kernel's VIRT_BASE */
        mov     $PA(kvm_l4), %edi
        mov     $PA(kvm_l3) + 3, %eax
        mov     %eax, 0(%edi)
        mov     %eax, 511*8(%edi)

        lgdt    PA(gdt_desc)
        mov     $KERNEL_DS, %eax
        mov     %eax, %ds
        mov     %eax, %es
        mov     %eax, %ss
        mov     %cr4, %eax
        or      $(1 << 5), %eax                 /* PAE */
        mov     %eax, %cr4
        mov     $PA(kvm_l4), %eax
        mov     %eax, %cr3
        mov     $0xc0000080, %ecx               /* EFER */
        rdmsr
        or      $(1 << 8), %eax                 /* LME */
        wrmsr
        mov     %cr0, %eax
        or      $0x80010001, %eax               /* PG | WP | PE */
        mov     %eax, %cr0
        ljmp    $KERNEL_CS, $PA(kvm_long)

        .code64
kvm_long:
        movabs  $kvm_high, %rax
        jmp     *%rax
kvm_high:
        lgdt    gdt_desc64(%rip)                /* the GDT at its virtual address */
        xor     %eax, %eax
        mov     %eax, %fs
        mov     %eax, %gs
        lea     boot_stack_top(%rip), %rsp
        mov     entry_ebx(%rip), %edi           /* hvm_start_info, physical */
        call    kvm_main
        ud2
        .size kvm_start, . - kvm_start

        .section .rodata
pv_refusal:
        .ascii  "pvtest-kvm is a KVM guest with no Xen PV entry: boot it with --backend kvm-6.12\n"
pv_refusal_end:
        .balign 4
pv_crash_reason:
        .long   3                               /* SHUTDOWN_crash */

        .data
/* GDT: null, 64-bit kernel code (0x08), flat data (0x10), user data (0x18,
 * DPL 3), 64-bit user code (0x20, DPL 3), the TSS (0x28, 16 bytes: port_kvm.c
 * fills it in before LTR) */
        .balign 16
        .globl gdt
gdt:
        .quad   0
        .quad   0x00af9a000000ffff
        .quad   0x00cf92000000ffff
        .quad   0x00cff2000000ffff
        .quad   0x00affa000000ffff
        .quad   0, 0
gdt_end:
        .balign 8
        .word   0
gdt_desc:                                       /* 32-bit lgdt: physical base */
        .word   gdt_end - gdt - 1
        .long   PA(gdt)
        .balign 8
        .word   0, 0, 0
gdt_desc64:
        .word   gdt_end - gdt - 1
        .quad   gdt

        .text
/*
 * run_user(rip, rsp): enter ring 3 at rip with stack rsp (IRETQ to CS 0x23,
 * SS 0x1b, interrupts off).  The kernel comes back when trap_dispatch sends
 * a ring-3 int $0x80 or fault to user_return, which restores the callee-saved
 * registers and returns from run_user.
 */
        .globl run_user, user_return
        .type run_user, @function
run_user:
        push    %rbx
        push    %rbp
        push    %r12
        push    %r13
        push    %r14
        push    %r15
        mov     %rsp, user_saved_rsp(%rip)
        pushq   $0x1b                           /* SS: user data | RPL 3 */
        pushq   %rsi                            /* RSP */
        pushq   $0x2                            /* RFLAGS: IF clear */
        pushq   $0x23                           /* CS: user code | RPL 3 */
        pushq   %rdi                            /* RIP */
        iretq
user_return:
        mov     user_saved_rsp(%rip), %rsp
        pop     %r15
        pop     %r14
        pop     %r13
        pop     %r12
        pop     %rbp
        pop     %rbx
        ret
        .size run_user, . - run_user

/* Ring-3 code (its 2 MiB page is mapped user-accessible by port_kvm.c):
 * a KVM hypercall from CPL 3, then back to the kernel by int $0x80 with
 * the hypercall's RAX; and an RDMSR from CPL 3, which must #GP. */
        .globl user_vmcall, user_rdmsr
user_vmcall:
        mov     $1, %eax                        /* KVM_HC_VAPIC_POLL_IRQ */
        vmcall
        int     $0x80
        ud2
user_rdmsr:
        mov     $0x4b564d01, %ecx               /* MSR_KVM_SYSTEM_TIME_NEW */
        rdmsr
        int     $0x80
        ud2

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

.macro KVM_TRAP name, vector, has_error
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

        KVM_TRAP trap_0,  0,  0     /* #DE */
        KVM_TRAP trap_1,  1,  0     /* #DB */
        KVM_TRAP trap_2,  2,  0     /* NMI */
        KVM_TRAP trap_3,  3,  0     /* #BP */
        KVM_TRAP trap_4,  4,  0     /* #OF */
        KVM_TRAP trap_5,  5,  0     /* #BR */
        KVM_TRAP trap_6,  6,  0     /* #UD */
        KVM_TRAP trap_7,  7,  0     /* #NM */
        KVM_TRAP trap_8,  8,  1     /* #DF */
        KVM_TRAP trap_9,  9,  0
        KVM_TRAP trap_10, 10, 1     /* #TS */
        KVM_TRAP trap_11, 11, 1     /* #NP */
        KVM_TRAP trap_12, 12, 1     /* #SS */
        KVM_TRAP trap_13, 13, 1     /* #GP */
        KVM_TRAP trap_14, 14, 1     /* #PF */
        KVM_TRAP trap_15, 15, 0
        KVM_TRAP trap_16, 16, 0     /* #MF */
        KVM_TRAP trap_17, 17, 1     /* #AC */
        KVM_TRAP trap_18, 18, 0     /* #MC */
        KVM_TRAP trap_19, 19, 0     /* #XM */
        KVM_TRAP irq_uart,    0xe4, 0   /* COM1 through I/O APIC pin 4 */
        KVM_TRAP irq_oneshot, 0xee, 0   /* LAPIC timer, one-shot mode */
        KVM_TRAP irq_deadline, 0xef, 0  /* LAPIC timer, TSC-deadline mode */
        KVM_TRAP irq_pvipi,   0xf0, 0   /* KVM_HC_SEND_IPI's vector */
        KVM_TRAP irq_self,    0xf6, 0   /* self-IPI through the ICR */
        KVM_TRAP irq_spurious, 0xff, 0  /* any other vector */
        KVM_TRAP trap_int80,  0x80, 0   /* int $0x80 from ring 3 (a DPL 3 gate) */

        .section .stack, "aw", @nobits
        .balign 4096
        .globl boot_stack
boot_stack:
        .skip 65536
        .globl boot_stack_top
boot_stack_top:

        .section .bss
        .balign 4096
        .globl kvm_l4, kvm_l3, kvm_l2
kvm_l4: .skip 4096
kvm_l3: .skip 4096
kvm_l2: .skip 4 * 4096
        .balign 8
        .globl entry_ebx, entry_cr0, entry_cr4, entry_cs, entry_eflags
entry_ebx:    .quad 0
entry_cr0:    .quad 0
entry_cr4:    .quad 0
entry_cs:     .quad 0
entry_eflags: .quad 0
        .globl user_saved_rsp
user_saved_rsp: .quad 0
