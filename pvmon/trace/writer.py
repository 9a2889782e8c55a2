"""Writing `.pvt` traces: :class:`TraceWriter`."""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable
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


def pack_event(event: dict[str, Any]) -> bytes:
    """The bytes ``event`` has in a trace frame (msgpack; what :meth:`TraceWriter.append`
    writes). Raises TypeError or OverflowError for a value msgpack cannot hold."""
    try:
        return _fast_packb(event, option=_FAST_OPTS)
    except TypeError:
        return msgpack.packb(event, use_bin_type=True)


_I64 = 1 << 63


class PyOpenFrame:
    """A writer's open frame in Python: what ``pvmon.trace._evpack.OpenFrame``
    does, for installs without the compiled module (see its docstring). ``hc``
    always takes the long way, through ``fallback``."""

    def __init__(self, frame_events: int, frame_bytes: int, max_event: int,
                 on_full: Callable[[], None], fallback: Callable[..., None]) -> None:
        self.frame_events = frame_events
        self.frame_bytes = frame_bytes
        self.max_event = max_event
        self.on_full = on_full
        self.hc = fallback
        self.buf = bytearray()
        self.count = 0
        self.next_seq = 0
        self.first_t = 0
        self.last_t: int | None = None
        self.closed = False

    def add(self, data: bytes, seq: int, t: int) -> bool:
        if (self.closed or type(seq) is not int or seq != self.next_seq or type(t) is not int
                or not -_I64 <= t < _I64 or (self.last_t is not None and t < self.last_t)
                or len(data) > self.max_event):
            return False
        if not self.count:
            self.first_t = t
        self.buf += data
        self.count += 1
        self.next_seq = seq + 1
        self.last_t = t
        if self.count >= self.frame_events or len(self.buf) >= self.frame_bytes:
            self.on_full()
        return True

    def ev(self, keys: tuple[str, ...], *values: Any) -> bool:
        try:
            data = pack_event(dict(zip(keys, values)))
        except (TypeError, OverflowError, ValueError):
            return False
        return self.add(data, values[-3], values[-2])

    def take(self) -> tuple[bytearray, int, int, int, int] | None:
        if not self.count:
            return None
        out = (self.buf, self.count, self.next_seq - self.count, self.first_t, self.last_t)
        self.buf = bytearray()
        self.count = 0
        return out


# Hypercall events, most of a recording, are packed straight from their values by
# the compiled pvmon.trace._evpack, and its OpenFrame keeps the open frame, so the
# recorder's call per hypercall runs no Python code (same bytes: tests/test_evpack.py).
# Without it (no C compiler at install time) PyOpenFrame, hc_event and pack_event
# do the same, slower.
try:
    from pvmon.trace._evpack import OpenFrame
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    OpenFrame = PyOpenFrame

