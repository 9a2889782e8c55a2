"""The dispatch layer: an ABI-neutral core (:mod:`pvmon.dispatch.core`) and
one module per ABI and platform that decodes what the engine reports into
calls to the backend (:mod:`pvmon.dispatch.xen`: Xen PV)."""

from __future__ import annotations

from importlib import import_module

from pvmon.errors import BackendError

#: ABI (``Backend.abi``) -> ``"module:class"`` of its dispatch layer, a
#: :class:`~pvmon.dispatch.core.DispatchCore` subclass. Imported on first use.
DISPATCH_BY_ABI: dict[str, str] = {"xen": "pvmon.dispatch.xen:XenPvDispatch"}


def dispatch_class(abi: str) -> type:
    """The dispatch layer class for backends of ``abi`` ("xen"). Raises
    BackendError when pvmon has no dispatch layer for it."""
    where = DISPATCH_BY_ABI.get(abi)
    if where is None:
        raise BackendError(f"pvmon cannot run guests on a {abi or 'nameless'!r} ABI backend "
                           f"yet (dispatch layers: {', '.join(sorted(DISPATCH_BY_ABI))})")
    module, _, name = where.partition(":")
    return getattr(import_module(module), name)
