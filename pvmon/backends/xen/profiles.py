"""Xen backend profiles: a user's own Xen build, declared in TOML
(:mod:`pvmon.backends.profiles` finds, loads and records them)::

    name = "acme-4.17"                  # how --backend selects it
    base = "xen-4.17"                   # a built-in Xen version (pvmon backends)
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
Every error is a BackendError naming the file and the key.
"""

from __future__ import annotations

import re

from pvmon.backends.xen import abi
from pvmon.backends.xen.versions import Change, XenVersion

_TOP_KEYS = {"name", "base", "version", "description", "remove", "add", "fail"}
_SET_KEYS = {"hypercalls", "subops", "features"}
_FAIL_KEYS = {"hypercall", "subop", "error", "reason"}


def parse_xen_profile(data: dict, name: str, base: XenVersion, where: str, bad) -> XenVersion:
    """A :class:`XenVersion` derived from ``base`` by a parsed profile table
    (see the module doc); ``name`` already checked; ``where`` names the file;
    ``bad(msg)`` makes the BackendError raised for any unknown key, hypercall,
    sub-op, feature or errno."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise bad(f"unknown key {min(unknown)!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    base_name = base.name
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


__all__ = ["parse_xen_profile"]