#: True when hypercall events are packed by the compiled packer.
COMPILED_PACKER = OpenFrame is not PyOpenFrame

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

    An unclosed writer is closed at interpreter exit. A failed write (a full
    disk) never raises from :meth:`append`, which runs inside the recorder's
    hooks: the file is cut back to its last complete frame (a truncated trace
    holding every frame written before, :attr:`kept_events` events), the events
    appended from then on are dropped, ``on_error(exc)`` is called once (on the
    writer thread, or in :meth:`append` without one), and :meth:`flush` and
    :meth:`close` raise :class:`~pvmon.errors.TraceError`, saying the trace is
    truncated.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], *,
                 frame_events: int = fmt.DEFAULT_FRAME_EVENTS,
                 frame_bytes: int = fmt.DEFAULT_FRAME_BYTES, level: int = 3,
                 sync: bool = False, background: bool = True,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
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
        self._sync = sync
        self._level = level
        self._pack = msgpack.Packer(use_bin_type=True).pack
        # The open frame: its events packed back to back, and the sequence and time
        # checks. Each packed event is copied in and dropped at once: holding 256
        # separate bytes objects per frame and joining them cost about as much again as
        # packing them (the 6.12 boot, alternated runs).
        self._open = OpenFrame(frame_events, frame_bytes, fmt.MAX_EVENT_RAW, self._cut,
                               self._append_hc_dict)
        #: ``append_hc(abi, nr, name, args, op, ret, rip, via, rd, wr, ev, seq, t, cpu)``:
        #: add a hypercall event given as its values, the same as
        #: ``append(format.hc_event(abi, ..., cpu))`` (same bytes, same errors) without
        #: building the dict when the compiled packer is present; the values are packed
        #: at once, so the caller may reuse them. It is the open frame's own ``hc``, so
        #: a recorded hypercall runs no Python code here until a frame fills.
        self.append_hc: Callable[..., None] = self._open.hc
        #: ``append_ev(keys, *values) -> bool``: add the event ``dict(zip(keys,
        #: values))`` (``keys`` a tuple of at most 15 str ending with ``seq``, ``t``,
        #: ``cpu``), packed as :meth:`append` packs it, without the dict when the
        #: compiled packer is present. False, with nothing written, when the event
        #: would not pass :meth:`append`'s checks: call :meth:`append` with the dict,
        #: which raises the error.
        self.append_ev: Callable[..., bool] = self._open.ev
        self._frames: list[fmt.FrameInfo] = []
        self._error: BaseException | None = None
        self._on_error = on_error
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
        return self._open.next_seq

    @property
    def failed(self) -> bool:
        """True once a write failed (the trace is truncated; see the class docstring)."""
        return self._error is not None

    @property
    def kept_events(self) -> int:
        """Events in the frames written so far (after a failure: all the file keeps)."""
        return self._frames[-1].stop_seq if self._frames else 0

    @property
    def frames(self) -> list[fmt.FrameInfo]:
        """Frames written so far (complete only after :meth:`flush` or :meth:`close`)."""
        return list(self._frames)

    def append(self, event: dict[str, Any]) -> None:
        """Add one event (a dict with int ``seq``, int ``t`` in ns, int ``cpu``, str ``k``).

        Raises ValueError for an event out of sequence, back in time or too large,
        or on a closed writer, TypeError or OverflowError for a value msgpack
        cannot hold; :class:`~pvmon.errors.TraceError` when writing failed."""
        if not self._open.add(pack_event(event), event["seq"], event["t"]):
            self._append_checked(event)

    def _append_hc_dict(self, *values: Any) -> None:
        self.append(fmt.hc_event(*values))

    def _append_checked(self, event: dict[str, Any]) -> None:
        """Raise the error ``event`` earns (the open frame refused it)."""
        f = self._open
        if f.closed:
            raise ValueError("trace writer is closed")
        seq = event["seq"]
        t = event["t"]
        if seq != f.next_seq or type(seq) is not int:
            raise ValueError(f"event seq {seq!r}, expected {f.next_seq}")
        if type(t) is not int or (f.last_t is not None and t < f.last_t):
            raise ValueError(f"event {seq}: virtual time {t!r} goes backwards")
        if not -_I64 <= t < _I64:
            raise ValueError(f"event {seq}: virtual time {t!r} is outside 64 bits")
        data = self._pack(event)
        if len(data) > fmt.MAX_EVENT_RAW:
            raise ValueError(f"event {seq} is {len(data)} bytes packed (limit {fmt.MAX_EVENT_RAW})")
        if not f.add(data, seq, t):  # pragma: no cover - every refusal is named above
            raise ValueError(f"event {seq} refused")

    def flush(self) -> None:
        """Write out the current partial frame and wait until every frame is written."""
        if self._open.closed:
            return
        self._cut()
        self._hand_off()
        if self._queue is not None:
            self._queue.join()
        self._raise_error()

    def close(self) -> None:
        """Write the last frame and the seek table, and close the file. Idempotent."""
        if self._open.closed:
            return
        self._open.closed = True
        atexit.unregister(self.close)
        try:
            self._cut()
            self._hand_off()
            if self._thread is not None and self._queue is not None:
                self._queue.put(None)
                self._thread.join()
            self._raise_error()
            end = self._offset
            try:
                self._write(fmt.pack_seek_table(self._frames, self._open.next_seq))
                if self._sync:
                    os.fsync(self._fd)
            except OSError as exc:
                try:    # no torn seek table: the file ends after its last frame
                    os.ftruncate(self._fd, end)
                except OSError:
                    pass
                self._error = exc
                self._raise_error()
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
        """Hand the open frame, if it holds any event, to the writer thread (or
        write it now, without one)."""
        taken = self._open.take()
        if taken is None:
            return
        raw, count, first_seq, first_t, last_t = taken
        job = _Job(raw, first_seq, count, first_t, last_t)
        if self._queue is None:
            if self._error is None:
                try:
                    self._write_frames([job], self._compressor())
                except OSError as exc:
                    self._fail(exc)
        else:
            self._pending.append(job)
            if len(self._pending) >= FRAMES_PER_HANDOFF:
                self._hand_off()

    def _hand_off(self) -> None:
        """Give the frames cut so far to the writer thread in one queue item, so it
        wakes once per batch instead of once per frame. After a failed write they
        are dropped (never raised here: this runs inside the recorder's hooks)."""
        if self._pending and self._queue is not None:
            if self._error is None:
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
            except BaseException as exc:  # noqa: BLE001 - raised by flush() or close()
                self._fail(exc)
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
        try:
            self._write(chunk)
        except OSError:
            # Keep the frames that reached the file whole and cut off the rest, so
            # the file ends at a frame boundary (a truncated trace, no torn frame).
            self._frames.extend(i for i in infos if i.end <= self._offset)
            end = self._frames[-1].end if self._frames else infos[0].offset
            try:
                os.ftruncate(self._fd, end)
                self._offset = end
            except OSError:
                pass
            raise
        if self._sync:
            os.fsync(self._fd)
        self._frames.extend(infos)

    def _fail(self, exc: BaseException) -> None:
        """Remember the first write failure and tell ``on_error`` once."""
        if self._error is not None:
            return
        self._error = exc
        if self._on_error is not None:
            self._on_error(exc)

    def _write(self, data: bytes) -> None:
        """Write all of ``data``; ``_offset`` follows each partial write, so after
        an OSError it is where the file ends."""
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._offset += n

    def _raise_error(self) -> None:
        if self._error is not None:
            exc = self._error
            msg = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise TraceError(f"{self.path}: writing trace failed: {msg}; the trace is "
                             f"truncated after its first {self.kept_events:,} events, "
                             "every complete frame kept") from exc
