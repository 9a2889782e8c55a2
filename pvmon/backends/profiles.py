"""Backend profiles: a user's own hypervisor build, declared in TOML.

A profile names a built-in base version and the differences of the build users
want to model, without code::

    name = "acme-4.17"                  # how --backend selects it
    base = "xen-4.17"                   # a built-in version (pvmon backends)
    description = "ACME's build: no PMU"
    [remove]
    hypercalls = ["xenpmu_op"]

``name`` and ``base`` are common to every ABI; the rest is the base ABI's own
vocabulary, parsed by that ABI's package (registered in
:data:`pvmon.backends.registry.PROFILE_PARSER_BY_ABI`): Xen's in
:mod:`pvmon.backends.xen.profiles` (hypercalls, sub-ops, features, forced
failures, version), KVM's in :mod:`pvmon.backends.kvm.profiles` (features,
hypercalls).

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
from importlib import import_module
from pathlib import Path

from pvmon.errors import BackendError

MAX_PROFILE_BYTES = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


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
    version: object | None = None
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


def load_profile(path: str | Path):
    """Parse the profile at ``path`` into a version record of its base's ABI
    (:class:`~pvmon.backends.xen.versions.XenVersion`,
    :class:`~pvmon.backends.kvm.versions.KvmVersion`) derived from its base. Raises BackendError (unreadable file, bad TOML, unknown key,
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
                      source: str = ""):
    """Rebuild a profile from its TOML text (as recorded in a trace header);
    ``source``: where that text first came from (the header's
    ``profile_source``), kept for traces recorded from it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"{where}: not valid TOML: {exc}") from None
    return replace(parse_profile(data, where), profile_toml=text, profile_source=source)


def parse_profile(data: dict, where: str = "<profile>", default_name: str = ""):
    """Build a version record from a parsed profile table: the ``name`` and
    ``base`` keys are common to every ABI; the base's ABI parses the rest
    (:data:`pvmon.backends.registry.PROFILE_PARSER_BY_ABI`). Raises
    BackendError naming ``where`` and the key."""
    from pvmon.backends import registry

    def bad(msg: str) -> BackendError:
        return BackendError(f"{where}: {msg}")

    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad(f"'name' must be a short identifier, got {name!r}")
    if registry.builtin_version(name) is not None or name in registry.OTHER_BUILTIN_BACKENDS:
        raise bad(f"name {name!r} is a built-in backend; choose another")
    base_name = data.get("base")
    if not isinstance(base_name, str):
        raise bad("'base' is required: a built-in version such as 'xen-4.17' or 'kvm-6.12'")
    base = registry.builtin_version(base_name)
    if base is None:
        raise bad(f"unknown base {base_name!r}; built-in: "
                  f"{', '.join(n for n in registry.builtin_names())}")
    abi = getattr(base, "abi", "xen")
    where_parser = registry.PROFILE_PARSER_BY_ABI.get(abi)
    if where_parser is None:
        raise bad(f"base {base_name!r}: profiles of the {abi!r} ABI are not supported")
    module, _, attr = where_parser.partition(":")
    return getattr(import_module(module), attr)(data, name, base, where, bad)
