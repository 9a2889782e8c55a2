"""The engine's x86 debug registers, as a PV hypervisor loads them for its guest.

What pvmon's seventh Unicorn patch (``patches/unicorn-2.1.4-debug-registers.patch``)
adds: ``uc_reg_write`` of DR0-3, DR6, DR7 does what a MOV to %drN does
(``cpu_x86_update_dr7`` inserts the instruction breakpoints and watchpoints
%dr7 enables; stock Unicorn only stores the value), QEMU's watchpoints restored
so data breakpoints fire, and ``pvmon_dr_hook``, through which MOV to and from
%drN at CPL 0 ask pvmon first.

:class:`EngineDebugRegs` keeps the engine's registers loaded only while the
vCPU on it has an enabled breakpoint (Xen's ``activate_debugregs``, lazily): a
guest that never enables one (a Linux boot sets %dr7 = 0x400 once) never has
its debug registers written into the engine, and the engine inserts nothing.

Without the patch (``PVMON_UNICORN=stock``) :func:`available` is False: the
registers are still written, and nothing fires, as before.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from weakref import WeakKeyDictionary

from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from pvmon.engine.hvm import value_hook

#: ``pvmon_dr_hook``'s answers: run natively, handled, #GP(0), #UD.
DR_NATIVE, DR_HANDLED, DR_GP, DR_UD = 0, 1, 2, 3
DR6_DEFAULT = 0xFFFF0FF0            # %dr6 at reset (Intel SDM vol. 3, 18.2.3)
DR7_DEFAULT = 0x400                 # %dr7 at reset: no breakpoint enabled
DR7_ENABLES = 0xFF                  # L0-L3 / G0-G3
_DR = (x86.UC_X86_REG_DR0, x86.UC_X86_REG_DR1, x86.UC_X86_REG_DR2, x86.UC_X86_REG_DR3)
_DR_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                          ctypes.POINTER(ctypes.c_uint64))


def _hook_symbol():
    try:
        return ctypes.c_void_p.in_dll(uclib, "pvmon_dr_hook")
    except (ValueError, AttributeError):
        return None


_HOOK = _hook_symbol()


def available() -> bool:
    """True when the running libunicorn carries pvmon's debug-register patch."""
    return _HOOK is not None


class EngineDebugRegs:
    """The debug registers of one engine (``machine``), shared by every vCPU
    time-sliced on it. :attr:`live`: the engine holds a vCPU's enabled
    breakpoints."""

    def __init__(self, machine) -> None:
        self.m = machine
        self.live = False
        #: Times the registers were written into the engine (for tests and figures).
        self.loads = 0

    def sync(self, dr: list[int], dr6: int, dr7: int) -> None:
        """Make the engine's registers the vCPU's (``dr``: %dr0-3; ``dr6``;
        ``dr7`` without the I/O breakpoints, which are never loaded) when
        ``dr7`` enables a breakpoint, or when the engine holds some now (they
        are then removed). Otherwise nothing is written. Every breakpoint
        inserted or removed drops the engine's translated code (QEMU's
        ``breakpoint_invalidate``), so this runs only when a guest uses them."""
        if not dr7 & DR7_ENABLES:
            if self.live:
                self.m.uc.reg_write(x86.UC_X86_REG_DR7, DR7_DEFAULT)
                self.live = False
            return
        uc = self.m.uc
        uc.reg_write(x86.UC_X86_REG_DR7, DR7_DEFAULT)     # every old one removed
        for reg, value in zip(_DR, dr, strict=True):
            uc.reg_write(reg, value)
        uc.reg_write(x86.UC_X86_REG_DR6, dr6)
        uc.reg_write(x86.UC_X86_REG_DR7, dr7)               # the new ones inserted
        self.live = True
        self.loads += 1

    def take_dr6(self) -> int:
        """At a #DB: the engine's %dr6 (B0-B3 of the breakpoints that matched,
        BS for a single step), which is then reset to its default as Xen's
        do_debug resets the hardware's."""
        uc = self.m.uc
        dr6 = uc.reg_read(x86.UC_X86_REG_DR6)
        if dr6 != DR6_DEFAULT:
            uc.reg_write(x86.UC_X86_REG_DR6, DR6_DEFAULT)
        return dr6


_ENGINES: WeakKeyDictionary = WeakKeyDictionary()


def for_machine(machine) -> EngineDebugRegs:
    """The :class:`EngineDebugRegs` of ``machine`` (one per engine)."""
    regs = _ENGINES.get(machine)
    if regs is None:
        regs = _ENGINES[machine] = EngineDebugRegs(machine)
    return regs


class DrHook:
    """``pvmon_dr_hook``: MOV to and from %drN at CPL 0 call ``on_dr(write,
    reg, value) -> (answer, value)`` (:data:`DR_NATIVE`, :data:`DR_HANDLED`
    with the value a read returns, :data:`DR_GP`, :data:`DR_UD`). Point the
    patch at it for each run (:meth:`activate`/:meth:`deactivate`); an
    exception in the callback is kept, the instruction raises #GP, and
    :meth:`deactivate` re-raises it."""

    def __init__(self, on_dr: Callable[[int, int, int], tuple[int, int]]) -> None:
        self.error: BaseException | None = None

        self._cb = _DR_CB(value_hook(self, on_dr, on_error=DR_GP, writes=(DR_HANDLED,)))

    def activate(self) -> None:
        """Point the patch's hook at this callback (before ``emu_start``)."""
        if _HOOK is not None:
            _HOOK.value = ctypes.cast(self._cb, ctypes.c_void_p).value

    def deactivate(self) -> None:
        """Take the hook away; re-raise a callback's exception, if any."""
        if _HOOK is not None:
            _HOOK.value = None
        if self.error is not None:
            exc, self.error = self.error, None
            raise exc


class WithDrHook:
    """The engine switches a machine activates for each run (``machine.hvm``)
    with a :class:`DrHook` added: ``inner`` (a :class:`pvmon.engine.hvm.PvHooks`)
    activated first and deactivated last."""

    def __init__(self, inner, dr_hook: DrHook) -> None:
        self.inner = inner
        self.dr_hook = dr_hook

    def activate(self) -> None:
        self.inner.activate()
        self.dr_hook.activate()

    def deactivate(self) -> None:
        try:
            self.dr_hook.deactivate()
        finally:
            self.inner.deactivate()


__all__ = ["DR_GP", "DR_HANDLED", "DR_NATIVE", "DR_UD", "DrHook", "EngineDebugRegs",
           "WithDrHook", "available", "for_machine"]
