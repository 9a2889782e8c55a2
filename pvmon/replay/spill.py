"""An append-only spill of msgpack records in an unnamed temporary file, read
back in order: how a replay keeps streams and reports that grow with the trace
(the replayed events after a divergence, every divergence past the first few)
out of memory.

Records are packed back to back into a buffer; every :data:`CHUNK` bytes the
buffer is compressed (zstd) and appended to the file as ``u32 length`` +
frame. Memory held: one chunk while writing, one chunk while reading. The
file has no name (``tempfile.TemporaryFile``): it disappears when the spill is
closed, collected or the process ends.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import msgpack
import zstandard

CHUNK = 1 << 20          # bytes of packed records per compressed chunk
_LEN = struct.Struct("<I")


class Spill:
    """Records appended with :meth:`append` (a msgpack-able value) or
    :meth:`append_packed` (bytes already packed as one msgpack object), read
    back in order by iterating (each record decoded as ``msgpack.unpackb(...,
    raw=False)`` would). Iterating does not end the spill: records appended
    later are seen by a later iteration. ``len()`` is the number of records.
    Raises OSError if the temporary file cannot be written (a full disk)."""

    def __init__(self, chunk: int = CHUNK) -> None:
        self._chunk = chunk
        self._buf = bytearray()
        self._file: IO[bytes] | None = None
        self._size = 0               # bytes of chunks in the file
        self._count = 0
        self._cctx = zstandard.ZstdCompressor(level=1)
        self._packer = msgpack.Packer(use_bin_type=True, default=str)

    def __len__(self) -> int:
        return self._count

    def append(self, record: Any) -> None:
        """Add one record (values msgpack cannot hold are stored as ``str``)."""
        self.append_packed(self._packer.pack(record))

    def append_packed(self, data: bytes | bytearray) -> None:
        """Add one record given as its msgpack bytes."""
        self._buf += data
        self._count += 1
        if len(self._buf) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="pvmon-spill-")  # noqa: SIM115 - lives as long as the spill
        comp = self._cctx.compress(bytes(self._buf))
        self._file.seek(self._size)
        self._file.write(_LEN.pack(len(comp)) + comp)
        self._file.flush()
        self._size += _LEN.size + len(comp)
        self._buf.clear()

    def _chunks(self) -> Iterator[bytes]:
        pos, size = 0, self._size
        dctx = zstandard.ZstdDecompressor()
        fd = self._file.fileno() if self._file is not None else -1
        while pos < size:
            (n,) = _LEN.unpack(os.pread(fd, _LEN.size, pos))
            yield dctx.decompress(os.pread(fd, n, pos + _LEN.size))
            pos += _LEN.size + n
        if self._buf:
            yield bytes(self._buf)

    def __iter__(self) -> Iterator[Any]:
        for raw in self._chunks():
            unpacker = msgpack.Unpacker(None, raw=False, strict_map_key=False,
                                        max_buffer_size=max(len(raw), 1))
            unpacker.feed(raw)
            yield from unpacker

    def close(self) -> None:
        """Drop every record and delete the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buf = bytearray()
        self._size = self._count = 0


__all__ = ["CHUNK", "Spill"]
