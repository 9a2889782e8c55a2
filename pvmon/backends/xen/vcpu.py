"""The Xen vCPU: what every Xen guest mode shares of a vCPU (PV now, PVH
next): vcpu_info and the upcall mask, pvclock time, runstate, timers,
blocking and polling.

Facts: vcpu_info and vcpu_time_info layouts (xen/include/public/xen.h);
pvclock scaling: ns = ((tsc - tsc_timestamp) << tsc_shift) *
tsc_to_system_mul >> 32. The PV platform's vCPU (bounce frames, iret,
kernel/user mode, the trap table) is :class:`pvmon.backends.xen.pv.vcpu.PvVcpu`,
a subclass.
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi
from pvmon.engine.machine import GuestPageFault, Machine, Stop

E = abi

#: vm_assist type that makes Xen flag runstate updates (xen/include/public/xen.h).
VMASST_TYPE_runstate_update_flag = 5


class XenVcpu:
    """One vCPU of a Xen domain (``vcpu_id``; vCPU 0 in a one-vCPU domain),
    bound to a backend (for events, time and the platform) and the machine:
    the members every Xen guest mode shares. In an SMP domain the backend's
    ``smp`` (:class:`pvmon.backends.xen.pv.smp.PvScheduler`) takes blocking
    and polling."""

    def __init__(self, backend, machine: Machine, layout, vcpu_id: int = 0) -> None:
        self.b = backend
        #: This vCPU's id (0 in a one-vCPU domain).
        self.vcpu_id = vcpu_id
        # vcpu_time_info.flags exists from 4.7 (xen.h); before, it is padding.
        self._pvclock_flags = (E.XEN_PVCLOCK_TSC_STABLE_BIT if "pvclock_tsc_stable"
                               in backend.ver.capabilities else 0)
        self.m = machine
        self.layout = layout
        # shared_info.vcpu_info[vcpu_id] until the guest registers its own
        self._vcpu_info = layout.shared_info_ma + vcpu_id * E.VCPU_INFO_SIZE
        self.singleshot: int | None = None
        # Xen starts every vCPU with a 10 ms periodic timer (xen/common/sched/core.c)
        self.periodic = 10_000_000
        self.periodic_next = 10_000_000
        self.deadline: int | None = 10_000_000
        self.runstate_va = 0
        self.time_area_va = 0
        # struct vcpu_runstate_info as Xen keeps it (v->runstate): vCPU 0 runs
        # from time 0, the others are offline until VCPUOP_up (vcpu_create,
        # xen/common/domain.c@stable-4.17, then the first schedule)
        self.rs_state = E.RUNSTATE_running if vcpu_id == 0 else E.RUNSTATE_offline
        self.rs_entry = 0
        self.rs_time = [0, 0, 0, 0]

    # ---------------------------------------------------------- vcpu_info
    def vcpu_info_ma(self) -> int:
        return self._vcpu_info

    def upcall_mask(self) -> int:
        # vcpu_info sits in machine memory the builder placed (always valid), so
        # read the byte straight from RAM: this runs on every hypercall and TSC read.
        return self.m.mem[self._vcpu_info + 1]

    def set_upcall_mask(self, v: int) -> None:
        self.m.write_phys_data(self._vcpu_info + 1, bytes((v & 0xFF,)))

    def upcall_pending(self) -> bool:
        return bool(self.m.mem[self._vcpu_info])

    def _time_info(self) -> bytes:
        # TSC runs at tsc_khz; with the default 1 GHz, mul=2^31 shift=1 gives ns == cycles.
        khz = self.m.clock.tsc_khz
        shift = 1
        mul = (1_000_000 << 32) // (khz << shift)
        return struct.pack("<IIQQIbB2x", 2, 0, 0, 0, mul, shift, self._pvclock_flags)

    def init_time(self) -> None:
        self.m.write_phys_data(self._vcpu_info + E.VCPU_INFO["time"], self._time_info())

    def register_vcpu_info(self, ma: int) -> int:
        """VCPUOP_register_vcpu_info: move vcpu_info to machine address ``ma``;
        Xen copies the old contents and marks every selector bit pending."""
        old = self.m.read_phys(self._vcpu_info, E.VCPU_INFO_SIZE)
        self._vcpu_info = ma
        self.m.write_phys_data(ma, old)
        self.m.write_phys_data(ma, b"\x01")
        self.m.write_u64_phys(ma + E.VCPU_INFO["evtchn_pending_sel"], (1 << 64) - 1)
        self.init_time()
        return 0

    def update_time_area(self) -> None:
        if self.time_area_va:
            try:
                self.m.write_virt(self.time_area_va, self._time_info())
            except GuestPageFault:
                pass

    # ------------------------------------------------------------ runstate
    # Xen's accounting (xen/common/sched/core.c@stable-4.17): time[state] grows
    # only when the state changes (vcpu_runstate_change); readers through the
    # hypervisor add the time since state_entry_time (vcpu_runstate_get); the
    # registered area is a copy of v->runstate written at each context switch
    # (update_runstate_area, xen/arch/x86/domain.c@stable-4.17).
    @property
    def blocked_ns(self) -> int:
        """Virtual ns spent blocked (SCHEDOP_block, SCHEDOP_poll) up to the
        last state change."""
        return self.rs_time[E.RUNSTATE_blocked]

    def runstate_change(self, state: int, now: int | None = None) -> None:
        """Enter runstate ``state`` (``RUNSTATE_*``) at virtual ns ``now``
        (default: the clock): the time since state_entry_time goes to the old
        state (Xen's vcpu_runstate_change; a change at the same instant moves
        no time and keeps state_entry_time)."""
        if state == self.rs_state:
            return
        t = self.m.clock.now_ns if now is None else now
        delta = t - self.rs_entry
        if delta > 0:
            self.rs_time[self.rs_state] += delta
            self.rs_entry = t
        self.rs_state = state

    def _runstate_pack(self, entry: int, times: list[int]) -> bytes:
        return struct.pack("<i4xQQQQQ", self.rs_state, entry & 0xFFFF_FFFF_FFFF_FFFF, *times)

    def runstate_bytes(self) -> bytes:
        """struct vcpu_runstate_info as VCPUOP_get_runstate_info returns it
        (vcpu_runstate_get): the current state's time counted up to now."""
        times = list(self.rs_time)
        delta = self.m.clock.now_ns - self.rs_entry
        if delta > 0:
            times[self.rs_state] += delta
        return self._runstate_pack(self.rs_entry, times)

    def runstate_area_writes(self, update_flag: bool) -> list[tuple[int, bytes]]:
        """The writes update_runstate_area makes to the registered area, in
        order, as ``(offset, bytes)``: v->runstate as it is; with
        VMASST_TYPE_runstate_update_flag, state_entry_time's top byte first
        gets XEN_RUNSTATE_UPDATE (bit 63), the whole struct is written with
        it, and the top byte is written again without it, so a reader that
        sees the flag or a changed state_entry_time retries (Linux's
        xen_get_runstate_snapshot_cpu_delta)."""
        raw = self._runstate_pack(self.rs_entry, self.rs_time)
        if not update_flag:
            return [(0, raw)]
        top = 15    # the last byte of state_entry_time (offset 8, 8 bytes)
        flagged = raw[:top] + bytes((raw[top] | 0x80,)) + raw[top + 1:]
        return [(top, flagged[top:top + 1]), (0, flagged), (top, raw[top:top + 1])]

    def _runstate_cr3(self) -> int | None:
        """The page tables the area is written through: a PV vCPU's kernel
        ones (Xen writes a vCPU's area when it next enters kernel mode if its
        user page tables lack it: need_update_runstate_area,
        xen/arch/x86/pv/domain.c@stable-4.17); None: the current ones."""
        k = getattr(self, "kernel_cr3", 0)
        return k << 12 if k else None

    def _write_runstate(self, writes: list[tuple[int, bytes]]) -> None:
        m = self.m
        cr3 = self._runstate_cr3()
        va0 = self.runstate_va
        try:
            if (va0 & 0xFFF) + E.VCPU_RUNSTATE_INFO_SIZE <= 4096:   # one page: one walk
                pa, _ = m.walk(va0, write=True, cr3=cr3)
                if pa + E.VCPU_RUNSTATE_INFO_SIZE <= m.phys_bytes:
                    for off, data in writes:
                        m.write_phys_data(pa + off, data)
                return
            for off, data in writes:
                va = self.runstate_va + off
                while data:
                    n = min(len(data), 4096 - (va & 0xFFF))
                    pa, _ = m.walk(va, write=True, cr3=cr3)
                    if pa + n > m.phys_bytes:
                        return
                    m.write_phys_data(pa, data[:n])
                    va, data = va + n, data[n:]
        except GuestPageFault:
            pass

    def update_runstate(self) -> None:
        """Copy the runstate into the registered area (update_runstate_area),
        with the XEN_RUNSTATE_UPDATE protocol when the domain enabled
        VMASST_TYPE_runstate_update_flag."""
        if self.runstate_va:
            flag = bool(getattr(self.b, "vm_assist", 0) & (1 << VMASST_TYPE_runstate_update_flag))
            self._write_runstate(self.runstate_area_writes(flag))

    def register_runstate_area(self, va: int, current: bool) -> None:
        """VCPUOP_register_runstate_memory_area: the area moves to ``va`` and
        gets a copy at once: v->runstate as it is for the calling vCPU
        (``current``), with the time up to now for another (do_vcpu_op,
        xen/common/domain.c@stable-4.17), without the update flag."""
        self.runstate_va = va
        if va:
            self._write_runstate([(0, self._runstate_pack(self.rs_entry, self.rs_time)
                                   if current else self.runstate_bytes())])

    # ---------------------------------------------------------------- time
    def set_singleshot(self, deadline: int | None) -> None:
        self.singleshot = deadline
        self._update_deadline()

    def set_periodic(self, period: int) -> None:
        self.periodic = period
        self.periodic_next = self.m.clock.now_ns + period if period else None
        self._update_deadline()

    def _update_deadline(self) -> None:
        ds = [d for d in (self.singleshot, self.periodic_next if self.periodic else None)
              if d is not None]
        self.deadline = min(ds) if ds else None

    def next_deadline(self) -> int | None:
        """The earliest armed timer in virtual ns, or None (also kept in ``deadline``,
        which every TSC read consults)."""
        return self.deadline

    def wake_deadline(self) -> int | None:
        """The timer that can wake this vCPU from SCHEDOP_block, SCHEDOP_poll or
        an HVM ``hlt`` (virtual ns), or None: the singleshot timer only. Xen
        stops a vCPU's periodic timer when it is switched out and re-arms it
        when it runs again, sending the one event it missed
        (sched_context_switch and vcpu_periodic_timer_work,
        xen/common/sched/core.c@stable-4.17), so a periodic timer never ends a
        block (docs/xen-oracle.md, difference 1)."""
        return self.singleshot

    def fire_timers(self) -> bool:
        """Raise VIRQ_TIMER for every timer that is due. Returns True if one fired."""
        now = self.m.clock.now_ns
        dl = self.deadline          # the earliest armed timer (_update_deadline)
        if dl is None or dl > now:
            return False            # the common case: every hypercall asks
        fired = False
        if self.singleshot is not None and self.singleshot <= now:
            self.singleshot = None
            fired = True
        if self.periodic and self.periodic_next is not None and self.periodic_next <= now:
            # one event however many periods passed, the next a period after it
            # (vcpu_periodic_timer_work: periodic_last_event = NOW())
            self.periodic_next = now + self.periodic
            fired = True
        if fired:
            self._update_deadline()
            self.b.events.raise_virq(E.VIRQ_TIMER, self.vcpu_id)
        return fired

    def block(self) -> int:
        """SCHEDOP_block: enable event delivery, then sleep until an event
        (:meth:`sleep_until_event`)."""
        self.set_upcall_mask(0)
        smp = getattr(self.b, "smp", None)
        if smp is not None:
            return smp.block(self)
        return self.sleep_until_event()

    def sleep_until_event(self) -> int:
        """Return at once when an event is pending; else virtual time jumps to
        the singleshot timer (:meth:`idle_until`), and with none the guest is
        stuck. Returns 0 (SCHEDOP_block's result)."""
        if self.upcall_pending():
            return 0
        dl = self.wake_deadline()
        if dl is None:
            self.b.p.stuck("blocked with no singleshot timer armed and no event pending "
                           "(a periodic timer does not wake a blocked vCPU)")
            return 0
        self.idle_until(dl)
        return 0

    def idle_until(self, deadline: int) -> None:
        """The vCPU is descheduled until virtual time ``deadline`` (ns): time
        jumps there, the blocked time counts in runstate, due timers fire."""
        now = self.m.clock.now_ns
        if deadline > now:
            self.runstate_change(E.RUNSTATE_blocked, now)
            self.m.clock.advance_to(deadline)
            self.runstate_change(E.RUNSTATE_running, deadline)
        self.fire_timers()
        self.update_runstate()

    def poll(self, ports: list[int], timeout: int) -> int:
        smp = getattr(self.b, "smp", None)
        if smp is not None:
            return smp.poll(self, ports, timeout)
        ev = self.b.events
        if any(ev.pending(p) for p in ports):
            return 0
        dl = self.wake_deadline()
        target = min(x for x in (timeout or None, dl) if x) if (timeout or dl) else None
        if target is None:
            self.b.p.stuck("SCHEDOP_poll with no timeout and no timer")
            return 0
        now = self.m.clock.now_ns
        if target > now:   # blocked while it polls (do_poll), then running again
            self.runstate_change(E.RUNSTATE_blocked, now)
            self.m.clock.advance_to(target)
            self.runstate_change(E.RUNSTATE_running, target)
        self.fire_timers()
        self.update_runstate()
        return 0


def __getattr__(name: str):
    # PvVcpu's old home: it lives in the PV platform package now
    if name == "PvVcpu":
        from pvmon.backends.xen.pv.vcpu import PvVcpu
        return PvVcpu
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Stop", "XenVcpu"]
