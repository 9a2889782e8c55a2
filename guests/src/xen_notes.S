/*
 * xen_notes.S - the Xen ELF notes (elfnote.h) that make pvtest a PV kernel
 * the domain builder accepts: name "Xen", one note per XEN_ELFNOTE_* type,
 * in a PT_NOTE segment.
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
        XEN_NOTE(XEN_ELFNOTE_ENTRY, .quad _start)
#if PVTEST_VERSION == 1
        XEN_NOTE(XEN_ELFNOTE_HYPERCALL_PAGE, .quad hypercall_page)
#endif
        XEN_NOTE(XEN_ELFNOTE_FEATURES, .asciz "!writable_page_tables")
