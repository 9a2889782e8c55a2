"""Xen event channels, 2-level ABI (xen/include/public/event_channel.h,
xen/include/public/xen.h "shared_info").

Pending and mask bits live in the guest-visible shared_info page; the
per-vCPU selector word and ``evtchn_upcall_pending`` live in vcpu_info. This
module owns the port table and the bit protocol; delivery of the upcall is the
vCPU's business.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pvmon.backends.xen import abi


@dataclass
class Port:
    """One event-channel port. ``state``: a key of :data:`abi.EVTCHNSTAT`."""

    state: str
    vcpu: int = 0
    virq: int | None = None
    remote_dom: int = 0
    remote_port: int = 0
    # For ports whose other end is inside pvmon (console, xenstore): called on send.
    on_send: Callable[[], None] | None = field(default=None, repr=False)


class EventChannels:
    """Port table plus the 2-level pending/mask protocol.

    ``mem`` gives machine memory (``read_u64_phys``/``write_u64_phys``);
    ``shared_info_ma`` is the machine address of shared_info;
    ``vcpu_info_ma()`` returns the machine address of vCPU 0's vcpu_info
    (it moves when the guest registers its own with VCPUOP_register_vcpu_info).
    """

    NR_PORTS = abi.EVTCHN_2L_NR_CHANNELS

    @property
    def nr_ports(self) -> int:
        """Ports the current ABI can name: 4096 (2-level), or the words of the
        FIFO event array mapped so far."""
        if self.fifo is not None:
            return len(self.fifo.pages) * 1024
        return self.NR_PORTS

    def __init__(self, mem, shared_info_ma: int, vcpu_info_ma: Callable[[], int]) -> None:
        self.mem = mem
        self.si = shared_info_ma
        self.vcpu_info_ma = vcpu_info_ma
        #: SMP domains: vCPU id -> the machine address of its vcpu_info (None:
        #: one vCPU, whose vcpu_info is ``vcpu_info_ma()``).
        self.vcpu_info_of: Callable[[int], int] | None = None
        #: SMP domains: called with the port number whenever a port's pending
        #: bit is set (Xen's evtchn_check_pollers wakes a vCPU in SCHEDOP_poll).
        self.on_pending: Callable[[int], None] | None = None
        #: SMP domains: called with the vCPU id when its evtchn_upcall_pending
        #: goes from 0 to 1 (vcpu_mark_events_pending's vcpu_kick).
        self.on_kick: Callable[[int], None] | None = None
        #: vCPUs in the domain (bind_virq, bind_ipi answer -ENOENT beyond).
        self.nr_vcpus = 1
        self.ports: dict[int, Port] = {}
        #: Bound VIRQs: virq -> port for vCPU 0, (virq, vcpu) -> port for another
        #: vCPU's per-vCPU VIRQ (so a one-vCPU domain's table is what it always was).
        self.virqs: dict = {}
        self.raised: list[int] = []   # ports made pending during the current call
        self.fifo = None              # FifoEvents once the guest picks the FIFO ABI
        #: Called when evtchn_upcall_pending goes from 0 to 1 (None: nothing to do;
        #: a PVH vCPU with a per-vCPU upcall vector raises it in its local APIC).
        self.on_upcall: Callable[[], None] | None = None

    def new_fifo(self, mem, valid_frame: Callable[[int], bool]):
        """A FIFO ABI state for this domain (not yet in use: :meth:`enable_fifo`
        once the first EVTCHNOP_init_control succeeds): each vCPU's queues
        and control block, events marked on the vCPU a port notifies."""
        from pvmon.backends.xen.events_fifo import FifoEvents
        return FifoEvents(mem, valid_frame, self.mark_upcall, nr_vcpus=self.nr_vcpus,
                          port_vcpu=self.port_vcpu)

    def enable_fifo(self, fifo) -> None:
        """Switch to the FIFO ABI (after EVTCHNOP_init_control): ports pending
        in the 2-level bitmap stay pending (Xen's setup_ports)."""
        for n in self.ports:
            if self.pending(n):
                fifo.pending_unmapped.add(n)
        self.fifo = fifo

    # ---------------------------------------------------------- port table
    def alloc(self, port: Port) -> int:
        """Bind ``port`` at the lowest free number >= 1; -ENOSPC when full."""
        for n in range(1, self.nr_ports if self.fifo is None else 1 << 17):
            if n not in self.ports:
                self.ports[n] = port
                return n
        return -abi.ENOSPC

    def close(self, n: int) -> int:
        p = self.ports.get(n)
        if p is None:
            return -abi.EINVAL
        if p.virq is not None:
            self.virqs.pop(p.virq if p.vcpu == 0 else (p.virq, p.vcpu), None)
        del self.ports[n]
        if self.fifo is not None:
            self.fifo.clear_pending(n)
        else:
            self._clear_bit(abi.SHARED_INFO["evtchn_pending"], n)
        return 0

    def bind_virq(self, virq: int, vcpu: int) -> int:
        """EVTCHNOP_bind_virq: a global VIRQ only on vCPU 0 (-EINVAL), a vCPU
        the domain lacks -ENOENT, a VIRQ already bound on that vCPU -EEXIST
        (evtchn_bind_virq, xen/common/event_channel.c@stable-4.17)."""
        if virq < 0 or virq >= abi.NR_VIRQS:
            return -abi.EINVAL
        if virq not in abi.PER_VCPU_VIRQS and vcpu != 0:
            return -abi.EINVAL
        if vcpu != 0 and not 0 <= vcpu < self.nr_vcpus:
            return -abi.ENOENT if self.nr_vcpus > 1 else -abi.EINVAL
        key = virq if vcpu == 0 else (virq, vcpu)
        if key in self.virqs:
            return -abi.EEXIST
        n = self.alloc(Port("virq", vcpu=vcpu, virq=virq))
        if n > 0:
            self.virqs[key] = n
        return n

    # ---------------------------------------------------------- bit protocol
    def _word(self, base: int, n: int) -> tuple[int, int]:
        return self.si + base + (n // 64) * 8, 1 << (n % 64)

    def _test(self, base: int, n: int) -> bool:
        a, bit = self._word(base, n)
        return bool(self.mem.read_u64_phys(a) & bit)

    def _set_bit(self, base: int, n: int) -> bool:
        a, bit = self._word(base, n)
        v = self.mem.read_u64_phys(a)
        self.mem.write_u64_phys(a, v | bit)
        return bool(v & bit)

    def _clear_bit(self, base: int, n: int) -> None:
        a, bit = self._word(base, n)
        self.mem.write_u64_phys(a, self.mem.read_u64_phys(a) & ~bit)

    def masked(self, n: int) -> bool:
        if self.fifo is not None:
            from pvmon.backends.xen.events_fifo import MASKED
            return self.fifo.test(n, MASKED)
        return self._test(abi.SHARED_INFO["evtchn_mask"], n)

    def pending(self, n: int) -> bool:
        if self.fifo is not None:
            from pvmon.backends.xen.events_fifo import PENDING
            return self.fifo.test(n, PENDING)
        return self._test(abi.SHARED_INFO["evtchn_pending"], n)

    def port_vcpu(self, n: int) -> int:
        """The vCPU port ``n`` notifies (0 for a port not bound)."""
        p = self.ports.get(n)
        return p.vcpu if p is not None else 0

    def _mark_vcpu(self, n: int) -> None:
        if self.vcpu_info_of is None:
            vi = self.vcpu_info_ma()
            vcpu = 0
        else:
            vcpu = self.port_vcpu(n)
            vi = self.vcpu_info_of(vcpu)
        sel = vi + abi.VCPU_INFO["evtchn_pending_sel"]
        self.mem.write_u64_phys(sel, self.mem.read_u64_phys(sel) | (1 << (n // 64)))
        self.mark_upcall(vcpu)

    def mark_upcall(self, vcpu: int = 0) -> None:
        """Set vcpu_info.evtchn_upcall_pending of ``vcpu`` (both ABIs); on its
        0 -> 1 transition call :attr:`on_upcall` (Xen's hvm_assert_evtchn_irq)
        and :attr:`on_kick`."""
        vi = self.vcpu_info_ma() if self.vcpu_info_of is None else self.vcpu_info_of(vcpu)
        if not self.mem.read_phys(vi, 1)[0]:
            self.mem.write_phys_data(vi, b"\x01")
            if self.on_upcall is not None:
                self.on_upcall()
            if self.on_kick is not None:
                self.on_kick(vcpu)

    def set_pending(self, n: int) -> None:
        """Raise port ``n`` (Xen's evtchn_2l_set_pending, or the FIFO ABI's)."""
        self.raised.append(n)
        if self.fifo is not None:
            if self.fifo.set_pending(n) and self.on_pending is not None:
                self.on_pending(n)
            return
        if self._set_bit(abi.SHARED_INFO["evtchn_pending"], n):
            return
        if not self.masked(n):
            self._mark_vcpu(n)
        if self.on_pending is not None:
            self.on_pending(n)

    def unmask(self, n: int) -> int:
        if self.fifo is not None:
            return self.fifo.unmask(n) if n in self.ports else -abi.EINVAL
        if n not in self.ports and not (0 < n < self.NR_PORTS):
            return -abi.EINVAL
        self._clear_bit(abi.SHARED_INFO["evtchn_mask"], n)
        if self.pending(n):
            self._mark_vcpu(n)
        return 0

    def send(self, n: int) -> int:
        """EVTCHNOP_send from the guest on local port ``n``."""
        p = self.ports.get(n)
        if p is None:
            return -abi.EINVAL
        if p.state == "interdomain":
            if p.on_send is not None:
                p.on_send()
            return 0
        if p.state == "ipi":
            self.set_pending(n)
            return 0
        if p.state == "unbound":
            return 0
        return -abi.EINVAL

    def raise_virq(self, virq: int, vcpu: int = 0) -> bool:
        n = self.virqs.get(virq if vcpu == 0 else (virq, vcpu))
        if n is None:
            return False
        self.set_pending(n)
        return True

    def status(self, n: int) -> bytes | int:
        """struct evtchn_status body (24 bytes from ``dom``), or -errno."""
        p = self.ports.get(n)
        st = abi.EVTCHNSTAT[p.state] if p else 0
        u = b""
        if p and p.state in ("unbound", "interdomain"):
            u = struct.pack("<HxxI", p.remote_dom, p.remote_port)
        elif p and p.state == "virq":
            u = struct.pack("<I", p.virq)
        return struct.pack("<II", st, p.vcpu if p else 0) + u.ljust(8, b"\0")
