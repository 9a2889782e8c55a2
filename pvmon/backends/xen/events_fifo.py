"""Xen FIFO-based event channels (the ABI a guest picks with
EVTCHNOP_init_control; Xen 4.4 and later), per vCPU as Xen keeps them.

Layout and protocol from xen/include/public/event_channel.h and
xen/common/event_fifo.c@stable-4.17:

- an *event array* of 32-bit event words, one per port, shared by the whole
  domain, in guest pages the guest hands over one at a time with
  EVTCHNOP_expand_array (1024 words per 4 KiB page); a word holds PENDING
  (bit 31), MASKED (30), LINKED (29), BUSY (28) and a 17-bit LINK to the next
  port in its queue;
- one *control block* per vCPU (struct evtchn_fifo_control_block: u32 ready,
  u32 reserved, u32 head[16]) at control_gfn + offset, registered for that
  vCPU by EVTCHNOP_init_control (any vCPU of the domain, from any vCPU: Linux
  registers CPU N's from the CPU that brings it up); the first one switches
  the domain to the FIFO ABI;
- 16 priority queues per vCPU (0 highest, 7 default, 15 lowest); Xen keeps
  each queue's tail privately (``struct evtchn_fifo_queue``).

Raising a port (evtchn_fifo_set_pending) acts on the queue of the vCPU the
port notifies (``notify_vcpu_id``: set by bind_virq/bind_ipi, moved by
EVTCHNOP_bind_vcpu) at the port's priority. It sets PENDING; without a
control block for that vCPU the event stays pending, unlinked. If the word
is neither MASKED nor LINKED it is LINKED: if the port was the tail of the
queue it was last linked on (``fifo_lastq``: another vCPU's, or another
priority's, after bind_vcpu or set_priority), that queue's tail is dropped;
then the port goes behind the tail of its queue (the LINK field of the
tail's word, set only if that word is still LINKED, clearing BUSY:
try_set_link), or, with the queue empty, into head[priority], which also
sets the priority's READY bit; READY going 0 -> 1 marks evtchn_upcall_pending
of the vCPU (vcpu_mark_events_pending). A port that was not pending before
wakes the vCPUs polling it (evtchn_check_pollers).

BUSY: Xen sets BUSY on the tail word only when its compare-and-exchange of
the LINK field loses a race with another CPU of the guest changing the word,
to hold off unmasking while it retries. pvmon runs the guest's vCPUs one at a
time and never while the hypervisor side runs, so the exchange cannot lose:
BUSY is never set here, and the new tail value clears it as try_set_link's
does.

One-vCPU domains keep what their recordings hold: they also test and set
READY after linking a port behind a tail (Xen leaves READY alone then), an
access the recorded Debian boots (traces/debian-6.12-*.pvt) contain.

Every word and control-block access goes through the backend's recording
guest access, so traces and open-loop replay see them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

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

#: A queue: (vCPU id, priority).
Queue = tuple[int, int]


class FifoEvents:
    """The FIFO ABI of one domain. ``mem``: recording access to machine
    memory (read_phys/write_phys_data); ``valid_frame(gfn)``: whether a frame
    belongs to the domain (PV: gfn == mfn); ``mark_vcpu(vcpu)``: set
    evtchn_upcall_pending in that vCPU's vcpu_info; ``nr_vcpus``: the
    domain's vCPUs (init_control answers -ENOENT beyond); ``port_vcpu(port)``:
    the vCPU a port notifies (None: always vCPU 0)."""

    def __init__(self, mem, valid_frame: Callable[[int], bool],
                 mark_vcpu: Callable[[int], None], nr_vcpus: int = 1,
                 port_vcpu: Callable[[int], int] | None = None) -> None:
        self.mem = mem
        self.valid_frame = valid_frame
        self.mark_vcpu = mark_vcpu
        self.nr_vcpus = nr_vcpus
        self.port_vcpu = port_vcpu or (lambda _port: 0)
        #: vCPU id -> machine address of its control block (init_control).
        self.control: dict[int, int] = {}
        self.pages: list[int] = []           # machine addresses of event-array pages
        #: (vCPU, priority) -> last linked port, 0 for none (Xen-private q->tail).
        self.tails: dict[Queue, int] = {}
        #: port -> the queue it was last linked on (Xen's evtchn->fifo_lastq,
        #: zero-initialised: vCPU 0, priority 0).
        self.lastq: dict[int, Queue] = {}
        self.priority: dict[int, int] = {}   # port -> priority
        self.pending_unmapped: set[int] = set()   # raised before their word existed
        #: Test and set READY after linking behind a tail too (the one-vCPU
        #: streams recorded before per-vCPU queues; see the module docstring).
        self.ready_on_every_link = nr_vcpus == 1

    @property
    def control_ma(self) -> int | None:
        """vCPU 0's control block (machine address), None before init_control."""
        return self.control.get(0)

    # ------------------------------------------------------------ set-up
    def init_control(self, gfn: int, offset: int, vcpu: int) -> int:
        """EVTCHNOP_init_control for ``vcpu``: -ENOENT for a vCPU the domain
        lacks, -EINVAL for an offset that crosses the page or is not 8-byte
        aligned, a vCPU that has its control block already, or a frame not
        the domain's (evtchn_fifo_init_control, map_control_block). Returns
        0 or -errno."""
        if not 0 <= vcpu < self.nr_vcpus:
            return -abi.ENOENT
        if offset > PAGE - CONTROL_BLOCK_SIZE or offset & 7:
            return -abi.EINVAL
        if vcpu in self.control or not self.valid_frame(gfn):
            return -abi.EINVAL
        self.control[vcpu] = gfn * PAGE + offset
        return 0

    def expand_array(self, gfn: int) -> int:
        """EVTCHNOP_expand_array: one more page of event words. Ports already
        pending in the new range are raised now, on the vCPU each notifies
        (Xen's add_page_to_event_array)."""
        if not self.control:
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
        """EVTCHNOP_set_priority: later events of ``port`` go to queue
        ``prio`` (one already linked stays where it is)."""
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
    def set_pending(self, port: int) -> bool:
        """Raise ``port`` (Xen's evtchn_fifo_set_pending) on the queue of the
        vCPU it notifies. Returns True when the port was not pending before
        (the caller wakes its pollers: evtchn_check_pollers)."""
        ma = self.word_ma(port)
        if ma is None:
            self.pending_unmapped.add(port)
            return False
        vcpu = self.port_vcpu(port)
        w = self._get(ma)
        was_pending = bool(w & PENDING)
        w |= PENDING
        cb = self.control.get(vcpu)
        if w & (MASKED | LINKED) or cb is None:
            # masked, already queued, or no control block for the vCPU: only
            # PENDING (the guest relinks a masked one on unmask)
            self._put(ma, w)
            return not was_pending
        self._put(ma, w | LINKED)
        prio = self.priority.get(port, PRIORITY_DEFAULT)
        q = (vcpu, prio)
        old_q = self.lastq.get(port, (0, 0))
        if self.tails.get(old_q) == port:   # it was the tail: that queue is empty
            self.tails[old_q] = 0
        if old_q != q:
            self.lastq[port] = q
        linked = False
        tail = self.tails.get(q, 0)
        if tail:
            tma = self.word_ma(tail)
            if tma is not None:
                tw = self._get(tma)
                if tw & LINKED:   # the old tail is still queued: link behind it
                    self._put(tma, (tw & ~(BUSY | LINK_MASK)) | port)
                    linked = True
        if not linked:
            self._put(cb + 8 + 4 * prio, port)
        self.tails[q] = port
        if not linked or self.ready_on_every_link:
            ready = self._get(cb)
            if not ready & (1 << prio):
                self._put(cb, ready | (1 << prio))
                self.mark_vcpu(vcpu)
        return not was_pending

    def unmask(self, port: int) -> int:
        """EVTCHNOP_unmask: clear MASKED and re-raise if PENDING, on the
        vCPU the port notifies (Xen's evtchn_fifo_unmask)."""
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
        guest's to skip, as under Xen); its next binding starts at the
        default priority."""
        self.pending_unmapped.discard(port)
        self.priority.pop(port, None)
        ma = self.word_ma(port)
        if ma is not None:
            w = self._get(ma)
            if w & PENDING:
                self._put(ma, w & ~PENDING)
