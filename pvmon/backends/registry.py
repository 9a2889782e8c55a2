"""Backends by name: the built-in Xen versions (``xen-3.4``, ``xen-4.17``,
...), TOML profiles (:mod:`pvmon.backends.profiles`, by name or path) and
third-party backends found through the ``pvmon.backends`` entry point group."""

from __future__ import annotations

from importlib import import_module

from pvmon.backends.base import Backend, GuestKind
from pvmon.errors import BackendError


def entry_points(*, group: str):
    """``importlib.metadata.entry_points(group=...)``, imported on first use: a
    run of a built-in backend never needs it and skips its 11 ms import."""
    from importlib.metadata import entry_points as found

    return found(group=group)


def builtin_names() -> list[str]:
    from pvmon.backends.kvm.versions import builtin_names as kvm_names
    from pvmon.backends.xen.versions import REGISTRY
    return (sorted(REGISTRY, key=lambda n: REGISTRY[n].major * 1000 + REGISTRY[n].minor)
            + kvm_names())


def builtin_version(name: str):
    """The version record of a built-in backend name (Xen or KVM), or None."""
    from pvmon.backends.kvm.versions import REGISTRY as KVM
    from pvmon.backends.xen.versions import REGISTRY
    return REGISTRY.get(name) or KVM.get(name)


def resolve_version(name: str):
    """The :class:`~pvmon.backends.xen.versions.XenVersion` for a built-in
    name, a profile's name (its ``name`` key, see
    :mod:`pvmon.backends.profiles`) or a ``.toml`` path; None for other
    backends. Raises BackendError for a broken profile."""
    from pvmon.backends.profiles import load_profile, scan_profiles
    builtin = builtin_version(name)
    if builtin is not None:
        return builtin
    if name.endswith(".toml"):
        return load_profile(name)
    for found in scan_profiles():
        if found.name == name:
            if found.error is not None:
                raise BackendError(found.error)
            return found.version
    return None


def require_version(name: str):
    """Like :func:`resolve_version`, but an unknown name raises BackendError
    listing the known ones (for commands that need a Xen ABI version)."""
    ver = resolve_version(name) or other_version(name)
    if ver is None:
        raise _unknown(name)
    return ver


def _unknown(name: str) -> BackendError:
    """The error for a backend name nothing answers to: the usable names, and
    the profile a file of that name really declares."""
    from pvmon.backends.profiles import scan_profiles
    hint = ""
    for found in scan_profiles():
        if found.path.stem == name and found.name != name:
            hint = f" ({found.path} is the profile {found.name!r})"
    return BackendError(f"unknown backend {name!r}{hint}; known: {', '.join(known_names())}")


def get_backend(name: str) -> Backend:
    """A fresh backend instance for ``name``. Raises BackendError listing the
    known names when ``name`` is unknown."""
    ver = resolve_version(name)
    if ver is not None:
        return backend_for_version(ver)
    other = other_builtin(name)
    if other is not None:
        return other
    for ep in entry_points(group="pvmon.backends"):
        if ep.name == name:
            try:
                backend = ep.load()()
            except Exception as exc:  # noqa: BLE001 - a third-party plugin failing to load
                raise BackendError(f"backend {name!r} failed to load: {exc}") from None
            if not isinstance(backend, Backend):
                raise BackendError(f"backend {name!r} is not a pvmon Backend")
            return backend
    raise _unknown(name)


#: ABI (``Backend.abi``) -> ``"module:attribute"`` of its
#: :class:`~pvmon.backends.base.GuestKind`, imported on first use. Other ABIs'
#: kinds come from the ``pvmon.guest_kinds`` entry point group (named by ABI)
#: or from the backend's own ``guest_kind`` attribute.
GUEST_KIND_BY_ABI: dict[str, str] = {"xen": "pvmon.backends.xen.pv:XEN_PV",
                                     "xen-pvh": "pvmon.backends.xen.pvh:XEN_PVH",
                                     "kvm": "pvmon.backends.kvm:KVM_GUEST",
                                     "lguest": "pvmon.backends.lguest:LGUEST",
                                     "lguest-pae": "pvmon.backends.lguest:LGUEST_PAE",
                                     "vmi": "pvmon.backends.vmi:VMI"}
#: Guest modes by ABI: the first is the default (``--mode``; trace header
#: ``machine.mode``). A mode other than the default is looked up as the
#: guest kind ``"<abi>-<mode>"``.
MODES_BY_ABI: dict[str, tuple[str, ...]] = {"xen": ("pv", "pvh"), "lguest": ("nonpae", "pae")}


def guest_kind(backend: Backend, mode: str | None = None) -> GuestKind:
    """How to build and run a guest on ``backend``: its own ``guest_kind``
    if it has one, else the kind of its ABI (built in, or registered under
    the ``pvmon.guest_kinds`` entry point group by ABI name). ``mode``: a
    guest mode of :data:`MODES_BY_ABI` ("pv", "pvh" for Xen); None is the
    ABI's default. Raises BackendError, in one line, when pvmon cannot run
    guests on its ABI or in that mode."""
    own = getattr(backend, "guest_kind", None)
    if own is not None and mode is None:
        return own
    modes = MODES_BY_ABI.get(backend.abi, ())
    if mode is None or (modes and mode == modes[0]):
        return kind_for_abi(backend.abi)
    if mode not in modes:
        known = ", ".join(modes) or "its default only"
        raise BackendError(f"backend {backend.name!r} has no guest mode {mode!r} "
                           f"(modes: {known})")
    return kind_for_abi(f"{backend.abi}-{mode}")


