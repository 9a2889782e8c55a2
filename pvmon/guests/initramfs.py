"""Initramfs images for Debian guests: a busybox userland in a cpio "newc" archive.

``pvmon guests fetch debian-6.12 --initramfs busybox`` downloads Debian's
``busybox-static`` package by name (the same apt path as the kernels:
:func:`pvmon.guests.debian.download_package`), takes ``/bin/busybox`` from it
and builds ``initramfs.cpio``: busybox, one symlink per applet in ``/bin``, the
mount points ``/proc``, ``/sys``, ``/dev``, ``/tmp``, ``/root``, a ``/dev/console``
node and :data:`INIT_SCRIPT` as ``/init``. The archive is uncompressed (Linux
takes an uncompressed cpio as an initramfs; skipping decompression saves guest
time under emulation) and byte-for-byte reproducible: inode numbers count up
from 1, every mtime is 0, owners are root, entries are in a fixed order.

The image is handed to the guest as the PV initrd module (start_info
``mod_start``/``mod_len``; see :func:`pvmon.backends.xen.builder.build`).

Cache layout, beside the kernels: ``<cache>/guests/initramfs/busybox/``
holding ``busybox`` (the binary as shipped), ``initramfs.cpio`` and
``meta.json`` (package, exact version, sha256s, applet count).

The cpio "newc" format (the one Linux's initramfs unpacker reads: Linux
``init/initramfs.c``; described in Linux ``Documentation/driver-api/early-userspace/buffer-format.rst``):
each entry is the ASCII magic ``070701``, thirteen 8-digit hexadecimal fields
(ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
rdevminor, namesize including the NUL, check = 0), the NUL-terminated name
padded with NULs to a multiple of 4 bytes counted from the entry start, then
the file data padded to a multiple of 4. A symlink's data is its target. The
archive ends with an entry named ``TRAILER!!!``.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pvmon.errors import FetchError, GuestImageError, GuestNotFound

#: Initramfs names ``--initramfs`` accepts.
KINDS = ("busybox",)
BUSYBOX_PACKAGE = "busybox-static"
CPIO_NAME = "initramfs.cpio"
META = "meta.json"

#: The shell prompt /init sets; tests and the bench look for it.
PROMPT = "~ # "

#: /init: mount the kernel filesystems, say hello, start a shell on the console.
#: ``cttyhack`` finds the real console device (hvc0 under pvmon, ttyS0 under QEMU)
#: from /sys/class/tty/console/active and makes it the shell's controlling tty,
#: so job control and ^C work; ``setsid`` gives the shell a session of its own.
INIT_SCRIPT = """\
#!/bin/busybox sh
export PATH=/bin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "pvmon initramfs: busybox $(busybox | head -1 | cut -d' ' -f2) on $(uname -r)"
cd /root
export PS1='\\w # '
exec setsid cttyhack sh
"""


# ------------------------------------------------------------------ cpio newc


@dataclass(frozen=True)
class Entry:
    """One archive member. ``mode`` includes the file type bits (stat.S_IF*);
    ``data`` is the content (a symlink's target); ``rdev`` is (major, minor)
    for device nodes."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def cpio_newc(entries: list[Entry]) -> bytes:
    """Pack ``entries`` (in order) into a cpio newc archive ending in the
    trailer. Names are stored without a leading slash. Deterministic."""
    out = bytearray()

    def put(name: str, mode: int, data: bytes, ino: int, nlink: int, rdev=(0, 0)) -> None:
        raw = name.lstrip("/").encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.extend(hdr)
        out.extend(raw)
        out.extend(b"\0" * _pad4(len(hdr) + len(raw)))
        out.extend(data)
        out.extend(b"\0" * _pad4(len(data)))

    for ino, e in enumerate(entries, start=1):
        put(e.name, e.mode, e.data, ino, 2 if stat.S_ISDIR(e.mode) else 1, e.rdev)
    put("TRAILER!!!", 0, b"", 0, 1)
    return bytes(out)


def read_cpio_newc(data: bytes) -> list[Entry]:
    """Parse a cpio newc archive (for tests and ``guests list``). Raises
    GuestImageError on a malformed archive."""
    entries = []
    off = 0
    while True:
        if data[off:off + 6] != b"070701" or off + 110 > len(data):
            raise GuestImageError(f"cpio: bad header at offset {off}")
        try:
            f = [int(data[off + 6 + 8 * i:off + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise GuestImageError(f"cpio: bad header field at offset {off}") from None
        namesize, filesize = f[11], f[6]
        name_end = off + 110 + namesize
        name = data[off + 110:name_end - 1].decode()
        body = name_end + _pad4(110 + namesize)
        if body + filesize > len(data):
            raise GuestImageError(f"cpio: {name!r} runs past the end")
        if name == "TRAILER!!!":
            return entries
        entries.append(Entry(name, f[1], data[body:body + filesize], (f[9], f[10])))
        off = body + filesize + _pad4(filesize)


# ------------------------------------------------------------------ busybox


def busybox_applets(binary: bytes) -> list[str]:
    """Applet names compiled into a busybox binary, read from its data.

    Busybox keeps every applet name, sorted, in one NUL-separated string
    (``applet_names`` in busybox's generated ``include/applet_tables.h``) that
    starts with the ``[`` and ``[[`` test applets. Reading it avoids running a
    downloaded binary on the host. Raises GuestImageError when not found."""
    start = binary.find(b"[\0[[\0")
    if start < 0:
        raise GuestImageError("busybox binary has no applet name table")
    end = binary.find(b"\0\0", start)
    names = [n.decode("ascii", "replace") for n in binary[start:end].split(b"\0") if n]
    if len(names) < 10 or names != sorted(names) or any("/" in n for n in names):
        raise GuestImageError("busybox applet name table looks malformed")
    return names


def busybox_initramfs(binary: bytes) -> bytes:
    """The busybox initramfs (see the module docstring) around ``binary``."""
    d, f, lnk = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777
    entries = [Entry(n, d) for n in ("bin", "dev", "proc", "sys", "tmp", "root", "etc")]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("bin/busybox", f | 0o755, binary))
    entries.extend(Entry(f"bin/{a}", lnk, b"busybox") for a in busybox_applets(binary)
                   if a != "busybox")
    entries.append(Entry("sbin", lnk, b"bin"))
    entries.append(Entry("etc/passwd", f | 0o644, b"root:x:0:0:root:/root:/bin/sh\n"))
    entries.append(Entry("etc/group", f | 0o644, b"root:x:0:\n"))
    entries.append(Entry("init", f | 0o755, INIT_SCRIPT.encode()))
    return cpio_newc(entries)


# ------------------------------------------------------------------ cache


def initramfs_dir(kind: str) -> Path:
    from pvmon.cache import cache_root
    return cache_root() / "guests" / "initramfs" / kind


def read_meta(kind: str) -> dict | None:
    """meta.json of a cached initramfs if it and its cpio exist, else None."""
    d = initramfs_dir(kind)
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if (d / CPIO_NAME).is_file() else None


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise GuestNotFound(f"unknown initramfs {kind!r}; known: {', '.join(KINDS)}")


def fetch_initramfs(kind: str = "busybox", force: bool = False,
                    step: Callable[[str], None] = lambda what: None) -> dict:
    """Download ``busybox-static`` with apt and build the initramfs into the cache.
    A no-op (``"fetched": False``) when the cache holds the current package
    version. ``step``: called with what the fetch does next (for a progress
    display). Raises FetchError (apt), GuestImageError (package contents),
    GuestNotFound (unknown ``kind``)."""
    from pvmon.guests import debian

    _check_kind(kind)
    t0 = time.monotonic()
    step(f"initramfs {kind}: resolving {BUSYBOX_PACKAGE} (apt-cache)")
    cand = debian.resolve_exact(BUSYBOX_PACKAGE)
    meta = read_meta(kind)
    if not force and meta and meta.get("version") == cand.version:
        return {**meta, "fetched": False, "path": str(initramfs_dir(kind))}
    final = initramfs_dir(kind)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{kind}-", dir=final.parent) as tmp_s:
        tmp = Path(tmp_s)
        step(f"initramfs {kind}: downloading {cand.package} {cand.version} (apt-get download)")
        deb = debian.download_package(cand, tmp)
        step(f"initramfs {kind}: building the cpio archive")
        root = tmp / "root"
        debian.unpack_deb(deb, root, ("bin/",))
        bb = root / "bin" / "busybox"
        if not bb.is_file():
            raise FetchError(f"{deb.name} holds no /bin/busybox")
        binary = bb.read_bytes()
        cpio = busybox_initramfs(binary)
        out = tmp / "out"
        out.mkdir()
        (out / "busybox").write_bytes(binary)
        (out / CPIO_NAME).write_bytes(cpio)
        meta = {
            "name": kind, "kind": "initramfs", "package": cand.package,
            "version": cand.version, "deb_file": deb.name,
            "busybox_sha256": hashlib.sha256(binary).hexdigest(),
            "cpio_size": len(cpio), "cpio_sha256": hashlib.sha256(cpio).hexdigest(),
            "applets": len(busybox_applets(binary)),
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fetch_seconds": round(time.monotonic() - t0, 2),
        }
        (out / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            final.rename(tmp / "old")
        out.rename(final)
    return {**meta, "fetched": True, "path": str(final)}


def initramfs_path(kind: str) -> Path:
    """Path of the cached initramfs ``kind``. Raises GuestNotFound when it is not
    built yet (the message says how to build it)."""
    _check_kind(kind)
    if read_meta(kind) is None:
        raise GuestNotFound(f"initramfs {kind!r} is not built yet; run "
                            f"`pvmon guests fetch debian-6.12 --initramfs {kind}`")
    from pvmon.guests import cachedir
    cachedir.touch(initramfs_dir(kind))
    return initramfs_dir(kind) / CPIO_NAME


def ensure_initramfs(kind: str = "busybox") -> Path:
    """The cached initramfs, fetching and building it first if needed (tests, bench)."""
    if read_meta(kind) is None:
        fetch_initramfs(kind)
    return initramfs_path(kind)


def load_initrd(initramfs: str | None, initrd: str | Path | None) -> tuple[bytes | None, dict]:
    """Resolve the ``--initramfs NAME`` / ``--initrd PATH`` options to the
    module bytes and a description for trace headers (``{"name", "sha256",
    "size"}``, empty without a module). Raises GuestNotFound / GuestImageError
    with a readable message."""
    if initramfs and initrd:
        raise GuestImageError("give either --initramfs or --initrd, not both")
    if initramfs:
        path = initramfs_path(initramfs)
        name = initramfs
    elif initrd:
        path = Path(initrd).expanduser()
        name = str(path)
        if not path.is_file():
            raise GuestNotFound(f"initrd {initrd} does not exist or is not a regular file")
    else:
        return None, {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GuestImageError(f"cannot read initrd {path}: {exc.strerror}") from None
    if not data:
        raise GuestImageError(f"initrd {path} is empty")
    return data, {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def initrd_from_header(info: dict | None) -> bytes | None:
    """The initrd bytes a recorded run used, from its trace header's
    ``machine.initrd`` (``{"name", "sha256", "size"}``; None: no initrd), for
    replay. ``name`` is an initramfs name (``busybox``) or a file path. Raises
    GuestNotFound when it is not available here and GuestImageError when the
    bytes found differ from the recorded sha256."""
    if not info:
        return None
    name = info.get("name")
    if not name:
        raise GuestNotFound("the trace's initrd has no name; pass the initrd file explicitly")
    data, found = load_initrd(name, None) if name in KINDS else load_initrd(None, name)
    want = info.get("sha256")
    if want and found["sha256"] != want:
        raise GuestImageError(f"initrd {name} differs from the recorded one "
                              f"(sha256 {found['sha256'][:16]}..., trace has {want[:16]}...)")
    return data

