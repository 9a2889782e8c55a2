"""Fetch stock Debian cloud kernels with apt and cache them.

Names. A guest ``debian-<X>.<Y>`` is the newest ``-cloud-amd64`` kernel of the
upstream series X.Y that one Debian suite carries: the newest signed image
package matching ``linux-image-<X>.<Y>[.<n>][-<abi>][+deb<m>[.<k>]]-cloud-amd64``
(never ``-dbg``, ``-unsigned`` or the meta packages). :data:`SERIES` says which
suite each known series comes from (debian-6.1 and debian-6.12: bookworm;
debian-7.2: sid); ``fetch_debian(name, suite=...)`` takes any series from any
suite of :data:`pvmon.guests.apt.SUITES`, and :func:`newest_series` names the
newest series a suite has (``pvmon guests fetch sid``). Point versions change
under a name; the cache records the exact package, version and sha256s.

apt runs through :class:`pvmon.guests.apt.AptSource`: each suite's own source
list, lists and apt cache under ``<cache>/apt/<suite>/``, never the system's.
The package is downloaded with ``apt-get download``; when it holds no kernel
(Debian 7.x splits ``linux-image-<R>`` into ``linux-binary-<R>``, the kernel,
and ``linux-base-<R>``, its config and System.map) the ``linux-binary-<R>`` and
``linux-base-<R>`` it depends on at the same version come with it. Each .deb is
unpacked with ``dpkg-deb -x`` (or in pure Python: ar + tar, when dpkg-deb is
absent), and cached under ``<cache>/guests/<name>/``:

* ``vmlinuz``      - the bzImage as shipped (``/boot/vmlinuz-<release>`` or
  ``/usr/lib/modules/<release>/vmlinuz``)
* ``vmlinux``      - the ELF extracted from it (:func:`~pvmon.engine.loaders.bzimage.extract_vmlinux`)
* ``System.map``   - as shipped. NB: Debian ships a one-line placeholder here; the
  real map is only in the ~300 MB ``-dbg`` package.
* ``kallsyms.map`` - System.map-format symbols decoded from the vmlinux's kallsyms
* ``config``       - the kernel's build configuration
* ``meta.json``    - suite, package, exact version, the package holding the
  kernel, every .deb used (name, version, size in bytes, sha256), release,
  sizes (bytes), sha256s, when the apt lists were updated, fetch time (UTC ISO
  8601) and duration (seconds)

``<cache>`` is ``$PVMON_CACHE`` if set, else ``platformdirs.user_cache_dir("pvmon")``.
Fetching when the cache already holds the resolved version does nothing. All
failures raise :class:`pvmon.errors.FetchError` (apt) or GuestImageError (image).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pvmon.cache import cache_root
from pvmon.engine.loaders.bzimage import extract_vmlinux, parse_header
from pvmon.engine.loaders.symbols import SymbolTable
from pvmon.errors import FetchError, GuestImageError
from pvmon.guests import apt

NAME_RE = re.compile(r"^debian-(\d+)\.(\d+)$")
#: Any signed cloud image package; groups 1 and 2: the upstream series X.Y.
IMAGE_RE = re.compile(r"^linux-image-(\d+)\.(\d+)(\.\d+)?(-\d+)?(\+deb\d+(\.\d+)?)?-cloud-amd64$")


@dataclass(frozen=True)
class Series:
    """Upstream kernel series ``version`` ("7.2") as fetched from Debian ``suite``."""

    version: str
    suite: str

    @property
    def name(self) -> str:
        """The guest name, ``debian-<version>``."""
        return f"debian-{self.version}"

    @property
    def pattern(self) -> re.Pattern[str]:
        """The signed image package names of this series."""
        x, y = self.version.split(".")
        return re.compile(rf"^linux-image-{x}\.{y}(\.\d+)?(-\d+)?(\+deb\d+(\.\d+)?)?"
                          r"-cloud-amd64$")

    @property
    def search(self) -> str:
        """A POSIX extended regex for ``apt-cache search`` (a superset of :attr:`pattern`)."""
        x, y = self.version.split(".")
        return rf"^linux-image-{x}\.{y}[.+-].*-cloud-amd64$"

    def match(self, package: str) -> re.Match[str] | None:
        """Whether ``package`` is a signed image package of this series."""
        return self.pattern.match(package)


#: The series pvmon knows by name, and the suite each comes from by default.
SERIES: dict[str, Series] = {s.name: s for s in (
    Series("6.1", "bookworm"),     # linux-image-6.1.0-<abi>-cloud-amd64
    Series("6.12", "bookworm"),    # linux-image-6.12.<n>+deb12-cloud-amd64 (bookworm-security)
    Series("7.2", "sid"),          # linux-image-7.2.<n>+deb14-cloud-amd64 (split: linux-binary-)
)}
META = "meta.json"


def guest_dir(name: str) -> Path:
    """Cache directory of one guest: ``<cache>/guests/<name>``."""
    return cache_root() / "guests" / name


def read_meta(name: str) -> dict | None:
    """The cached meta.json of ``name`` if it and every file it names exist, else None."""
    d = guest_dir(name)
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not all((d / f).is_file() for f in ("vmlinuz", "vmlinux")):
        return None
    return meta


# ------------------------------------------------------------------ versions


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _cmp_part(a: str, b: str) -> int:
    """dpkg's verrevcmp (dpkg lib/dpkg/version.c): alternate non-digit and digit runs."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _, rev = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, rev


