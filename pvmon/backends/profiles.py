"""Backend profiles: a user's own hypervisor build, declared in TOML.

A profile names a base version and the differences of the build users want to
model, without code::

    name = "acme-4.17"                  # how --backend selects it
    base = "xen-4.17"                   # a built-in version (pvmon backends)
    version = "4.17.3-acme"             # optional: XENVER_version/extraversion
    description = "ACME's build: no PMU, FIFO compiled out"

    [remove]
    hypercalls = ["xenpmu_op"]                          # answer -ENOSYS
    subops = { event_channel_op = ["init_control"] }    # answer -ENOSYS
    features = ["gnttab_map_avail_bits"]                # not in XENVER_get_features

    [add]
    features = ["runstate_phys_area"]

    [[fail]]                                            # a call that fails on purpose
    hypercall = "vcpu_op"
    subop = "set_singleshot_timer"                      # omit: every sub-op
    error = "EINVAL"                                    # errno name or number
    reason = "ticket 1234: timer rework"

Names are those of xen/include/public/xen.h (hypercalls), the per-call
headers (sub-ops, ``EVTCHNOP_init_control`` -> ``init_control``) and
features.h (``XENFEAT_*`` without the prefix); ``pvmon backends`` lists them.

Profiles are found by name in ``$PVMON_PROFILES`` (directories separated by
``:``) and ``<user config dir>/pvmon/profiles``, or given as a path ending in
``.toml``. A profile has one name everywhere: its ``name`` key (the file's
stem when it has none), which ``pvmon backends`` lists, ``--backend`` selects
and traces record; ``acme.toml`` holding ``name = "acme-4.17"`` is
``acme-4.17``. Every error is a :class:`~pvmon.errors.BackendError` naming
the file and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from pvmon.backends.xen import abi
from pvmon.backends.xen.versions import REGISTRY, Change, XenVersion
from pvmon.errors import BackendError

MAX_PROFILE_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_TOP_KEYS = {"name", "base", "version", "description", "remove", "add", "fail"}
_SET_KEYS = {"hypercalls", "subops", "features"}
_FAIL_KEYS = {"hypercall", "subop", "error", "reason"}


def search_dirs() -> list[Path]:
    """Where profiles are looked up by name, in order."""
    dirs = [Path(p) for p in os.environ.get("PVMON_PROFILES", "").split(":") if p]
    try:
        import platformdirs
        dirs.append(Path(platformdirs.user_config_dir("pvmon")) / "profiles")
    except ImportError:   # pragma: no cover - platformdirs is a dependency
        pass
    return dirs


@dataclass(frozen=True)
class FoundProfile:
    """A profile file in the search directories: ``name`` (its ``name`` key, or
    the file's stem), ``path``, and either ``version`` (the loaded profile) or
    ``error`` (why it cannot be used, one line)."""

    name: str
    path: Path
    version: XenVersion | None = None
    error: str | None = None


def scan_profiles() -> list[FoundProfile]:
    """Every profile file in :func:`search_dirs`, loaded, by name; for a name
    declared twice the first directory (and first file) wins. Never raises: a
    broken profile comes back with its ``error``."""
    out: dict[str, FoundProfile] = {}
    for d in search_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.toml")):
            try:
                ver = load_profile(p)
            except BackendError as exc:
                found = FoundProfile(_declared_name(p), p, error=str(exc))
            else:
                found = FoundProfile(ver.name, p, version=ver)
            out.setdefault(found.name, found)
    return list(out.values())


def find_profiles() -> dict[str, Path]:
    """Profile name -> path of every usable profile (see :func:`scan_profiles`)."""
    return {f.name: f.path for f in scan_profiles() if f.error is None}


def _declared_name(p: Path) -> str:
    """The ``name`` a profile file declares, if it can be read, else its stem."""
    try:
        if p.stat().st_size <= MAX_PROFILE_BYTES:
            name = tomllib.loads(p.read_text(encoding="utf-8")).get("name")
            if isinstance(name, str) and _NAME.match(name):
                return name
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        pass
    return p.stem


def load_profile(path: str | Path) -> XenVersion:
    """Parse the profile at ``path`` into a :class:`XenVersion` derived from
    its base. Raises BackendError (unreadable file, bad TOML, unknown key,
    unknown base, hypercall, sub-op, feature or errno)."""
    p = Path(path)
    where = str(p)
    try:
        if p.stat().st_size > MAX_PROFILE_BYTES:
            raise BackendError(f"{where}: profile larger than 1 MiB")
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise BackendError(f"cannot read backend profile {where}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BackendError(f"{where}: profile is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"{where}: not valid TOML: {exc}") from None
    return replace(parse_profile(data, where, default_name=p.stem), profile_toml=text,
                   profile_source=str(p.resolve()))


def profile_from_text(text: str, where: str = "<recorded profile>",
                      source: str = "") -> XenVersion:
    """Rebuild a profile from its TOML text (as recorded in a trace header);
    ``source``: where that text first came from (the header's
    ``profile_source``), kept for traces recorded from it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"{where}: not valid TOML: {exc}") from None
    return replace(parse_profile(data, where), profile_toml=text, profile_source=source)


