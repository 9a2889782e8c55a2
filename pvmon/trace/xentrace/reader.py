"""Reading a xentrace file: its windows, and its records merged across
physical CPUs in TSC order.

The reader memory-maps the file and keeps, per physical CPU, the spans of its
windows (two integers per window that holds records); records are decoded
as they are merged, so memory stays bounded by the file's window count, not
its record count. Every size is checked against the file before it is used:
a hostile file gets a :class:`~pvmon.errors.TraceError` naming the byte
offset, never a crash or an unbounded allocation.
"""

from __future__ import annotations

import heapq
import mmap
import os
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pvmon.errors import TraceError
from pvmon.trace.xentrace import records as R

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CPU_CHANGE_WORD = R.header_word(R.TRC_TRACE_CPU_CHANGE, 2, False)
_CPU_CHANGE_SWAPPED = int.from_bytes(_CPU_CHANGE_WORD.to_bytes(4, "little"), "big")


def is_xentrace(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts like a little-endian xentrace file (a
    ``TRC_TRACE_CPU_CHANGE`` window header). False when unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return len(head) == 4 and _U32.unpack(head)[0] == _CPU_CHANGE_WORD


@dataclass(frozen=True, slots=True)
class Record:
    """One xentrace record: physical ``cpu``, 28-bit ``event`` id, ``tsc`` (the
    record's own, or the last one seen on its CPU when it carries none; None
    before any), ``data`` (the extra u32 words), byte ``offset`` in the file,
    and whether the TSC went backwards on this CPU here (``backstep``)."""

    cpu: int
    event: int
    tsc: int | None
    data: tuple[int, ...]
    offset: int
    backstep: bool = False


class XentraceReader:
    """A xentrace file, opened and indexed by window.

    Raises :class:`~pvmon.errors.TraceError` (one line) for a file that is
    not a xentrace file, comes from a big-endian machine, is empty, names a
    CPU beyond :data:`~pvmon.trace.xentrace.records.MAX_PCPUS`, or whose last
    window is cut short (``truncated`` is then set instead when ``strict`` is
    False: the complete records before the cut are kept)."""

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = False) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                self.size = os.fstat(fh.fileno()).st_size
                if self.size == 0:
                    raise TraceError(f"{self.path.name}: empty file, not a xentrace file")
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise TraceError(f"{self.path.name}: cannot read: {exc.strerror}") from None
        #: per CPU: window spans as start, end offsets of its records, back to back
        self.windows: dict[int, array] = {}
        #: byte offset of a cut-off last window (None: the file ends on a record boundary)
        self.truncated_at: int | None = None
        self._index(strict)

    def close(self) -> None:
        """Release the file."""
        self._map.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _index(self, strict: bool) -> None:
        m, size, name = self._map, self.size, self.path.name
        if size < 12:
            raise TraceError(f"{name}: {size} bytes, too short for a xentrace file")
        first = _U32.unpack_from(m, 0)[0]
        if first != _CPU_CHANGE_WORD:
            if first == _CPU_CHANGE_SWAPPED:
                raise TraceError(f"{name}: a big-endian xentrace file (another architecture); "
                                 "only little-endian x86 traces are read")
            raise TraceError(f"{name}: not a xentrace file (it does not start with a "
                             "TRC_TRACE_CPU_CHANGE record)")
        off = 0
        while off < size:
            if off + 12 > size:
                self._cut(off, strict, "a window header")
                return
            word, cpu, length = struct.unpack_from("<IiI", m, off)
            if word != _CPU_CHANGE_WORD:
                raise TraceError(f"{name}: byte {off:#x}: expected a TRC_TRACE_CPU_CHANGE record "
                                 f"(window header), found header word {word:#010x}; the file "
                                 "is corrupt or not a xentrace file")
            if not 0 <= cpu < R.MAX_PCPUS:
                raise TraceError(f"{name}: byte {off:#x}: window of CPU {cpu}, outside 0 to "
                                 f"{R.MAX_PCPUS - 1}")
            start = off + 12
            end = start + length
            if end > size:
                self._cut(off, strict, f"the window of CPU {cpu} ({length:,} bytes)")
                end = size
            if end > start:
                self.windows.setdefault(cpu, array("Q")).extend((start, end))
            off = end

    def _cut(self, off: int, strict: bool, what: str) -> None:
        if strict:
            raise TraceError(f"{self.path.name}: truncated: {what} at byte {off:#x} runs past "
                             f"the end of the file ({self.size:,} bytes)")
        self.truncated_at = off

    @property
    def cpus(self) -> list[int]:
        """Physical CPUs that have records, in order."""
        return sorted(self.windows)

    def cpu_records(self, cpu: int) -> Iterator[Record]:
        """The records of one physical CPU in file order. A record cut by the
        end of a truncated window ends the CPU's records; one cut by the end of
        a complete window is an error (a window holds whole records)."""
        m = self._map
        spans = self.windows.get(cpu, array("Q"))
        last: int | None = None
        for w in range(0, len(spans), 2):
            off, end = spans[w], spans[w + 1]
            while off < end:
                if off + 4 > end:
                    return self._short(off, end)
                word = _U32.unpack_from(m, off)[0]
                n = (word >> R.TRACE_EXTRA_SHIFT) & R.TRACE_EXTRA_MAX
                cyc = word >> 31
                rec_end = off + 4 + 8 * cyc + 4 * n
                if rec_end > end:
                    return self._short(off, end)
                backstep = False
                if cyc:
                    tsc = _U64.unpack_from(m, off + 4)[0]
                    if last is not None and tsc < last:
                        backstep = True
                    last = tsc
                data = struct.unpack_from(f"<{n}I", m, off + 4 + 8 * cyc) if n else ()
                yield Record(cpu, word & R.EVENT_MASK, last, data, off, backstep)
                off = rec_end

    def _short(self, off: int, end: int) -> None:
        if self.truncated_at is not None and end == self.size:
            return
        raise TraceError(f"{self.path.name}: byte {off:#x}: a record runs past the end of its "
                         f"window (byte {end:#x}); the file is corrupt")

    def records(self) -> Iterator[Record]:
        """Every record of every CPU, merged by TSC (ties: lower CPU first, then
        file order). A TSC that goes backwards on one CPU (a wrapped or reset
        counter) keeps that CPU's file order: the record sorts at the largest
        TSC seen on its CPU so far."""
        def keyed(cpu: int) -> Iterator[tuple[int, int, int, Record]]:
            top = 0
            for rec in self.cpu_records(cpu):
                if rec.tsc is not None and rec.tsc > top:
                    top = rec.tsc
                yield top, cpu, rec.offset, rec
        for *_, rec in heapq.merge(*(keyed(c) for c in self.cpus)):
            yield rec
