/*
 * pvh_notes.S - the Xen ELF notes (elfnote.h) of pvtest-v2-pvh: name "Xen",
 * in a PT_NOTE segment.  XEN_ELFNOTE_PHYS32_ENTRY (18) makes it a PVH
 * kernel: the 32-bit physical address of pvh_start (a 4-byte descriptor,
 * as Linux's arch/x86/platform/pvh/head.S emits it).  There is no
 * XEN_ELFNOTE_ENTRY, HYPERCALL_PAGE or FEATURES: the image has no PV entry
 * (a PV boot enters e_entry, _start, which says so and crashes).
 */
#include "xen_abi.h"

#define STR_(x) #x
#define STR(x) STR_(x)

/* namesz, descsz, type, "Xen\0", descriptor, each padded to 4 bytes */
#define XEN_NOTE(type, desc)                                    \
        .balign 4; .long 2f - 1f; .long 4f - 3f; .long type;    \
        1: .asciz "Xen"; 2: .balign 4; 3: desc; 4: .balign 4

        .section .note.Xen, "a", @note
        XEN_NOTE(XEN_ELFNOTE_GUEST_OS, .asciz "pvtest")
        XEN_NOTE(XEN_ELFNOTE_GUEST_VERSION, .asciz STR(PVTEST_VERSION))
        XEN_NOTE(XEN_ELFNOTE_XEN_VERSION, .asciz "xen-3.0")
        XEN_NOTE(XEN_ELFNOTE_LOADER, .asciz "generic")
        XEN_NOTE(XEN_ELFNOTE_VIRT_BASE, .quad 0xffffffff80000000)
        XEN_NOTE(XEN_ELFNOTE_PADDR_OFFSET, .quad 0)
        XEN_NOTE(XEN_ELFNOTE_PHYS32_ENTRY, .long pvh_start - 0xffffffff80000000)
