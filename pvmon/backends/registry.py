"""Backends by name: built-in ``xen-<version>`` and third-party ones found
through the ``pvmon.backends`` entry point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from pvmon.backends.base import Backend
from pvmon.errors import BackendError


def builtin_names() -> list[str]:
    from pvmon.backends.xen.versions import VERSIONS
    return [f"xen-{v}" for v in VERSIONS]


def get_backend(name: str) -> Backend:
    """A fresh backend instance for ``name``. Raises BackendError listing the
    known names when ``name`` is unknown."""
    if name.startswith("xen-"):
        from pvmon.backends.xen.backend import XenBackend
        from pvmon.backends.xen.versions import VERSIONS
        if name[4:] in VERSIONS:
            return XenBackend(name[4:])
    for ep in entry_points(group="pvmon.backends"):
        if ep.name == name:
            return ep.load()()
    known = builtin_names() + [ep.name for ep in entry_points(group="pvmon.backends")]
    raise BackendError(f"unknown backend {name!r}; known: {', '.join(known)}")
