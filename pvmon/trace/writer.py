"""Writing `.pvt` traces: :class:`TraceWriter`."""

from __future__ import annotations

import atexit
import os
import queue
import threading
from pathlib import Path
from typing import Any, Self

import msgpack
import ormsgpack
import zstandard

from pvmon.errors import TraceError
from pvmon.trace import format as fmt

# Events are packed with ormsgpack (Rust; 1.1 us for a recorded hypercall, msgpack-
# python 2.7 us). Both produce the same bytes for every type an event holds (str, int
# up to 64 bits, bytes, lists, dicts with str or int keys, None, bool, float; checked
# in tests/test_trace_store.py on boot-like synthetic events and those edge values);
# anything ormsgpack refuses is packed by msgpack-python, the reference.
_fast_packb = ormsgpack.packb
_FAST_OPTS = ormsgpack.OPT_NON_STR_KEYS
# Hypercall events, most of a recording, are packed straight from their values by
# the compiled pvmon.trace._evpack (same bytes; tests/test_evpack.py). Without it
# (no C compiler at install time) they go through hc_event and pack_event.
try:
    from pvmon.trace._evpack import pack_hc as _pack_hc
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    _pack_hc = None

#: True when hypercall events are packed by the compiled packer.
COMPILED_PACKER = _pack_hc is not None


def pack_event(event: dict[str, Any]) -> bytes:
    """The bytes ``event`` has in a trace frame (msgpack; what :meth:`TraceWriter.append`
    writes). Raises TypeError or OverflowError for a value msgpack cannot hold."""
    try:
        return _fast_packb(event, option=_FAST_OPTS)
    except TypeError:
        return msgpack.packb(event, use_bin_type=True)


#: Frames the recorder hands to the writer thread at once (see ``_hand_off``).
FRAMES_PER_HANDOFF = 8


class _Job:
    __slots__ = ("count", "first_seq", "first_t", "last_t", "raw")

    def __init__(self, raw: bytes | bytearray, first_seq: int, count: int, first_t: int, last_t: int):
        self.raw = raw
        self.first_seq = first_seq
        self.count = count
        self.first_t = first_t
        self.last_t = last_t


