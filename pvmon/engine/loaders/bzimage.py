"""Extract the ELF ``vmlinux`` from an x86 bzImage (``vmlinuz``).

A bzImage is a real-mode setup block followed by the protected-mode code, which
is the in-kernel decompressor plus the compressed kernel ("payload"). The
payload is the ELF ``vmlinux`` (stripped, see below) compressed with one of the
formats selected by ``CONFIG_KERNEL_*``. Debian's cloud kernels use LZ4 (6.1)
and zstd (6.12).

Format facts, with their sources:

* Boot protocol header (Linux ``Documentation/arch/x86/boot.rst``, "THE REAL-MODE
  KERNEL HEADER"): ``setup_sects`` (u8) at 0x1f1, 0 meaning 4; the magic
  ``"HdrS"`` at 0x202; ``version`` (u16) at 0x206; ``payload_offset`` (u32) at
  0x248 and ``payload_length`` (u32) at 0x24c (protocol 2.08+), the offset being
  relative to the protected-mode code, which begins at file offset
  ``(setup_sects + 1) * 512``.
* Size trailer: ``arch/x86/boot/compressed/Makefile`` compresses with
  ``cmd_{gzip,lz4,xzkern,zstd22,...}``, each ending in ``size_append``, which
  appends the uncompressed size as a little-endian u32. It is the last 4 bytes
  of the payload; we use it as the output bound and check the result against it.
* Legacy LZ4 framing (Linux ``lib/decompress_unlz4.c``; ``lz4 -l``): the magic
  u32 LE 0x184C2102, then blocks of ``[u32 LE compressed size][LZ4 block]``, each
  block decompressing to at most 8 MiB (``LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE``);
  a size field equal to the magic starts a new stream; the stream ends with the
  input (here: at the size trailer).
* Magics: zstd frame 0xFD2FB528 (RFC 8878 section 3.1.1), gzip 1f 8b (RFC 1952),
  xz ``FD 37 7A 58 5A 00``, ELF ``7F 45 4C 46`` (System V gABI).
* The ``vmlinux`` inside is stripped (``OBJCOPYFLAGS_vmlinux.bin := -R .comment
  -S`` in the same Makefile): it has no ``.symtab``; use System.map or kallsyms
  (see :mod:`pvmon.engine.loaders.symbols`).

Every failure raises :class:`pvmon.errors.GuestImageError` with a one-line
message; no decompressor exception escapes. Output is always bounded by
:data:`MAX_VMLINUX_SIZE`.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import lz4.block
import zstandard

from pvmon.errors import GuestImageError

#: Largest vmlinux we will produce (bytes). Debian's are ~55 MB.
MAX_VMLINUX_SIZE = 512 * 1024 * 1024
#: Largest bzImage / vmlinux file we will read (bytes).
MAX_INPUT_SIZE = 1024 * 1024 * 1024

ELF_MAGIC = b"\x7fELF"
HDRS_MAGIC = b"HdrS"
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_CHUNK = 8 * 1024 * 1024  # lib/decompress_unlz4.c
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
EM_X86_64 = 62


@dataclass(frozen=True)
class BzImageHeader:
    """The parts of the boot protocol header we use. Offsets are file offsets in bytes."""

    setup_sects: int        #: 512-byte setup sectors after the boot sector
    protocol: int           #: boot protocol version, e.g. 0x20f for 2.15
    pm_offset: int          #: file offset of the protected-mode code
    payload_offset: int     #: file offset of the compressed payload
    payload_length: int     #: payload length in bytes (includes the 4-byte size trailer)
    compression: str        #: "zstd" | "lz4" | "gzip" | "xz" | "none"


def parse_header(data: bytes) -> BzImageHeader:
    """Parse and bounds-check a bzImage boot header (Documentation/arch/x86/boot.rst).

    Raises GuestImageError if ``data`` is not a bzImage or its payload lies
    outside the file or has an unknown compression magic."""
    if len(data) < 0x250:
        raise GuestImageError(f"not a bzImage: only {len(data)} bytes (need at least 0x250)")
    if data[0x202:0x206] != HDRS_MAGIC:
        raise GuestImageError("not a bzImage: no 'HdrS' boot-protocol magic at offset 0x202")
    setup_sects = data[0x1F1] or 4
    (protocol,) = struct.unpack_from("<H", data, 0x206)
    if protocol < 0x208:
        raise GuestImageError(
            f"bzImage boot protocol {protocol >> 8}.{protocol & 0xff:02d} is older than 2.08 "
            "and has no payload_offset field"
        )
    pm_offset = (setup_sects + 1) * 512
    poff, plen = struct.unpack_from("<II", data, 0x248)
    start = pm_offset + poff
    if plen < 8 or start + plen > len(data):
        raise GuestImageError(
            f"bzImage payload (offset {start:#x}, length {plen:#x}) lies outside the "
            f"{len(data):#x}-byte file: truncated or corrupt"
        )
    return BzImageHeader(
        setup_sects=setup_sects,
        protocol=protocol,
        pm_offset=pm_offset,
        payload_offset=start,
        payload_length=plen,
        compression=_detect(data[start:start + 8]),
    )


def _detect(head: bytes) -> str:
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] == LZ4_LEGACY_MAGIC:
        return "lz4"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(ELF_MAGIC):
        return "none"
    raise GuestImageError(
        f"bzImage payload has an unsupported compression (first bytes {head[:6].hex()}); "
        "supported: zstd, lz4 (legacy frame), gzip, xz, uncompressed ELF"
    )


def extract_vmlinux(data: bytes) -> bytes:
    """Return the x86-64 ELF vmlinux inside bzImage ``data``.

    ``data`` may also already be an ELF vmlinux; it is then checked and returned
    unchanged. Output size is bounded by the payload's size trailer (and by
    :data:`MAX_VMLINUX_SIZE`). Raises GuestImageError on anything malformed."""
    if data[:4] == ELF_MAGIC:
        check_elf_x86_64(data)
        return bytes(data)
    hdr = parse_header(data)
    payload = memoryview(data)[hdr.payload_offset:hdr.payload_offset + hdr.payload_length]
    (trailer,) = struct.unpack_from("<I", payload, len(payload) - 4)
    expected: int | None = trailer if 0 < trailer <= MAX_VMLINUX_SIZE else None
    limit = expected if expected is not None else MAX_VMLINUX_SIZE
    try:
        if hdr.compression == "zstd":
            # Hand zstd only the frame: it reads the size trailer as a bad next frame.
            out = _unzstd(payload[:-4] if expected is not None else payload, limit)
        elif hdr.compression == "lz4":
            out = _unlz4_legacy(payload, limit)
        elif hdr.compression == "gzip":
            out = _bounded(zlib.decompressobj(16 + zlib.MAX_WBITS), payload, limit)
        elif hdr.compression == "xz":
            out = _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), payload, limit)
        else:  # CONFIG_KERNEL_UNCOMPRESSED: the ELF itself, maybe with a size trailer
            has_trailer = expected == len(payload) - 4
            out = bytes(payload[:-4] if has_trailer else payload)
            expected = None
    except (zstandard.ZstdError, lz4.block.LZ4BlockError, zlib.error, lzma.LZMAError) as exc:
        raise GuestImageError(
            f"bzImage {hdr.compression} payload does not decompress: {exc}"
        ) from None
    if expected is not None and len(out) != expected:
        raise GuestImageError(
            f"bzImage {hdr.compression} payload decompressed to {len(out)} bytes, but its "
            f"size trailer says {expected}: corrupt image"
        )
    check_elf_x86_64(out)
    return out


def load_vmlinux(path: str | Path) -> bytes:
    """Read ``path`` (a bzImage/vmlinuz or an ELF vmlinux) and return the ELF vmlinux bytes.

    Raises GuestImageError if the file is missing, too large, or malformed."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_INPUT_SIZE:
            raise GuestImageError(f"{p}: {size} bytes is too large for a kernel image")
        data = p.read_bytes()
    except OSError as exc:
        raise GuestImageError(f"cannot read kernel image {p}: {exc.strerror}") from None
    try:
        return extract_vmlinux(data)
    except GuestImageError as exc:
        raise GuestImageError(f"{p}: {exc}") from None


