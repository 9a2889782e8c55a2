"""The lguest ABI tables (x86-32 only), final mainline numbering (Linux
4.1-4.13), with their sources. Facts: ``/work/shared/research/pv-abi-facts.md``
section 2, read from Linux ``arch/x86/include/asm/lguest_hcall.h`` [LGH],
``include/linux/lguest.h`` [LGD], ``drivers/lguest/hypercalls.c`` [LGHC],
``drivers/lguest/interrupts_and_traps.c`` [LGI], ``drivers/lguest/segments.c``
[LGS], ``drivers/lguest/page_tables.c`` [LGP], ``arch/x86/lguest/boot.c``
[LGB], ``tools/lguest/lguest.c`` [LGL].

The module is the ABI's name tables for tools
(:func:`pvmon.backends.registry.abi_names`): ``HYPERCALLS``,
``HYPERCALL_NUMBERS``, ``SUBOPS``, ``ERRNO_NAMES``.
"""

from __future__ import annotations

import struct

#: ``int $LGUEST_TRAP_ENTRY``: the hypercall trap (EAX = number, EBX, ECX,
#: EDX, ESI = arguments 1-4, result in EAX) [LGH].
LGUEST_TRAP_ENTRY = 0x1F

#: Final numbering, 4.1-4.13 [LGH]. 3, 11, 12 are unused; 17 (NOTIFY) went
#: with the lguest bus in 4.1.
HYPERCALLS: dict[int, str] = {
    0: "LHCALL_FLUSH_ASYNC",
    1: "LHCALL_LGUEST_INIT",
    2: "LHCALL_SHUTDOWN",
    4: "LHCALL_NEW_PGTABLE",
    5: "LHCALL_FLUSH_TLB",
    6: "LHCALL_LOAD_IDT_ENTRY",
    7: "LHCALL_SET_STACK",
    8: "LHCALL_TS",
    9: "LHCALL_SET_CLOCKEVENT",
    10: "LHCALL_HALT",
    13: "LHCALL_SET_PMD",
    14: "LHCALL_SET_PTE",
    15: "LHCALL_SET_PGD",
    16: "LHCALL_LOAD_TLS",
    18: "LHCALL_LOAD_GDT_ENTRY",
    19: "LHCALL_SEND_INTERRUPTS",
}
#: 2.6.2x-4.0: the same numbers plus 17 LHCALL_NOTIFY (early console: the
#: guest-physical address of a NUL-terminated string; else a virtqueue kick),
#: removed with the lguest bus in 4.1 [LGH] (older copies), [LGL] handle_output.
HYPERCALLS_4_0: dict[int, str] = {**HYPERCALLS, 17: "LHCALL_NOTIFY"}
#: names of every era, for tools (a 4.0 trace names NOTIFY)
HYPERCALL_NUMBERS: dict[str, int] = {v: k for k, v in HYPERCALLS_4_0.items()}
#: lguest calls have no sub-operations.
SUBOPS: dict[str, dict[int, str]] = {}
#: lguest answers no errno: a bad call kills the guest [LGHC].
ERRNO_NAMES: dict[int, str] = {}

#: LHCALL_SHUTDOWN's second argument (``LGUEST_SHUTDOWN_*``, [LGD]).
LGUEST_SHUTDOWN_POWEROFF, LGUEST_SHUTDOWN_RESTART = 1, 2

#: Calls the guest may queue in the asynchronous ring (lazy mode) [LGB];
#: every other call is synchronous.
ASYNC_CALLS = frozenset({0, 4, 5, 7, 8, 13, 14, 15, 16})

