"""Which guest code pages ran, read from Unicorn's translation cache.

Reverse-continue must find the last breakpoint hit before the current
position. Re-executing every snapshot segment to look for it costs as much as
the run itself; a segment whose code never touched a breakpoint's page cannot
hit it and need not be re-executed. This module says which (guest-virtual)
code pages a stretch of execution ran, at no cost per executed block:

- Unicorn (QEMU) executes guest code only as translated blocks, and a block
  is translated from the address it starts at when it is first needed after
  the cache was last emptied. So after :meth:`CodePages.restart` (an empty
  cache) every block executed since is in the cache, and its pages
  (``pc`` and ``pc + size - 1``: a block never spans more than two) cover
  every instruction executed since.
- Unicorn keeps every block it translated in one tree (QEMU's
  ``tcg_tb_foreach`` walks it) until the cache is emptied: invalidated blocks
  (self-modifying code, a debugger's exits) stay in it; only "no cache"
  blocks (icount mode, or code outside RAM; neither occurs here) leave it.
- Anything else that empties the cache (a full code buffer, a ``count=1``
  single step followed by a plain run, a watchpoint change) would lose blocks.
  QEMU counts those flushes (``tb_ctx.tb_flush_count``); :meth:`harvest`
  answers None ("unknown": search there) when the count moved.

It reaches into Unicorn 2.1.4's internals (like :mod:`pvmon.engine.ucinternals`):
``uc_struct.tcg_ctx`` at :data:`UC_STRUCT_TCG_CTX`, the context's back-pointer
to the engine at :data:`TCG_UC` and the flush count at :data:`TCG_FLUSH_COUNT`
(measured on the 2.1.4 manylinux wheel; checked once per engine: the
back-pointer must point at the engine and a flush must add one to the count).
Any check failing leaves :attr:`CodePages.ok` False and every answer unknown:
reverse-continue then re-executes every segment, as without this module.
"""

from __future__ import annotations

import ctypes
from array import array
from bisect import bisect_right

from unicorn.unicorn_py3.unicorn import uclib

from pvmon.engine.ucinternals import _readable

#: ``offsetof(struct uc_struct, tcg_ctx)`` (include/uc_priv.h; measured).
UC_STRUCT_TCG_CTX = 0x300
#: ``offsetof(TCGContext, uc)`` (qemu/include/tcg/tcg.h; measured).
TCG_UC = 0x9970
#: ``offsetof(TCGContext, tb_ctx.tb_flush_count)`` (measured: the one word a flush bumps).
TCG_FLUSH_COUNT = 0x98D0
#: ``offsetof(TranslationBlock, size)``: ``pc`` is at 0 (qemu/include/exec/exec-all.h).
TB_SIZE = 20

_TRAVERSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
try:
    # PYFUNCTYPE: the GIL stays held for the call (each callback takes it back anyway)
    _tb_foreach = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, _TRAVERSE, ctypes.c_void_p)(
        ("tcg_tb_foreach_x86_64", uclib))
except AttributeError:          # not this Unicorn build
    _tb_foreach = None


class Ranges:
    """Guest-virtual code ranges: sorted, disjoint ``[start, end)`` pairs."""

    __slots__ = ("ends", "starts")

    def __init__(self, pairs=()) -> None:
        self.starts = array("Q")
        self.ends = array("Q")
        for start, end in sorted(pairs):
            if self.ends and start <= self.ends[-1]:
                self.ends[-1] = max(self.ends[-1], end)
            else:
                self.starts.append(start)
                self.ends.append(end)

    def __contains__(self, addr: int) -> bool:
        k = bisect_right(self.starts, addr) - 1
        return k >= 0 and addr < self.ends[k]

    def __len__(self) -> int:
        return len(self.starts)

    def __or__(self, other: Ranges) -> Ranges:
        return Ranges(list(zip(self.starts, self.ends)) + list(zip(other.starts, other.ends)))

    def __repr__(self) -> str:
        return f"<Ranges: {len(self)}>"


class CodePages:
    """The guest code one engine (``uc``: a ``unicorn.Uc``) executed since the
    last :meth:`restart`. Not thread-safe (use on the engine thread)."""

    def __init__(self, uc) -> None:
        self.uc = uc
        self.ok = False
        self._tcg = 0
        self._expected = -1
        if _tb_foreach is None:
            return
        uch = uc._uch.value
        try:
            tcg = ctypes.c_uint64.from_address(uch + UC_STRUCT_TCG_CTX).value
            if not _readable(tcg, TCG_UC + 8) or \
                    ctypes.c_uint64.from_address(tcg + TCG_UC).value != uch:
                return
            self._tcg = tcg
            before = self._count()
            uc.ctl_flush_tb()
            if self._count() != (before + 1) & 0xFFFFFFFF:
                return
        except Exception:  # noqa: BLE001 - any surprise: no code knowledge, searches go on
            return
        self.ok = True
        self._expected = self._count()

    def _count(self) -> int:
        return ctypes.c_uint32.from_address(self._tcg + TCG_FLUSH_COUNT).value

    def restart(self) -> None:
        """Empty the translation cache: :meth:`harvest` then reports only what
        runs from here on."""
        if self.ok:
            self.uc.ctl_flush_tb()
            self._expected = self._count()

    def harvest(self) -> Ranges | None:
        """Guest-virtual ranges holding every instruction executed since
        :meth:`restart` (a superset: whole translated blocks); None when
        unknown (a cache flush since, or the internals did not check out)."""
        if not self.ok or self._count() != self._expected:
            return None
        pairs: list[tuple[int, int]] = []
        add = pairs.append
        u64, u16 = ctypes.c_uint64.from_address, ctypes.c_uint16.from_address

        def each(_key, tb, _data) -> int:
            pc = u64(tb).value
            add((pc, pc + u16(tb + TB_SIZE).value))
            return 0
        _tb_foreach(self._tcg, _TRAVERSE(each), None)
        return Ranges(pairs)


def union(a: Ranges | None, b: Ranges | None) -> Ranges | None:
    """The code of two stretches together (None, unknown, wins)."""
    if a is None or b is None:
        return None
    if not len(b):
        return a
    if not len(a):
        return b
    return a | b


__all__ = ["CodePages", "Ranges", "union"]
