"""Fetch stock Debian cloud kernels with apt and cache them.

``fetch_debian("debian-6.12")`` resolves the newest signed image package matching
the series pattern (``linux-image-6.12.<n>+deb<m>-cloud-amd64``,
``linux-image-6.1.0-<abi>-cloud-amd64``; never ``-dbg``, ``-unsigned`` or the
meta packages), downloads it with ``apt-get download``, unpacks it with
``dpkg-deb -x`` (or in pure Python: ar + tar, when dpkg-deb is absent), and
caches, under ``<cache>/guests/<name>/``:

* ``vmlinuz``      - the bzImage as shipped (``/boot/vmlinuz-<release>``)
* ``vmlinux``      - the ELF extracted from it (:func:`~pvmon.engine.loaders.bzimage.extract_vmlinux`)
* ``System.map``   - as shipped. NB: Debian ships a one-line placeholder here; the
  real map is only in the ~300 MB ``-dbg`` package.
* ``kallsyms.map`` - System.map-format symbols decoded from the vmlinux's kallsyms
* ``config``       - ``/boot/config-<release>``
* ``meta.json``    - package, exact version, release, sizes (bytes), sha256s,
  fetch time (UTC ISO 8601) and duration (seconds)

``<cache>`` is ``$PVMON_CACHE`` if set, else ``platformdirs.user_cache_dir("pvmon")``.
Fetching when the cache already holds the resolved version does nothing. All
failures raise :class:`pvmon.errors.FetchError` (apt) or GuestImageError (image).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
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

#: Series name -> regular expression for the signed image package names.
SERIES: dict[str, re.Pattern[str]] = {
    "debian-6.1": re.compile(r"^linux-image-6\.1\.0-\d+-cloud-amd64$"),
    "debian-6.12": re.compile(r"^linux-image-6\.12\.\d+(\+deb\d+)?-cloud-amd64$"),
}
_SEARCH = {
    "debian-6.1": r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
    "debian-6.12": r"^linux-image-6\.12\.[0-9]+.*-cloud-amd64$",
}
META = "meta.json"
APT_TIMEOUT = 900  # seconds for one apt-get download


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


def _run(args: list[str], cwd: Path | None = None, timeout: int = 120) -> str:
    try:
        res = subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise FetchError(f"{args[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{' '.join(args[:3])} timed out after {timeout} s") from None
    if res.returncode != 0:
        errs = [ln for ln in res.stderr.splitlines() if ln.startswith("E:")] or \
            res.stderr.strip().splitlines() or [f"exit status {res.returncode}"]
        raise FetchError(f"{' '.join(args[:3])} failed: {errs[-1]}")
    return res.stdout


def require_apt() -> None:
    """Raise FetchError unless apt-get and apt-cache are on PATH."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        raise FetchError(
            "apt-get not found, so Debian kernels cannot be fetched here; "
            "pass the path of any vmlinuz or vmlinux instead"
        )


@dataclass(frozen=True)
class Candidate:
    package: str
    version: str


def resolve_package(name: str) -> Candidate:
    """Newest installable package of series ``name`` ("debian-6.1" | "debian-6.12")."""
    if name not in SERIES:
        raise FetchError(f"unknown Debian series {name!r}; known: {', '.join(SERIES)}")
    require_apt()
    out = _run(["apt-cache", "search", "--names-only", _SEARCH[name]])
    pkgs = sorted({ln.split(" - ", 1)[0].strip() for ln in out.splitlines()})
    pkgs = [p for p in pkgs if SERIES[name].match(p)]
    if not pkgs:
        raise FetchError(
            f"apt knows no package matching {SERIES[name].pattern} "
            "(is a Debian archive with the kernel in sources.list, and apt-get update run?)"
        )
    policy = _run(["apt-cache", "policy", *pkgs])
    cands: list[Candidate] = []
    current = None
    for ln in policy.splitlines():
        if ln and not ln.startswith(" ") and ln.endswith(":"):
            current = ln[:-1]
        elif current and ln.strip().startswith("Candidate:"):
            ver = ln.split(":", 1)[1].strip()
            if ver and ver != "(none)":
                cands.append(Candidate(current, ver))
    if not cands:
        raise FetchError(f"none of {len(pkgs)} packages matching {name} has an installable version")
    best = cands[0]
    for c in cands[1:]:
        if compare_versions(c.version, best.version) > 0:
            best = c
    return best


