"""apt, pointed at one Debian suite through configuration kept in pvmon's cache.

``AptSource("sid")`` runs ``apt-get``/``apt-cache`` with options that replace
every file through which the system's apt configuration chooses packages, so
the system's sources, pins, package lists and dpkg status are neither read nor
written:

* ``Dir::Etc::SourceList`` / ``SourceParts``: ``<root>/sources.list`` (written
  here: the suite's ``deb`` lines, each ``signed-by`` Debian's archive keyring)
  and an empty ``<root>/sources.list.d``
* ``Dir::Etc::Preferences`` / ``PreferencesParts``: none (no pinning)
* ``Dir::State::Lists``: ``<root>/lists``, filled by the source's own
  ``apt-get update``; ``Dir::State::status``: an empty file; ``Dir::Cache``:
  ``<root>/cache`` (apt's binary package cache)
* ``APT::Architecture(s)``: amd64 (the guests are x86-64 whatever the host);
  ``APT::Default-Release`` cleared; ``Acquire::Languages=none``

where ``<root>`` is ``<cache>/apt/<suite>`` (:func:`pvmon.cache.cache_root`).
The system's ``apt.conf`` (a proxy, say) still applies. Signatures are checked
against ``/usr/share/keyrings/debian-archive-keyring.gpg`` from the
``debian-archive-keyring`` package (every Debian system has it). Every failure
raises :class:`pvmon.errors.FetchError` with one readable line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from pvmon.cache import cache_root
from pvmon.errors import FetchError

#: Debian's archive and security archive (deb.debian.org is Debian's CDN).
ARCHIVE = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: Suite name -> the (archive, suite) pairs its source list names. A stable or
#: testing suite brings its -updates and -security suites (kernel point
#: releases arrive through -security); sid has neither.
SUITES: dict[str, tuple[tuple[str, str], ...]] = {
    s: ((ARCHIVE, s), (ARCHIVE, f"{s}-updates"), (SECURITY, f"{s}-security"))
    for s in ("bookworm", "trixie", "forky")
}
SUITES["sid"] = ((ARCHIVE, "sid"),)
#: Lists older than this (seconds) are refreshed before a package is resolved.
LISTS_MAX_AGE = 6 * 3600
#: ... and older than this (seconds) before a package is downloaded, so that the
#: version downloaded is the newest and still in the archive's pool.
LISTS_FRESH = 600
STAMP = "updated"
UPDATE_TIMEOUT = 600     # seconds for one apt-get update
DOWNLOAD_TIMEOUT = 900   # seconds for one apt-get download


def run(args: list[str], cwd: Path | None = None, timeout: int = 120,
        what: str | None = None) -> str:
    """Run an apt tool; return its stdout. Raises FetchError naming it as
    ``what`` (default: the tool and its command word) with apt's last ``E:``
    line (or its last stderr line) when it fails, is missing or times out."""
    what = what or f"{args[0]} {_verb(args)}".strip()
    try:
        res = subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True,
                             timeout=timeout)
    except FileNotFoundError:
        raise FetchError(f"{args[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what} timed out after {timeout} s") from None
    if res.returncode != 0:
        errs = [ln for ln in res.stderr.splitlines() if ln.startswith("E:")] or \
            res.stderr.strip().splitlines() or [f"exit status {res.returncode}"]
        raise FetchError(f"{what} failed: {errs[-1]}")
    return res.stdout


def _verb(args: list[str]) -> str:
    """The apt command word of ``args`` (skipping ``-o`` options)."""
    it = iter(args[1:])
    for a in it:
        if a == "-o":
            next(it, None)
        elif not a.startswith("-"):
            return a
    return ""


def require_apt() -> None:
    """Raise FetchError unless apt-get and apt-cache are on PATH."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        raise FetchError(
            "apt-get not found, so Debian kernels cannot be fetched here; "
            "pass the path of any vmlinuz or vmlinux instead"
        )


