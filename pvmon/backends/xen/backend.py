"""The Xen PV backend: a 64-bit PV domU's view of Xen, hypercall by hypercall.

Each ``hc_<name>`` method implements one hypercall of
xen/include/public/xen.h for a single-vCPU domain. Arguments arrive as the
five raw argument registers (rdi, rsi, rdx, r10, r8); guest memory is reached
only through ``self.guest`` (a recording :class:`~pvmon.backends.base.GuestAccess`),
and bad pointers become -EFAULT, bad arguments -EINVAL, unknown calls -ENOSYS,
as Xen answers them. Nothing a guest passes may raise out of this module.

The vCPU side of PV (bounce frames, iret, kernel/user mode, upcalls) is in
:mod:`pvmon.backends.xen.pv.vcpu` (over :mod:`pvmon.backends.xen.vcpu`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pvmon.backends.base import (
    CAP_CONSOLE_INPUT,
    CAP_EVENT_UPCALLS,
    CAP_HYPERCALL_PAGE,
    CAP_PV_MMU,
    Backend,
    GuestFault,
)
from pvmon.backends.xen import abi
from pvmon.backends.xen.builder import Layout, m2p_frames
from pvmon.backends.xen.console import ConsoleRing
from pvmon.backends.xen.events import EventChannels, Port
from pvmon.backends.xen.grant_table import GrantTable
from pvmon.backends.xen.pv.cpu import PvCpu
from pvmon.backends.xen.pv.mmu import PvMmu
from pvmon.backends.xen.pv.vcpu import PvVcpu
from pvmon.backends.xen.pvh.hvm import PvhHypercalls
from pvmon.backends.xen.versions import REGISTRY, XenVersion
from pvmon.backends.xen.xenstore import XenStore
from pvmon.engine.machine import PAGE_SIZE, Machine

E = abi
U64 = 0xFFFF_FFFF_FFFF_FFFF
DOMID = 1
WALLCLOCK_EPOCH = 1_767_225_600   # 2026-01-01T00:00:00Z: fixed, so runs are repeatable

# Multiplexed hypercalls whose sub-op number is the first argument
# (xen/include/public/xen.h and the per-call headers): name -> (names, mask).
# memory_op carries the continuation start extent above bit 6 (XENMEMOP_CMD_MASK).
_SUBOP_IN_ARG0: dict[str, tuple[dict[int, str], int]] = {
    name: (abi.SUBOPS[name], 0x3F if name == "memory_op" else 0xFFFFFFFF)
    for name in ("sched_op", "sched_op_compat", "event_channel_op", "vcpu_op",
                 "xen_version", "memory_op", "physdev_op", "callback_op",
                 "grant_table_op", "console_io", "xenpmu_op", "vm_assist")}


class XenBackend(PvCpu, PvMmu, PvhHypercalls, Backend):
    """Xen ``version`` serving one domU: a :class:`XenVersion` (built-in or
    profile) or a built-in's name (``"4.17"``, ``"xen-4.17"``). The domain is
    PV or PVH by the layout it is attached to (``mode``): a PVH domain gets
    the hvm64 hypercall table (:data:`abi.HVM64_HYPERCALLS`) and no PV MMU."""

    #: "pv" or "pvh": the guest mode of the attached domain.
    mode = "pv"
    #: vCPUs of the domain (``--vcpus``; set before attach). More than one:
    #: PV only, scheduled by :class:`~pvmon.backends.xen.pv.smp.PvScheduler`.
    nr_vcpus = 1
    #: The SMP scheduler of a domain with more than one vCPU, else None.
    smp = None

    abi = "xen"
    #: The domain id pvmon's one domU has (what DOMID_SELF stands for).
    domid = DOMID
    CAPABILITIES = frozenset({CAP_PV_MMU, CAP_HYPERCALL_PAGE, CAP_CONSOLE_INPUT,
                              CAP_EVENT_UPCALLS})

    def __init__(self, version: str | XenVersion = "4.17") -> None:
        if isinstance(version, str):
            found = REGISTRY.get(version) or REGISTRY.get(f"xen-{version}")
            if found is None:
                from pvmon.errors import BackendError
                raise BackendError(f"unknown Xen version {version!r}; known: "
                                   f"{', '.join(sorted(REGISTRY))}")
            version = found
        self.ver: XenVersion = version
        self.version = version.version
        self.name = version.name
        self.table: dict[int, Callable] = {}
        gated = version.gated
        for nr, name in abi.HYPERCALLS.items():
            fn = getattr(self, f"hc_{name}", None)
            if fn is None or name in version.missing:
                continue
            if name in gated and name in _SUBOP_IN_ARG0:
                fn = self._gate(name, fn)
            self.table[nr] = fn
        self.op: dict = {}
        self.console_out: Callable[[str, bytes], None] = lambda ch, data: None
        self.unsupported: dict[str, int] = {}

    def describe(self) -> dict:
        v = self.ver
        return {"name": self.name, "abi": "xen", "version": v.version_string,
                "base": v.base, "description": v.description,
                "differences": [c.as_dict() for c in v.changes]}

    def features(self) -> frozenset[str]:
        """XENFEAT names XENVER_get_features reports to this domain: the
        version's, for a PV domain; for a PVH (translated, HVM) domain the PV
        ones are replaced by writable_page_tables, auto_translated_physmap,
        hvm_safe_pvclock, hvm_callback_vector and not_direct_mapped
        (xen/common/kernel.c@stable-4.17)."""
        feats = self.ver.features
        if self.mode != "pvh":
            return feats
        pv_only = {"mmu_pt_update_preserve_ad", "highmem_assist", "gnttab_map_avail_bits",
                   "direct_mapped", "writable_descriptor_tables", "supervisor_mode_kernel"}
        hvm = {"writable_page_tables", "auto_translated_physmap", "hvm_safe_pvclock",
               "hvm_callback_vector", "not_direct_mapped"}
        return frozenset((set(feats) - pv_only) | {f for f in hvm if f in abi.XENFEAT})

    def _gate(self, name: str, fn: Callable) -> Callable:
        """Wrap ``fn`` so this version's missing or failing sub-ops of
        ``name`` answer their errno before the handler runs (sub-op number in
        the first argument, xen/include/public/xen.h)."""
        subops, mask = _SUBOP_IN_ARG0[name]
        ver = self.ver

        def gated(*args):
            sub = subops.get(args[0] & mask, args[0] & mask)
            err = ver.subop_error(name, sub)
            if err is None:
                return fn(*args)
            self.op = {"cmd": sub}
            if err == E.ENOSYS:
                return self._unsupported_sub(name, sub)
            return -err
        return gated

    def _subop_gate(self, name: str, sub) -> int | None:
        """For sub-ops decoded inside a handler (mmuext_op, compat calls): the
        negative errno this version forces, or None."""
        if name not in self.ver.gated:
            return None
        err = self.ver.subop_error(name, sub)
        if err is None:
            return None
        return self._unsupported_sub(name, sub) if err == E.ENOSYS else -err

    # ------------------------------------------------------------ attach
    def attach(self, machine: Machine, layout: Layout, guest, platform,
               memory_bytes: int, name: str) -> None:
        """Bind to a built domain. ``guest``: recording GuestAccess;
        ``platform``: the dispatch layer (jumps, stops, time)."""
        self.m = machine
        self.layout = layout
        self.guest = guest
        self.p = platform
        self.clock = machine.clock
        self.mode = getattr(layout, "mode", "pv")
        if self.mode == "pvh":
            from pvmon.backends.xen.pvh.vcpu import PvhVcpu
            self.vcpu = PvhVcpu(self, machine, layout)
            self.table = self.hvm_table(self.table)
        else:
            self.vcpu = PvVcpu(self, machine, layout)
        # Event-channel bits live in guest-shared memory; reaching them through
        # the recording access puts them in the trace (open-loop replay needs them).
        self.events = EventChannels(guest, layout.shared_info_ma, self.vcpu.vcpu_info_ma)
        store_ma = layout.store_pfn * PAGE_SIZE
        cons_ma = layout.console_pfn * PAGE_SIZE
        self.xenstore = XenStore(guest, store_ma, DOMID, name, memory_bytes // 1024)
        self.console = ConsoleRing(guest, cons_ma)
        self.events.ports[layout.store_evtchn] = Port(
            "interdomain", remote_dom=0, remote_port=1, on_send=self._xenstore_kick)
        self.events.ports[layout.console_evtchn] = Port(
            "interdomain", remote_dom=0, remote_port=2, on_send=self._console_kick)
        if self.mode == "pvh":
            self.init_hvm_params()
            self.events.on_upcall = self.vcpu.upcall_asserted
        else:
            self.init_mmu(layout)
        #: Every vCPU by id; ``vcpu`` is the one on the engine.
        self.vcpus = [self.vcpu]
        if self.nr_vcpus > 1:
            self._attach_smp(machine, layout)
        self.free_mfns: list[int] = []
        self.vm_assist = 0
        self.gnttab = GrantTable(self, DOMID)
        self.shutdown_code: int | None = None
        # Wallclock in shared_info (xen.h: wc_version, wc_sec, wc_nsec, wc_sec_hi)
        si = layout.shared_info_ma
        machine.write_phys_data(si + abi.SHARED_INFO["wc_version"], struct.pack(
            "<IIII", 2, WALLCLOCK_EPOCH & 0xFFFFFFFF, 0, WALLCLOCK_EPOCH >> 32))
        machine.write_u64_phys(si + abi.SHARED_INFO["max_pfn"], layout.nr_pages)
        self.vcpu.init_time()
        # Xen creates every vCPU with event delivery masked (evtchn_upcall_mask = 1).
        self.vcpu.set_upcall_mask(1)
        self.shared_info_ma = si

    def _attach_smp(self, machine: Machine, layout: Layout) -> None:
        """vCPUs 1..N-1 (down and uninitialised, their vcpu_info in
        shared_info, events masked, as Xen creates them), per-vCPU event
        delivery, the xenstore ``cpu/N/availability`` nodes Linux reads
        (drivers/xen/cpu_hotplug.c), and the scheduler."""
        from pvmon.backends.xen.pv.smp import PvScheduler
        if self.mode != "pv":
            from pvmon.errors import BackendError
            raise BackendError("more than one vCPU needs a PV guest (--mode pv)")
        for i in range(1, self.nr_vcpus):
            v = PvVcpu(self, machine, layout, i)
            v.init_time()
            v.set_upcall_mask(1)
            self.vcpus.append(v)
        ev = self.events
        ev.nr_vcpus = self.nr_vcpus
        ev.vcpu_info_of = lambda i: self.vcpus[i].vcpu_info_ma()
        self.smp = PvScheduler(self, machine, self.vcpus)
        self.smp.on_switch = getattr(self.p, "vcpu_switched", None)   # records each switch
        ev.on_kick = self.smp.kick
        ev.on_pending = self.smp.port_pending
        h = self.xenstore.home
        for i in range(1, self.nr_vcpus):
            self.xenstore.tree[f"{h}/cpu/{i}"] = b""
            self.xenstore.tree[f"{h}/cpu/{i}/availability"] = b"online"

    def _xenstore_kick(self) -> None:
        if self.xenstore.process():
            self.events.set_pending(self.layout.store_evtchn)

    def _console_kick(self) -> None:
        data = self.console.drain()
        if data:
            self.console_out("ring", data)

    def console_input(self, data: bytes) -> int:
        """Type ``data`` into the guest's PV console (hvc0) and raise its event
        channel, as xenconsoled does. Returns how many bytes fitted in the ring."""
        n = self.console.feed(data)
        if n:
            self.events.set_pending(self.layout.console_evtchn)
        return n

    # ------------------------------------------------------------ dispatch
    def call(self, nr: int, args: tuple[int, ...]) -> int:
        """Run hypercall ``nr`` with raw ``args``; returns the value for RAX
        (negative errno as a signed int). Unknown calls: -ENOSYS."""
        self.op = {}
        fn = self.table.get(nr)
        if fn is None:
            name = abi.hypercall_name(nr)
            self.unsupported[name] = self.unsupported.get(name, 0) + 1
            return -E.ENOSYS
        try:
            return fn(*args)
        except GuestFault:
            return -E.EFAULT
        except (ValueError, struct.error, IndexError, OverflowError):
            return -E.EINVAL

    def _unsupported_sub(self, call: str, sub) -> int:
        key = f"{call}({sub})"
        self.unsupported[key] = self.unsupported.get(key, 0) + 1
        return -E.ENOSYS

    def _read(self, va: int, size: int) -> bytes:
        return self.guest.read(va, size)

    def _write(self, va: int, data: bytes) -> None:
        self.guest.write(va, data)

    def _u32(self, va: int) -> int:
        return struct.unpack("<I", self._read(va, 4))[0]

    def _u64(self, va: int) -> int:
        return struct.unpack("<Q", self._read(va, 8))[0]

    def _valid_mfn(self, mfn: int) -> bool:
        return 0 <= mfn < self.layout.nr_pages

    def hc_vm_assist(self, cmd, typ, *_):
        """do_vm_assist (xen/common/domain.c@stable-4.17): a type outside the
        domain's mask is -EINVAL (PV64_VM_ASSIST_MASK, asm/domain.h: 0-5 and
        32, 4gb_segments and its notify kept for 64-bit guests "because we
        can't make such requests fail all of the sudden"), then a command
        other than enable/disable -ENOSYS."""
        self.op = {"cmd": abi.VMASST_CMDS.get(cmd, cmd), "type": abi.VMASST_TYPES.get(typ, typ)}
        if typ not in (0, 1, 2, 3, 4, 5, 32):
            return -E.EINVAL
        # Types newer than the version: -EINVAL (xen/common/domain.c vm_assist(),
        # type > MAX_VMASST_TYPE or not in the valid mask).
        if typ in (4, 5, 32) and f"vmassist_{abi.VMASST_TYPES[typ]}" not in self.ver.capabilities:
            return -E.EINVAL
        if cmd not in (0, 1):
            return -E.ENOSYS
        if cmd == 0:
            self.vm_assist |= 1 << typ
        else:
            self.vm_assist &= ~(1 << typ)
        if typ == 4 and self.mode == "pv":    # architectural_iopl: CLI/STI's answer
            self.vcpu.iopl_changed()
        return 0

    def hc_update_va_mapping_otherdomain(self, *_):
        return -E.EPERM

    def hc_multicall(self, calls, nr, *_):
        """Run a batch of ``struct multicall_entry`` (xen.h), writing each
        call's result into its entry (do_multicall, common/multicall.c@stable-4.17).

        * A multicall inside the batch answers -EINVAL ("Multicall reentry is
          disallowed") and the batch goes on.
        * An ``iret`` ends the batch (pv_do_multicall_call returns mc_exit,
          xen/arch/x86/pv/hypercall.c@stable-4.17): it runs as a direct iret
          would, popping its context from the guest stack as it stood at the
          multicall, its result (the context's RAX) is written to its entry and
          is what the multicall returns; later entries are not run.

        Not modelled: a debug build (!NDEBUG) also overwrites each entry it ran
        with 0xAA bytes before writing the result.
        """
        if nr > 1024:
            return -E.EINVAL
        # Before XSA-213's fix (xen.git 22c096c99d, common/multicall.c) the batch went
        # on after an iret and the multicall's 0 replaced the iret's RAX.
        iret_ends = "xsa213_multicall_iret_ends_batch" in self.ver.capabilities
        names = []
        rc = 0
        for i in range(nr):
            ent = calls + i * abi.MULTICALL_ENTRY_SIZE
            op, _res, *a = struct.unpack("<QQ6Q", self._read(ent, abi.MULTICALL_ENTRY_SIZE))
            names.append(abi.hypercall_name(op))
            if op == abi.HYPERCALL_NUMBERS["multicall"]:
                res = -E.EINVAL
            else:
                saved = self.op
                res = self.call(op, tuple(a[:5]))
                self.op = saved
            self._write(ent + 8, struct.pack("<Q", res & U64))
            if op == abi.HYPERVISOR_iret and iret_ends:
                # do_multicall (common/multicall.c@stable-4.17, the same in 4.11 and
                # 4.21) keeps its return value in an ``int rc``: the iret's RAX comes
                # back as its low 32 bits sign-extended (the entry keeps all 64)
                low = res & 0xFFFF_FFFF
                rc = low - (1 << 32) if low & 0x8000_0000 else low
                break
        self.op = {"count": nr, "calls": names}
        return rc

    # ============================================================== events
    def hc_event_channel_op(self, cmd, arg, *_):
        return self._evtchn(cmd, arg, arg)

    def hc_event_channel_op_compat(self, uop, *_):
        cmd = self._u32(uop)
        rc = self._subop_gate("event_channel_op", abi.EVTCHNOP_CMDS.get(cmd, cmd))
        if rc is not None:
            return rc
        return self._evtchn(cmd, uop + 4, uop + 4)

    def _evtchn(self, cmd: int, arg: int, out: int) -> int:
        ev = self.events
        name = abi.EVTCHNOP_CMDS.get(cmd, cmd)
        self.op = {"cmd": name}
        if cmd == 4:   # send
            port = self._u32(arg)
            self.op["port"] = port
            return ev.send(port)
        if cmd == 9:   # unmask
            port = self._u32(arg)
            self.op["port"] = port
            return ev.unmask(port)
        if cmd == 1:   # bind_virq {virq, vcpu, port}
            virq, vcpu = struct.unpack("<II", self._read(arg, 8))
            self.op.update(virq=abi.VIRQS.get(virq, virq), vcpu=vcpu)
            port = ev.bind_virq(virq, vcpu)
            if port < 0:
                return port
            self._write(arg + 8, struct.pack("<I", port))
            self.op["port"] = port
            return 0
        if cmd == 7:   # bind_ipi {vcpu, port}
            vcpu = self._u32(arg)
            if not 0 <= vcpu < self.nr_vcpus:
                return -E.ENOENT
            port = ev.alloc(Port("ipi", vcpu=vcpu))
            if port < 0:
                return port
            self._write(arg + 4, struct.pack("<I", port))
            self.op["port"] = port
            return 0
        if cmd == 6:   # alloc_unbound {dom, remote_dom, port}
            dom, remote = struct.unpack("<HH", self._read(arg, 4))
            self.op.update(dom=dom, remote_dom=remote)
            if dom not in (abi.DOMID_SELF, DOMID):
                return -E.EPERM
            # The port remembers which domain may bind it; DOMID_SELF names the
            # caller and is stored as its real domid (evtchn_alloc_unbound,
            # common/event_channel.c@stable-4.17), so status and binds see it.
            port = ev.alloc(Port("unbound", remote_dom=DOMID if remote == abi.DOMID_SELF
                                 else remote))
            if port < 0:
                return port
            self._write(arg + 4, struct.pack("<I", port))
            self.op["port"] = port
            return 0
        if cmd == 0:   # bind_interdomain {remote_dom, remote_port, local_port}
            remote_dom, remote_port = struct.unpack("<H2xI", self._read(arg, 8))
            self.op.update(remote_dom=remote_dom, remote_port=remote_port)
            if remote_dom not in (abi.DOMID_SELF, DOMID):
                return -E.ESRCH
            rp = ev.ports.get(remote_port)
            # Only an unbound port offered to this domain can be bound
            # (evtchn_bind_interdomain, common/event_channel.c@stable-4.17).
            if rp is None or rp.state != "unbound" or rp.remote_dom != DOMID:
                return -E.EINVAL
            port = ev.alloc(Port("interdomain", remote_dom=DOMID, remote_port=remote_port))
            if port < 0:
                return port
            rp.state, rp.remote_dom, rp.remote_port = "interdomain", DOMID, port
            # loopback: a send on either end raises the other
            rp.on_send = lambda p=port: ev.set_pending(p)
            ev.ports[port].on_send = lambda p=remote_port: ev.set_pending(p)
            self._write(arg + 8, struct.pack("<I", port))
            self.op["port"] = port
            # "We may have lost notifications on the remote unbound port": Xen
            # always raises the new local port (evtchn_bind_interdomain, every
            # version since xen.git f16cb294c5, 2005).
            ev.set_pending(port)
            return 0
        if cmd == 3:   # close
            port = self._u32(arg)
            self.op["port"] = port
            return ev.close(port)
        if cmd == 5:   # status {dom, port, status, vcpu, u}
            dom, port = struct.unpack("<H2xI", self._read(arg, 8))
            self.op["port"] = port
            if dom not in (abi.DOMID_SELF, DOMID):
                return -E.ESRCH
            if not 0 <= port < ev.NR_PORTS:
                return -E.EINVAL
            self._write(arg + 8, ev.status(port))
            return 0
        if cmd == 8:   # bind_vcpu {port, vcpu}
            port, vcpu = struct.unpack("<II", self._read(arg, 8))
            self.op.update(port=port, vcpu=vcpu)
            if port not in ev.ports:
                return -E.EINVAL
            if not 0 <= vcpu < self.nr_vcpus:
                return -E.ENOENT
            # evtchn_bind_vcpu: unbound, interdomain and global-VIRQ ports only
            p = ev.ports[port]
            if p.state not in ("unbound", "interdomain") and not (
                    p.state == "virq" and p.virq not in abi.PER_VCPU_VIRQS):
                return -E.EINVAL if self.nr_vcpus > 1 or vcpu else 0
            p.vcpu = vcpu
            return 0
        if cmd in (11, 12, 13) and "fifo_events" not in self.ver.capabilities:
            return self._unsupported_sub("event_channel_op", name)
        if cmd == 11:  # init_control {u64 control_gfn, u32 offset, u32 vcpu, u8 link_bits OUT}
            gfn, offset, vcpu = struct.unpack("<QII", self._read(arg, 16))
            self.op.update(control_gfn=gfn, offset=offset, vcpu=vcpu)
            # one control block per vCPU; the first switches the domain to FIFO
            # (evtchn_fifo_init_control, common/event_fifo.c@stable-4.17)
            from pvmon.backends.xen.events_fifo import LINK_BITS
            fifo = ev.fifo or ev.new_fifo(self.guest, self._valid_mfn)
            rc = fifo.init_control(gfn, offset, vcpu)
            if rc:
                return rc
            self._write(arg + 16, bytes((LINK_BITS,)))
            if ev.fifo is None:
                ev.enable_fifo(fifo)
            return 0
        if cmd == 12:  # expand_array {u64 array_gfn}
            gfn = self._u64(arg)
            self.op["array_gfn"] = gfn
            if ev.fifo is None:
                return -E.EOPNOTSUPP   # xen/common/event_fifo.c: no FIFO set up
            return ev.fifo.expand_array(gfn)
        if cmd == 13:  # set_priority {u32 port, u32 priority}
            port, prio = struct.unpack("<II", self._read(arg, 8))
            self.op.update(port=port, priority=prio)
            if ev.fifo is None:
                return -E.ENOSYS       # the 2-level ABI has no priorities
            if port not in ev.ports:
                return -E.EINVAL
            return ev.fifo.set_priority(port, prio)
        if cmd == 10:
            return -E.EINVAL
        return self._unsupported_sub("event_channel_op", name)

    # ================================================================ time
    def hc_set_timer_op(self, timeout, *_):
        self.op = {"timeout_ns": timeout}
        self.vcpu.set_singleshot(timeout if timeout else None)
        return 0

    def hc_vcpu_op(self, cmd, vcpuid, arg, *_):
        name = abi.VCPUOP_CMDS.get(cmd, cmd)
        self.op = {"cmd": name, "vcpu": vcpuid}
        if not 0 <= vcpuid < self.nr_vcpus:
            return -E.ENOENT
        v = self.vcpus[vcpuid]
        smp = self.smp
        if smp is not None:
            rc = self._vcpu_op_smp(cmd, v, arg)
            if rc is not None:
                return rc
        if cmd == 8:   # set_singleshot_timer {timeout_abs_ns, flags}
            timeout, flags = struct.unpack("<QI", self._read(arg, 12))
            self.op.update(timeout_ns=timeout, flags=flags)
            if flags & E.VCPU_SSHOTTMR_future and timeout < self.clock.now_ns:
                return -E.ETIME
            v.set_singleshot(timeout)
            return 0
        if cmd == 9:
            v.set_singleshot(None)
            return 0
        if cmd == 6:   # set_periodic_timer {period_ns}
            period = self._u64(arg)
            self.op["period_ns"] = period
            # at least 1 ms, at most STIME_DELTA_MAX (2^62 - 1 ns)
            # (VCPUOP_set_periodic_timer, xen/common/domain.c@stable-4.17)
            if period < 1_000_000 or period > (1 << 62) - 1:
                return -E.EINVAL
            v.set_periodic(period)
            return 0
        if cmd == 7:
            v.set_periodic(0)
            return 0
        if cmd == 10:  # register_vcpu_info {mfn, offset, rsvd}
            mfn, offset = struct.unpack("<QI", self._read(arg, 12))
            self.op.update(mfn=mfn, offset=offset)
            # common/domain.c map_vcpu_info: a bad offset is -ENXIO since 4.16
            # (7ee7a3749b), -EINVAL before; a frame it cannot get is -EINVAL
            bad_offset = -(E.ENXIO if "vcpu_info_enxio" in self.ver.capabilities
                           else E.EINVAL)
            if offset > PAGE_SIZE - abi.VCPU_INFO_SIZE:
                return bad_offset
            if offset & 7 and "xsa327_vcpu_info_aligned" in self.ver.capabilities:
                return bad_offset   # alignof(vcpu_info_t), XSA-327
            if not self._valid_mfn(mfn):
                return -E.EINVAL
            return v.register_vcpu_info((mfn << 12) + offset)
        if cmd == 5:   # register_runstate_memory_area {addr}
            v.register_runstate_area(self._u64(arg), current=v is self.vcpu)
            self.op["addr"] = v.runstate_va
            return 0
        if cmd == 13:  # register_vcpu_time_memory_area
            v.time_area_va = self._u64(arg)
            self.op["addr"] = v.time_area_va
            v.update_time_area()
            return 0
        if cmd == 3:   # is_up
            return 1
        if cmd == 4:   # get_runstate_info
            self._write(arg, v.runstate_bytes())
            return 0
        if cmd in (0, 1):
            return -E.EEXIST if cmd == 0 else 0
        if cmd == 2:
            return -E.EINVAL
        if cmd == 12:
            return -E.EINVAL
        if cmd == 11:
            return -E.ENOSYS
        return -E.ENOSYS

    def _vcpu_op_smp(self, cmd: int, v, arg: int) -> int | None:
        """The VCPUOPs whose answer depends on there being several vCPUs
        (do_vcpu_op, xen/common/domain.c@stable-4.17); None: the one-vCPU
        handler answers."""
        smp = self.smp
        if cmd == 0:   # initialise {struct vcpu_guest_context}
            ctx = self._read(arg, abi.VCPU_GUEST_CONTEXT_SIZE)
            return smp.initialise(v, ctx)
        if cmd == 1:
            return smp.up(v.vcpu_id)
        if cmd == 2:
            return smp.down(v.vcpu_id)
        if cmd == 3:
            return smp.is_up(v.vcpu_id)
        if cmd == 8 and v is not self.vcpu:
            return -E.EINVAL   # a singleshot timer only for the calling vCPU
        return None

    # ========================================================== scheduling
    def hc_sched_op(self, cmd, arg, *_):
        return self._sched(cmd, arg, compat=False)

    def hc_sched_op_compat(self, cmd, arg, *_):
        return self._sched(cmd, arg, compat=True)

    def _sched(self, cmd: int, arg: int, compat: bool) -> int:
        self.op = {"cmd": abi.SCHEDOP_CMDS.get(cmd, cmd)}
        if cmd == 0:
            self.clock.advance(1_000)
            if self.smp is not None:
                return self.smp.yield_()
            return 0
        if cmd == 1:
            return self.vcpu.block()
        if cmd == 2:
            reason = arg if compat else self._u32(arg)
            self.op["reason"] = abi.SHUTDOWN_REASONS.get(reason, reason)
            if reason not in abi.SHUTDOWN_REASONS:
                return -E.EINVAL
            self.shutdown_code = reason
            self.p.guest_shutdown(reason)
            return 0
        if cmd == 3 and not compat:   # poll {ports handle, nr_ports, timeout}
            ports_va, nr, timeout = struct.unpack("<QIxxxxQ", self._read(arg, 24))
            self.op.update(nr_ports=nr, timeout=timeout)
            if nr > 128:
                return -E.EINVAL
            ports = struct.unpack(f"<{nr}I", self._read(ports_va, 4 * nr)) if nr else ()
            return self.vcpu.poll(list(ports), timeout)
        if cmd == 5 and not compat:
            reason = self._u32(arg)
            self.op["reason"] = reason
            return 0
        if cmd == 6 and not compat:
            return 0
        if cmd == 4:
            return -E.EPERM
        return -E.EINVAL if cmd < 8 else -E.ENOSYS

    # ======================================================= information
    def hc_xen_version(self, cmd, arg, *_):
        self.op = {"cmd": abi.XENVER_CMDS.get(cmd, cmd)}
        ver = self.ver
        if cmd == 0:
            return (ver.major << 16) | ver.minor
        if cmd == 1:
            self._write(arg, ver.extraversion.encode().ljust(16, b"\0"))
            return 0
        if cmd == 2:
            info = (b"gcc (pvmon)".ljust(64, b"\0") + b"pvmon".ljust(16, b"\0")
                    + b"pvmon.invalid".ljust(32, b"\0") + b"reproducible".ljust(32, b"\0"))
            self._write(arg, info)
            return 0
        if cmd == 3:
            self._write(arg, b"xen-3.0-x86_64 hvm-3.0-x86_32 ".ljust(1024, b"\0"))
            return 0
        if cmd == 4:
            self._write(arg, b"pvmon".ljust(64, b"\0"))
            return 0
        if cmd == 5:
            self._write(arg, struct.pack("<Q", abi.HYPERVISOR_VIRT_START))
            return 0
        if cmd == 6:
            idx = self._u32(arg)
            self.op["submap_idx"] = idx
            if idx != 0:
                return -E.EINVAL   # one submap only (xen/common/kernel.c)
            bits = 0
            # The version's feature set (versions.py; xen/common/kernel.c).
            for f in self.features():
                bits |= 1 << abi.XENFEAT[f]
            if self.vm_assist & (1 << 3):   # VMASST_TYPE_pae_extended_cr3
                bits |= 1 << abi.XENFEAT["pae_pgdir_above_4gb"]
            self._write(arg + 4, struct.pack("<I", bits))
            return 0
        if cmd == 7:
            return PAGE_SIZE
        if cmd == 8:
            self._write(arg, bytes(16))
            return 0
        if cmd == 9:
            self._write(arg, b"".ljust(1024, b"\0"))
            return 0
        if cmd == 10:
            return -E.EPERM
        return -E.ENOSYS

    def hc_console_io(self, cmd, count, buf, *_):
        """CONSOLEIO_write from a domU: its bytes go to the hypervisor's log
        (channel ``io``, apart from the guest's own console ring), only on a
        build with CONFIG_VERBOSE_DEBUG (the ``verbose_debug`` capability, y by
        default in a debug build). Any other command, and every command on a
        release build, is refused before it is looked at: -EPERM, since a domU
        is neither privileged nor the console domain (xsm_console_io,
        xen/include/xsm/dummy.h@stable-4.17; do_console_io,
        xen/drivers/char/console.c)."""
        self.op = {"cmd": abi.CONSOLEIO_CMDS.get(cmd, cmd), "count": count}
        if cmd != E.CONSOLEIO_write or "verbose_debug" not in self.ver.capabilities:
            return -E.EPERM
        if count > 1 << 20:
            return -E.EINVAL
        data = self._read(buf, count)
        self.console_out("io", data)
        return 0

    def hc_memory_op(self, cmd, arg, *_):
        op = cmd & 0x3F   # MEMOP_CMD_MASK: low 6 bits; the rest is a continuation
        name = abi.XENMEM_CMDS.get(op, op)
        self.op = {"cmd": name}
        nr_pages = self.layout.nr_pages
        if op in (3, 4, 14):   # current/maximum_reservation, maximum_gpfn: arg -> domid
            dom = struct.unpack("<H", self._read(arg, 2))[0]
            if dom not in (abi.DOMID_SELF, DOMID):
                return -E.ESRCH
            if op == 14:
                return nr_pages - 1
            # current_reservation is tot_pages: the frames given back and freed
            # are not counted (one given back while referenced still is:
            # pv/mmu.py give_back); the maximum stays the start-of-day size
            return nr_pages - len(self.free_mfns) if op == 3 else nr_pages
        if op == 2:
            return nr_pages - 1
        if op == 12:   # machphys_mapping {v_start, v_end, max_mfn}
            frames = m2p_frames(self.m.phys_bytes)
            self._write(arg, struct.pack("<QQQ", abi.MACH2PHYS_VIRT_START,
                                         abi.MACH2PHYS_VIRT_START + frames * 8, frames - 1))
            return 0
        if op == 9 and self.mode == "pvh":   # the guest's e820, 20-byte entries
            from pvmon.backends.xen.pvh.builder import memory_map
            nr, buf = struct.unpack("<I4xQ", self._read(arg, 16))
            entries = memory_map(nr_pages * PAGE_SIZE, self.layout.store_pfn)
            if nr < len(entries):
                return -E.EINVAL
            self._write(buf, b"".join(struct.pack("<QQI", a, n, t) for a, n, t in entries))
            self._write(arg, struct.pack("<I", len(entries)))
            return 0
        if op in (9, 10):   # memory_map / machine_memory_map {nr_entries, buffer}
            nr, buf = struct.unpack("<I4xQ", self._read(arg, 16))
            if nr < 1:
                return -E.EINVAL
            self._write(buf, struct.pack("<QQI", 0, nr_pages * PAGE_SIZE, abi.E820_RAM))
            self._write(arg, struct.pack("<I", 1))
            return 0
        if op in (0, 1, 6):   # increase / decrease_reservation, populate_physmap
            ext, n, order, _flags, dom = struct.unpack("<QQIIH", self._read(arg, 26))
            self.op.update(nr_extents=n, extent_order=order)
            if dom not in (abi.DOMID_SELF, DOMID):
                return -E.ESRCH
            if order != 0 or n > 1 << 20:
                return -E.EINVAL
            done = 0
            for i in range(n):
                if op == 1:
                    mfn = self._u64(ext + i * 8) if ext else 0
                    if not self._valid_mfn(mfn) or not self.give_back(mfn):
                        break
                else:
                    # handed out as it was freed: Xen scrubs a live domain's
                    # freed page only with scrub-domheap or CONFIG_SCRUB_DEBUG
                    # (pv/mmu.py take_free_frame)
                    mfn = self.take_free_frame()
                    if mfn is None:
                        break
                    if ext:
                        self._write(ext + i * 8, struct.pack("<Q", mfn))
                done += 1
            return done
        if op == 7:
            return self.add_to_physmap(arg)
        if op in (5, 25):
            return -E.ENOSYS
        return self._unsupported_sub("memory_op", name)

    def hc_physdev_op(self, cmd, arg, *_):
        self.op = {"cmd": abi.PHYSDEVOP_CMDS.get(cmd, cmd)}
        if cmd == 6:   # set_iopl {uint32_t iopl} (physdev.c; pv/vcpu.py set_iopl)
            return self.vcpu.set_iopl_from(arg) if self.mode == "pv" else 0
        if cmd == 5:   # irq_status_query {irq, flags}
            self._write(arg + 4, struct.pack("<I", 0))
            return 0
        if cmd in (12, 17, 28):
            return -E.EINVAL if cmd == 12 else 0
        if cmd == 7:   # set_iobitmap {handle bitmap; uint32_t nr_ports}
            bitmap, nr_ports = struct.unpack("<QI4x", self._read(arg, 16))
            return self.vcpu.set_iobitmap(bitmap, nr_ports) if self.mode == "pv" else 0
        return -E.ENOSYS if cmd not in abi.PHYSDEVOP_CMDS else -E.EPERM

    def hc_physdev_op_compat(self, uop, *_):
        cmd = self._u32(uop)
        return self.hc_physdev_op(cmd, uop + 4)

    def hc_grant_table_op(self, cmd, arg, count, *_):
        """Grant tables v1 and v2 (:mod:`pvmon.backends.xen.grant_table`,
        do_grant_table_op, xen/common/grant_table.c@stable-4.17)."""
        return self.gnttab.op(cmd, arg, count)

    def hc_xenpmu_op(self, cmd, arg, *_):
        self.op = {"cmd": abi.XENPMU_CMDS.get(cmd, cmd)}
        return -E.EOPNOTSUPP   # vPMU disabled by default (xen-command-line: vpmu=off)

    def hc_platform_op(self, *_):
        return -E.EPERM

    def hc_sysctl(self, *_):
        return -E.EPERM

    def hc_domctl(self, *_):
        return -E.EPERM

    def hc_xsm_op(self, *_):
        return -E.ENOSYS

    def hc_kexec_op(self, *_):
        return -E.EPERM

    def hc_argo_op(self, *_):
        return -E.ENOSYS

    def hc_dm_op(self, *_):
        return -E.EPERM

    def hc_hypfs_op(self, *_):
        return -E.ENOSYS


__all__ = ["XenBackend"]
