"""Reading `.pvt` traces: :class:`TraceReader`.

The reader trusts nothing in the file: every length is checked against the
file size and the limits in :mod:`pvmon.trace.format` before anything is
allocated, every record carries a CRC or a zstd checksum, and every failure is
one :class:`~pvmon.errors.TraceError` naming the byte position.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import operator
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import msgpack
import ormsgpack
import zstandard

from pvmon.errors import TraceError
from pvmon.trace import format as fmt
from pvmon.trace.format import FrameInfo


class TraceReader:
    """Random access to a `.pvt` trace.

    Attributes after opening (no event frame is decompressed to open a file):

    - ``header``: the run's header dict (see ``docs/trace-format.md``).
    - ``version``: the file's format version.
    - ``complete``: True if the file ends with a valid seek table (the writer
      was closed); False if it was cut off (crash, kill), in which case the
      index was rebuilt by scanning frame descriptors.
    - ``truncated_after``: None if complete, else the seq of the last intact
      event (-1 if no event survived).
    - ``frames``: list of :class:`~pvmon.trace.format.FrameInfo`.
    - ``file_size``: bytes.
    - ``frames_decompressed``: how many event frames were decompressed so far
      (a counter for tests and benchmarks; a re-read of the cached last frame
      does not count).

    Raises :class:`~pvmon.errors.TraceError` on any unreadable, corrupt or
    unknown-version input, from the constructor or while iterating.
    Usable as a context manager; :meth:`close` releases the file.
    """

    header: dict[str, Any]
    version: int
    complete: bool
    truncated_after: int | None
    frames: list[FrameInfo]

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot open trace: {exc.strerror}") from exc
        try:
            self.file_size = os.fstat(self._fd).st_size
            self.frames_decompressed = 0
            self._cache: tuple[int, list[dict[str, Any]]] | None = None
            self.version = self._read_version()
            opener = _FORMATS.get(self.version)
            if opener is None:
                raise TraceError(
                    f"{self.path}: trace format version {self.version} is not supported by this"
                    f" pvmon (it reads versions {sorted(_FORMATS)})")
            self._format = opener
            opener.open(self)
            self._first_seqs = [f.first_seq for f in self.frames]
            self._last_ts = [f.last_t for f in self.frames]
            self._len = self.frames[-1].stop_seq if self.frames else 0
            self.truncated_after = None if self.complete else self._len - 1
        except BaseException:
            self.close()
            raise

    # -- public API -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of events (intact events, for a truncated file)."""
        return self._len

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.events()

    def events(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Events with ``start <= seq < stop`` in order; decompresses only their frames."""
        n = self._len
        stop = n if stop is None else max(0, min(stop, n))
        start = max(0, start)
        if start >= stop:
            return
        i = bisect.bisect_right(self._first_seqs, start) - 1
        while i < len(self.frames):
            frame = self.frames[i]
            if frame.first_seq >= stop:
                return
            evs = self._load(i)
            lo = max(start - frame.first_seq, 0)
            hi = min(stop - frame.first_seq, frame.count)
            if lo == 0 and hi == frame.count:
                yield from evs
            else:
                yield from evs[lo:hi]
            i += 1

    def frame_bytes(self, index: int) -> bytes:
        """The msgpack content of frame ``index`` (its events packed back to
        back), checked against its descriptor and zstd checksum but not
        decoded: what verify-replay compares byte for byte."""
        self.frames_decompressed += 1
        return self._format.frame_raw(self, self.frames[index])

    def frame_events(self, index: int) -> list[dict[str, Any]]:
        """All events of frame ``index`` (a list; do not mutate it)."""
        return self._load(index)

    def seek_time(self, t_ns: int) -> int:
        """Seq of the first event with virtual time ``>= t_ns``; ``len(self)`` if none.

        Decompresses at most one frame.
        """
        i = bisect.bisect_left(self._last_ts, t_ns)
        if i >= len(self.frames):
            return self._len
        frame = self.frames[i]
        if frame.first_t >= t_ns:
            return frame.first_seq
        evs = self._load(i)
        lo, hi = 0, len(evs)
        while lo < hi:
            mid = (lo + hi) // 2
            if evs[mid]["t"] < t_ns:
                lo = mid + 1
            else:
                hi = mid
        return frame.first_seq + lo

    @property
    def first_t(self) -> int | None:
        """Virtual time (ns) of the first event, None if there is none."""
        return self.frames[0].first_t if self.frames else None

    @property
    def last_t(self) -> int | None:
        """Virtual time (ns) of the last event, None if there is none."""
        return self.frames[-1].last_t if self.frames else None

    def close(self) -> None:
        """Release the file. Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            os.close(fd)

    # -- internals --------------------------------------------------------------------------

    def _error(self, offset: int, what: str) -> TraceError:
        return TraceError(f"{self.path}: corrupt trace at byte {offset}: {what}")

    def _pread(self, offset: int, size: int) -> bytes:
        if self._fd < 0:
            raise TraceError(f"{self.path}: trace reader is closed")
        try:
            return os.pread(self._fd, size, offset)
        except OSError as exc:
            raise TraceError(f"{self.path}: read failed at byte {offset}: {exc.strerror}") from exc

    def _read_version(self) -> int:
        head = self._pread(0, fmt.SKIP_HDR.size + fmt.PREAMBLE_STABLE.size)
        if len(head) < fmt.SKIP_HDR.size + fmt.PREAMBLE_STABLE.size:
            raise TraceError(f"{self.path}: not a pvmon trace (too short)")
        magic, _size = fmt.SKIP_HDR.unpack_from(head)
        tag, version = fmt.PREAMBLE_STABLE.unpack_from(head, fmt.SKIP_HDR.size)
        if magic != fmt.PREAMBLE_MAGIC or tag != fmt.PREAMBLE_TAG:
            raise TraceError(f"{self.path}: not a pvmon trace (bad magic)")
        return version

    def _load(self, index: int) -> list[dict[str, Any]]:
        cache = self._cache
        if cache is not None and cache[0] == index:
            return cache[1]
        evs = self._format.decode_frame(self, self.frames[index])
        self.frames_decompressed += 1
        self._cache = (index, evs)
        return evs


# -- format version 1 ------------------------------------------------------------------------

def _unpacker(limit: int) -> msgpack.Unpacker:
    limit = max(limit, 1)
    return msgpack.Unpacker(None, raw=False, strict_map_key=False, use_list=True,
                            max_buffer_size=limit, max_str_len=limit, max_bin_len=limit,
                            max_array_len=limit, max_map_len=limit, max_ext_len=0)


# Frames are decoded with ormsgpack (Rust, about 1.4x msgpack-python on recorded
# hypercalls) by reading the frame's `count` events as the elements of one msgpack
# array: an array header is put in front of them and an end marker after them. The
# marker is a string with a per-process random part, so no file can contain it: it
# comes back as the last element exactly when the events end at the frame's end.
# Anything else (a frame that ends inside an event or has bytes left over, non-string
# map keys, ext types, nesting deeper than ormsgpack allows) goes to msgpack-python,
# the reference decoder, which accepts what it accepts and names what is wrong.
_END_TEXT = "pvmon-frame-end-" + os.urandom(8).hex()
_END = ormsgpack.packb(_END_TEXT)
_ARRAY32 = struct.Struct(">BI")


def _fast_events(raw: bytes, count: int) -> list[Any] | None:
    """The ``count`` msgpack objects packed back to back in ``raw``, or None when
    the fast decoder cannot vouch for them (the caller then uses msgpack-python)."""
    try:
        out = ormsgpack.unpackb(_ARRAY32.pack(0xDD, count + 1) + raw + _END)
    except Exception:  # noqa: BLE001 - any refusal sends the frame to the reference decoder
        return None
    if type(out) is not list or len(out) != count + 1 or out[-1] != _END_TEXT:
        return None
    out.pop()
    return out


class _V1:
    """Versions 1 and 2: preamble, header frame, (descriptor, zstd frame)*, seek table."""

    _dctx = zstandard.ZstdDecompressor(max_window_size=fmt.MAX_WINDOW)

    @classmethod
    def open(cls, r: TraceReader) -> None:
        head = r._pread(0, fmt.PREAMBLE_SIZE)
        if len(head) < fmt.PREAMBLE_SIZE:
            raise TraceError(f"{r.path}: truncated inside the preamble")
        _magic, size = fmt.SKIP_HDR.unpack_from(head)
        body = head[fmt.SKIP_HDR.size:]
        _tag, _v, comp_len, raw_len, flags, crc = fmt.PREAMBLE_V1.unpack(body)
        if size != fmt.PREAMBLE_V1.size or crc != fmt.crc32(body[:-4]):
            raise r._error(0, "bad preamble (size or checksum)")
        if flags != 0:
            raise r._error(0, f"unknown preamble flags {flags:#x}")
        if raw_len > fmt.MAX_HEADER_RAW:
            raise r._error(0, f"header size {raw_len} exceeds the limit {fmt.MAX_HEADER_RAW}")
        header_end = fmt.PREAMBLE_SIZE + comp_len
        if header_end > r.file_size:
            raise TraceError(f"{r.path}: truncated inside the header (file is {r.file_size}"
                             " bytes)")
        raw = cls._decompress(r, fmt.PREAMBLE_SIZE, r._pread(fmt.PREAMBLE_SIZE, comp_len),
                              raw_len)
        unpacker = _unpacker(raw_len)
        unpacker.feed(raw)
        try:
            header = unpacker.unpack()
            consumed = unpacker.tell()
        except Exception as exc:  # noqa: BLE001 - any unpack failure means a bad file
            raise r._error(fmt.PREAMBLE_SIZE, f"bad header: {_why(exc)}") from None
        if consumed != raw_len:
            raise r._error(fmt.PREAMBLE_SIZE, "junk after the header map")
        if not isinstance(header, dict) or header.get("format") != fmt.FORMAT_NAME:
            raise r._error(fmt.PREAMBLE_SIZE, "header is not a pvmon-trace header map")
        if header.get("version") != r.version:
            raise r._error(fmt.PREAMBLE_SIZE,
                           f"header says version {header.get('version')!r}, preamble {r.version}")
        r.header = header
        table = cls._read_seek_table(r, header_end)
        if table is not None:
            r.frames, r.complete = table, True
        else:
            r.frames, r.complete = cls._scan(r, header_end), False

    @classmethod
    def _read_seek_table(cls, r: TraceReader, header_end: int) -> list[FrameInfo] | None:
        """The frames listed in the seek table, or None if the file has no end marker."""
        size = r.file_size
        if size - header_end < fmt.SKIP_HDR.size + fmt.SEEK_FOOTER.size:
            return None
        footer = r._pread(size - fmt.SEEK_FOOTER.size, fmt.SEEK_FOOTER.size)
        n_events, n_frames, crc, end = fmt.SEEK_FOOTER.unpack(footer)
        if end != fmt.END_MAGIC:
            return None
        table_size = fmt.SKIP_HDR.size + n_frames * fmt.SEEK_ENTRY.size + fmt.SEEK_FOOTER.size
        start = size - table_size
        if start < header_end:
            raise r._error(size - fmt.SEEK_FOOTER.size, f"seek table claims {n_frames} frames,"
                           " more than the file holds")
        blob = r._pread(start, table_size)
        magic, payload_len = fmt.SKIP_HDR.unpack_from(blob)
        if magic != fmt.SEEK_MAGIC or payload_len != table_size - fmt.SKIP_HDR.size:
            raise r._error(start, "bad seek table frame header")
        entries = blob[fmt.SKIP_HDR.size:-fmt.SEEK_FOOTER.size]
        if crc != fmt.crc32(entries, footer[:12]):
            raise r._error(start, "seek table checksum mismatch")
        frames = []
        pos, seq, prev_t = header_end, 0, None
        for i, fields in enumerate(fmt.SEEK_ENTRY.iter_unpack(entries)):
            offset, first_seq, first_t, last_t, count, comp_len, raw_len = fields
            frame = FrameInfo(i, offset, first_seq, count, first_t, last_t, comp_len, raw_len)
            why = cls._check_frame(frame, pos, seq, prev_t)
            if why:
                raise r._error(start, f"seek table entry {i}: {why}")
            frames.append(frame)
            pos, seq, prev_t = frame.end, frame.stop_seq, last_t
        if pos != start:
            raise r._error(start, "seek table does not match the frames before it")
        if seq != n_events:
            raise r._error(start, f"seek table counts {n_events} events, its frames {seq}")
        return frames

    @staticmethod
    def _check_frame(f: FrameInfo, pos: int, seq: int, prev_t: int | None) -> str | None:
        if f.offset != pos:
            return f"frame at {f.offset}, expected {pos}"
        if f.first_seq != seq:
            return f"first seq {f.first_seq}, expected {seq}"
        if not 1 <= f.count <= min(fmt.MAX_FRAME_EVENTS, f.raw_len):
            return f"bad event count {f.count}"
        if f.raw_len > fmt.MAX_FRAME_RAW:
            return f"frame size {f.raw_len} exceeds the limit {fmt.MAX_FRAME_RAW}"
        if f.last_t < f.first_t or (prev_t is not None and f.first_t < prev_t):
            return "virtual time goes backwards"
        return None

    @classmethod
    def _parse_descriptor(cls, r: TraceReader, offset: int, blob: bytes) -> FrameInfo:
        magic, size = fmt.SKIP_HDR.unpack_from(blob)
        if magic != fmt.DESC_MAGIC or size != fmt.DESC.size:
            raise r._error(offset, "expected a frame descriptor")
        body = blob[fmt.SKIP_HDR.size:fmt.DESC_SIZE]
        comp_len, raw_len, count, flags, first_seq, first_t, last_t, crc = fmt.DESC.unpack(body)
        if crc != fmt.crc32(body[:-4]):
            raise r._error(offset, "frame descriptor checksum mismatch")
        if flags != 0:
            raise r._error(offset, f"unknown frame flags {flags:#x}")
        return FrameInfo(-1, offset, first_seq, count, first_t, last_t, comp_len, raw_len)

    @classmethod
    def _scan(cls, r: TraceReader, header_end: int) -> list[FrameInfo]:
        """Rebuild the index of a file without seek table from its frame descriptors."""
        frames: list[FrameInfo] = []
        pos, seq, prev_t, size = header_end, 0, None, r.file_size
        while size - pos >= fmt.SKIP_HDR.size:
            blob = r._pread(pos, fmt.DESC_SIZE)
            magic, payload_len = fmt.SKIP_HDR.unpack_from(blob)
            if magic == fmt.SEEK_MAGIC:
                if pos + fmt.SKIP_HDR.size + payload_len > size:
                    break  # cut off while writing the seek table
                raise r._error(pos, "seek table without a valid end marker")
            if magic != fmt.DESC_MAGIC or payload_len != fmt.DESC.size:
                raise r._error(pos, "expected a frame descriptor")
            if len(blob) < fmt.DESC_SIZE:
                break  # cut off inside a descriptor
            d = cls._parse_descriptor(r, pos, blob)
            frame = FrameInfo(len(frames), pos, d.first_seq, d.count, d.first_t, d.last_t,
                              d.comp_len, d.raw_len)
            why = cls._check_frame(frame, pos, seq, prev_t)
            if why:
                raise r._error(pos, why)
            if frame.end > size:
                break  # cut off inside the frame
            frames.append(frame)
            pos, seq, prev_t = frame.end, frame.stop_seq, frame.last_t
        return frames

    @classmethod
    def _decompress(cls, r: TraceReader, offset: int, comp: bytes, raw_len: int) -> bytes:
        try:
            params = zstandard.get_frame_parameters(comp)
        except zstandard.ZstdError as exc:
            raise r._error(offset, f"bad zstd frame header: {_why(exc)}") from None
        if params.content_size != raw_len:
            raise r._error(offset, f"zstd frame holds {params.content_size} bytes,"
                           f" descriptor says {raw_len}")
        if not params.has_checksum:
            raise r._error(offset, "zstd frame without checksum")
        if params.window_size > fmt.MAX_WINDOW:
            raise r._error(offset, f"zstd window {params.window_size} exceeds the limit")
        dobj = cls._dctx.decompressobj()
        try:
            raw = dobj.decompress(comp)
        except zstandard.ZstdError as exc:
            raise r._error(offset, f"zstd: {_why(exc)}") from None
        if not dobj.eof or dobj.unused_data or len(raw) != raw_len:
            raise r._error(offset, "zstd frame length does not match its descriptor")
        return raw

    @classmethod
    def frame_raw(cls, r: TraceReader, frame: FrameInfo) -> bytes:
        blob = r._pread(frame.offset, fmt.DESC_SIZE + frame.comp_len)
        if len(blob) != fmt.DESC_SIZE + frame.comp_len:
            raise TraceError(f"{r.path}: file shrank: frame at byte {frame.offset} is cut off")
        d = cls._parse_descriptor(r, frame.offset, blob)
        if (d.first_seq, d.count, d.first_t, d.last_t, d.comp_len, d.raw_len) != (
                frame.first_seq, frame.count, frame.first_t, frame.last_t, frame.comp_len,
                frame.raw_len):
            raise r._error(frame.offset, "frame descriptor does not match the seek table")
        return cls._decompress(r, frame.offset, memoryview(blob)[fmt.DESC_SIZE:], frame.raw_len)

    @classmethod
    def decode_frame(cls, r: TraceReader, frame: FrameInfo) -> list[dict[str, Any]]:
        raw = cls.frame_raw(r, frame)
        # Decoded msgpack holds no reference cycles; collecting while building
        # thousands of containers only costs time (about 2x on a full read).
        gc_on = gc.isenabled()
        gc.disable()
        try:
            evs = _fast_events(raw, frame.count)
            if evs is None:
                evs = cls._reference_decode(r, frame, raw)
        finally:
            if gc_on:
                gc.enable()
        # Every event must be a map with the right seq, an int time that never
        # decreases and a str kind; checked with C-speed passes, not a Python loop.
        try:
            seqs = [ev["seq"] for ev in evs]
            times = [ev["t"] for ev in evs]
            kinds = {type(ev["k"]) for ev in evs}
        except (TypeError, KeyError, IndexError):
            raise r._error(frame.offset, "an event is not a map with seq, t and k") from None
        if seqs != list(range(frame.first_seq, frame.first_seq + frame.count)):
            raise r._error(frame.offset, "event seqs are not consecutive from the descriptor's")
        if set(map(type, times)) != {int} or kinds != {str}:
            raise r._error(frame.offset, "an event's t is not an int or its k not a str")
        if times[0] != frame.first_t or times[-1] != frame.last_t or \
                not all(map(operator.le, times, itertools.islice(times, 1, None))):
            raise r._error(frame.offset, "event times go backwards or disagree with the"
                           " descriptor")
        return evs

    @staticmethod
    def _reference_decode(r: TraceReader, frame: FrameInfo, raw: bytes) -> list[Any]:
        unpacker = _unpacker(frame.raw_len)
        unpacker.feed(raw)
        try:
            evs = list(itertools.islice(unpacker, frame.count + 1))
            consumed = unpacker.tell()
        except Exception as exc:  # noqa: BLE001 - any unpack failure means a bad file
            raise r._error(frame.offset, f"bad msgpack in frame: {_why(exc)}") from None
        if consumed != frame.raw_len:
            raise r._error(frame.offset, "frame ends inside an event")
        if len(evs) != frame.count:
            raise r._error(frame.offset, f"frame holds {len(evs)} events, descriptor says"
                           f" {frame.count}")
        return evs


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


# Versions 2 to 4 changed the event vocabulary and header (tsc_run; the
# platform and the HVM events; io_run), not the container.
_FORMATS: dict[int, type[_V1]] = {1: _V1, 2: _V1, 3: _V1, 4: _V1}
assert set(_FORMATS) == set(fmt.READ_VERSIONS)

__all__ = ["FrameInfo", "TraceReader"]
