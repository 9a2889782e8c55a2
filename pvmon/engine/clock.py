"""Virtual time: the only clock a guest ever sees.

Virtual time advances by fixed, documented amounts at points defined only by
what the guest executed (a hypercall, a TSC read, a fault), and jumps forward
when the guest blocks until its next timer. The host clock is never read, so
two runs of the same guest produce the same times.

Units: ``now_ns`` in ns since the machine started; the TSC runs at
``tsc_khz`` kHz and reads ``tsc_at(now_ns)``. With the default 1 GHz TSC one
cycle is one ns.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClockCosts:
    """What each guest action costs in virtual ns."""

    hypercall_ns: int = 1_000
    tsc_read_ns: int = 40
    fault_ns: int = 500
    cpuid_ns: int = 100


class VirtualClock:
    """Deterministic virtual clock. ``tsc_khz``: TSC frequency in kHz."""

    def __init__(self, tsc_khz: int = 1_000_000, costs: ClockCosts | None = None) -> None:
        self.tsc_khz = tsc_khz
        self.costs = costs or ClockCosts()
        self.now_ns = 0
        self._tsc_reads = 0

    def advance(self, ns: int) -> int:
        """Move virtual time forward by ``ns`` (>= 0); returns the new time in ns."""
        if ns > 0:
            self.now_ns += ns
        return self.now_ns

    def advance_to(self, t_ns: int) -> int:
        """Move virtual time forward to ``t_ns`` if that is in the future."""
        self.now_ns = max(self.now_ns, t_ns)
        return self.now_ns

    def tsc_at(self, t_ns: int) -> int:
        """TSC value (cycles) at virtual time ``t_ns``."""
        return t_ns * self.tsc_khz // 1_000_000

    def read_tsc(self) -> int:
        """A guest TSC read: advances time by the read cost plus a small
        deterministic jitter (0..15 ns, from a counter, so that guests that
        measure TSC deltas for entropy see varying but repeatable deltas), then
        returns the TSC in cycles."""
        n = self._tsc_reads = self._tsc_reads + 1
        now = self.now_ns = self.now_ns + self.costs.tsc_read_ns + (((n * 2654435761) >> 7) & 15)
        return now * self.tsc_khz // 1_000_000     # tsc_at, inline: ~120,000 reads a boot
