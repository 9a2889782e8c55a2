"""Stock Debian kernels boot as Xen PV guests to the root-mount panic."""

import pytest

from pvmon.session import Session

pytestmark = [pytest.mark.debian, pytest.mark.slow]

BAD = ("WARNING:", "BUG:", "Oops", "general protection fault", "Call Trace:\n")


def _boot(img, **kw):
    return Session(img, **kw).run(timeout=600)


def _check_boot(res):
    text = res.console.decode(errors="replace")
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in text
    # Every trace on the console belongs to the panic itself.
    before_panic = text.split("Kernel panic - not syncing: VFS")[0]
    for marker in ("BUG:", "Oops", "general protection fault", "------------[ cut here ]"):
        assert marker not in before_panic, marker
    assert res.exit_kind == "crash" and res.shutdown_reason == 3   # SHUTDOWN_crash from panic
    assert "xenbus" in text.lower() or res.hypercalls["event_channel_op"] > 0
    assert res.hypercalls["mmu_update"] > 10_000
    return text


def test_debian_6_12_boots_to_the_root_mount_panic(debian612):
    res = _boot(debian612)
    _check_boot(res)


def test_debian_6_1_boots_to_the_root_mount_panic(debian61):
    s = Session(debian61)
    res = s.run(timeout=600)
    _check_boot(res)
    # 6.1 writes some PTEs directly: each write is a #PF that Xen's writable page
    # tables carry out (one instruction stepped), never delivered to the guest.
    assert s.dispatch.ptwr_emulations == res.faults["#PF"] > 100


def test_debian_6_12_boot_is_deterministic(debian612):
    def stream():
        s = Session(debian612)
        calls = []
        s.dispatch.call_listeners.append(
            lambda ev: calls.append((ev["name"], tuple(ev["args"]), ev["ret"])))
        res = s.run(timeout=600)
        return calls, res.console
    a, b = stream(), stream()
    assert len(a[0]) > 40_000
    assert a == b