def compare_versions(a: str, b: str) -> int:
    """Compare Debian versions like ``dpkg --compare-versions``: <0, 0 or >0
    (Debian Policy 5.6.12: ``[epoch:]upstream[-revision]``, ``~`` sorts first)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


# ------------------------------------------------------------------ apt


require_apt = apt.require_apt


@dataclass(frozen=True)
class Candidate:
    """An installable package version; ``suite`` None: from the system's apt sources."""

    package: str
    version: str
    suite: str | None = None


def is_series_name(name: str) -> bool:
    """Whether ``name`` has the form of a Debian guest name, ``debian-<X>.<Y>``."""
    return NAME_RE.match(name) is not None


def names() -> list[str]:
    """Every Debian guest name pvmon can resolve: the known :data:`SERIES`,
    then any other series in the cache (fetched with a suite), in version order."""
    root = cache_root() / "guests"
    extra = []
    if root.is_dir():
        extra = [p.name for p in root.iterdir()
                 if is_series_name(p.name) and p.name not in SERIES and (p / META).is_file()]
    key = lambda n: tuple(int(x) for x in NAME_RE.match(n).groups())  # type: ignore[union-attr]
    return [*SERIES, *sorted(extra, key=key)]


def series_for(name: str, suite: str | None = None) -> Series:
    """The series ``name`` ("debian-7.2") stands for, from ``suite`` if given,
    else from :data:`SERIES`, else from the suite its cached copy came from.
    Raises FetchError for a malformed name, an unknown suite, or an unknown
    series with no suite to fetch it from."""
    m = NAME_RE.match(name)
    if m is None:
        raise FetchError(f"{name!r} is not a Debian kernel name (debian-<major>.<minor>); "
                         f"known: {', '.join(SERIES)}")
    if suite is not None:
        apt.AptSource(suite)            # validates the suite
        return Series(f"{m[1]}.{m[2]}", suite)
    if name in SERIES:
        return SERIES[name]
    meta = read_meta(name) or {}
    if meta.get("suite") in apt.SUITES:
        return Series(f"{m[1]}.{m[2]}", meta["suite"])
    known = ", ".join(f"{n} ({s.suite})" for n, s in SERIES.items())
    raise FetchError(f"{name} is not a series pvmon knows ({known}); name the suite to fetch "
                     f"it from: --suite {'|'.join(apt.SUITES)}")


def _newest(src: apt.AptSource, pkgs: list[str], what: str) -> Candidate:
    cands = src.candidates(pkgs)
    if not cands:
        raise FetchError(f"none of {len(pkgs)} packages matching {what} has an installable "
                         "version")
    best = None
    for pkg, ver in cands.items():
        if best is None or compare_versions(ver, best.version) > 0:
            best = Candidate(pkg, ver, src.suite)
    assert best is not None
    return best


def _resolve(series: Series, src: apt.AptSource) -> Candidate:
    pkgs = [p for p in src.search(series.search) if series.match(p)]
    if not pkgs:
        raise FetchError(f"Debian {series.suite} has no package matching "
                         f"{series.pattern.pattern}")
    return _newest(src, pkgs, series.name)


def resolve_package(name: str, suite: str | None = None) -> Candidate:
    """Newest installable package of series ``name`` ("debian-6.1", "debian-7.2", ...)
    in its suite (see :func:`series_for`); updates that suite's lists first when
    they are missing or stale. Raises FetchError."""
    require_apt()
    series = series_for(name, suite)
    src = apt.AptSource(series.suite)
    src.ensure_lists()
    return _resolve(series, src)


