"""UML guests: Debian's ``user-mode-linux`` package fetched into pvmon's cache.

``pvmon guests fetch uml-6.1`` downloads the package with ``apt-get download``
through pvmon's own apt source list for Debian bookworm (the same path as the
Debian kernels, :mod:`pvmon.guests.apt`; never installed system-wide), unpacks
it in a temporary folder and keeps only the UML kernel binary
(``/usr/bin/linux.uml``; Debian points ``/usr/bin/linux`` at it with
update-alternatives) as ``<cache>/guests/uml-<X>.<Y>/linux`` with
``meta.json`` (package, version, suite, the kernel release read from the
package's ``/usr/lib/uml/modules/<release>`` folder, sha256).

Names: ``uml-<major>.<minor>``, the UML kernel series; ``uml-6.1`` is
bookworm's (``6.1um4``), ``uml-6.12`` trixie's (``6.12um1``). Another series
is fetched from a named suite (``pvmon guests fetch uml-7.2 --suite sid``)
when that suite's package is of that series.

A UML binary of a newer suite than the host's needs a newer glibc than the
host has (trixie's needs ``GLIBC_2.38``, bookworm has 2.36). For such a
binary the fetch also downloads that suite's ``libc6`` (the package that
carries every library the binary's ``DT_NEEDED`` closure names; anything else
is a FetchError) and keeps those libraries and the suite's dynamic loader in
``<cache>/guests/<name>/libc/`` (``lib/x86_64-linux-gnu/<soname>``,
``lib64/ld-linux-x86-64.so.2``), and rewrites the kept binary's ``PT_INTERP``
from ``/lib64/ld-linux-x86-64.so.2`` to the relative
``lib64/ld-linux-x86-64.so.2`` (same length less one byte, NUL padded). The
runner starts it with its working folder holding a ``lib64`` link to that
loader and ``LD_LIBRARY_PATH`` on the libraries, so the kernel maps UML at its
link address, puts the program break after it and loads the suite's loader,
exactly as a native start does. Running the suite's loader as the program
(``ld.so --library-path DIR linux``) does not work for UML: the kernel then
places the break after ``ld.so``, far above UML, and UML, which sizes its
physical memory from ``sbrk(0)`` minus its own start, stops with "Too few
physical memory!".

Errors: :class:`~pvmon.errors.GuestNotFound` for a UML guest that is not
fetched (the message names the package), FetchError for apt failures.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pvmon.errors import FetchError, GuestNotFound

#: The Debian package that carries the UML kernel.
PACKAGE = "user-mode-linux"
#: Where the package puts the UML kernel binary.
BINARY_IN_PACKAGE = "usr/bin/linux.uml"
MODULES_IN_PACKAGE = "usr/lib/uml/modules"
BINARY = "linux"
META = "meta.json"
NAME_RE = re.compile(r"^uml-(\d+)\.(\d+)$")
#: Known series -> the Debian suite whose package is of that series.
SERIES = {"uml-6.1": "bookworm", "uml-6.12": "trixie"}
#: The Debian package with the C library and the dynamic loader.
LIBC_PACKAGE = "libc6"
#: ``<guest>/libc``: the suite's loader and libraries for a binary the host's glibc cannot run.
LIBC_DIR = "libc"
LIB_SUBDIR = "lib/x86_64-linux-gnu"
#: The x86-64 loader path every Debian binary names, and what pvmon rewrites it to.
INTERP = "/lib64/ld-linux-x86-64.so.2"
REL_INTERP = INTERP.lstrip("/")


@dataclass(frozen=True)
class UmlGuest:
    """A fetched UML kernel: ``binary`` the executable, ``release`` its kernel
    release (``6.1.176``), ``package``/``version`` what it came from."""

    name: str
    binary: Path
    package: str
    version: str
    release: str | None
    suite: str | None
    sha256: str
    #: ``<guest>/libc`` when the binary runs with its suite's C library (see the
    #: module doc), else None; ``libc_meta`` its package, version and suite.
    libc: Path | None = None
    libc_meta: dict | None = None

    @property
    def library_path(self) -> Path | None:
        """The folder of the suite's libraries (``LD_LIBRARY_PATH``), or None."""
        return None if self.libc is None else self.libc / LIB_SUBDIR