class TraceWriter:
    """Records events into a `.pvt` trace file (format version 2).

    ``header`` is the self-description of the run (a msgpack-able dict, see
    ``docs/trace-format.md``); ``"format"`` and ``"version"`` are filled in if
    absent. Events are dicts whose ``"seq"`` counts 0, 1, 2, ... and whose
    ``"t"`` (virtual time, ns, int) never decreases; :meth:`append` raises
    :class:`ValueError` otherwise, because seeking by seq and by time relies
    on both.

    Events are packed at once (so the caller may reuse its dicts) and buffered;
    a frame is cut when it holds ``frame_events`` events or ``frame_bytes``
    bytes of msgpack. With ``background=True`` (default) frames are compressed
    (zstd ``level``) and written by one worker thread, which releases the GIL
    while compressing; frames reach it :data:`FRAMES_PER_HANDOFF` at a time, at
    most a few batches wait in its queue, then :meth:`append` blocks. Each batch
    is written in one ``write`` as soon as it is compressed (without a thread,
    each frame as it is cut), so a process killed at any point leaves every
    frame written before intact (up to a few batches of frames not yet written
    are lost with it); ``sync=True`` also ``fsync``s after each write.

    An unclosed writer is closed at interpreter exit. I/O errors surface as
    :class:`~pvmon.errors.TraceError` from the next call.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], *,
                 frame_events: int = fmt.DEFAULT_FRAME_EVENTS,
                 frame_bytes: int = fmt.DEFAULT_FRAME_BYTES, level: int = 3,
                 sync: bool = False, background: bool = True) -> None:
        if not 1 <= frame_events <= fmt.MAX_FRAME_EVENTS:
            raise ValueError(f"frame_events must be 1..{fmt.MAX_FRAME_EVENTS}")
        if not 1 <= frame_bytes <= fmt.MAX_FRAME_RAW - fmt.MAX_EVENT_RAW:
            raise ValueError("frame_bytes out of range")
        if not isinstance(header, dict):
            raise TypeError("header must be a dict")
        header = {"format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, **header}
        if header["format"] != fmt.FORMAT_NAME or header["version"] != fmt.FORMAT_VERSION:
            raise ValueError(f"this writer writes {fmt.FORMAT_NAME} version {fmt.FORMAT_VERSION}")
        raw_header = msgpack.packb(header, use_bin_type=True)
        if len(raw_header) > fmt.MAX_HEADER_RAW:
            raise ValueError("header too large")

        self.path = Path(path)
        self.header = header
        self._frame_events = frame_events
        self._frame_bytes = frame_bytes
        self._sync = sync
        self._level = level
        self._pack = msgpack.Packer(use_bin_type=True).pack
        # The open frame's events, packed back to back. Each packed event is copied in
        # and dropped at once: holding 256 separate bytes objects per frame and joining
        # them cost about as much again as packing them (the 6.12 boot, alternated runs).
        self._buf = bytearray()
        self._buf_count = 0
        self._buf_first_t = 0
        self._next_seq = 0
        self._last_t: int | None = None
        self._floor_t = -(1 << 64)     # _last_t, or below any time before the first event
        self._frames: list[fmt.FrameInfo] = []
        self._error: BaseException | None = None
        self._closed = False
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot create trace: {exc.strerror}") from exc
        comp_header = self._compressor().compress(raw_header)
        self._offset = 0
        try:
            self._write(fmt.pack_preamble(len(comp_header), len(raw_header)) + comp_header)
        except OSError as exc:
            os.close(self._fd)
            raise TraceError(f"{self.path}: writing trace failed: {exc.strerror}") from exc
        self._queue: queue.Queue[list[_Job] | None] | None = None
        self._pending: list[_Job] = []          # frames cut, not yet handed to the thread
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._worker, name="pvmon-trace-writer",
                                            daemon=True)
            self._thread.start()
        atexit.register(self.close)

    # -- public API -------------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The ``"seq"`` the next appended event must carry."""
        return self._next_seq

    @property
    def frames(self) -> list[fmt.FrameInfo]:
        """Frames written so far (complete only after :meth:`flush` or :meth:`close`)."""
        return list(self._frames)

    def append(self, event: dict[str, Any]) -> None:
        """Add one event (a dict with int ``seq``, int ``t`` in ns, int ``cpu``, str ``k``).

        Raises ValueError for an event out of sequence, back in time or too large,
        or on a closed writer; :class:`~pvmon.errors.TraceError` when writing failed."""
        seq = event["seq"]
        t = event["t"]
        # The recorder's hot path (one call per guest event): every check of
        # _append_checked, in one condition; anything unusual takes the long way.
        if (seq == self._next_seq and type(seq) is int and type(t) is int
                and t >= self._floor_t and not self._closed):
            data = pack_event(event)
            n = len(data)
            if n <= fmt.MAX_EVENT_RAW:
                buf = self._buf
                count = self._buf_count
                if not count:
                    self._buf_first_t = t
                buf += data
                self._buf_count = count = count + 1
                self._next_seq = seq + 1
                self._last_t = self._floor_t = t
                if count >= self._frame_events or len(buf) >= self._frame_bytes:
                    self._cut()
                return
        self._append_checked(event)

    def append_hc(self, abi: str, nr: int, name: str, args, op: dict, ret: int, rip: int,
                  via: str, rd, wr, ev, seq: int, t: int, cpu: int) -> None:
        """Add a hypercall event given as its values: the same as
        ``append(format.hc_event(abi, ..., cpu))`` (same bytes, same errors)
        without building the dict, when the compiled packer is present. The
        values are packed at once, so the caller may reuse them."""
        if (seq == self._next_seq and type(seq) is int and type(t) is int
                and t >= self._floor_t and not self._closed and _pack_hc is not None):
            buf = self._buf
            start = len(buf)
            try:
                end = _pack_hc(buf, abi, nr, name, args, op, ret, rip, via, rd, wr, ev, seq, t,
                               cpu)
            except (TypeError, ValueError, OverflowError):
                end = -1    # the dict path packs it, or raises its own error
            if 0 <= end - start <= fmt.MAX_EVENT_RAW:
                count = self._buf_count
                if not count:
                    self._buf_first_t = t
                self._buf_count = count = count + 1
                self._next_seq = seq + 1
                self._last_t = self._floor_t = t
                if count >= self._frame_events or end >= self._frame_bytes:
                    self._cut()
                return
            del buf[start:]
        self.append(fmt.hc_event(abi, nr, name, args, op, ret, rip, via, rd, wr, ev, seq, t, cpu))

    def _append_checked(self, event: dict[str, Any]) -> None:
        if self._closed:
            raise ValueError("trace writer is closed")
        seq = event["seq"]
        t = event["t"]
        if seq != self._next_seq or type(seq) is not int:
            raise ValueError(f"event seq {seq!r}, expected {self._next_seq}")
        if type(t) is not int or (self._last_t is not None and t < self._last_t):
            raise ValueError(f"event {seq}: virtual time {t!r} goes backwards")
        data = self._pack(event)
        if len(data) > fmt.MAX_EVENT_RAW:
            raise ValueError(f"event {seq} is {len(data)} bytes packed (limit {fmt.MAX_EVENT_RAW})")
        if not self._buf_count:
            self._buf_first_t = t
        self._buf += data
        self._buf_count += 1
        self._next_seq = seq + 1
        self._last_t = self._floor_t = t
        if self._buf_count >= self._frame_events or len(self._buf) >= self._frame_bytes:
            self._cut()

    def flush(self) -> None:
        """Write out the current partial frame and wait until every frame is written."""
        if self._closed:
            return
        self._cut()
        self._hand_off()
        if self._queue is not None:
            self._queue.join()
        self._raise_error()

    def close(self) -> None:
        """Write the last frame and the seek table, and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._cut()
            self._hand_off()
            if self._thread is not None and self._queue is not None:
                self._queue.put(None)
                self._thread.join()
            self._raise_error()
            self._write(fmt.pack_seek_table(self._frames, self._next_seq))
            if self._sync:
                os.fsync(self._fd)
        except OSError as exc:
            raise TraceError(f"{self.path}: writing trace failed: {exc.strerror}") from exc
        finally:
            os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _compressor(self) -> zstandard.ZstdCompressor:
        return zstandard.ZstdCompressor(level=self._level, write_checksum=True,
                                        write_content_size=True)

    def _cut(self) -> None:
        n = self._buf_count
        if not n:
            return
        job = _Job(self._buf, self._next_seq - n, n, self._buf_first_t, self._last_t or 0)
        self._buf = bytearray()
        self._buf_count = 0
        if self._queue is None:
            try:
                self._write_frames([job], self._compressor())
            except OSError as exc:
                raise TraceError(f"{self.path}: writing trace failed: {exc.strerror}") from exc
        else:
            self._pending.append(job)
            if len(self._pending) >= FRAMES_PER_HANDOFF:
                self._hand_off()

    def _hand_off(self) -> None:
        """Give the frames cut so far to the writer thread in one queue item, so it
        wakes once per batch instead of once per frame."""
        if self._pending and self._queue is not None:
            self._raise_error()
            self._queue.put(self._pending)
            self._pending = []

    def _worker(self) -> None:
        assert self._queue is not None
        cctx = self._compressor()
        while True:
            jobs = self._queue.get()
            try:
                if jobs is None:
                    return
                if self._error is None:
                    self._write_frames(jobs, cctx)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _write_frames(self, jobs: list[_Job], cctx: zstandard.ZstdCompressor) -> None:
        """Compress ``jobs`` and write them, descriptors and frames, in one ``write``.

        The batch is compressed in one call that holds no GIL throughout
        (``multi_compress_to_buffer``; the same frames ``compress`` makes), so the
        writer thread takes the GIL a few times a batch instead of three times a
        frame: each take can stall the recorder's next hook behind it."""
        if len(jobs) == 1:
            comps = [cctx.compress(jobs[0].raw)]
        else:
            out = cctx.multi_compress_to_buffer([job.raw for job in jobs])
            comps = [out[i].tobytes() for i in range(len(jobs))]
        chunk = bytearray()
        offset = self._offset
        infos = []
        for job, comp in zip(jobs, comps):
            chunk += fmt.pack_descriptor(len(comp), len(job.raw), job.count, job.first_seq,
                                         job.first_t, job.last_t)
            chunk += comp
            infos.append(fmt.FrameInfo(len(self._frames) + len(infos), offset, job.first_seq,
                                       job.count, job.first_t, job.last_t, len(comp),
                                       len(job.raw)))
            offset = self._offset + len(chunk)
        self._write(chunk)
        if self._sync:
            os.fsync(self._fd)
        self._frames.extend(infos)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._offset += len(data)

    def _raise_error(self) -> None:
        if self._error is not None:
            exc = self._error
            msg = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise TraceError(f"{self.path}: writing trace failed: {msg}") from exc
