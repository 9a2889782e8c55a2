"""kvmclock's shared structures and their arithmetic.

``struct pvclock_vcpu_time_info`` (32 bytes) and ``struct
pvclock_wall_clock`` (12 bytes), both packed, little endian
(``arch/x86/include/asm/pvclock-abi.h``; ``Documentation/virt/kvm/x86/msr.rst``):

====== ===================== ==========================================
offset field                 meaning
====== ===================== ==========================================
0      u32 version           odd while the host updates the record
8      u64 tsc_timestamp     guest TSC when ``system_time`` was taken
16     u64 system_time       ns since the guest's boot
24     u32 tsc_to_system_mul ns per TSC tick, 32.32 fixed point ...
28     s8  tsc_shift         ... after shifting the delta by this
29     u8  flags             bit 0 PVCLOCK_TSC_STABLE_BIT
====== ===================== ==========================================

Guest time = ``system_time + scale_delta(tsc - tsc_timestamp, mul, shift)``
(Linux ``pvclock_scale_delta``); the guest's TSC rate is
``(10^6 << 32) / mul`` kHz shifted by ``-shift`` (``pvclock_tsc_khz``).

The wall clock is the time of day at which ``system_time`` was 0.
"""

from __future__ import annotations

import struct

TIME_INFO_BYTES = 32
WALL_CLOCK_BYTES = 12
_NSEC_PER_SEC = 1_000_000_000


def time_scale(base_hz: int, scaled_hz: int = _NSEC_PER_SEC) -> tuple[int, int]:
    """``(tsc_to_system_mul, tsc_shift)`` converting ticks of ``base_hz`` to
    ticks of ``scaled_hz`` (ns by default), computed as KVM does
    (``kvm_get_time_scale`` in ``arch/x86/kvm/x86.c``). Raises ValueError for
    a rate that is not positive."""
    if base_hz <= 0 or scaled_hz <= 0:
        raise ValueError("clock rates must be positive")
    shift = 0
    tps64, scaled64 = base_hz, scaled_hz
    while tps64 > scaled64 * 2 or tps64 >> 32:
        tps64 >>= 1
        shift -= 1
    tps32 = tps64 & 0xFFFFFFFF
    while tps32 <= scaled64 or scaled64 >> 32:
        if scaled64 >> 32 or tps32 & 0x80000000:
            scaled64 >>= 1
        else:
            tps32 <<= 1
        shift += 1
    return (scaled64 << 32) // tps32, shift


def scale_delta(delta: int, mul: int, shift: int) -> int:
    """Linux ``pvclock_scale_delta``: ``delta`` TSC ticks -> ns."""
    delta = delta << shift if shift >= 0 else delta >> -shift
    return (delta * mul) >> 32


def tsc_khz(mul: int, shift: int) -> int:
    """Linux ``pvclock_tsc_khz``: the TSC rate a guest derives from a record."""
    khz = (1_000_000 << 32) // mul
    return khz << -shift if shift < 0 else khz >> shift


def pack_time_info(version: int, tsc_timestamp: int, system_time: int, mul: int, shift: int,
                   flags: int) -> bytes:
    """A ``pvclock_vcpu_time_info`` record (32 bytes)."""
    return struct.pack("<IIQQIbB2x", version & 0xFFFFFFFF, 0, tsc_timestamp & (2**64 - 1),
                       system_time & (2**64 - 1), mul, shift, flags)


def unpack_time_info(data: bytes) -> dict:
    """The fields of a ``pvclock_vcpu_time_info`` record."""
    v, _, ts, st, mul, shift, flags = struct.unpack("<IIQQIbB2x", data[:TIME_INFO_BYTES])
    return {"version": v, "tsc_timestamp": ts, "system_time": st, "mul": mul, "shift": shift,
            "flags": flags}


def pack_wall_clock(version: int, sec: int, nsec: int) -> bytes:
    """A ``pvclock_wall_clock`` record (12 bytes)."""
    return struct.pack("<III", version & 0xFFFFFFFF, sec & 0xFFFFFFFF, nsec)


__all__ = ["TIME_INFO_BYTES", "WALL_CLOCK_BYTES", "pack_time_info", "pack_wall_clock",
           "scale_delta", "time_scale", "tsc_khz", "unpack_time_info"]
