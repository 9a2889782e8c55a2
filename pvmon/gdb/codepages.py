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

A flush leaves the translated code's pages in the buffer as garbage; a
snapshot (a fork) would hold them while the live process writes new blocks
over its copies, about 2.5 MiB a snapshot in a Debian boot. So
:meth:`CodePages.restart` gives them back (``madvise(MADV_DONTNEED)`` from the
page after the prologue up to where the last block went), when the buffer's
fields (``code_gen_buffer`` and friends, offsets below) check out.
"""

from __future__ import annotations

import ctypes
import importlib.util
from array import array
from bisect import bisect_right

from unicorn import x86_const as x86
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
#: ``TCGContext`` fields of the code buffer (qemu/include/tcg/tcg.h, measured):
#: ``code_gen_prologue`` (the buffer's start), ``code_gen_buffer`` (the part
#: after the prologue that translated blocks go into), its size, and
#: ``code_gen_ptr`` (where the next block goes; back to ``code_gen_buffer``
#: after a flush).
TCG_PROLOGUE, TCG_BUFFER, TCG_BUFFER_SIZE, TCG_PTR = 0x90, 0xA0, 0xB8, 0xC0
PAGE = 4096
MADV_DONTNEED = 4

_libc = ctypes.CDLL(None, use_errno=True)
_madvise = _libc.madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_madvise.restype = ctypes.c_int

_TRAVERSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
try:
    # PYFUNCTYPE: the GIL stays held for the call (each callback takes it back anyway)
    _tb_foreach = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, _TRAVERSE, ctypes.c_void_p)(
        ("tcg_tb_foreach_x86_64", uclib))
except AttributeError:          # not this Unicorn build
    _tb_foreach = None


class _WalkState(ctypes.Structure):
    # struct pvmon_tbwalk in _tbwalk.c
    _fields_ = [("out", ctypes.c_void_p), ("n", ctypes.c_uint64), ("cap", ctypes.c_uint64)]


def _compiled_walk() -> tuple[object, object] | None:
    """(the block callback as a traversal function, the pair merger) from
    the compiled module pvmon/gdb/_tbwalk.c, or None."""
    spec = importlib.util.find_spec("pvmon.gdb._tbwalk")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        merge = lib.pvmon_tbwalk_merge
        merge.argtypes = (ctypes.c_void_p, ctypes.c_uint64)
        merge.restype = ctypes.c_uint64
        return ctypes.cast(lib.pvmon_tbwalk_cb, _TRAVERSE), merge
    except (OSError, AttributeError):
        return None


_WALK = _compiled_walk()


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
        self._drop = False
        if _tb_foreach is None:
            return
        uch = uc._uch.value
        try:
            uc.reg_read(x86.UC_X86_REG_RAX)          # Unicorn sets itself up on a first call
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
        self._drop = self._buffer_checks()

    def _word(self, off: int) -> int:
        return ctypes.c_uint64.from_address(self._tcg + off).value

    def _buffer_checks(self) -> bool:
        """Whether the code-buffer fields read as expected (just after a flush):
        the prologue starts the buffer, blocks go right after it, and the next
        one goes at the start."""
        pro, buf, size, ptr = (self._word(o) for o in
                               (TCG_PROLOGUE, TCG_BUFFER, TCG_BUFFER_SIZE, TCG_PTR))
        return 0 < pro < buf < pro + PAGE and ptr == buf and PAGE < size < 1 << 40

    def _count(self) -> int:
        return ctypes.c_uint32.from_address(self._tcg + TCG_FLUSH_COUNT).value

    def restart(self) -> None:
        """Empty the translation cache: :meth:`harvest` then reports only what
        runs from here on."""
        if not self.ok:
            return
        used = self._word(TCG_PTR)
        self.uc.ctl_flush_tb()
        self._expected = self._count()
        if self._drop and self._word(TCG_PTR) == self._word(TCG_BUFFER):
            # The blocks' bytes are garbage now: give their pages back (a fork
            # would otherwise keep them in the snapshot while the live process
            # writes new blocks over its copies). Not the first page: the prologue.
            start = (self._word(TCG_BUFFER) + PAGE - 1) & ~(PAGE - 1)
            end = (used + PAGE - 1) & ~(PAGE - 1)
            if end > start:
                _madvise(start, end - start, MADV_DONTNEED)

    def harvest(self) -> Ranges | None:
        """Guest-virtual ranges holding every instruction executed since
        :meth:`restart` (a superset: whole translated blocks); None when
        unknown (a cache flush since, or the internals did not check out)."""
        if not self.ok or self._count() != self._expected:
            return None
        if _WALK is not None:
            return self._harvest_c()
        pairs: list[tuple[int, int]] = []
        add = pairs.append
        u64, u16 = ctypes.c_uint64.from_address, ctypes.c_uint16.from_address

        def each(_key, tb, _data) -> int:
            pc = u64(tb).value
            add((pc, pc + u16(tb + TB_SIZE).value))
            return 0
        _tb_foreach(self._tcg, _TRAVERSE(each), None)
        return Ranges(pairs)

    def _harvest_c(self) -> Ranges:
        cb, merge = _WALK
        cap = 1 << 15
        while True:
            out = (ctypes.c_uint64 * cap)()
            state = _WalkState(ctypes.addressof(out), 0, cap)
            _tb_foreach(self._tcg, cb, ctypes.addressof(state))
            if state.n < cap:
                break
            cap *= 4                     # full: walk again with more room
        words = merge(out, state.n)
        got = Ranges()
        flat = array("Q", memoryview(out).cast("B")[:words * 8].cast("Q"))
        got.starts = flat[0::2]
        got.ends = flat[1::2]
        return got


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
