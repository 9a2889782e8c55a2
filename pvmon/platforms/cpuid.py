"""CPUID policies as tables: what every platform's answer to CPUID shares.

A policy is ``{(leaf, subleaf): (eax, ebx, ecx, edx)}``; leaves whose
sub-leaf does not matter are stored with sub-leaf 0. Each ABI builds its own
(:mod:`pvmon.backends.xen.cpuid` for Xen PV and PVH).
"""

from __future__ import annotations

#: Leaves whose sub-leaf selects the answer (SDM vol. 2, CPUID): 4 (cache
#: parameters), 7 (structured extended features), 0xD (XSAVE state).
SUBLEAF_LEAVES = frozenset({4, 7, 0xD})


def lookup(policy: dict, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
    """Answer one CPUID query from ``policy``; unknown leaves read as zeros,
    as on hardware beyond the maximum leaf."""
    r = policy.get((leaf, subleaf))
    if r is None and leaf not in SUBLEAF_LEAVES:
        r = policy.get((leaf, 0))
    return r if r is not None else (0, 0, 0, 0)