def resolve_exact(package: str) -> Candidate:
    """The installable version of the package named exactly ``package`` (e.g.
    ``busybox-static``). Raises FetchError when apt does not know it."""
    require_apt()
    policy = _run(["apt-cache", "policy", package])
    for ln in policy.splitlines():
        if ln.strip().startswith("Candidate:"):
            ver = ln.split(":", 1)[1].strip()
            if ver and ver != "(none)":
                return Candidate(package, ver)
    raise FetchError(f"apt has no installable version of {package} "
                     "(is a Debian archive in sources.list, and apt-get update run?)")


def download_package(cand: Candidate, where: Path) -> Path:
    """``apt-get download`` exactly ``cand`` into a fresh folder under ``where``;
    returns the .deb's path. Raises FetchError."""
    dl = where / "dl"
    dl.mkdir()
    os.chmod(where, 0o755)
    os.chmod(dl, 0o777)  # lets apt's _apt user write there, avoiding its sandbox warning
    _run(["apt-get", "download", "-q", f"{cand.package}={cand.version}"], cwd=dl,
         timeout=APT_TIMEOUT)
    debs = list(dl.glob("*.deb"))
    if len(debs) != 1:
        raise FetchError(f"apt-get download left {len(debs)} .deb files, expected 1")
    return debs[0]


def unpack_deb(deb: Path, dest: Path, prefixes: tuple[str, ...] = ("boot/",)) -> None:
    """Unpack ``deb``'s data member into ``dest``: dpkg-deb -x (everything), else
    ar + tar (deb(5)) keeping only members under ``prefixes``."""
    if shutil.which("dpkg-deb"):
        _run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=300)
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


def fetch_debian(name: str, force: bool = False,
                 step: Callable[[str], None] = lambda what: None) -> dict:
    """Ensure the newest package of series ``name`` is cached; return its meta dict.

    A no-op (returns the cached meta with ``"fetched": False``) when the cache
    already holds the resolved package version, unless ``force``. ``step``:
    called with what the fetch does next (for a progress display)."""
    t0 = time.monotonic()
    step(f"{name}: resolving the newest package (apt-cache)")
    cand = resolve_package(name)
    meta = read_meta(name)
    if not force and meta and meta.get("package") == cand.package \
            and meta.get("version") == cand.version:
        return {**meta, "fetched": False, "path": str(guest_dir(name))}
    root = cache_root() / "guests"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root) as tmp_s:
        tmp = Path(tmp_s)
        step(f"{name}: downloading {cand.package} {cand.version} (apt-get download)")
        deb = download_package(cand, tmp)
        t_dl = time.monotonic() - t0
        root_fs = tmp / "root"
        step(f"{name}: unpacking {deb.name}")
        unpack_deb(deb, root_fs)
        vmlinuzes = sorted((root_fs / "boot").glob("vmlinuz-*"))
        if len(vmlinuzes) != 1:
            raise FetchError(f"{deb.name} holds {len(vmlinuzes)} /boot/vmlinuz-* files")
        release = vmlinuzes[0].name[len("vmlinuz-"):]
        out = tmp / "out"
        out.mkdir()
        shutil.copyfile(vmlinuzes[0], out / "vmlinuz")
        for src, dst in ((f"System.map-{release}", "System.map"), (f"config-{release}", "config")):
            if (root_fs / "boot" / src).is_file():
                shutil.copyfile(root_fs / "boot" / src, out / dst)
        bz = (out / "vmlinuz").read_bytes()
        step(f"{name}: extracting the vmlinux and decoding its kallsyms")
        try:
            hdr = parse_header(bz)
            vmlinux = extract_vmlinux(bz)
        except GuestImageError as exc:
            raise GuestImageError(f"{cand.package} {cand.version}: {exc}") from None
        (out / "vmlinux").write_bytes(vmlinux)
        syms = SymbolTable.from_kallsyms(vmlinux)
        syms.write_system_map(out / "kallsyms.map")
        meta = {
            "name": name,
            "kind": "debian",
            "package": cand.package,
            "version": cand.version,
            "release": release,
            "deb_file": deb.name,
            "deb_size": deb.stat().st_size,
            "compression": hdr.compression,
            "boot_protocol": f"{hdr.protocol >> 8}.{hdr.protocol & 0xff:02d}",
            "vmlinuz_size": len(bz),
            "vmlinux_size": len(vmlinux),
            "vmlinuz_sha256": hashlib.sha256(bz).hexdigest(),
            "vmlinux_sha256": hashlib.sha256(vmlinux).hexdigest(),
            "symbols": {"source": "kallsyms", "count": len(syms), "file": "kallsyms.map"},
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
