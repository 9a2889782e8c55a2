"""The xentrace binary record layout, as data (xen/include/public/trace.h,
Xen 4.17; the file framing from tools/xentrace/xentrace.c).

A xentrace file is a sequence of *windows*, each one per-CPU trace buffer's
worth of records copied out by ``xentrace``. A window starts with a
``TRC_TRACE_CPU_CHANGE`` record (no TSC, two extra words: the physical CPU and
the window's size in bytes, not counting this record); the records of that CPU
follow. Every record is native-endian (little-endian on x86):

    u32 header     bits 0-27 event id, bits 28-30 number of extra u32 words (0-7),
                   bit 31 set when a u64 TSC follows
    u64 tsc        (only when bit 31 is set)
    u32 extra[n]   the event's data

Within one CPU's records the TSC never goes backwards; across CPUs a reader
merges by TSC (xenalyze does the same).
"""

from __future__ import annotations

import struct

TRACE_EXTRA_MAX = 7
TRACE_EXTRA_SHIFT = 28
TRC_HD_CYCLE_FLAG = 1 << 31
EVENT_MASK = 0x0FFFFFFF

# Classes (main << 16) and sub-classes.
TRC_GEN = 0x0001F000
TRC_SCHED = 0x0002F000
TRC_PV = 0x0020F000
TRC_SCHED_MIN = 0x00021000
TRC_SCHED_VERBOSE = 0x00028000
TRC_PV_ENTRY = 0x00201000
TRC_PV_SUBCALL = 0x00202000
TRC_64_FLAG = 0x100

# General records.
TRC_LOST_RECORDS = TRC_GEN + 1        # u32 lost, u16 domid, u16 vcpu, u64 first_tsc; with TSC
TRC_TRACE_WRAP_BUFFER = TRC_GEN + 2   # padding to the end of a wrapped buffer
TRC_TRACE_CPU_CHANGE = TRC_GEN + 3    # starts a window: i32 cpu, u32 window size (bytes)

# Scheduler records that say which domain and vCPU run on a physical CPU.
TRC_SCHED_RUNSTATE_CHANGE = TRC_SCHED_MIN + 1   # event bits 4-7 new state, 8-11 old state
TRC_SCHED_SHUTDOWN = TRC_SCHED_VERBOSE + 7      # dom, vcpu, SHUTDOWN_* reason (SCHEDOP_shutdown)
TRC_SCHED_SHUTDOWN_CODE = TRC_SCHED_VERBOSE + 16  # dom, vcpu, reason (SCHEDOP_shutdown_code)
TRC_SCHED_SWITCH = TRC_SCHED_VERBOSE + 10       # prev dom, prev vcpu, next dom, next vcpu
RUNSTATE_RUNNING, RUNSTATE_RUNNABLE = 0, 1
IDLE_DOMAIN = 32767

# PV records (TRC_64_FLAG set: a 64-bit guest, addresses take two words).
TRC_PV_HYPERCALL = TRC_PV_ENTRY + 1         # 64-bit: u64 rip, u32 eax (the version-1 record)
TRC_PV_TRAP = TRC_PV_ENTRY + 3              # 64-bit: u64 rip, u32 trapnr:15 use_ec:1 ec:16
TRC_PV_PAGE_FAULT = TRC_PV_ENTRY + 4        # 64-bit: u64 rip, u64 address, u32 error code
TRC_PV_HYPERCALL_V2 = TRC_PV_ENTRY + 13     # u32 op | presence bits, then the present args
TRC_PV_HYPERCALL_SUBCALL = TRC_PV_SUBCALL + 14   # a multicall entry, laid out as V2

#: Argument ``i`` (0-5) of a V2/SUBCALL record: 2 bits at 20 + 2i of the first
#: word; 0 absent, 1 one u32 word, 2 two words (low first).
ARG_SHIFT = 20
ARG_MASK = 0xFFF00000
ARG_ABSENT, ARG_32, ARG_64 = 0, 1, 2
HYPERCALL_OP_MASK = 0x000FFFFF