def newest_series(suite: str) -> Series:
    """The newest cloud kernel series Debian ``suite`` carries (by package
    version), e.g. ``Series("7.2", "sid")``. Raises FetchError."""
    require_apt()
    src = apt.AptSource(suite)
    src.ensure_lists()
    pkgs = [p for p in src.search(r"^linux-image-[0-9]+\.[0-9]+.*-cloud-amd64$")
            if IMAGE_RE.match(p)]
    if not pkgs:
        raise FetchError(f"Debian {suite} has no linux-image-*-cloud-amd64 package")
    best = _newest(src, pkgs, f"linux-image-*-cloud-amd64 in {suite}")
    m = IMAGE_RE.match(best.package)
    assert m is not None
    return Series(f"{m[1]}.{m[2]}", suite)


def resolve_exact(package: str) -> Candidate:
    """The installable version of the package named exactly ``package`` (e.g.
    ``busybox-static``) in the system's apt sources. Raises FetchError when apt
    does not know it."""
    require_apt()
    ver = apt.AptSource(None).candidates([package]).get(package)
    if ver is None:
        raise FetchError(f"apt has no installable version of {package} "
                         "(is a Debian archive in sources.list, and apt-get update run?)")
    return Candidate(package, ver)


def download_package(cand: Candidate, where: Path) -> Path:
    """``apt-get download`` exactly ``cand`` (from its suite's source, or the
    system's) into a fresh folder under ``where``; returns the .deb's path.
    Raises FetchError."""
    return apt.AptSource(cand.suite).download([(cand.package, cand.version)],
                                              where)[cand.package]


def _split_packages(src: apt.AptSource, cand: Candidate) -> list[tuple[str, str]]:
    """The packages a split image package (Debian 7.x: ``linux-image-<R>``
    depends on ``linux-binary-<R>`` and ``linux-base-<R>`` at its own version)
    keeps the kernel and its config in, with their exact versions."""
    suffix = cand.package.removeprefix("linux-image-")
    want = (f"linux-binary-{suffix}", f"linux-base-{suffix}")
    return [(name, ver or cand.version) for name, ver in src.depends(cand.package, cand.version)
            if name in want]


