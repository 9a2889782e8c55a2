"""Xen ABI versions as data: each declared difference from the reference
(xen-4.17) in one place, with its source. Backends consult these tables; no
version conditionals are scattered through the hypercall code."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class XenVersion:
    """One modelled Xen release. ``missing``: hypercall names that return
    -ENOSYS; ``missing_subops``: {hypercall: {sub-op names}} that return
    -ENOSYS; ``features``: feature flags this release has."""

    major: int
    minor: int
    extraversion: str = ".0"
    missing: frozenset[str] = frozenset()
    missing_subops: dict[str, frozenset[str]] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"xen-{self.major}.{self.minor}"


XEN_4_17 = XenVersion(
    4, 17, ".0",
    # tmem_op was removed in 4.13; xenoprof_op is still built in 4.17 but compiled out by
    # default (CONFIG_XENOPROF off), so a stock build answers -ENOSYS.
    missing=frozenset({"tmem_op", "xenoprof_op"}),
    features=frozenset({"fifo_events", "vcpu_info_registration", "runstate_update_flag"}),
    sources={"tmem_op": "Xen CHANGELOG.md 4.13: tmem removed",
             "xenoprof_op": "xen/common/Kconfig XENOPROF default n (4.17)",
             "fifo_events": "EVTCHNOP_init_control, xen/include/public/event_channel.h (since 4.4)"},
)

VERSIONS: dict[str, XenVersion] = {"4.17": XEN_4_17}
