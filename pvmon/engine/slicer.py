"""Time slices on the engine: end ``emu_start`` after a budget of executed
translation blocks, so that a platform running several vCPUs on one engine
can take the engine back from a vCPU that executes no trap (a spin loop).

A UC_HOOK_BLOCK hook over every address counts blocks down; at zero it marks
the slice expired and calls ``uc_emu_stop``, which takes effect where any
stop from a hook does (the next block). Blocks, not instructions: Unicorn's
own instruction count (``emu_start(count=)``) calls a hook before every
instruction and needs the exit checks after every memory access, and made a
2-vCPU Debian boot about ten times slower; a block hook is one C call per
block. Which blocks run is fixed by what the guest executes, so a budget in
blocks ends slices at the same points in every run of the same guest.

The hook is C (pvmon/engine/_slicer.c, built by setup.py); without the
compiled module the same logic runs as a ctypes callback: same slices,
slower. Blocks translated before the hook is installed carry no hook: install
it before the first ``emu_start``, or drop every translated block after
(``uc.ctl_flush_tb()``)."""

from __future__ import annotations

import ctypes
import importlib.util

import unicorn
from unicorn.unicorn_py3.unicorn import uclib


class _SliceState(ctypes.Structure):
    # struct pvmon_slice in _slicer.c
    _fields_ = [("left", ctypes.c_int64), ("expired", ctypes.c_int64),
                ("stop", ctypes.c_void_p)]


_BLOCK_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                             ctypes.c_void_p)
_uc_hook_add = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int,
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)(("uc_hook_add", uclib))
_uc_emu_stop = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(("uc_emu_stop", uclib))


def _compiled_callback() -> int | None:
    """The address of pvmon_slice_block_cb in the compiled module, or None."""
    spec = importlib.util.find_spec("pvmon.engine._slicer")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        return ctypes.cast(lib.pvmon_slice_block_cb, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None


class Slicer:
    """A block budget on one Unicorn engine (``uc``: a ``unicorn.Uc``).
    ``reset(blocks)`` starts a budget of ``blocks`` (0: none); ``expired``
    says whether the budget ran out since ``clear()``."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self._state = _SliceState(0, 0, ctypes.cast(_uc_emu_stop, ctypes.c_void_p).value)
        addr = _compiled_callback()
        #: "c" or "python": which callback counts (the slices are the same).
        self.kind = "c" if addr is not None else "python"
        if addr is None:
            state = self._state

            def on_block(uch, _address, _size, _ud) -> None:
                if state.left > 0:
                    state.left -= 1
                    if state.left == 0:
                        state.expired = 1
                        _uc_emu_stop(uch)
            self._cb = _BLOCK_CB(on_block)
            addr = ctypes.cast(self._cb, ctypes.c_void_p).value
        handle = ctypes.c_size_t()
        err = _uc_hook_add(uc._uch, ctypes.byref(handle), unicorn.UC_HOOK_BLOCK, addr,
                           ctypes.addressof(self._state), 1, 0)
        if err != unicorn.UC_ERR_OK:
            raise unicorn.UcError(err)
        # kept alive with the engine, as the binding keeps its own callbacks
        uc._callbacks[handle.value] = (self._state, getattr(self, "_cb", None))

    def reset(self, blocks: int) -> None:
        """Allow ``blocks`` more blocks (0: no limit) and clear ``expired``."""
        self._state.left = blocks
        self._state.expired = 0

    @property
    def expired(self) -> bool:
        return bool(self._state.expired)

    def clear(self) -> None:
        self._state.expired = 0


__all__ = ["Slicer"]
