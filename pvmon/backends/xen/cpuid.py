"""The Xen PV CPUID policy: a fixed answer for every leaf, never the host's.

What must be hidden for a Linux PV boot (measured, DESIGN.md): PSE and PSE36
(Xen PV never allows superpages, and Linux would build 2 MiB mappings),
MTRR, VMX, MONITOR, RDRAND/RDSEED (random, nondeterministic), XSAVE/OSXSAVE/AVX
(xsetbv is privileged), x2APIC/APIC. The hypervisor bit is set and the Xen
leaves at 0x40000000 are answered (xen/include/public/arch-x86/cpuid.h).
"""

from __future__ import annotations

import struct

from pvmon.platforms.cpuid import lookup  # noqa: F401 - the policy lookup, re-exported


def _regs(s: bytes) -> tuple[int, int, int]:
    return struct.unpack("<III", s)


# Leaf 1 EDX: FPU VME DE TSC MSR PAE MCE CX8 SEP PGE MCA CMOV PAT CLFSH MMX FXSR SSE SSE2
_L1_EDX = sum(1 << b for b in (0, 1, 2, 4, 5, 6, 7, 8, 11, 13, 14, 15, 16, 19, 23, 24, 25, 26))
# Leaf 1 ECX: SSE3 PCLMULQDQ SSSE3 CX16 SSE4.1 SSE4.2 POPCNT AES HYPERVISOR
_L1_ECX = sum(1 << b for b in (0, 1, 9, 13, 19, 20, 23, 25, 31))
# 0x80000001 EDX: SYSCALL NX LM; ECX: LAHF_LM
_E1_EDX = (1 << 11) | (1 << 20) | (1 << 29)
_E1_ECX = 1


def xen_cpuid_policy(xen_major: int, xen_minor: int) -> dict[tuple[int, int], tuple[int, ...]]:
    """The policy as ``{(leaf, subleaf): (eax, ebx, ecx, edx)}``. Leaves whose
    sub-leaf does not matter are stored with subleaf 0 and looked up by leaf."""
    vendor = _regs(b"GenuineIntel")   # ebx, edx, ecx order below
    brand = b"pvmon virtual CPU (Xen PV)".ljust(48, b"\0")
    b = [struct.unpack_from("<4I", brand, i * 16) for i in range(3)]
    xen = _regs(b"XenVMMXenVMM")
    return {
        (0, 0): (0xD, vendor[0], vendor[2], vendor[1]),
        # family 6 model 0x8F stepping 8 (Sapphire Rapids, a current Xen host; Xen
        # passes the host's signature through to PV guests); one logical CPU;
        # CLFLUSH line 64 bytes. Not Skylake-X (0x55), which Linux lists as
        # RETBleed-affected and so WARNs that retpolines leave it vulnerable.
        (1, 0): (0x000806F8, 0x00000800, _L1_ECX, _L1_EDX),
        (2, 0): (0x00000001, 0, 0, 0x002C307D),
        (4, 0): (0x00000121, 0x01C0003F, 0x0000003F, 0),
        (6, 0): (0, 0, 0, 0),
        # leaf 7: FSGSBASE no; ERMS (bit 9) yes; nothing random, no SMEP/SMAP
        (7, 0): (0, 1 << 9, 0, 0),
        (0xD, 0): (0, 0, 0, 0),
        (0x80000000, 0): (0x80000008, 0, 0, 0),
        (0x80000001, 0): (0, 0, _E1_ECX, _E1_EDX),
        (0x80000002, 0): b[0], (0x80000003, 0): b[1], (0x80000004, 0): b[2],
        (0x80000006, 0): (0, 0, 0x01006040, 0),
        (0x80000007, 0): (0, 0, 0, 1 << 8),      # invariant TSC
        (0x80000008, 0): (0x3028, 0, 0, 0),      # 40 physical, 48 virtual address bits
        # xen/include/public/arch-x86/cpuid.h: base leaf, version, hypercall pages + MSR,
        # TSC mode, HVM features (none for PV), PV features.
        (0x40000000, 0): (0x40000005, xen[0], xen[1], xen[2]),
        (0x40000001, 0): ((xen_major << 16) | xen_minor, 0, 0, 0),
        (0x40000002, 0): (1, 0x40000000, 0, 0),
        (0x40000003, 0): (0, 0, 1_000_000, 0),   # tsc_mode 0, TSC kHz in ecx
        (0x40000004, 0): (0, 0, 0, 0),
        (0x40000005, 0): (0, 0, 0, 0),
    }