def kind_for_abi(abi: str) -> GuestKind:
    """The :class:`~pvmon.backends.base.GuestKind` of backends of ``abi``
    ("xen"), built in or from the ``pvmon.guest_kinds`` entry point group.
    Raises BackendError when pvmon has none."""
    where = GUEST_KIND_BY_ABI.get(abi)
    if where is not None:
        module, _, attr = where.partition(":")
        return getattr(import_module(module), attr)
    for ep in entry_points(group="pvmon.guest_kinds"):
        if ep.name == abi:
            try:
                return ep.load()
            except Exception as exc:  # noqa: BLE001 - a third-party plugin failing to load
                raise BackendError(f"guest kind {abi!r} failed to load: {exc}") from None
    known = sorted(set(GUEST_KIND_BY_ABI)
                   | {ep.name for ep in entry_points(group="pvmon.guest_kinds")})
    raise BackendError(f"pvmon cannot run guests on a {abi or 'nameless'!r} ABI backend "
                       f"yet (dispatch layers: {', '.join(known)})")


#: ABI -> module of its name tables, imported on first use: ``HYPERCALLS``
#: ({number: name}), ``HYPERCALL_NUMBERS`` ({name: number}), ``SUBOPS``
#: ({call name: {sub-op number: name}}), ``ERRNO_NAMES`` ({errno: name}).
ABI_NAMES_BY_ABI: dict[str, str] = {"xen": "pvmon.backends.xen.abi",
                                    "kvm": "pvmon.backends.kvm.abi",
                                     "lguest": "pvmon.backends.lguest.abi",
                                     "vmi": "pvmon.backends.vmi.abi"}

#: ABI -> ``"module:function"`` that lists the declared differences between two
#: versions (``(a, b) -> [pvmon.replay.explain.Fact]``); KVM's also answers when
#: one side is another ABI.
EXPLAIN_BY_ABI: dict[str, str] = {"xen": "pvmon.backends.xen.explain:xen_differences",
                                  "kvm": "pvmon.backends.kvm.explain:kvm_differences"}

#: ABI -> ``"module:function"`` that parses a TOML profile whose ``base`` is
#: one of its built-in versions (``(data, name, base, where, bad) -> version``;
#: :mod:`pvmon.backends.profiles`).
PROFILE_PARSER_BY_ABI: dict[str, str] = {
    "xen": "pvmon.backends.xen.profiles:parse_xen_profile",
    "kvm": "pvmon.backends.kvm.profiles:parse_kvm_profile"}

#: ABI key (an ABI, or ``"<abi>-<mode>"`` for a guest mode other than the
#: default) -> ``"module"`` or ``"module:attribute"`` of its cross-ABI express
#: protocol (:mod:`pvmon.replay.crossabi`): how that ABI expresses each
#: canonical operation, for cross-ABI open-loop replay.
EXPRESS_BY_ABI: dict[str, str] = {"xen": "pvmon.backends.xen.express:PV",
                                  "xen-pvh": "pvmon.backends.xen.express:PVH",
                                  "kvm": "pvmon.backends.kvm.express",
                                  "lguest": "pvmon.backends.lguest.express",
                                  "vmi": "pvmon.backends.vmi.express"}

#: ABIs whose recorded calls same-ABI open-loop replay feeds to a backend
#: (:mod:`pvmon.replay.openloop`); a trace of another ABI (lguest, VMI: their
#: calls act on the CPU) is replayed open loop through its canonical
#: operations only (:mod:`pvmon.replay.crossabi`), as in an ABI matrix.
OPEN_LOOP_ABIS: frozenset[str] = frozenset({"xen", "kvm"})

#: Built-in backends of ABIs other than Xen: name -> ``"module:factory"``
#: (a callable taking no arguments), imported on first use.
OTHER_BUILTIN_BACKENDS: dict[str, str] = {
    "lguest-4.13": "pvmon.backends.lguest.backend:make_backend",
    "lguest-4.0": "pvmon.backends.lguest.backend:make_backend_4_0",
    "vmi-3.0": "pvmon.backends.vmi.backend:make_backend"}


#: ABIs pvmon records natively, with no backend to replay against (listed by
#: ``pvmon backends``; ``pvmon replay`` refuses their traces): name -> description.
NATIVE_RECORDERS: dict[str, str] = {
    "uml": "User-Mode Linux recorded natively: the UML kernel process under pvmon's ptrace "
           "tracer (pvmon run uml-6.1; docs/uml.md). Record, trace tools and diff only: "
           "replay against another host is out of scope"}