def _unzstd(payload: memoryview, limit: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_size=1 << 20)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = reader.read(min(1 << 22, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise GuestImageError(f"zstd payload decompresses to more than {limit} bytes")
    return b"".join(chunks)


def _unlz4_legacy(payload: memoryview, limit: int) -> bytes:
    """Decode the legacy LZ4 frame (lib/decompress_unlz4.c), stopping at the size trailer."""
    pos, end = 4, len(payload)
    chunks: list[bytes] = []
    total = 0
    while pos < end:
        if end - pos == 4:  # the size_append trailer
            break
        if end - pos < 4:
            raise GuestImageError("lz4 payload ends inside a block header: truncated")
        (size,) = struct.unpack_from("<I", payload, pos)
        pos += 4
        if size == LZ4_LEGACY_MAGIC:  # concatenated stream
            continue
        if size == 0 or size > end - pos:
            raise GuestImageError(
                f"lz4 block at payload offset {pos - 4:#x} claims {size} bytes, "
                f"{end - pos} remain: truncated or corrupt"
            )
        block = lz4.block.decompress(payload[pos:pos + size], uncompressed_size=LZ4_LEGACY_CHUNK)
        pos += size
        total += len(block)
        if total > limit:
            raise GuestImageError(f"lz4 payload decompresses to more than {limit} bytes")
        chunks.append(block)
    return b"".join(chunks)


def _bounded(dec, payload: memoryview, limit: int) -> bytes:
    """Feed ``payload`` to a zlib/lzma decompressor object, producing at most ``limit`` bytes."""
    out = dec.decompress(bytes(payload), limit + 1)
    if len(out) > limit:
        raise GuestImageError(f"payload decompresses to more than {limit} bytes")
    if not dec.eof:
        raise GuestImageError("compressed payload ends early: truncated")
    return out


def check_elf_x86_64(data: bytes) -> None:
    """Check ``data`` is a little-endian ELF64 executable for x86-64 (System V gABI, e_machine
    62) whose program headers lie inside it. Raises GuestImageError otherwise."""
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        raise GuestImageError("decompressed kernel is not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise GuestImageError("kernel ELF is not 64-bit little-endian")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != EM_X86_64:
        raise GuestImageError(f"kernel ELF is for machine {e_machine}, not x86-64 (62)")
    if e_type != 2:
        raise GuestImageError(f"kernel ELF has type {e_type}, not an executable (ET_EXEC)")
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    if e_phnum == 0 or e_phentsize < 56 or e_phoff + e_phnum * e_phentsize > len(data):
        raise GuestImageError("kernel ELF program headers are missing or lie outside the file")
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, _, p_offset = struct.unpack_from("<IIQ", data, off)
        (p_filesz,) = struct.unpack_from("<Q", data, off + 32)
        if p_type == 1 and p_offset + p_filesz > len(data):  # PT_LOAD
            raise GuestImageError(f"kernel ELF segment {i} lies outside the file: truncated")
