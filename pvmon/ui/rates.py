"""Hypercall rate over virtual time, for the sparkline.

Counts events in buckets of virtual time. The bucket width starts at
``initial_ns`` and doubles (merging neighbours) whenever the run outgrows
``max_buckets``, so any run, 8 ms or 8 s of virtual time, fits the same
sparkline. Everything depends only on the events' virtual times, so a trace
always draws the same picture. The player uses it for its timeline and rate
sparkline (the live view shows calls per wall-clock second instead).
"""

from __future__ import annotations


class RateHistory:
    """``counts[i]``: events with ``start_ns + i*width_ns <= t < start_ns + (i+1)*width_ns``."""

    def __init__(self, max_buckets: int = 64, initial_ns: int = 50_000) -> None:
        self.max_buckets = max_buckets
        self.width_ns = initial_ns
        self.start_ns = 0
        self.counts: list[int] = [0]
        self.total = 0

    def add_time(self, t_ns: int) -> None:
        """Count one event at virtual time ``t_ns`` (times never decrease)."""
        i = (t_ns - self.start_ns) // self.width_ns
        while i >= self.max_buckets:
            c = self.counts
            if len(c) % 2:
                c.append(0)
            self.counts = [c[j] + c[j + 1] for j in range(0, len(c), 2)]
            self.width_ns *= 2
            i = (t_ns - self.start_ns) // self.width_ns
        if i >= len(self.counts):
            self.counts.extend([0] * (i + 1 - len(self.counts)))
        self.counts[max(i, 0)] += 1
        self.total += 1

    def per_ms(self) -> list[float]:
        """Each bucket's rate in events per virtual millisecond."""
        w = self.width_ns / 1e6
        return [c / w for c in self.counts]

    def recent_per_ms(self) -> float:
        """Rate in the last full bucket (the current one if it is the only one)."""
        c = self.counts
        if len(c) >= 2:
            return c[-2] / (self.width_ns / 1e6)
        return c[-1] / (self.width_ns / 1e6)
