"""The written backend contract (pvmon/backends/base.py) is the one the code
uses: every member a protocol declares exists, with the same parameters, on
each thing that implements it (the Xen backend and its vCPU, both guest
access layers, the dispatch layer and open loop's stand-in platform), and
a call's result record says what the call did."""

from __future__ import annotations

import inspect

import pytest

from pvmon.backends import base
from pvmon.backends.xen.backend import XenBackend
from pvmon.backends.xen.vcpu import PvVcpu
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.xen import XenPvDispatch
from pvmon.guests.catalog import resolve
from pvmon.replay.openloop import _NoGuestPlatform, _RecordedMemory
from pvmon.session import Session


def _methods(proto: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(proto).items()
            if inspect.isfunction(fn) and not name.startswith("_")}


def _params(sig: inspect.Signature) -> list[str]:
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]


@pytest.mark.parametrize("proto, impl", [
    (base.GuestAccess, RecordingGuestAccess),
    (base.GuestAccess, _RecordedMemory),
    (base.PlatformServices, XenPvDispatch),
    (base.PlatformServices, _NoGuestPlatform),
    (base.Vcpu, PvVcpu),
    (base.Backend, XenBackend),
], ids=lambda x: x.__name__)
def test_each_implementation_has_every_declared_method_with_its_parameters(proto, impl):
    for name, sig in _methods(proto).items():
        fn = getattr(impl, name, None)
        assert callable(fn), f"{impl.__name__} lacks {proto.__name__}.{name}"
        got = _params(inspect.signature(fn))
        # an implementation may take more, optional, parameters (open loop's begin)
        assert got[:len(_params(sig))] == _params(sig), (impl.__name__, name, got)


def test_the_xen_backend_has_every_member_the_contract_names_after_attach():
    s = Session(resolve("pvtest-v2"), keep_console=False)
    b = s.backend
    for name in ("abi", "name", "version", "ver", "hypercall_page", "op", "unsupported",
                 "console_out", "vcpu", "events", "console", "pinned"):
        assert hasattr(b, name), name
    assert isinstance(b.events.raised, list)
    assert callable(b.console.input_consumed)
    for attr in ("user_mode", "deadline"):
        assert hasattr(b.vcpu, attr), attr
    assert b.implements(base.CAP_PV_MMU) and b.implements(base.CAP_CONSOLE_INPUT)
    assert b.capabilities >= {base.CAP_HYPERCALL_PAGE, base.CAP_EVENT_UPCALLS}


def test_a_backend_without_optional_capabilities_says_so_and_refuses_console_input():
    class Minimal(base.Backend):
        abi, name, version = "none", "none-0", "0"

        def describe(self) -> dict:
            return {"name": self.name, "abi": self.abi, "version": self.version,
                    "base": None, "differences": []}

        def attach(self, machine, layout, guest, platform, memory_bytes, name) -> None:
            pass

        def call(self, nr: int, args: tuple[int, ...]) -> int:
            return -38

    b = Minimal()
    assert b.capabilities == frozenset() and not b.implements(base.CAP_PV_MMU)
    with pytest.raises(NotImplementedError):
        b.console_input(b"x")


def test_a_call_result_carries_value_name_decoded_op_and_events_raised():
    s = Session(resolve("pvtest-v2"), keep_console=False)
    s.run()
    b = s.backend
    from pvmon.backends.xen import abi
    res = b.call_result(abi.HYPERCALL_NUMBERS["xen_version"], (0, 0, 0, 0, 0), "xen_version")
    assert res == base.CallResult(b.ver.major << 16 | b.ver.minor, "xen_version",
                                  {"cmd": "version"}, ())
    assert b.events.raised == []


def test_a_backend_of_an_abi_without_a_dispatch_layer_is_refused_in_one_line():
    from pvmon.errors import BackendError

    class Sanskrit(base.Backend):  # an ABI pvmon has no guest kind or dispatch layer for
        abi, name, version = "sanskrit", "sanskrit-1", "1"

        def describe(self) -> dict:
            return {}

        def attach(self, machine, layout, guest, platform, memory_bytes, name) -> None:
            raise AssertionError("never attached")

        def call(self, nr: int, args: tuple[int, ...]) -> int:
            return -38

    with pytest.raises(BackendError, match="cannot run guests on a 'sanskrit' ABI backend"):
        Session(resolve("pvtest-v2"), backend=Sanskrit())


def test_a_backend_stop_means_the_same_live_and_in_open_loop():
    # one implementation of the callback services: open loop's stand-in notes the
    # same Stop the live dispatch layer would end the run with
    from pvmon.backends.xen import abi
    for reason, kind in ((abi.SHUTDOWN_crash, "crash"), (0, "shutdown")):
        live = Session(resolve("pvtest-v2"), keep_console=False)
        d = live.dispatch
        d.enter(0x1000)
        d.jump(0x2000)
        d.guest_shutdown(reason)
        noted = _NoGuestPlatform()
        noted.enter(0x1000)
        noted.jump(0x2000)
        noted.guest_shutdown(reason)
        assert live.machine.stop_reason == noted.stopped
        assert noted.stopped.kind == kind and noted.stopped.rip == 0x2000
    noted.stuck("blocked")
    assert noted.stopped.kind == "stuck"


def test_a_xen_backend_without_pv_page_tables_is_refused_not_run():
    from pvmon.errors import BackendError

    class XenLike(base.Backend):
        abi, name, version = "xen", "xen-like", "4.17"
        CAPABILITIES = frozenset({base.CAP_CONSOLE_INPUT, base.CAP_EVENT_UPCALLS})

        def describe(self) -> dict:
            return {}

        def attach(self, machine, layout, guest, platform, memory_bytes, name) -> None:
            raise AssertionError("never attached")

        def call(self, nr: int, args: tuple[int, ...]) -> int:
            return -38

    with pytest.raises(BackendError, match="cannot run a Xen PV guest: it does not "
                                           "implement pv-mmu"):
        Session(resolve("pvtest-v2"), backend=XenLike())