def other_builtin(name: str) -> Backend | None:
    """A fresh built-in backend of a non-Xen ABI named ``name``, or None."""
    where = OTHER_BUILTIN_BACKENDS.get(name)
    if where is None:
        return None
    module, _, attr = where.partition(":")
    return getattr(import_module(module), attr)()


class OtherVersion:
    """The version record of a built-in non-Xen backend (what replay passes
    around for a trace recorded on one): ``name``, ``major``/``minor`` (from
    the backend's ``version``), :meth:`make_backend` and :meth:`facts_against`."""

    profile_toml = None
    extraversion = ""

    def __init__(self, name: str) -> None:
        self.name = name
        b = other_builtin(name)
        self.abi = b.abi
        self.version_string = b.version
        parts = [int(p) if p.isdigit() else 0 for p in b.version.split(".")[:2]] + [0, 0]
        self.major, self.minor = parts[0], parts[1]

    def make_backend(self) -> Backend:
        return other_builtin(self.name)

    def facts_against(self, other: object) -> list[dict]:
        """The declared differences of both backends when they differ
        (``describe()["differences"]``: dicts with ``what``, ``source`` and
        optionally ``hypercall``), each as ``{"hypercall", "text", "source"}``."""
        if not isinstance(other, OtherVersion) or other.name == self.name:
            return []
        out = []
        for v in (self, other):
            for d in v.make_backend().describe()["differences"]:
                out.append({"hypercall": d.get("hypercall", ""),
                            "text": f"{v.name}: {d['what']}", "source": d["source"]})
        return out


def other_version(name: str) -> OtherVersion | None:
    """The version record of built-in non-Xen backend ``name``, or None."""
    return OtherVersion(name) if name in OTHER_BUILTIN_BACKENDS else None


def abi_names(abi: str = "xen"):
    """The name tables of ``abi`` (see :data:`ABI_NAMES_BY_ABI`), for tools
    that name calls, sub-ops and errors without importing an ABI package.
    Raises BackendError for an ABI pvmon has no tables for."""
    where = ABI_NAMES_BY_ABI.get(abi)
    if where is None:
        raise BackendError(f"pvmon has no name tables for the {abi!r} ABI "
                           f"(known: {', '.join(sorted(ABI_NAMES_BY_ABI))})")
    return import_module(where)


def backend_for_version(ver) -> Backend:
    """A fresh backend for an ABI version record (what :func:`resolve_version`
    or :func:`pvmon.replay.source.recorded_version` returns; for Xen a
    :class:`~pvmon.backends.xen.versions.XenVersion`; for KVM a
    :class:`~pvmon.backends.kvm.versions.KvmVersion`). Replay makes its
    backends here rather than naming the Xen backend class."""
    if getattr(ver, "abi", "xen") == "kvm":
        from pvmon.backends.kvm.backend import KvmBackend
        return KvmBackend(ver)
    make = getattr(ver, "make_backend", None)
    if make is not None:
        return make()
    from pvmon.backends.xen.backend import XenBackend
    return XenBackend(ver)


def known_names() -> list[str]:
    """Every name ``--backend`` accepts: built-in versions, usable profiles
    (by their names; a broken profile is not one), entry-point backends."""
    from pvmon.backends.profiles import find_profiles
    return (builtin_names() + sorted(OTHER_BUILTIN_BACKENDS) + sorted(find_profiles())
            + sorted(ep.name for ep in entry_points(group="pvmon.backends")))


def list_backends() -> list[dict]:
    """Every backend and profile with its declared differences: dicts with
    ``name``, ``kind`` (builtin/profile/plugin), ``version``, ``base``,
    ``description``, ``differences`` [{kind, what, source}] and for profiles
    ``path``. A broken profile is listed with an ``error``."""
    from pvmon.backends.profiles import scan_profiles
    out = []
    for n in builtin_names():
        v = builtin_version(n)
        out.append({"name": n, "kind": "builtin", "version": v.version_string,
                    "base": v.base, "description": v.description,
                    "differences": [c.as_dict() for c in v.changes]})
    for n in sorted(OTHER_BUILTIN_BACKENDS):
        d = other_builtin(n).describe()
        out.append({"name": n, "kind": "builtin", "version": d["version"], "base": d["base"],
                    "description": f"{d['abi']} ABI",
                    "differences": [{"kind": "abi", **x} for x in d["differences"]]})
    for n, what in NATIVE_RECORDERS.items():
        out.append({"name": n, "kind": "native", "version": "host", "base": None,
                    "description": what, "differences": []})
    for found in sorted(scan_profiles(), key=lambda f: f.name):
        v = found.version
        if v is None:
            out.append({"name": found.name, "kind": "profile", "path": str(found.path),
                        "error": found.error, "differences": []})
            continue
        out.append({"name": v.name, "kind": "profile", "path": str(found.path),
                    "version": v.version_string, "base": v.base,
                    "description": v.description,
                    "differences": [c.as_dict() for c in v.changes]})
    for ep in entry_points(group="pvmon.backends"):
        out.append({"name": ep.name, "kind": "plugin", "version": "", "base": None,
                    "description": f"entry point {ep.value}", "differences": []})
    return out