def cache_root() -> Path:
    from pvmon.guests import debian
    return debian.cache_root()


def guest_dir(name: str) -> Path:
    """``<cache>/guests/<name>``."""
    return cache_root() / "guests" / name


def is_uml_name(name: str | None) -> bool:
    """Whether ``name`` has the form of a UML guest name, ``uml-<X>.<Y>``."""
    return bool(name) and NAME_RE.match(name) is not None  # type: ignore[arg-type]


def read_meta(name: str) -> dict | None:
    """The cache record of UML guest ``name``, or None when it is not fetched."""
    try:
        return json.loads((guest_dir(name) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def names() -> list[str]:
    """Every UML guest name: the known series, then other fetched ones."""
    root = cache_root() / "guests"
    extra = []
    if root.is_dir():
        extra = sorted(p.name for p in root.iterdir()
                       if is_uml_name(p.name) and p.name not in SERIES and (p / META).is_file())
    return [*SERIES, *extra]


def resolve(name: str) -> UmlGuest:
    """The fetched UML guest ``name``. Raises GuestNotFound, naming the package,
    when it is not fetched or its binary is missing."""
    meta = read_meta(name)
    binary = guest_dir(name) / BINARY
    if meta is None or not binary.is_file():
        raise GuestNotFound(
            f"{name}: the UML kernel binary (Debian package {PACKAGE}) is not in the cache; "
            f"run `pvmon guests fetch {name}`")
    libc_meta = meta.get("libc")
    libc = guest_dir(name) / LIBC_DIR if libc_meta else None
    if libc is not None and not (libc / REL_INTERP).exists():
        raise GuestNotFound(
            f"{name}: the {LIBC_PACKAGE} loader kept for it ({libc / REL_INTERP}) is missing; "
            f"run `pvmon guests fetch {name} --force`")
    return UmlGuest(name=name, binary=binary, package=meta.get("package", PACKAGE),
                    version=meta.get("version", "?"), release=meta.get("release"),
                    suite=meta.get("suite"), sha256=meta.get("sha256", ""),
                    libc=libc, libc_meta=libc_meta)


_GLIBC_REF = re.compile(rb"GLIBC_2\.(\d+)\0")


def glibc_needed(binary: Path) -> str | None:
    """The newest ``GLIBC_2.N`` symbol version ``binary`` refers to (its
    version-needs strings), e.g. ``"2.38"``; None when it names none."""
    try:
        found = [int(m) for m in _GLIBC_REF.findall(binary.read_bytes())]
    except OSError:
        return None
    return f"2.{max(found)}" if found else None


def host_glibc() -> str | None:
    """The C library version this host runs (``"2.36"``), or None when it is not glibc."""
    import os
    try:
        lib, ver = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
    except (ValueError, OSError, AttributeError):
        return None
    return ver if lib == "glibc" else None


def _glibc_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def needs_suite_libc(binary: Path) -> str | None:
    """The glibc version ``binary`` needs when the host's is older (``"2.38"``),
    else None (it runs with the host's C library, or the host's is not glibc)."""
    need = glibc_needed(binary)
    have = host_glibc()
    if need is None or have is None or _glibc_key(need) <= _glibc_key(have):
        return None
    return need


def check_runnable(guest: UmlGuest) -> None:
    """Raise GuestNotFound when ``guest``'s binary needs a newer glibc than the
    host's and was fetched without its suite's C library (a cache from before
    pvmon kept one); one line naming both versions and the fix."""
    if guest.libc is not None:
        return
    need = needs_suite_libc(guest.binary)
    if need is not None:
        raise GuestNotFound(
            f"{guest.name}: {guest.package} {guest.version} ({guest.suite}) needs glibc "
            f"{need}, this host has {host_glibc()}, and its suite's {LIBC_PACKAGE} is not "
            f"in the cache; run `pvmon guests fetch {guest.name} --force`")


def elf_needed(path: Path) -> list[str]:
    """The ``DT_NEEDED`` sonames of ELF file ``path`` (none for a static one).
    Raises FetchError when it is not an ELF file."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            return [t.needed for sec in elf.iter_sections() if isinstance(sec, DynamicSection)
                    for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
    except (ELFError, OSError) as exc:
        raise FetchError(f"{path.name}: not a readable ELF file ({exc})") from None


def rewrite_interp(path: Path, new: str = REL_INTERP) -> str:
    """Rewrite ``path``'s ``PT_INTERP`` string in place to ``new`` (NUL padded to
    the segment's size, which must hold it); returns the old one. Raises
    FetchError when there is none or ``new`` does not fit."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    data = bytearray(path.read_bytes())
    try:
        import io
        elf = ELFFile(io.BytesIO(bytes(data)))
        seg = next((s for s in elf.iter_segments() if s["p_type"] == "PT_INTERP"), None)
    except ELFError as exc:
        raise FetchError(f"{path.name}: not a readable ELF file ({exc})") from None
    if seg is None:
        raise FetchError(f"{path.name} names no program interpreter (PT_INTERP)")
    off, size = seg["p_offset"], seg["p_filesz"]
    old = bytes(data[off:off + size]).split(b"\0", 1)[0].decode("ascii", "replace")
    raw = new.encode() + b"\0"
    if len(raw) > size:
        raise FetchError(f"{path.name}: interpreter {new!r} does not fit its PT_INTERP "
                         f"({size} bytes)")
    data[off:off + size] = raw.ljust(size, b"\0")
    path.write_bytes(bytes(data))
    return old


def _lib_dirs(tree: Path) -> list[Path]:
    """Where an unpacked libc6 keeps its libraries (merged /usr or not)."""
    return [tree / "usr" / LIB_SUBDIR, tree / LIB_SUBDIR]


def keep_suite_libc(binary: Path, tree: Path, out: Path, deb_name: str) -> list[str]:
    """Copy into ``out`` (``<guest>/libc``) the libraries of ``binary``'s
    ``DT_NEEDED`` closure found in ``tree`` (an unpacked libc6), as
    ``lib/x86_64-linux-gnu/<soname>`` (symlinks resolved), and link
    ``lib64/ld-linux-x86-64.so.2`` to the loader among them; returns the sonames.
    Raises FetchError naming a library ``deb_name`` does not carry."""
    dirs = _lib_dirs(tree)
    found: dict[str, Path] = {}
    todo = [*elf_needed(binary), Path(INTERP).name]
    while todo:
        so = todo.pop()
        if so in found:
            continue
        src = next((d / so for d in dirs if (d / so).exists()), None)
        if src is None:
            raise FetchError(f"{binary.name} needs {so}, which {deb_name} does not carry")
        real = src.resolve()
        if not real.is_relative_to(tree.resolve()):   # an absolute link: the host's file
            raise FetchError(f"{deb_name}: {so} links outside the package ({real})")
        found[so] = real
        todo += elf_needed(found[so])
    lib = out / LIB_SUBDIR
    lib.mkdir(parents=True)
    for so, src in sorted(found.items()):
        shutil.copyfile(src, lib / so)
        (lib / so).chmod(0o755)
    (out / "lib64").mkdir()
    (out / REL_INTERP).symlink_to(Path("..") / LIB_SUBDIR / Path(INTERP).name)
    return sorted(found)


def fetch_uml(name: str, force: bool = False, suite: str | None = None,
              step: Callable[[str], None] = lambda what: None) -> dict:
    """Fetch UML guest ``name`` (``uml-<X>.<Y>``) from ``suite`` (default: the
    series' suite in :data:`SERIES`) into the cache; returns its meta dict
    plus ``fetched`` (False: the cache already held that version) and ``path``.
    Raises FetchError (apt, a package of another series) or GuestNotFound."""
    from pvmon.guests import apt, debian

    m = NAME_RE.match(name)
    if m is None:
        raise GuestNotFound(f"{name!r} is not a UML guest name (uml-<major>.<minor>)")
    suite = suite or SERIES.get(name)
    if suite is None:
        raise FetchError(f"{name} is not a UML series pvmon knows ({', '.join(SERIES)}); "
                         f"name the suite whose {PACKAGE} package is of that series: --suite "
                         f"{'|'.join(apt.SUITES)}")
    t0 = time.monotonic()
    debian.require_apt()
    src = apt.AptSource(suite)
    if force or src.stale():
        step(f"{name}: updating the Debian {suite} package lists (apt-get update)")
        src.update()
    step(f"{name}: resolving {PACKAGE} in Debian {suite} (apt-cache)")
    version = src.candidates([PACKAGE]).get(PACKAGE)
    if version is None:
        raise FetchError(f"Debian {suite} has no installable {PACKAGE} package")
    series = f"{m[1]}.{m[2]}"
    if not version.startswith((series + "um", series + ".", series + "-")):
        raise FetchError(f"Debian {suite}'s {PACKAGE} is version {version}, not of the "
                         f"{series} series ({name})")
    meta = read_meta(name)
    if not force and meta and meta.get("version") == version \
            and (guest_dir(name) / BINARY).is_file():
        return {**meta, "fetched": False, "path": str(guest_dir(name))}
    root = cache_root() / "guests"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as tmp_s:
        tmp = Path(tmp_s)
        step(f"{name}: downloading {PACKAGE} {version} (apt-get download)")
        deb = src.download([(PACKAGE, version)], tmp)[PACKAGE]
        step(f"{name}: unpacking {deb.name}")
        tree = tmp / "root"
        debian.unpack_deb(deb, tree, ("usr/bin/", MODULES_IN_PACKAGE + "/"))
        binary = tree / BINARY_IN_PACKAGE
        if not binary.is_file():
            raise FetchError(f"{deb.name} has no {BINARY_IN_PACKAGE}")
        mods = tree / MODULES_IN_PACKAGE
        releases = sorted(p.name for p in mods.iterdir()) if mods.is_dir() else []
        out = tmp / "out"
        out.mkdir()
        shutil.copyfile(binary, out / BINARY)
        (out / BINARY).chmod(0o755)
        package_sha = debian._sha256(out / BINARY)
        libc = None
        if needs_suite_libc(out / BINARY) is not None:
            libc = _fetch_libc(src, suite, name, out, tmp, step)
        meta = {
            "name": name, "kind": "uml", "suite": suite, "package": PACKAGE,
            "version": version, "release": releases[0] if releases else None,
            "glibc": glibc_needed(out / BINARY),
            "deb_file": deb.name, "deb_size": deb.stat().st_size,
            "binary_size": (out / BINARY).stat().st_size,
            "sha256": debian._sha256(out / BINARY),
            **({"package_sha256": package_sha, "libc": libc} if libc else {}),
            "apt_lists_updated": src.updated_iso(),
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fetch_seconds": round(time.monotonic() - t0, 2),
        }
        (out / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        final = guest_dir(name)
        if final.exists():
            final.rename(tmp / "old")
        out.rename(final)
    return {**meta, "fetched": True, "path": str(final)}


def _fetch_libc(src, suite: str, name: str, out: Path, tmp: Path,
                step: Callable[[str], None]) -> dict:
    """Download ``suite``'s libc6, keep the binary's library closure and the
    loader in ``out/libc`` and point ``out/linux``'s PT_INTERP at the relative
    loader path; returns the ``libc`` record of meta.json. Raises FetchError."""
    from pvmon.guests import debian

    version = src.candidates([LIBC_PACKAGE]).get(LIBC_PACKAGE)
    if version is None:
        raise FetchError(f"Debian {suite} has no installable {LIBC_PACKAGE} package")
    step(f"{name}: downloading {LIBC_PACKAGE} {version} (apt-get download), the C "
         f"library the binary needs")
    where = tmp / "libc6"
    where.mkdir()
    deb = src.download([(LIBC_PACKAGE, version)], where)[LIBC_PACKAGE]
    tree = where / "root"
    debian.unpack_deb(deb, tree, ("lib/", "usr/lib/", "lib64/", "usr/lib64/"))
    sonames = keep_suite_libc(out / BINARY, tree, out / LIBC_DIR, deb.name)
    old = rewrite_interp(out / BINARY)
    if old != INTERP:
        raise FetchError(f"{name}: the binary's interpreter is {old!r}, not {INTERP}")
    return {"package": LIBC_PACKAGE, "version": version, "suite": suite,
            "deb_file": deb.name, "files": sonames, "interp": REL_INTERP,
            "interp_was": old}