def parse_profile(data: dict, where: str = "<profile>", default_name: str = "") -> XenVersion:
    """Build a :class:`XenVersion` from a parsed profile table (see module doc)."""
    def bad(msg: str) -> BackendError:
        return BackendError(f"{where}: {msg}")

    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise bad(f"unknown key {min(unknown)!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad(f"'name' must be a short identifier, got {name!r}")
    if name in REGISTRY:
        raise bad(f"name {name!r} is a built-in backend; choose another")
    base_name = data.get("base")
    if not isinstance(base_name, str):
        raise bad("'base' is required: a built-in version such as 'xen-4.17'")
    if base_name.startswith("kvm-"):     # a KVM host (pvmon/backends/kvm/profiles.py)
        from pvmon.backends.kvm.profiles import parse_kvm_profile
        return parse_kvm_profile(data, name, bad)
    base = REGISTRY.get(base_name)
    if base is None:
        raise bad(f"unknown base {base_name!r}; built-in: {', '.join(sorted(REGISTRY))}")
    src = f"profile {where}"
    changes: list[Change] = []
    for section, present in (("remove", False), ("add", True)):
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise bad(f"[{section}] must be a table")
        extra = set(table) - _SET_KEYS
        if extra:
            raise bad(f"unknown key {section}.{min(extra)!r} "
                      f"(known: {', '.join(sorted(_SET_KEYS))})")
        for hc in _str_list(table.get("hypercalls", []), f"{section}.hypercalls", bad):
            _check_hypercall(hc, bad)
            changes.append(Change("hypercall", hc, present=present, source=src))
        subops = table.get("subops", {})
        if not isinstance(subops, dict):
            raise bad(f"{section}.subops must be a table of hypercall = [sub-ops]")
        for hc, names in subops.items():
            _check_hypercall(hc, bad)
            for sub in _str_list(names, f"{section}.subops.{hc}", bad):
                _check_subop(hc, sub, bad)
                changes.append(Change("subop", hc, sub, present=present, source=src))
        for feat in _str_list(table.get("features", []), f"{section}.features", bad):
            feat = feat.removeprefix("XENFEAT_")
            if feat not in abi.XENFEAT:
                raise bad(f"unknown feature {feat!r} (xen/include/public/features.h)")
            changes.append(Change("feature", feature=feat, present=present, source=src))
    fails = data.get("fail", [])
    if not isinstance(fails, list):
        raise bad("[[fail]] must be an array of tables")
    for i, f in enumerate(fails):
        if not isinstance(f, dict):
            raise bad(f"fail[{i}] must be a table")
        extra = set(f) - _FAIL_KEYS
        if extra:
            raise bad(f"unknown key fail[{i}].{min(extra)!r}")
        hc = f.get("hypercall")
        if not isinstance(hc, str):
            raise bad(f"fail[{i}].hypercall is required")
        _check_hypercall(hc, bad)
        sub = f.get("subop")
        if sub is not None:
            if not isinstance(sub, str):
                raise bad(f"fail[{i}].subop must be a string")
            _check_subop(hc, sub, bad)
        errno = _errno(f.get("error"), f"fail[{i}].error", bad)
        reason = f.get("reason", "")
        if not isinstance(reason, str):
            raise bad(f"fail[{i}].reason must be a string")
        changes.append(Change("failure", hc, sub, errno=errno, source=src, note=reason))
    major = minor = None
    extraversion = None
    ver = data.get("version")
    if ver is not None:
        m = re.match(r"^(\d{1,4})\.(\d{1,4})(.{0,15})$", str(ver))
        if not m:
            raise bad(f"'version' must look like 4.17.3-acme, got {ver!r}")
        major, minor, extraversion = int(m[1]), int(m[2]), m[3] or ".0"
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise bad("'description' must be a string")
    return base.derive(name, changes, major=major, minor=minor, extraversion=extraversion,
                       description=desc or f"profile based on {base_name}")


def _str_list(v, key: str, bad) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad(f"{key} must be a list of names")
    return v


def _check_hypercall(hc: str, bad) -> None:
    if hc not in abi.HYPERCALL_NUMBERS:
        raise bad(f"unknown hypercall {hc!r} (names as in xen/include/public/xen.h, "
                  f"without __HYPERVISOR_)")


def _check_subop(hc: str, sub: str, bad) -> None:
    known = abi.SUBOPS.get(hc)
    if known is None:
        raise bad(f"hypercall {hc!r} has no sub-ops")
    if sub not in known.values():
        raise bad(f"unknown sub-op {sub!r} of {hc} (known: {', '.join(known.values())})")


def _errno(v, key: str, bad) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        if 0 < abs(v) < 4096:
            return abs(v)
    elif isinstance(v, str):
        n = v.upper().lstrip("-")
        for num, nm in abi.ERRNO_NAMES.items():
            if nm == n:
                return num
    raise bad(f"{key} must be an errno name such as EINVAL or a number, got {v!r}")