#: ``LHCALL_RING_SIZE`` [LGD]
RING_SIZE = 64
#: ``struct lguest_data`` offsets, i386, final mainline (``struct timespec``
#: time; facts sheet 2.4 computed them from the declaration) [LGD].
LD_IRQ_ENABLED = 0x000
LD_BLOCKED_INTERRUPTS = 0x004
LD_CR2 = 0x008
LD_TIME = 0x00C          # struct timespec {long tv_sec; long tv_nsec}
LD_IRQ_PENDING = 0x014
LD_HCALL_STATUS = 0x018  # u8[64]: 0xFF free/done, 0 pending
LD_HCALLS = 0x058        # struct hcall_args[64], 5 x u32 each (arg0 = number)
LD_RESERVE_MEM = 0x558
LD_TSC_KHZ = 0x55C
LD_NOIRQ_IRET = 0x560
LD_KERNEL_ADDRESS = 0x564
LD_SYSCALL_VEC = 0x568
LGUEST_DATA_SIZE = 0x56C
HCALL_ARGS_SIZE = 20

#: X86_EFLAGS_IF: ``irq_enabled`` and ``irq_pending`` values [LGD], [LGI]
X86_EFLAGS_IF = 0x200
#: ``LGUEST_IRQS`` = min(NR_IRQS, 32): one bitmap word [LGD]
LGUEST_IRQS = 32
FIRST_EXTERNAL_VECTOR = 32
#: SYSCALL_VECTOR the host accepts (its ``syscall_vector`` module parameter
#: defaults to it) [LGHC] ``initialize``.
SYSCALL_VECTOR = 0x80

#: i386 GDT (arch/x86/include/asm/segment.h, lguest.h): 32 entries; the
#: host's own slots LOAD_GDT_ENTRY leaves alone [LGS] ``ignored_gdt``.
GDT_ENTRIES = 32
GDT_ENTRY_TLS_MIN = 6
GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS = 10, 11
GDT_ENTRY_KERNEL_CS, GDT_ENTRY_KERNEL_DS = 12, 13
GDT_ENTRY_TSS, GDT_ENTRY_DOUBLEFAULT_TSS = 16, 31
IGNORED_GDT = frozenset({GDT_ENTRY_TSS, GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS,
                         GDT_ENTRY_DOUBLEFAULT_TSS})
#: The guest kernel runs at ring 1 (``GUEST_PL``) [LGX].
GUEST_PL = 1
KERNEL_CS = GDT_ENTRY_KERNEL_CS * 8 | GUEST_PL      # 0x61
KERNEL_DS = GDT_ENTRY_KERNEL_DS * 8 | GUEST_PL      # 0x69
LGUEST_CS = GDT_ENTRY_LGUEST_CS * 8                 # the Switcher's ring-0 code
LGUEST_DS = GDT_ENTRY_LGUEST_DS * 8
TSS_SEL = GDT_ENTRY_TSS * 8

#: Vectors whose LOAD_IDT_ENTRY the host ignores: NMI, double fault, the
#: spurious vector, the hypercall trap [LGI] ``load_guest_idt_entry``.
IGNORED_IDT = frozenset({2, 8, 15, LGUEST_TRAP_ENTRY})
#: Exceptions that push an error code [LGI] ``has_err``.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17})

#: hardware_subarch of the boot header: X86_SUBARCH_LGUEST [BOOT].
X86_SUBARCH_LGUEST = 1


def hypercall_name(nr: int) -> str:
    """The LHCALL_* name of ``nr``, or ``lhcall_<nr>`` for a number the
    final ABI does not define."""
    return HYPERCALLS.get(nr, f"lhcall_{nr}")


def idt_type(lo: int, hi: int) -> int:
    """The gate type of an IDT entry (bits 8-11 of the high word) [LGI]."""
    return (hi >> 8) & 0xF


def idt_present(lo: int, hi: int) -> bool:
    return bool(hi & 0x8000)


def desc_split(desc: int) -> tuple[int, int]:
    return desc & 0xFFFFFFFF, desc >> 32


def gate(selector: int, offset: int, type_: int, dpl: int) -> bytes:
    """An 8-byte i386 gate descriptor."""
    lo = (selector << 16) | (offset & 0xFFFF)
    hi = (offset & 0xFFFF0000) | 0x8000 | (dpl << 13) | (type_ << 8)
    return struct.pack("<II", lo, hi)


__all__ = [name for name in dir() if name.isupper()] + [
    "desc_split", "gate", "hypercall_name", "idt_present", "idt_type"]
