"""The dispatch layer: an ABI-neutral core (:mod:`pvmon.dispatch.core`) and
one module per ABI and platform that decodes what the engine reports into
calls to the backend (:mod:`pvmon.dispatch.xen`: Xen PV)."""

from __future__ import annotations


def dispatch_class(abi: str) -> type:
    """The dispatch layer class for backends of ``abi`` ("xen"): its guest
    kind's (:func:`pvmon.backends.registry.kind_for_abi`). Raises
    BackendError when pvmon has no guest kind for it."""
    from pvmon.backends.registry import kind_for_abi
    return kind_for_abi(abi).dispatch_class()
