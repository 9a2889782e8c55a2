"""Trace files (`.pvt`): record every guest<->hypervisor interaction of a run and read it back.

- :class:`TraceWriter` records (used by the engine's recorder).
- :class:`TraceReader` reads, seeks by seq or virtual time, survives truncation.

The format is documented in ``docs/trace-format.md``.
"""

from pvmon.trace.format import FORMAT_VERSION, FrameInfo
from pvmon.trace.reader import TraceReader
from pvmon.trace.writer import TraceWriter

__all__ = ["FORMAT_VERSION", "FrameInfo", "TraceReader", "TraceWriter"]