class AptSource:
    """apt for one suite (a key of :data:`SUITES`), or, with ``suite=None``,
    the system's own configuration (what ``apt-get`` alone uses)."""

    def __init__(self, suite: str | None) -> None:
        if suite is not None and suite not in SUITES:
            raise FetchError(f"unknown Debian suite {suite!r}; known: {', '.join(SUITES)}")
        self.suite = suite

    @property
    def root(self) -> Path:
        """``<cache>/apt/<suite>``: this source's configuration, lists and apt cache."""
        if self.suite is None:
            raise FetchError("the system's apt configuration has no pvmon directory")
        return cache_root() / "apt" / self.suite

    def sources_list(self) -> str:
        """The ``sources.list`` text (one-line style, sources.list(5))."""
        if self.suite is None:
            return ""
        return "".join(f"deb [arch=amd64 signed-by={KEYRING}] {url} {suite} main\n"
                       for url, suite in SUITES[self.suite])

    def options(self) -> list[str]:
        """The ``-o`` options that point apt at this source only (none for the system's)."""
        if self.suite is None:
            return []
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "sources.list",
            "Dir::Etc::SourceParts": r / "sources.list.d",
            "Dir::Etc::Preferences": r / "preferences",
            "Dir::Etc::PreferencesParts": r / "preferences.d",
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": r / "cache",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "APT::Default-Release": "",
            "Acquire::Languages": "none",
        }
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def _prepare(self) -> None:
        """Create the directory tree and (re)write ``sources.list``."""
        r = self.root
        for d in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "status").touch()
        text = self.sources_list()
        sl = r / "sources.list"
        if not sl.is_file() or sl.read_text(encoding="utf-8") != text:
            sl.write_text(text, encoding="utf-8")

    def updated_at(self) -> float | None:
        """When the lists were last updated (seconds since the epoch), or None.
        Always None for the system's configuration (pvmon never updates it)."""
        if self.suite is None:
            return None
        try:
            return (self.root / STAMP).stat().st_mtime
        except OSError:
            return None

    def updated_iso(self) -> str | None:
        """:meth:`updated_at` as UTC ISO 8601, or None."""
        t = self.updated_at()
        return None if t is None else \
            datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

    def update(self) -> None:
        """``apt-get update`` into this source's lists. Raises FetchError (no
        keyring, no network, a bad signature)."""
        if self.suite is None:
            raise FetchError("pvmon does not update the system's apt lists")
        require_apt()
        if not KEYRING.is_file():
            raise FetchError(f"Debian's archive keyring {KEYRING} is missing; install the "
                             "debian-archive-keyring package")
        self._prepare()
        run(["apt-get", "-q", *self.options(), "update"], timeout=UPDATE_TIMEOUT)
        (self.root / STAMP).write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n",
                                       encoding="utf-8")

    def stale(self, max_age: float = LISTS_MAX_AGE) -> bool:
        """Whether the lists are missing, older than ``max_age`` seconds, or
        from another source list. Never for the system's (pvmon uses them as
        they are)."""
        if self.suite is None:
            return False
        t = self.updated_at()
        sl = self.root / "sources.list"
        try:
            same = sl.read_text(encoding="utf-8") == self.sources_list()
        except OSError:
            same = False
        return t is None or time.time() - t > max_age or not same

    def ensure_lists(self, max_age: float = LISTS_MAX_AGE) -> bool:
        """Update the lists if :meth:`stale`; True if they were updated now."""
        if self.stale(max_age):
            self.update()
            return True
        return False

    def search(self, regex: str) -> list[str]:
        """Package names matching the POSIX extended ``regex`` (apt-cache search --names-only)."""
        out = run(["apt-cache", *self.options(), "search", "--names-only", regex])
        return sorted({ln.split(" - ", 1)[0].strip() for ln in out.splitlines() if ln.strip()})

    def candidates(self, packages: list[str]) -> dict[str, str]:
        """Package -> installable (candidate) version, from ``apt-cache policy``;
        packages without one are left out."""
        if not packages:
            return {}
        out = run(["apt-cache", *self.options(), "policy", *packages])
        cands: dict[str, str] = {}
        current = None
        for ln in out.splitlines():
            if ln and not ln.startswith(" ") and ln.endswith(":"):
                current = ln[:-1]
            elif current and ln.strip().startswith("Candidate:"):
                ver = ln.split(":", 1)[1].strip()
                if ver and ver != "(none)":
                    cands[current] = ver
        return cands

    def depends(self, package: str, version: str) -> list[tuple[str, str | None]]:
        """``(name, exact version or None)`` for each first alternative of the
        Depends field of ``package`` at ``version`` (apt-cache show)."""
        out = run(["apt-cache", *self.options(), "show", f"{package}={version}"])
        for ln in out.splitlines():
            if ln.startswith("Depends:"):
                deps = []
                for item in ln.split(":", 1)[1].split(","):
                    first = item.split("|")[0].strip()
                    name, _, rest = first.partition(" ")
                    rest = rest.strip("() ")
                    exact = rest[1:].strip() if rest.startswith("=") else None
                    deps.append((name.split(":")[0], exact))
                return deps
        return []

    def download(self, packages: list[tuple[str, str]], where: Path) -> dict[str, Path]:
        """``apt-get download`` exactly ``(package, version)`` each into a fresh
        folder under ``where``; returns package -> .deb path. Raises FetchError."""
        dl = where / "dl"
        dl.mkdir()
        os.chmod(where, 0o755)
        os.chmod(dl, 0o777)  # lets apt's _apt user write there, avoiding its sandbox warning
        run(["apt-get", "download", "-q", *self.options(),
             *(f"{p}={v}" for p, v in packages)], cwd=dl, timeout=DOWNLOAD_TIMEOUT)
        debs = {p.name.split("_", 1)[0]: p for p in dl.glob("*.deb")}
        missing = [p for p, _v in packages if p not in debs]
        if missing or len(debs) != len(packages):
            raise FetchError(f"apt-get download left {len(debs)} .deb file(s) for "
                             f"{len(packages)} package(s)" + (f"; none for {missing[0]}"
                                                              if missing else ""))
        return debs
