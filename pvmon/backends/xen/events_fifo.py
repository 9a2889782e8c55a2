"""Xen FIFO-based event channels (the ABI a guest picks with
EVTCHNOP_init_control; Xen 4.4 and later).

Layout and protocol from xen/include/public/event_channel.h:

- an *event array* of 32-bit event words, one per port, in guest pages the
  guest hands over one at a time with EVTCHNOP_expand_array (1024 words per
  4 KiB page); a word holds PENDING (bit 31), MASKED (30), LINKED (29),
  BUSY (28) and a 17-bit LINK to the next port in its queue;
- a per-vCPU *control block* (struct evtchn_fifo_control_block: u32 ready,
  u32 reserved, u32 head[16]) at control_gfn + offset (EVTCHNOP_init_control);
- 16 priority queues (0 highest, 7 default, 15 lowest).

Raising an event (as Xen's evtchn_fifo_set_pending, xen/common/event_fifo.c)
sets PENDING; if the word is neither MASKED nor LINKED it is LINKED at the
tail of its priority's queue (through the old tail's LINK field if that word
is still LINKED, else by writing head[priority]), the priority's READY bit is
set, and when it was clear the vCPU gets evtchn_upcall_pending. The guest
consumes queues itself. Every word and control-block access goes through the
backend's recording guest access, so traces and open-loop replay see them.
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi

PENDING, MASKED, LINKED, BUSY = 1 << 31, 1 << 30, 1 << 29, 1 << 28
LINK_BITS = 17
LINK_MASK = (1 << LINK_BITS) - 1
NR_CHANNELS = 1 << LINK_BITS
WORDS_PER_PAGE = 4096 // 4
MAX_QUEUES = 16
PRIORITY_DEFAULT = 7
CONTROL_BLOCK_SIZE = 8 + 4 * MAX_QUEUES
PAGE = 4096


class FifoEvents:
    """The FIFO ABI for one single-vCPU domain. ``mem``: recording access to
    machine memory (read_phys/write_phys_data); ``valid_frame(gfn)``: whether
    a frame belongs to the domain (PV: gfn == mfn); ``mark_vcpu()``: set
    evtchn_upcall_pending in vcpu_info."""

    def __init__(self, mem, valid_frame, mark_vcpu) -> None:
        self.mem = mem
        self.valid_frame = valid_frame
        self.mark_vcpu = mark_vcpu
        self.control_ma: int | None = None
        self.pages: list[int] = []           # machine addresses of event-array pages
        self.tails: dict[int, int] = {}      # priority -> last linked port (Xen-private)
        self.priority: dict[int, int] = {}   # port -> priority
        self.pending_unmapped: set[int] = set()   # raised before their word existed

    # ------------------------------------------------------------ set-up
    def init_control(self, gfn: int, offset: int, vcpu: int) -> int:
        """EVTCHNOP_init_control. Returns 0 or -errno."""
        if vcpu != 0:
            return -abi.ENOENT
        if self.control_ma is not None:
            return -abi.EINVAL
        if offset & 7 or offset > PAGE - CONTROL_BLOCK_SIZE or not self.valid_frame(gfn):
            return -abi.EINVAL
        self.control_ma = gfn * PAGE + offset
        return 0

    def expand_array(self, gfn: int) -> int:
        """EVTCHNOP_expand_array: one more page of event words. Ports already
        pending in the new range are linked now (Xen's add_page_to_event_array)."""
        if self.control_ma is None:
            return -abi.EINVAL
        if len(self.pages) * WORDS_PER_PAGE >= NR_CHANNELS:
            return -abi.ENOSPC
        if not self.valid_frame(gfn):
            return -abi.EINVAL
        first = len(self.pages) * WORDS_PER_PAGE
        self.pages.append(gfn * PAGE)
        for port in sorted(p for p in self.pending_unmapped
                           if first <= p < first + WORDS_PER_PAGE):
            self.pending_unmapped.discard(port)
            self.set_pending(port)
        return 0

    def set_priority(self, port: int, prio: int) -> int:
        if prio >= MAX_QUEUES:
            return -abi.EINVAL
        self.priority[port] = prio
        return 0

    # ------------------------------------------------------------- words
    def word_ma(self, port: int) -> int | None:
        page = port // WORDS_PER_PAGE
        if not 0 < port < NR_CHANNELS or page >= len(self.pages):
            return None
        return self.pages[page] + (port % WORDS_PER_PAGE) * 4

    def _get(self, ma: int) -> int:
        return struct.unpack("<I", self.mem.read_phys(ma, 4))[0]

    def _put(self, ma: int, v: int) -> None:
        self.mem.write_phys_data(ma, struct.pack("<I", v & 0xFFFFFFFF))

    def test(self, port: int, bit: int) -> bool:
        ma = self.word_ma(port)
        if ma is None:
            return bit == PENDING and port in self.pending_unmapped
        return bool(self._get(ma) & bit)

    # ---------------------------------------------------------- protocol
    def set_pending(self, port: int) -> None:
        """Raise ``port`` (Xen's evtchn_fifo_set_pending)."""
        ma = self.word_ma(port)
        if ma is None:
            self.pending_unmapped.add(port)
            return
        w = self._get(ma)
        w |= PENDING
        if w & (MASKED | LINKED):
            self._put(ma, w)
            return
        self._put(ma, w | LINKED)
        prio = self.priority.get(port, PRIORITY_DEFAULT)
        linked = False
        tail = self.tails.get(prio)
        if tail is not None and tail != port:
            tma = self.word_ma(tail)
            if tma is not None:
                tw = self._get(tma)
                if tw & LINKED:   # the old tail is still queued: link behind it
                    self._put(tma, (tw & ~LINK_MASK) | port)
                    linked = True
        cb = self.control_ma
        if not linked:
            self._put(cb + 8 + 4 * prio, port)
        self.tails[prio] = port
        ready = self._get(cb)
        if not ready & (1 << prio):
            self._put(cb, ready | (1 << prio))
            self.mark_vcpu()

    def unmask(self, port: int) -> int:
        """EVTCHNOP_unmask: clear MASKED and re-raise if PENDING
        (Xen's evtchn_fifo_unmask)."""
        ma = self.word_ma(port)
        if ma is None:
            return 0
        w = self._get(ma)
        if w & MASKED:
            self._put(ma, w & ~MASKED)
        if w & PENDING:
            self.set_pending(port)
        return 0

    def clear_pending(self, port: int) -> None:
        """On close: the port's word stops being pending (a stale LINK is the
        guest's to skip, as under Xen)."""
        self.pending_unmapped.discard(port)
        self.priority.pop(port, None)
        ma = self.word_ma(port)
        if ma is not None:
            w = self._get(ma)
            if w & PENDING:
                self._put(ma, w & ~PENDING)
