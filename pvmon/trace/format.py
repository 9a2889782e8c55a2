"""On-disk layout of `.pvt` trace files: constants, record structs and limits.

The exact format is documented in ``docs/trace-format.md``; this module is its
executable form and the writer and reader share it. Everything here is
the container of versions 1 to 4 except :data:`PREAMBLE_MAGIC`,
:data:`PREAMBLE_TAG` and the position of the version number, which every
version keeps so a reader can dispatch on the version before it understands
anything else. Version 2 keeps version 1's container and changes one event:
runs of TSC reads are recorded as one ``tsc_run`` event instead of one ``tsc``
event per read. Version 3 adds the platform to the header and the HVM
platform's events; version 4 records runs of port reads as one ``io_run``
event (a run of TSC reads no longer ends at a port read).

All integers are little-endian. Sizes are in bytes, times in nanoseconds of
virtual time.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

FORMAT_NAME = "pvmon-trace"
FORMAT_VERSION = 4
#: Versions this pvmon reads (the writer writes :data:`FORMAT_VERSION`).
READ_VERSIONS = (1, 2, 3, 4)

# zstd skippable frames: magic 0x184D2A50..0x184D2A5F, then a u32 payload size.
# `zstd -dc` skips them, so everything that is not msgpack lives in them.
SKIP_HDR = struct.Struct("<II")  # magic, payload size
PREAMBLE_MAGIC = 0x184D2A50  # file preamble: tag, version, header frame size
DESC_MAGIC = 0x184D2A51  # frame descriptor, right before each event frame
SEEK_MAGIC = 0x184D2A52  # seek table, the last frame of a complete file
ZSTD_MAGIC = 0xFD2FB528

PREAMBLE_TAG = b"PVMONTRC"
# Stable across versions: tag (8 bytes) then u32 version, right after SKIP_HDR.
PREAMBLE_STABLE = struct.Struct("<8sI")
# Version 1 and 2 preamble payload: tag, version, header comp_len, header raw_len, flags, crc32.
PREAMBLE_V1 = struct.Struct("<8sIIIII")
PREAMBLE_SIZE = SKIP_HDR.size + PREAMBLE_V1.size

# Frame descriptor payload: comp_len, raw_len, count, flags, first_seq, first_t, last_t, crc32.
DESC = struct.Struct("<IIIIQqqI")
DESC_SIZE = SKIP_HDR.size + DESC.size

# Seek table entry: offset (of the descriptor), first_seq, first_t, last_t,
# count, comp_len, raw_len.
SEEK_ENTRY = struct.Struct("<QQqqIII")
# Seek table footer, the last bytes of a complete file: events, frames, crc32, end magic.
SEEK_FOOTER = struct.Struct("<QII8s")
END_MAGIC = b"PVTEND01"

# Limits a reader enforces (and the writer stays within), so hostile input
# cannot make it allocate without bound.
# A hostile frame can decode into at most ~64 bytes of Python objects per input
# byte (a 1-byte empty array is a 56-byte list), so these also bound memory.
MAX_HEADER_RAW = 1 << 20  # decompressed header
MAX_FRAME_RAW = 4 << 20  # decompressed event frame
MAX_EVENT_RAW = 2 << 20  # one packed event (writer-side)
MAX_FRAME_EVENTS = 1 << 20  # events in one frame
MAX_WINDOW = 1 << 24  # zstd window a reader accepts

# 256 events a frame (about 56 KiB of msgpack for a Linux boot's hypercalls): a frame
# decodes into a few hundred KiB of Python objects, which stay in the CPU cache while
# they are used and freed. Measured on the 6.12 boot trace (bench/README.md): open-loop
# replay and `trace stats` use about a quarter and a third less CPU than with 4096-event
# frames, for an 11 % larger file. Smaller frames also lose less to a crash.
DEFAULT_FRAME_EVENTS = 256
DEFAULT_FRAME_BYTES = 1 << 20


def crc32(*parts: bytes) -> int:
    """CRC-32 (zlib polynomial) of the concatenation of ``parts``."""
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c


def skippable(magic: int, payload: bytes) -> bytes:
    """One zstd skippable frame: ``magic``, u32 payload length, ``payload``."""
    return SKIP_HDR.pack(magic, len(payload)) + payload


def pack_preamble(header_comp_len: int, header_raw_len: int) -> bytes:
    """The preamble of a :data:`FORMAT_VERSION` file (a skippable frame of
    :data:`PREAMBLE_SIZE` bytes)."""
    body = PREAMBLE_V1.pack(PREAMBLE_TAG, FORMAT_VERSION, header_comp_len, header_raw_len, 0, 0)
    body = body[:-4] + struct.pack("<I", crc32(body[:-4]))
    return skippable(PREAMBLE_MAGIC, body)


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """Where one event frame lives and what it holds.

    ``offset`` is the byte position of the frame's descriptor (the zstd frame
    itself starts :data:`DESC_SIZE` bytes later); ``comp_len`` and
    ``raw_len`` are the compressed and msgpack sizes of the zstd frame in
    bytes; ``first_seq``/``count`` the events it holds; ``first_t``/``last_t``
    the virtual times (ns) of its first and last event.
    """

    index: int
    offset: int
    first_seq: int
    count: int
    first_t: int
    last_t: int
    comp_len: int
    raw_len: int

    @property
    def end(self) -> int:
        """Byte position just past this frame."""
        return self.offset + DESC_SIZE + self.comp_len

    @property
    def stop_seq(self) -> int:
        """Seq just past this frame's last event."""
        return self.first_seq + self.count


def pack_descriptor(comp_len: int, raw_len: int, count: int, first_seq: int, first_t: int,
                    last_t: int) -> bytes:
    """The descriptor skippable frame (:data:`DESC_SIZE` bytes) preceding an event frame."""
    body = DESC.pack(comp_len, raw_len, count, 0, first_seq, first_t, last_t, 0)[:-4]
    return skippable(DESC_MAGIC, body + struct.pack("<I", crc32(body)))


def pack_seek_table(frames: list[FrameInfo], n_events: int) -> bytes:
    """The seek table skippable frame that ends a complete file."""
    entries = b"".join(
        SEEK_ENTRY.pack(f.offset, f.first_seq, f.first_t, f.last_t, f.count, f.comp_len,
                        f.raw_len)
        for f in frames
    )
    counts = struct.pack("<QI", n_events, len(frames))
    footer = counts + struct.pack("<I", crc32(entries, counts)) + END_MAGIC
    return skippable(SEEK_MAGIC, entries + footer)


#: The keys of a hypercall event (``"k": "hc"``, docs/trace-format.md) after
#: ``"k"``, in the order every writer packs them.
HC_KEYS = ("abi", "nr", "name", "args", "op", "ret", "rip", "via", "rd", "wr", "ev", "seq", "t",
           "cpu")


def hc_event(abi: str, nr: int, name: str, args, op: dict, ret: int, rip: int, via: str, rd, wr,
             ev, seq: int, t: int, cpu: int) -> dict:
    """A hypercall event as a dict, keys in :data:`HC_KEYS` order (the order is
    part of the bytes: msgpack maps keep it). ``args``: raw argument registers;
    ``op``: decoded arguments; ``ret``: signed return value; ``rd``/``wr``:
    ``[space, address, bytes]`` guest-memory accesses; ``ev``: ports raised;
    ``t`` in ns of virtual time."""
    return {"k": "hc", "abi": abi, "nr": nr, "name": name, "args": args, "op": op, "ret": ret,
            "rip": rip, "via": via, "rd": rd, "wr": wr, "ev": ev, "seq": seq, "t": t,
            "cpu": cpu}
