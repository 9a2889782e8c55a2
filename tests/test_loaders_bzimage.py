"""bzImage -> vmlinux extraction: synthetic images for every format and corruption,
and the two real Debian kernels (``-m debian``)."""

from __future__ import annotations

import gzip
import lzma
import struct

import lz4.block
import pytest
import zstandard

from pvmon.engine.loaders.bzimage import (
    LZ4_LEGACY_MAGIC,
    check_elf_x86_64,
    extract_vmlinux,
    load_vmlinux,
    parse_header,
)
from pvmon.errors import GuestImageError
from pvmon.guests.catalog import debian_guest

# ---------------------------------------------------------------- helpers (imported elsewhere)


def tiny_elf(body: bytes = b"\x90" * 4000 + b"\xf4", machine: int = 62) -> bytes:
    """A minimal ELF64 LE ET_EXEC with one PT_LOAD segment holding ``body``."""
    ehdr = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7,
        2, machine, 1, 0xFFFFFFFF81000000, 64, 0, 0, 64, 56, 1, 64, 0, 0,
    )
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 120, 0xFFFFFFFF81000000, 0x1000000,
                       len(body), len(body), 0x1000)
    return ehdr + phdr + body


def make_bzimage(payload: bytes, size: int | None = None, setup_sects: int = 1) -> bytes:
    """A bzImage whose boot header points at ``payload`` + the 4-byte size trailer
    (Documentation/arch/x86/boot.rst; arch/x86/boot/compressed/Makefile size_append)."""
    pm = (setup_sects + 1) * 512
    poff = 0x100
    img = bytearray(pm + poff)
    img[0x1F1] = setup_sects
    img[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", img, 0x206, 0x20F)
    full = payload + struct.pack("<I", size if size is not None else 0)
    struct.pack_into("<II", img, 0x248, poff, len(full))
    return bytes(img) + full


def lz4_legacy(data: bytes, chunk: int = 8 << 20) -> bytes:
    """Legacy LZ4 frame as ``lz4 -l`` writes it (lib/decompress_unlz4.c reads it)."""
    out = [struct.pack("<I", LZ4_LEGACY_MAGIC)]
    for i in range(0, len(data), chunk):
        blk = lz4.block.compress(data[i:i + chunk], store_size=False)
        out += [struct.pack("<I", len(blk)), blk]
    return b"".join(out)


ELF = tiny_elf()
COMPRESSORS = {
    "zstd": lambda d: zstandard.ZstdCompressor(level=3, write_checksum=True).compress(d),
    "lz4": lz4_legacy,
    "gzip": lambda d: gzip.compress(d, mtime=0),
    "xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
}


# ---------------------------------------------------------------- synthetic


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_synthetic_roundtrip(fmt):
    img = make_bzimage(COMPRESSORS[fmt](ELF), len(ELF))
    assert parse_header(img).compression == fmt
    assert extract_vmlinux(img) == ELF


def test_uncompressed_payload_and_plain_elf():
    assert extract_vmlinux(make_bzimage(ELF, len(ELF))) == ELF
    assert extract_vmlinux(ELF) == ELF


def test_lz4_multiple_blocks_and_concatenated_stream():
    big = tiny_elf(bytes(range(256)) * 5000)
    stream = lz4_legacy(big, chunk=100_000)
    assert extract_vmlinux(make_bzimage(stream, len(big))) == big
    half = len(big) // 2
    two = lz4_legacy(big[:half], chunk=65536) + lz4_legacy(big[half:], chunk=65536)
    assert extract_vmlinux(make_bzimage(two, len(big))) == big


def test_load_vmlinux_reads_files(tmp_path):
    p = tmp_path / "vmlinuz"
    p.write_bytes(make_bzimage(COMPRESSORS["zstd"](ELF), len(ELF)))
    assert load_vmlinux(p) == ELF
    with pytest.raises(GuestImageError, match="cannot read"):
        load_vmlinux(tmp_path / "absent")


@pytest.mark.parametrize("data, match", [
    (b"", "not a bzImage"),
    (b"garbage" * 1000, "HdrS"),
    (bytes(4096), "HdrS"),
])
def test_garbage(data, match):
    with pytest.raises(GuestImageError, match=match):
        extract_vmlinux(data)


def test_unknown_compression():
    with pytest.raises(GuestImageError, match="unsupported compression"):
        extract_vmlinux(make_bzimage(b"BZh9" + bytes(100), 1000))


def test_payload_outside_file():
    img = make_bzimage(COMPRESSORS["zstd"](ELF), len(ELF))
    with pytest.raises(GuestImageError, match="outside"):
        extract_vmlinux(img[:-10])


def test_old_boot_protocol():
    img = bytearray(make_bzimage(ELF, len(ELF)))
    struct.pack_into("<H", img, 0x206, 0x206)
    with pytest.raises(GuestImageError, match="older than 2.08"):
        extract_vmlinux(bytes(img))


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_truncated_payload(fmt):
    comp = COMPRESSORS[fmt](ELF)
    img = make_bzimage(comp[: len(comp) * 2 // 3], len(ELF))
    with pytest.raises(GuestImageError):
        extract_vmlinux(img)


@pytest.mark.parametrize("fmt", ["zstd", "gzip", "xz"])
def test_bitflip_in_checksummed_payload(fmt):
    comp = bytearray(COMPRESSORS[fmt](ELF))
    comp[len(comp) // 2] ^= 0x10
    with pytest.raises(GuestImageError):
        extract_vmlinux(make_bzimage(bytes(comp), len(ELF)))


def test_lz4_bad_block_size():
    comp = bytearray(lz4_legacy(ELF))
    struct.pack_into("<I", comp, 4, 0x7FFFFFF0)
    with pytest.raises(GuestImageError, match="claims"):
        extract_vmlinux(make_bzimage(bytes(comp), len(ELF)))


def test_size_trailer_mismatch():
    with pytest.raises(GuestImageError, match="size trailer"):
        extract_vmlinux(make_bzimage(COMPRESSORS["lz4"](ELF), len(ELF) + 1))


def test_output_bounded_by_trailer():
    # a 64 MiB bomb announced as 1 MiB stops at the bound, without allocating 64 MiB
    bomb = tiny_elf(bytes(64 << 20))
    with pytest.raises(GuestImageError, match="more than"):
        extract_vmlinux(make_bzimage(COMPRESSORS["zstd"](bomb), 1 << 20))


def test_elf_checks():
    check_elf_x86_64(ELF)
    with pytest.raises(GuestImageError, match="not x86-64"):
        check_elf_x86_64(tiny_elf(machine=183))
    with pytest.raises(GuestImageError, match="not an ELF"):
        extract_vmlinux(make_bzimage(COMPRESSORS["zstd"](b"x" * 5000), 5000))
    with pytest.raises(GuestImageError, match="outside the file"):
        check_elf_x86_64(ELF[:-100])
    elf32 = bytearray(ELF)
    elf32[4] = 1
    with pytest.raises(GuestImageError, match="64-bit"):
        check_elf_x86_64(bytes(elf32))


# ---------------------------------------------------------------- real Debian kernels


@pytest.fixture(scope="session")
def deb61():
    return debian_guest("debian-6.1")


@pytest.fixture(scope="session")
def deb612():
    return debian_guest("debian-6.12")


@pytest.mark.debian
@pytest.mark.parametrize("fixture, fmt", [("deb61", "lz4"), ("deb612", "zstd")])
def test_debian_kernels(request, fixture, fmt):
    g = request.getfixturevalue(fixture)
    bz = g.vmlinuz.read_bytes()
    hdr = parse_header(bz)
    assert hdr.compression == fmt
    assert hdr.protocol >= 0x20F
    vmlinux = extract_vmlinux(bz)
    assert vmlinux == g.vmlinux.read_bytes()
    check_elf_x86_64(vmlinux)
    # the cached ELF is what a path resolution of the vmlinuz would produce
    assert load_vmlinux(g.vmlinuz) == vmlinux


@pytest.mark.debian
def test_debian_corruptions(deb61, deb612):
    for g in (deb61, deb612):
        bz = g.vmlinuz.read_bytes()
        hdr = parse_header(bz)
        end = hdr.payload_offset + hdr.payload_length
        for cut in (0x100, hdr.payload_offset + 1000, end - 100):
            with pytest.raises(GuestImageError):
                extract_vmlinux(bz[:cut])
        flipped = bytearray(bz)
        flipped[0x203] ^= 1  # HdrS magic
        with pytest.raises(GuestImageError, match="HdrS"):
            extract_vmlinux(bytes(flipped))
        flipped = bytearray(bz)
        flipped[hdr.payload_offset + 1] ^= 0x40  # compression magic
        with pytest.raises(GuestImageError):
            extract_vmlinux(bytes(flipped))
    flipped = bytearray(deb612.vmlinuz.read_bytes())  # zstd frames carry a checksum
    hdr = parse_header(bytes(flipped))
    flipped[hdr.payload_offset + hdr.payload_length // 2] ^= 0x08
    with pytest.raises(GuestImageError):
        extract_vmlinux(bytes(flipped))