def unpack_deb(deb: Path, dest: Path, prefixes: tuple[str, ...] = ("boot/",)) -> None:
    """Unpack ``deb``'s data member into ``dest``: dpkg-deb -x (everything), else
    ar + tar (deb(5)) keeping only members under ``prefixes``."""
    if shutil.which("dpkg-deb"):
        dest.mkdir(parents=True, exist_ok=True)    # dpkg-deb -x makes only the last level
        apt.run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=300,
                what=f"dpkg-deb -x {deb.name}")
        return
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise FetchError(f"{deb.name} is not a Debian package (no ar magic)")
    pos = 8
    while pos + 60 <= len(data):
        hdr = data[pos:pos + 60]
        member = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(hdr[48:58].decode("ascii").strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if not member.startswith("data.tar"):
            continue
        if member.endswith(".zst"):
            import zstandard

            body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
            mode = "r:"
        else:
            mode = "r:*"
        with tarfile.open(fileobj=io.BytesIO(body), mode=mode) as tar:
            members = [m for m in tar.getmembers() if m.name.lstrip("./").startswith(prefixes)]
            tar.extractall(dest, members=members, filter="data")
        return
    raise FetchError(f"{deb.name} has no data.tar member")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: Where packages keep the kernel, its config and System.map (``*`` is the release).
_KERNEL_FILES = ("boot/vmlinuz-*", "usr/lib/modules/*/vmlinuz")
_UNPACK = ("boot/", "usr/lib/modules/")


def _kernel_files(root: Path) -> tuple[Path, str, dict[str, Path]]:
    """In unpacked package trees under ``root``: the one vmlinuz, its release,
    and its ``config`` / ``System.map`` where present. Raises FetchError."""
    found = sorted(p for pat in _KERNEL_FILES for p in root.glob(f"*/{pat}"))
    if len(found) != 1:
        raise FetchError(f"the packages hold {len(found)} kernel files "
                         f"({' or '.join(_KERNEL_FILES)}), expected 1")
    vmlinuz = found[0]
    release = vmlinuz.name[len("vmlinuz-"):] if vmlinuz.name != "vmlinuz" \
        else vmlinuz.parent.name
    extra = {}
    for dst in ("config", "System.map"):
        for pat in (f"*/boot/{dst}-{release}", f"*/usr/lib/modules/{release}/{dst}"):
            hits = sorted(root.glob(pat))
            if hits:
                extra[dst] = hits[0]
                break
    return vmlinuz, release, extra


def fetch_debian(name: str, force: bool = False,
                 step: Callable[[str], None] = lambda what: None,
                 suite: str | None = None) -> dict:
    """Ensure the newest package of series ``name`` (from ``suite``, see
    :func:`series_for`) is cached; return its meta dict plus ``fetched`` and
    ``path``.

    A no-op (``"fetched": False``) when the cache already holds the resolved
    package version, unless ``force``; the suite's apt lists are updated first
    when older than :data:`pvmon.guests.apt.LISTS_MAX_AGE`, before a download
    when older than :data:`~pvmon.guests.apt.LISTS_FRESH`, and with ``force``.
    A cached copy from another suite is replaced only with ``force``.
    ``step``: called with what the fetch does next (for a progress display).
    Raises FetchError, GuestImageError."""
    t0 = time.monotonic()
    require_apt()
    series = series_for(name, suite)
    src = apt.AptSource(series.suite)

    def update() -> None:
        step(f"{name}: updating the Debian {series.suite} package lists (apt-get update)")
        src.update()

    meta = read_meta(name)
    # A copy fetched before pvmon kept its own lists names no suite: it came
    # from the system's, taken to be the series' usual suite.
    was = (meta or {}).get("suite") or (SERIES[name].suite if name in SERIES else series.suite)
    if meta and was != series.suite and not force:
        raise FetchError(f"{name} in the cache came from Debian {was} "
                         f"({meta.get('package')} {meta.get('version')}); pass --force to "
                         f"replace it with {series.suite}'s")
    updated = force or src.stale()
    if updated:
        update()
    step(f"{name}: resolving the newest package in Debian {series.suite} (apt-cache)")
    cand = _resolve(series, src)
    if not force and meta and meta.get("package") == cand.package \
            and meta.get("version") == cand.version:
        return {**meta, "fetched": False, "path": str(guest_dir(name))}
    if not updated and src.stale(apt.LISTS_FRESH):
        update()   # download from fresh lists: an old version may have left the pool
        cand = _resolve(series, src)
    root = cache_root() / "guests"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as tmp_s:
        tmp = Path(tmp_s)
        step(f"{name}: looking up {cand.package} {cand.version}'s split packages (apt-cache)")
        pkgs = [(cand.package, cand.version), *_split_packages(src, cand)]
        step(f"{name}: downloading {', '.join(f'{p} {v}' for p, v in pkgs)} (apt-get download)")
        debs = src.download(pkgs, tmp)
        t_dl = time.monotonic() - t0
        trees = tmp / "root"
        for pkg, deb in debs.items():
            step(f"{name}: unpacking {deb.name}")
            unpack_deb(deb, trees / pkg, _UNPACK)
        vmlinuz, release, extra = _kernel_files(trees)
        kernel_pkg = vmlinuz.relative_to(trees).parts[0]
        out = tmp / "out"
        out.mkdir()
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        for dst, srcf in extra.items():
            shutil.copyfile(srcf, out / dst)
        bz = (out / "vmlinuz").read_bytes()
        step(f"{name}: extracting the vmlinux and decoding its kallsyms")
        try:
            hdr = parse_header(bz)
            vmlinux = extract_vmlinux(bz)
        except GuestImageError as exc:
            raise GuestImageError(f"{kernel_pkg} {cand.version}: {exc}") from None
        (out / "vmlinux").write_bytes(vmlinux)
        syms = SymbolTable.from_kallsyms(vmlinux)
        syms.write_system_map(out / "kallsyms.map")
        image_deb = debs[cand.package]
        meta = {
            "name": name,
            "kind": "debian",
            "suite": series.suite,
            "package": cand.package,
            "version": cand.version,
            "kernel_package": kernel_pkg,
            "release": release,
            "deb_file": image_deb.name,
            "deb_size": image_deb.stat().st_size,
            "debs": [{"package": p, "version": v, "file": debs[p].name,
                      "size": debs[p].stat().st_size, "sha256": _sha256(debs[p])}
                     for p, v in pkgs],
            "compression": hdr.compression,
            "boot_protocol": f"{hdr.protocol >> 8}.{hdr.protocol & 0xff:02d}",
            "vmlinuz_size": len(bz),
            "vmlinux_size": len(vmlinux),
            "vmlinuz_sha256": hashlib.sha256(bz).hexdigest(),
            "vmlinux_sha256": hashlib.sha256(vmlinux).hexdigest(),
            "symbols": {"source": "kallsyms", "count": len(syms), "file": "kallsyms.map"},
            "apt_lists_updated": src.updated_iso(),
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "download_seconds": round(t_dl, 2),
            "fetch_seconds": round(time.monotonic() - t0, 2),
        }
        (out / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        final = guest_dir(name)
        old = tmp / "old"
        if final.exists():
            final.rename(old)
        out.rename(final)
    return {**meta, "fetched": True, "path": str(final)}