#: pvmon's own record for an event-channel upcall into a PV guest (Xen traces
#: none): u64 rip where the guest was interrupted, then up to 5 ports, one word
#: each. In the general class, at a minor number Xen does not use; xenalyze
#: lists it as a generic record and ``pvmon trace import`` reads it back.
TRC_PVMON_UPCALL = TRC_GEN + 0x800

#: How many physical CPUs a file may name (xenalyze's MAX_CPUS is 256).
MAX_PCPUS = 1024

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def header_word(event: int, extra: int, tsc: bool) -> int:
    """The first u32 of a record: ``event`` (28 bits), ``extra`` words (0-7), TSC flag."""
    if not 0 <= extra <= TRACE_EXTRA_MAX:
        raise ValueError(f"a record holds at most {TRACE_EXTRA_MAX} extra words")
    return (event & EVENT_MASK) | (extra << TRACE_EXTRA_SHIFT) | (TRC_HD_CYCLE_FLAG if tsc else 0)


def pack_record(event: int, words: list[int] | tuple[int, ...], tsc: int | None) -> bytes:
    """One record: header, TSC (when not None), ``words`` (each taken mod 2**32)."""
    out = [_U32.pack(header_word(event, len(words), tsc is not None))]
    if tsc is not None:
        out.append(_U64.pack(tsc & 0xFFFF_FFFF_FFFF_FFFF))
    out.extend(_U32.pack(w & 0xFFFF_FFFF) for w in words)
    return b"".join(out)


def cpu_change(cpu: int, window_bytes: int) -> bytes:
    """The record that starts a window of ``window_bytes`` bytes of ``cpu``'s records."""
    return pack_record(TRC_TRACE_CPU_CHANGE, (cpu, window_bytes), None)


def hypercall_words(op: int, args: list[int] | tuple[int, ...]) -> list[int]:
    """The extra words of a V2 or SUBCALL record for hypercall ``op``: every
    argument that fits in 32 bits takes one word, a larger one two, while the
    six words after the op word last; the rest are marked absent (a reader
    takes them as 0, as xenalyze does)."""
    first = op & HYPERCALL_OP_MASK
    words: list[int] = [0]
    for i, a in enumerate(args[:6]):
        a &= 0xFFFF_FFFF_FFFF_FFFF
        need = 1 if a <= 0xFFFF_FFFF else 2
        if len(words) - 1 + need > 6:
            break
        if need == 1:
            words.append(a)
        else:
            words.extend((a & 0xFFFF_FFFF, a >> 32))
        first |= need << (ARG_SHIFT + 2 * i)
    words[0] = first
    return words


def hypercall_args(words: tuple[int, ...]) -> tuple[int, list[int | None]]:
    """``(op, args)`` from the extra words of a V2 or SUBCALL record: six
    arguments, None where the record does not carry one (presence bits 0, or 3,
    which no Xen writes, or words missing)."""
    if not words:
        return 0, [None] * 6
    op = words[0] & HYPERCALL_OP_MASK
    args: list[int | None] = []
    w = 1
    for i in range(6):
        present = (words[0] >> (ARG_SHIFT + 2 * i)) & 3
        if present == ARG_32 and w < len(words):
            args.append(words[w])
        elif present == ARG_64 and w + 1 < len(words):
            args.append(words[w] | words[w + 1] << 32)
        else:
            args.append(None)
        if present in (ARG_32, ARG_64):
            w += present
    return op, args


def runstate_change(domid: int, vcpu: int, old: int, new: int, tsc: int) -> bytes:
    """A ``TRC_SCHED_RUNSTATE_CHANGE`` record: vCPU ``vcpu`` of ``domid`` moves
    from runstate ``old`` to ``new`` (0 running, 1 runnable, 2 blocked, 3 offline)."""
    event = TRC_SCHED_RUNSTATE_CHANGE | (old & 3) << 8 | (new & 3) << 4
    return pack_record(event, ((vcpu & 0xFFFF) | (domid & 0xFFFF) << 16,), tsc)
