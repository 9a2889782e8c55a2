"""Guest kernel catalog: turn a name or path into a :class:`GuestImage`.

Names:

* ``None`` -> :data:`DEFAULT_GUEST` ("pvtest-v2")
* ``"pvtest-v1"``, ``"pvtest-v2"``, ``"pvtest-v2-rules"`` (v2 plus the checks of
  the rules Xen enforces on any guest), ``"pvtest-v2-poc"`` (the hostile variant
  that reports, per Xen security advisory, vulnerable or fixed), ``"pvtest-v2-smp"``
  (v2 plus the checks of an SMP domain: run it with ``--vcpus 2``),
  ``"pvtest-v2-pvh"`` (the Xen PVH build: its checks on a PVH domain; its
  guest mode is ``"pvh"``, :data:`BUILTIN_MODES`) -> built-in reference guests at
  ``pvmon/guests/images/<name>.elf``; ``"pvtest-kvm"`` (the KVM reference
  guest, on ``kvm-6.12`` unless ``--backend`` says otherwise,
  :data:`BUILTIN_BACKENDS`) (symbols from ``<name>.map`` beside it, or
  the ELF ``.symtab``)
* ``"debian-<X>.<Y>"`` -> the cache filled by ``pvmon guests fetch``: the known
  series (``debian-6.1``, ``debian-6.12``, ``debian-7.2``) and any other series
  fetched from a named suite (see :mod:`pvmon.guests.debian`)
* an existing file -> an ELF vmlinux, or a bzImage whose vmlinux is extracted once
  into ``<cache>/guests/by-sha256/<sha256 of the bzImage>/vmlinux``; a
  ``System.map`` / ``System.map-<release>`` and ``config-<release>`` beside it
  are picked up.

Errors: GuestNotFound for unknown names, uncached Debian kernels and missing
built-in images; GuestImageError for malformed files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pvmon.engine.loaders.bzimage import ELF_MAGIC, check_elf_x86_64, load_vmlinux
from pvmon.engine.loaders.symbols import SymbolTable
from pvmon.errors import GuestImageError, GuestNotFound
from pvmon.guests import cachedir, debian

DEFAULT_GUEST = "pvtest-v2"
BUILTIN = ("pvtest-v1", "pvtest-v2", "pvtest-v2-rules", "pvtest-v2-poc", "pvtest-v2-smp",
           "pvtest-v2-pvh",
           "pvtest-lguest", "pvtest-lguest-pae", "pvtest-vmi", "pvtest-kvm")
#: The guest mode a built-in guest boots in when the user names none (``pvmon
#: run GUEST`` without ``--mode``); a built-in not listed takes the backend's
#: default (Xen PV). pvtest-v2-pvh has no PV entry point.
BUILTIN_MODES = {"pvtest-v2-pvh": "pvh", "pvtest-lguest-pae": "pae"}
#: Built-in guests of another ABI than Xen: the backend they run on when
#: ``--backend`` is not given (the 32-bit lguest build boots only on lguest).
BUILTIN_BACKENDS = {"pvtest-lguest": "lguest-4.13", "pvtest-lguest-pae": "lguest-4.13",
                    "pvtest-vmi": "vmi-3.0", "pvtest-kvm": "kvm-6.12"}
#: The 32-bit (ELFCLASS32) built-ins: their guest kind's loader checks them.
_BUILTIN_ELF32 = frozenset({"pvtest-lguest", "pvtest-lguest-pae", "pvtest-vmi"})
DEBIAN = tuple(debian.SERIES)   # the known Debian series; debian.names() adds cached ones
IMAGES_DIR = Path(__file__).parent / "images"


@dataclass
class GuestImage:
    """One guest kernel ready to load. Paths are absolute; ``sha256`` is the hex
    SHA-256 of the ``vmlinux`` ELF file actually loaded."""

    name: str
    kind: Literal["debian", "builtin", "path"]
    vmlinux: Path
    vmlinuz: Path | None
    system_map: Path | None   # a System.map-format file (for Debian: decoded from kallsyms)
    config: Path | None
    package: str | None
    version: str | None
    release: str | None
    sha256: str
    #: The guest mode this image boots in by default ("pvh"), or None: the
    #: backend's default. ``--mode`` overrides it (:func:`pvmon.cli._session_args`).
    mode: str | None = None
    #: The backend this image runs on by default (``--backend`` not given),
    #: or None: the command's default (:data:`BUILTIN_BACKENDS`).
    backend: str | None = None
    _symbols: SymbolTable | None = field(default=None, init=False, repr=False, compare=False)

    def format_address(self, addr: int) -> str:
        """``name+0xoff`` of ``addr``, as ``symbols().format``; a kernel with a
        System.map whose table is not loaded yet answers from the file
        directly (one address: what a run's summary needs)."""
        if self._symbols is None and self.system_map is not None:
            from pvmon.engine.loaders.symbols import format_from_system_map
            out = format_from_system_map(self.system_map, addr)
            if out is not None:
                return out
        return self.symbols().format(addr)

    def symbols(self) -> SymbolTable:
        """Symbols of this kernel: System.map if present, else ELF ``.symtab``, else
        the kernel's embedded kallsyms. Cached after the first call."""
        if self._symbols is None:
            if self.system_map is not None:
                self._symbols = SymbolTable.from_system_map(self.system_map)
            else:
                try:
                    self._symbols = SymbolTable.from_elf(self.vmlinux)
                except GuestImageError:
                    self._symbols = SymbolTable.from_kallsyms(self.vmlinux)
        return self._symbols


def known_names() -> list[str]:
    """Built-in guests, then every Debian guest name (known or cached), then the
    UML guests (``pvmon run uml-6.1``: run natively, not through :func:`resolve`)."""
    from pvmon.uml import guest as uml
    return [*BUILTIN, *debian.names(), *uml.names()]


_sha256_file = debian._sha256


def _is_symbol_map(path: Path) -> bool:
    """True if ``path`` is a System.map with symbols (not Debian's one-line placeholder)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.count(b"\n") > 2


def _builtin(name: str) -> GuestImage:
    elf = IMAGES_DIR / f"{name}.elf"
    if not elf.is_file():
        raise GuestNotFound(
            f"built-in guest {name} is not available: {elf} does not exist (not built yet?)"
        )
    if name not in _BUILTIN_ELF32:
        check_elf_x86_64(elf.read_bytes())
    smap = elf.with_suffix(".map")
    return GuestImage(
        name=name, kind="builtin", vmlinux=elf, vmlinuz=None,
        system_map=smap if _is_symbol_map(smap) else None, config=None,
        package=None, version=None, release=None, sha256=_sha256_file(elf),
        mode=BUILTIN_MODES.get(name), backend=BUILTIN_BACKENDS.get(name),
    )


def _debian(name: str) -> GuestImage:
    meta = debian.read_meta(name)
    if meta is None:
        raise GuestNotFound(f"{name} is not fetched yet; run `pvmon guests fetch {name}`")
    d = debian.guest_dir(name)
    cachedir.touch(d)
    smap = next((d / f for f in ("System.map", "kallsyms.map") if _is_symbol_map(d / f)), None)
    return GuestImage(
        name=name, kind="debian", vmlinux=d / "vmlinux", vmlinuz=d / "vmlinuz",
        system_map=smap, config=d / "config" if (d / "config").is_file() else None,
        package=meta.get("package"), version=meta.get("version"), release=meta.get("release"),
        sha256=_fetched_sha256(d, meta),
    )


def _fetched_sha256(d: Path, meta: dict) -> str:
    """The sha256 of a fetched kernel's ``vmlinux``: the one its fetch recorded
    in ``meta.json`` while the file is unchanged since (same size, not modified
    after ``meta.json`` was written), else hashed again (about 40 ms a run)."""
    vmlinux = d / "vmlinux"
    want = meta.get("vmlinux_sha256")
    try:
        st, st_meta = vmlinux.stat(), (d / debian.META).stat()
    except OSError:
        st = st_meta = None
    if (isinstance(want, str) and st is not None and st.st_size == meta.get("vmlinux_size")
            and st.st_mtime_ns <= st_meta.st_mtime_ns):
        return want
    return _sha256_file(vmlinux)


def _from_path(path: Path) -> GuestImage:
    path = path.resolve()
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise GuestImageError(f"cannot read {path}: {exc.strerror}") from None
    base = path.name
    release = None
    for prefix in ("vmlinuz-", "vmlinux-", "bzImage-"):
        if base.startswith(prefix):
            release = base[len(prefix):]
    if magic == ELF_MAGIC:
        data = path.read_bytes()
        if data[4:5] != b"\x01":       # ELFCLASS32 (lguest): its guest kind's loader checks it
            check_elf_x86_64(data)
        vmlinux, vmlinuz = path, None
    else:
        vmlinux, vmlinuz = _extracted_vmlinux(path), path
    smap = None
    names = ["System.map"] + ([f"System.map-{release}"] if release else [])
    for cand in names:
        if _is_symbol_map(path.parent / cand):
            smap = path.parent / cand
    config = path.parent / f"config-{release}" if release else None
    return GuestImage(
        name=str(path), kind="path", vmlinux=vmlinux, vmlinuz=vmlinuz, system_map=smap,
        config=config if config and config.is_file() else None,
        package=None, version=None, release=release, sha256=_sha256_file(vmlinux),
    )


def _extracted_vmlinux(vmlinuz: Path) -> Path:
    """The vmlinux inside the bzImage ``vmlinuz``: a fetched Debian kernel's own
    when it is that kernel's vmlinuz, else extracted once into
    ``by-sha256/<sha256>/`` (with ``origin.json`` naming ``vmlinuz``, see
    :mod:`pvmon.guests.cachedir`). Either is marked as used."""
    key = _sha256_file(vmlinuz)
    for name in debian.names():
        meta = debian.read_meta(name)
        if meta and meta.get("vmlinuz_sha256") == key:
            cachedir.touch(debian.guest_dir(name))
            return debian.guest_dir(name) / "vmlinux"
    entry = debian.cache_root() / "guests" / "by-sha256" / key
    cached = entry / "vmlinux"
    if not cached.is_file():
        data = load_vmlinux(vmlinuz)
        entry.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(cached)
    if not (entry / cachedir.ORIGIN).is_file():
        cachedir.record_origin(entry, vmlinuz)
    cachedir.touch(entry)
    return cached


def resolve(name_or_path: str | None) -> GuestImage:
    """Resolve a guest name, a kernel file path, or None (the default guest)."""
    name = DEFAULT_GUEST if name_or_path is None else name_or_path
    if name in BUILTIN:
        return _builtin(name)
    if name in debian.names():
        return _debian(name)
    from pvmon.uml.guest import is_uml_name
    if is_uml_name(name):
        raise GuestNotFound(f"{name} is a User-Mode Linux kernel: it runs natively under "
                            f"pvmon's tracer (`pvmon run {name}`, docs/uml.md), not on the "
                            "engine")
    p = Path(name).expanduser()
    if p.is_file():
        return _from_path(p)
    if p.exists():
        raise GuestNotFound(f"{name} is not a regular file")
    hint = (f"; another series is fetched from a named suite: pvmon guests fetch {name} "
            "--suite SUITE") if debian.is_series_name(name) else ""
    raise GuestNotFound(
        f"unknown guest {name!r}: not a file, and not one of {', '.join(known_names())}{hint}"
    )


def fetch(name: str, force: bool = False, suite: str | None = None) -> GuestImage:
    """Fetch a Debian guest into the cache (a no-op if current; ``suite``: see
    :func:`pvmon.guests.debian.series_for`); built-ins resolve as is."""
    if name in debian.names() or (debian.is_series_name(name) and suite):
        debian.fetch_debian(name, force=force, suite=suite)
        return _debian(name)
    if name in BUILTIN:
        return _builtin(name)
    raise GuestNotFound(f"cannot fetch {name!r}: fetchable guests are {', '.join(DEBIAN)}")


def debian_guest(name: str) -> GuestImage:
    """The cached Debian guest ``name``, fetching it first if it is not cached (for tests)."""
    if debian.read_meta(name) is None:
        debian.fetch_debian(name)
    return _debian(name)


def list_guests() -> list[dict]:
    """One row per known guest (and initramfs, kind "initramfs"; and each
    vmlinux extracted from a vmlinuz given by path, kind "path"): name, kind,
    version, status ("built in" | "missing" | "cached" | "not fetched" |
    "extracted"), path (str or None), and for Debian the package and the suite
    it comes (or would come) from."""
    rows: list[dict] = []
    for name in BUILTIN:
        elf = IMAGES_DIR / f"{name}.elf"
        ok = elf.is_file()
        rows.append({
            "name": name, "kind": "builtin", "version": None, "package": None,
            "status": "built in" if ok else "missing", "cached": ok,
            "path": str(elf) if ok else None,
        })
    for name in debian.names():
        meta = debian.read_meta(name)
        rows.append({**_cached_row(name, "debian", meta, debian.guest_dir),
                     "suite": (meta or {}).get("suite") or (
                         debian.SERIES[name].suite if name in debian.SERIES else None)})
    from pvmon.uml import guest as uml
    for name in uml.names():
        meta = uml.read_meta(name)
        rows.append({**_cached_row(name, "uml", meta, uml.guest_dir),
                     "suite": (meta or {}).get("suite") or uml.SERIES.get(name)})
    from pvmon.guests import initramfs
    for name in initramfs.KINDS:
        rows.append(_cached_row(name, "initramfs", initramfs.read_meta(name),
                                initramfs.initramfs_path))
    for item in cachedir.items():
        if item.kind == "extracted":
            rows.append({"name": item.origin.removeprefix("vmlinux extracted from "),
                         "kind": "path", "version": None, "package": None,
                         "status": "extracted", "cached": True,
                         "path": str(item.paths[0] / "vmlinux")})
    return rows


def _cached_row(name: str, kind: str, meta: dict | None, path_of) -> dict:
    """A ``list_guests`` row for something fetched into the cache (``meta``:
    its cache record, None when not fetched)."""
    return {"name": name, "kind": kind,
            "version": meta.get("version") if meta else None,
            "package": meta.get("package") if meta else None,
            "status": "cached" if meta else "not fetched", "cached": meta is not None,
            "path": str(path_of(name)) if meta else None}
