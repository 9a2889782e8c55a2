"""A session builds its guest through the guest kind the registry returns for
its backend (pvmon/backends/base.py GuestKind, pvmon/backends/registry.py),
so a third-party backend registered through the ``pvmon.backends`` entry
point runs a guest, on the built-in Xen PV kind or on one it brings."""

from __future__ import annotations

import sys
import textwrap

import pytest

from pvmon.backends import base
from pvmon.backends.registry import get_backend, guest_kind
from pvmon.backends.xen.pv import XEN_PV, XenPvGuest
from pvmon.guests.catalog import resolve
from pvmon.session import Session

_PLUGIN = textwrap.dedent('''
    from pvmon.backends.xen.backend import XenBackend
    from pvmon.backends.xen.pv import XenPvGuest

    class AcmeGuest(XenPvGuest):
        name = "acme-pv"
        cpuid_policy = "acme-v1"

    class AcmeBackend(XenBackend):
        abi = "acme"

        def __init__(self):
            super().__init__("xen-4.17")
            self.name = "acme-1"

    class OwnKindBackend(XenBackend):
        abi = "own"
        guest_kind = AcmeGuest()

        def __init__(self):
            super().__init__("xen-4.17")
            self.name = "own-1"

    ACME_KIND = AcmeGuest()
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed third-party distribution: a module and its entry points."""
    (tmp_path / "acme_pvmon.py").write_text(_PLUGIN)
    info = tmp_path / "acme_pvmon-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pvmon\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[pvmon.backends]\nacme-1 = acme_pvmon:AcmeBackend\nown-1 = acme_pvmon:OwnKindBackend\n"
        "[pvmon.guest_kinds]\nacme = acme_pvmon:ACME_KIND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("acme_pvmon", None)


def test_xen_backends_build_xen_pv_guests():
    kind = guest_kind(get_backend("xen-4.17"))
    assert kind is XEN_PV and kind.cpuid_policy == "xen-pv-v1"
    assert isinstance(kind, XenPvGuest)


def test_a_third_party_backend_of_a_new_abi_runs_on_the_kind_its_package_registers(plugin):
    session = Session(resolve("pvtest-v2"), backend="acme-1", keep_console=False)
    assert session.kind.name == "acme-pv"
    header = session.header()
    assert header["backend"]["abi"] == "acme"
    assert header["machine"]["cpuid_policy"] == "acme-v1"
    result = session.run(timeout=60)
    assert result.clean, (result.exit_kind, result.detail)


def test_a_third_party_backend_may_bring_its_own_guest_kind(plugin):
    session = Session(resolve("pvtest-v2"), backend="own-1", keep_console=False)
    assert session.kind.name == "acme-pv"
    assert session.run(timeout=60).clean


def test_guest_kind_is_a_declared_protocol_member_for_member():
    declared = {n for n, f in vars(base.GuestKind).items()
                if callable(f) and not n.startswith("_")}
    assert declared <= set(dir(XEN_PV))
