"""What pvmon keeps in its cache directory, and cleaning it (``pvmon cache``).

Under ``<cache>`` (:func:`pvmon.cache.cache_root`) every item is one of:

* ``kernel``: a fetched Debian kernel, ``guests/<name>/`` (:mod:`pvmon.guests.debian`)
* ``initramfs``: a built initramfs, ``guests/initramfs/<kind>/``
  (:mod:`pvmon.guests.initramfs`)
* ``extracted``: the vmlinux pvmon extracted from a vmlinuz given by path,
  ``guests/by-sha256/<sha256 of the vmlinuz>/`` (:mod:`pvmon.guests.catalog`;
  ``origin.json`` there names the file it came from)
* ``apt``: one Debian suite's apt source list and package lists,
  ``apt/<suite>/`` (:mod:`pvmon.guests.apt`), which kernel fetches read
* ``engine``: a patched Unicorn build, ``engine/unicorn-<version>-pvmon-<id>/``
  and its ``build-<id>.log`` (:mod:`pvmon.engine.uclib`); a build for other
  patches than this pvmon's is ``stale``
* ``partial``: what an interrupted fetch, extraction or build left behind
* ``other``: anything else found there

Each item's ``used`` time is when it was last written or used (pvmon touches
a kernel, initramfs or extracted vmlinux when a run uses it). Removing an item
only costs fetching, extracting or building it again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pvmon.cache import cache_root
from pvmon.errors import PvmonError

KINDS = ("kernel", "initramfs", "extracted", "apt", "engine", "partial", "other")
ORIGIN = "origin.json"
_ENGINE_DIR = re.compile(r"^unicorn-[0-9.]+-pvmon-([0-9a-f]+)$")
_ENGINE_LOG = re.compile(r"^build-([0-9a-f]+)\.log$")
_TMP = re.compile(r"(^\.|\.tmp)")


@dataclass
class CacheItem:
    """One thing in the cache. ``kind``: one of :data:`KINDS`; ``name``: short
    name; ``paths``: the files and directories it is made of; ``size``: bytes;
    ``used``: last written or used (seconds since the epoch); ``origin``:
    where it came from, one line."""

    kind: str
    name: str
    paths: list[Path]
    size: int
    used: float
    origin: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "paths": [str(p) for p in self.paths],
                "size": self.size, "used": round(self.used), "origin": self.origin}


def _walk(path: Path) -> tuple[int, float]:
    """Total bytes and newest mtime of a file or a directory tree (symlinks not followed)."""
    try:
        st = path.lstat()
    except OSError:
        return 0, 0.0
    if not path.is_dir() or path.is_symlink():
        return st.st_size, st.st_mtime
    size, newest = 0, st.st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                s = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if name in files:
                size += s.st_size
            newest = max(newest, s.st_mtime)
    return size, newest


def _item(kind: str, name: str, paths: list[Path], origin: str) -> CacheItem:
    size, used = 0, 0.0
    for p in paths:
        s, u = _walk(p)
        size += s
        used = max(used, u)
    return CacheItem(kind, name, paths, size, used, origin)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_origin(entry: Path, source: Path) -> None:
    """Note in ``entry`` (an ``extracted`` item's directory) which file it came from."""
    try:
        (entry / ORIGIN).write_text(json.dumps({"source": str(source)}) + "\n",
                                    encoding="utf-8")
    except OSError:
        pass


def touch(path: Path) -> None:
    """Mark a cached item as used now (its directory's mtime); errors are ignored
    (a read-only cache still works)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _guests(root: Path) -> Iterator[CacheItem]:
    from pvmon.guests import debian
    from pvmon.guests import initramfs as irfs
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        name = p.name
        if name == "by-sha256" and p.is_dir():
            yield from _extracted(p)
        elif name == "initramfs" and p.is_dir():
            for q in sorted(p.iterdir()):
                meta = _json(q / irfs.META) if q.is_dir() else {}
                if _TMP.search(q.name):
                    yield _item("partial", q.name, [q], "left by an interrupted initramfs build")
                elif meta:
                    yield _item("initramfs", q.name, [q], f"built from apt: {meta.get('package')} "
                                f"{meta.get('version')}")
                else:
                    yield _item("other", q.name, [q], "not an initramfs pvmon built")
        elif _TMP.search(name):
            yield _item("partial", name, [p], "left by an interrupted fetch")
        elif name.startswith("uml-") and (p / "meta.json").is_file():
            meta = _json(p / "meta.json")
            yield _item("kernel", name, [p], f"apt {meta.get('suite')}: {meta.get('package')} "
                        f"{meta.get('version')} (User-Mode Linux)")
        elif debian.is_series_name(name) and (p / debian.META).is_file():
            meta = _json(p / debian.META)
            suite = f" {meta['suite']}" if meta.get("suite") else ""
            yield _item("kernel", name, [p], f"apt{suite}: {meta.get('package')} "
                        f"{meta.get('version')}")
        else:
            yield _item("other", name, [p], "not a kernel pvmon fetched")


def _extracted(d: Path) -> Iterator[CacheItem]:
    for q in sorted(d.iterdir()):
        if _TMP.search(q.name):
            yield _item("partial", q.name, [q], "left by an interrupted extraction")
            continue
        partial = [f for f in q.iterdir() if ".tmp" in f.name] if q.is_dir() else []
        src = _json(q / ORIGIN).get("source")
        if isinstance(src, str):
            gone = "" if Path(src).exists() else " (that file is gone)"
            origin = f"vmlinux extracted from {src}{gone}"
        else:
            origin = f"vmlinux extracted from a vmlinuz with sha256 {q.name[:16]}..."
        yield _item("extracted", q.name[:12], [q], origin)
        for f in partial:
            yield _item("partial", f.name, [f], "left by an interrupted extraction")


def _engine(d: Path) -> Iterator[CacheItem]:
    from pvmon.engine import uclib
    if not d.is_dir():
        return
    current = uclib.build_id()
    logs = {m[1]: p for p in d.iterdir() if (m := _ENGINE_LOG.match(p.name))}
    for p in sorted(d.iterdir()):
        m = _ENGINE_DIR.match(p.name)
        if m:
            stamp = _json(p / uclib.STAMP_NAME)
            log = logs.pop(m[1], None)
            state = "in use" if m[1] == current else "stale: other patches"
            built = f" {str(stamp['built_at'])[:10]}" if stamp.get("built_at") else ""
            yield _item("engine", p.name, [p] + ([log] if log else []),
                        f"pvmon engine build{built} ({state})")
        elif _ENGINE_LOG.match(p.name):
            continue
        elif _TMP.search(p.name):
            yield _item("partial", p.name, [p], "left by an interrupted engine build")
        else:
            yield _item("other", p.name, [p], "not an engine build")
    for bid, log in sorted(logs.items()):
        yield _item("engine", log.name, [log], "log of a failed or removed engine build"
                    + (" (this pvmon's)" if bid == current else ""))


def _apt(d: Path) -> Iterator[CacheItem]:
    from pvmon.guests import apt
    if not d.is_dir():
        return
    for p in sorted(d.iterdir()):
        if p.name in apt.SUITES and p.is_dir():
            when = apt.AptSource(p.name).updated_iso()
            yield _item("apt", p.name, [p], f"apt lists of Debian {p.name} for kernel fetches"
                        + (f" (updated {when[:10]})" if when else " (never updated)"))
        else:
            yield _item("other", p.name, [p], "not a suite pvmon fetches from")


def items(root: Path | None = None) -> list[CacheItem]:
    """Everything in the cache at ``root`` (default: :func:`cache_root`)."""
    root = cache_root() if root is None else root
    out = [*_guests(root / "guests"), *_apt(root / "apt"), *_engine(root / "engine")]
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.name not in ("guests", "apt", "engine"):
                out.append(_item("other", p.name, [p], "not something pvmon keeps"))
    return out


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``/``12h``/``2w``/``90m``/``45s`` (a bare number: days) -> seconds.
    Raises PvmonError for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise PvmonError(f"--older-than {text!r} is not an age (examples: 30d, 12h, 2w)")
    return float(m[1]) * _AGE_UNITS[m[2] or "d"]


def select(all_items: list[CacheItem], *, everything: bool = False,
           kinds: tuple[str, ...] = (), older_than: float | None = None,
           now: float | None = None) -> list[CacheItem]:
    """The items ``pvmon cache clean`` removes: every item when ``everything``,
    else those of ``kinds`` (any kind when empty) last used more than
    ``older_than`` seconds ago (any age when None)."""
    if everything:
        return list(all_items)
    now = time.time() if now is None else now
    return [i for i in all_items if (not kinds or i.kind in kinds)
            and (older_than is None or now - i.used > older_than)]


def remove(item: CacheItem) -> None:
    """Delete an item's files. Raises PvmonError naming what could not be removed."""
    for p in item.paths:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        except OSError as exc:
            raise PvmonError(f"cannot remove {p}: {exc.strerror}") from None


def human_size(n: int) -> str:
    """``57.0 MB``: bytes in decimal units, one decimal (Rich's ``filesize.decimal``,
    imported here: a run resolves its guest through this module and prints no size)."""
    from rich import filesize
    return filesize.decimal(n)


def human_age(seconds: float) -> str:
    """``3 d ago``: an age in the largest whole unit."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"
