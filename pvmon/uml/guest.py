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
bookworm's (``6.1um4``). Another series is fetched from a named suite
(``pvmon guests fetch uml-6.12 --suite sid``) when that suite's package is of
that series.

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
SERIES = {"uml-6.1": "bookworm"}


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
    return UmlGuest(name=name, binary=binary, package=meta.get("package", PACKAGE),
                    version=meta.get("version", "?"), release=meta.get("release"),
                    suite=meta.get("suite"), sha256=meta.get("sha256", ""))


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


def check_runnable(guest: UmlGuest) -> None:
    """Raise GuestNotFound when ``guest``'s binary needs a newer glibc than the
    host's (a UML package of a newer suite than the host's: trixie's 6.12 and
    sid's need 2.38+, bookworm has 2.36); one line naming both versions."""
    need = glibc_needed(guest.binary)
    have = host_glibc()
    if need is None or have is None:
        return
    key = lambda v: tuple(int(x) for x in v.split("."))
    if key(need) > key(have):
        raise GuestNotFound(
            f"{guest.name}: {guest.package} {guest.version} ({guest.suite}) needs glibc "
            f"{need}, this host has {have}; run it on a {guest.suite} host, or use a UML "
            "package of this host's suite")


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
        meta = {
            "name": name, "kind": "uml", "suite": suite, "package": PACKAGE,
            "version": version, "release": releases[0] if releases else None,
            "glibc": glibc_needed(out / BINARY),
            "deb_file": deb.name, "deb_size": deb.stat().st_size,
            "binary_size": (out / BINARY).stat().st_size,
            "sha256": debian._sha256(out / BINARY),
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
