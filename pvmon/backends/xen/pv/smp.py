"""SMP PV domains: several vCPUs on one engine, time-sliced deterministically.

pvmon runs every vCPU of a domain on the one Unicorn engine. The vCPU on the
engine runs until it blocks (SCHEDOP_block), polls (SCHEDOP_poll), yields
(SCHEDOP_yield), goes down (VCPUOP_down), or its quantum of
:data:`QUANTUM_BLOCKS` translated blocks runs out (pvmon/engine/slicer.py); then the next runnable vCPU
in round-robin order (by id, after the current one) gets the engine. Nothing
the host does (wall time, threads) decides a switch, so a run repeats exactly
and every switch is recorded (a ``vcpu_switch`` event, docs/trace-format.md).

A quantum that runs out also moves virtual time on by :data:`QUANTUM_NS`: a
vCPU that spins waiting for another (csd_lock_wait, a jiffies loop) executes
no hypercall and reads no TSC, so without this no virtual time would pass
while it spins. When no vCPU is runnable, virtual time jumps to the earliest
timer or poll timeout of the blocked ones (as one vCPU's SCHEDOP_block does).

Each scheduler state is a runstate (:data:`RUNSTATE_OF`): a vCPU waiting for
the engine is runnable, so the guest sees steal time; blocked and polling
vCPUs are blocked, down ones offline. A vCPU's runstate area is copied when
it leaves the engine and when it gets it back (from another vCPU or from
idle), as Xen's context_switch does (xen/arch/x86/domain.c@stable-4.17).

A switch saves and loads the whole CPU state the guest can see: the general
registers, RIP, RFLAGS, CR0 (TS), CR2, CR3, the segment selectors and the FS,
GS and kernel-GS bases, the CPL, the x87/SSE state, and the vCPU's GDT (its
frames are copied into the hypervisor's descriptor-table area, which the
engine's GDTR points at). What Xen keeps per vCPU (trap table, callbacks,
kernel stack, user/kernel page-table roots, vcpu_info, timers, runstate) lives
in each :class:`~pvmon.backends.xen.pv.vcpu.PvVcpu`.

Xen facts: VCPUOP_initialise/up/down/is_up (do_vcpu_op, xen/common/domain.c
@stable-4.17), the context's checks (arch_set_info_guest,
xen/arch/x86/domain.c@stable-4.17), do_poll and evtchn_check_pollers
(xen/common/sched/core.c, xen/common/event_channel.c), vcpu_kick on
vcpu_mark_events_pending (xen/arch/x86/include/asm/event.h).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

from unicorn import UcError
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from pvmon.backends.xen import abi
from pvmon.backends.xen.pv import ldt
from pvmon.engine.machine import CR0_TS, Machine

E = abi

#: Translated blocks a vCPU executes before the next runnable one gets the
#: engine (pvmon/engine/slicer.py; about five instructions a block in a Linux boot).
QUANTUM_BLOCKS = 20_000
#: Virtual ns a spent quantum moves time on by (1 ns a block; docs/smp.md).
QUANTUM_NS = 20_000
#: The most vCPUs a PV domain of pvmon has: those with a vcpu_info slot in
#: shared_info (XEN_LEGACY_MAX_VCPUS, xen/include/public/xen.h).
MAX_VCPUS = E.XEN_LEGACY_MAX_VCPUS

_CTX_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags", "cr0", "cr2")
_SEGS = ("ds", "es", "fs", "gs")
_FPU_REGS = ([x86.UC_X86_REG_FPCW, x86.UC_X86_REG_FPSW, x86.UC_X86_REG_FPTAG,
              x86.UC_X86_REG_MXCSR]
             + [getattr(x86, f"UC_X86_REG_FP{i}") for i in range(8)]
             + [getattr(x86, f"UC_X86_REG_XMM{i}") for i in range(16)])
_SAVE_REGS = _CTX_REGS + ("fs_base", "gs_base") + _SEGS + ("cs", "ss")
MSR_KERNEL_GS_BASE = 0xC0000102
_uc_reg_batch2 = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_uc_reg_read_batch2 = _uc_reg_batch2(("uc_reg_read_batch2", uclib))
_uc_reg_write_batch2 = _uc_reg_batch2(("uc_reg_write_batch2", uclib))


class _FpuState:
    """The x87/SSE registers of :data:`_FPU_REGS` moved in one raw batch call
    each way (16 bytes a slot: ST0-7 take 10, XMM 16), as bytes."""

    SLOT = 16

    def __init__(self, uch: int) -> None:
        n = len(_FPU_REGS)
        self.uch = uch
        self.n = n
        self.regs = (ctypes.c_int * n)(*_FPU_REGS)
        self.buf = ctypes.create_string_buffer(self.SLOT * n)
        base = ctypes.addressof(self.buf)
        self.ptrs = (ctypes.c_void_p * n)(*[base + self.SLOT * i for i in range(n)])
        self.sizes = (ctypes.c_size_t * n)(*[self.SLOT] * n)
        self.args = (ctypes.addressof(self.regs), ctypes.addressof(self.ptrs),
                     ctypes.addressof(self.sizes))

    def save(self) -> bytes:
        for i in range(self.n):
            self.sizes[i] = self.SLOT
        err = _uc_reg_read_batch2(self.uch, *self.args, self.n)
        if err:
            raise UcError(err)
        return self.buf.raw

    def load(self, raw: bytes) -> None:
        ctypes.memmove(self.buf, raw, len(raw))
        for i in range(self.n):
            self.sizes[i] = self.SLOT
        err = _uc_reg_write_batch2(self.uch, *self.args, self.n)
        if err:
            raise UcError(err)
RFLAGS_IF = 1 << 9

#: Scheduler states of a vCPU.
RUNNING, RUNNABLE, BLOCKED, POLLING, DOWN = "running", "runnable", "blocked", "polling", "down"
#: The runstate a scheduler state is (xen/include/public/vcpu.h RUNSTATE_*): a
#: vCPU waiting for the engine is runnable (steal time), one in SCHEDOP_block
#: or SCHEDOP_poll blocked, one down offline.
RUNSTATE_OF = {RUNNING: E.RUNSTATE_running, RUNNABLE: E.RUNSTATE_runnable,
               BLOCKED: E.RUNSTATE_blocked, POLLING: E.RUNSTATE_blocked,
               DOWN: E.RUNSTATE_offline}


class PvScheduler:
    """The vCPUs of one SMP PV domain on one machine. ``backend``: the
    attached XenBackend; ``vcpus``: its PvVcpu objects by id (vCPU 0 on the
    engine). ``on_switch(old, new, why)`` is called after each switch (the
    dispatch layer records it); ``why`` is "quantum", "block", "poll",
    "yield" or "down"."""

    def __init__(self, backend, machine: Machine, vcpus: list,
                 quantum_blocks: int = QUANTUM_BLOCKS, quantum_ns: int = QUANTUM_NS) -> None:
        self.b = backend
        self.m = machine
        self.vcpus = vcpus
        self.quantum_blocks = quantum_blocks
        self.quantum_ns = quantum_ns
        self.current = 0
        self.state = [RUNNING] + [DOWN] * (len(vcpus) - 1)
        self.polls: dict[int, tuple[frozenset[int], int | None]] = {}
        self._resched: str | None = None    # why the current vCPU leaves the engine
        self.switches = 0
        self.on_switch: Callable[[int, int, str], None] | None = None
        #: The engine's block budget (a vCPU gets ``quantum_blocks`` blocks),
        #: installed when a second vCPU first comes up (:meth:`_install_slicer`).
        self.slicer = None
        self._slicer_due = False
        self._fpu = _FpuState(machine.uc._uch.value)

    # ------------------------------------------------------------ wake-ups
    def kick(self, vcpu_id: int) -> None:
        """An event became pending for ``vcpu_id`` (evtchn_upcall_pending 0 -> 1):
        a blocked or polling vCPU wakes (vcpu_kick -> vcpu_unblock)."""
        if self.state[vcpu_id] in (BLOCKED, POLLING):
            self._wake(vcpu_id)

    def port_pending(self, port: int) -> None:
        """Port ``port`` became pending: wake vCPUs polling it, masked or not
        (evtchn_check_pollers)."""
        for vid, (ports, _dl) in list(self.polls.items()):
            if port in ports:
                self._wake(vid)

    def _wake(self, vid: int) -> None:
        self.polls.pop(vid, None)
        self._set_state(vid, RUNNING if vid == self.current and self._resched is None
                        else RUNNABLE)

    # --------------------------------------------------- the current vCPU
    def _leave(self, why: str) -> None:
        self._resched = why
        self.m.pause()

    def block(self, v) -> int:
        """SCHEDOP_block of the current vCPU ``v`` (events already unmasked):
        return at once with an event pending, else leave the engine until one
        arrives or its singleshot timer fires. Returns 0."""
        if v.upcall_pending():
            return 0
        self._set_state(v.vcpu_id, BLOCKED)
        self._leave("block")
        return 0

    def poll(self, v, ports: list[int], timeout: int) -> int:
        """SCHEDOP_poll of the current vCPU ``v``: return at once if a port is
        pending or an unmasked event waits (local_events_need_delivery), else
        leave the engine until a port becomes pending, an event is marked
        for it, or ``timeout`` (absolute ns, 0: none) passes. Returns 0."""
        ev = self.b.events
        if any(ev.pending(p) for p in ports):
            return 0
        if v.upcall_pending() and not v.upcall_mask():
            return 0
        self._set_state(v.vcpu_id, POLLING)
        self.polls[v.vcpu_id] = (frozenset(ports), timeout or None)
        self._leave("poll")
        return 0

    def yield_(self) -> int:
        """SCHEDOP_yield: the next runnable vCPU runs (the current one stays runnable)."""
        if any(self._runnable(i) for i in range(len(self.vcpus)) if i != self.current):
            self._leave("yield")
        return 0

    def others_idle(self) -> bool:
        """No vCPU but the current one is runnable: the guest as a whole is
        idle when the current one blocks (console input waits for that)."""
        return not any(self._runnable(i) for i in range(len(self.vcpus)) if i != self.current)

    # ---------------------------------------------------------- VCPUOPs
    def is_up(self, vid: int) -> int:
        """VCPUOP_is_up: 1 for a vCPU that is up, 0 for one that is down."""
        return 1 if self.vcpus[vid].up else 0

    def up(self, vid: int) -> int:
        """VCPUOP_up: -EINVAL before VCPUOP_initialise; else the vCPU runs."""
        v = self.vcpus[vid]
        if not v.initialised:
            return -E.EINVAL
        if not v.up:
            v.up = True
            self._set_state(vid, RUNNABLE)
            if self.slicer is None:
                self._slicer_due = True
                self.m.pause()          # installed between two slices
        return 0

    def down(self, vid: int) -> int:
        """VCPUOP_down: the last vCPU up going down powers the domain off."""
        others = [i for i, v in enumerate(self.vcpus) if i != vid and v.up]
        if not others:
            self.b.shutdown_code = E.SHUTDOWN_poweroff
            self.b.p.guest_shutdown(E.SHUTDOWN_poweroff)
            return 0
        v = self.vcpus[vid]
        if v.up:
            v.up = False
            self._set_state(vid, DOWN)
            self.polls.pop(vid, None)
            if vid == self.current:
                self._leave("down")
        return 0

    def initialise(self, v, ctx: bytes) -> int:
        """VCPUOP_initialise of vCPU ``v`` with ``ctx`` (struct
        vcpu_guest_context, :data:`abi.VCPU_GUEST_CONTEXT`), checked as
        arch_set_info_guest does for a 64-bit PV vCPU: -EEXIST once
        initialised; -EINVAL for a non-canonical RIP, RSP, kernel_sp, LDT
        base, FS/GS base, callback or trap handler, an LDT base not page
        aligned or over 8192 entries, GDT entries over 14 pages' worth or a
        GDT frame outside the domain or refusing a descriptor-page type
        (pv_set_gdt), and a CR3 (kernel, or user in ctrlreg[1]) frame outside
        the domain or refusing the root type (get_page_type(PGT_root_page_table):
        another type, or an L4 that does not validate). The GDT frames and the
        roots keep their type references (:mod:`pagetype`). Returns 0 or -errno."""
        if v.initialised:
            return -E.EEXIST
        O = E.VCPU_GUEST_CONTEXT
        q = lambda off: struct.unpack_from("<Q", ctx, off)[0]
        flags = q(O["flags"])
        ur = O["user_regs"]
        gprs = dict(zip(E.CPU_USER_REGS_GPRS, struct.unpack_from("<15Q", ctx, ur)))
        rip, = struct.unpack_from("<Q", ctx, ur + 128)
        rflags, rsp = struct.unpack_from("<QQ", ctx, ur + 144)
        # es and ds (ss, cs, fs, gs: Xen puts its flat selectors there)
        es, ds = (struct.unpack_from("<H", ctx, ur + 168 + 8 * i)[0] for i in range(2))
        ldt_base, ldt_ents = q(O["ldt_base"]), q(O["ldt_ents"])
        gdt_ents = q(O["gdt_ents"])
        kernel_ss, kernel_sp = q(O["kernel_ss"]), q(O["kernel_sp"])
        ctrl = struct.unpack_from("<8Q", ctx, O["ctrlreg"])
        dregs = struct.unpack_from("<8Q", ctx, O["debugreg"])
        event, failsafe, syscall = (q(O[k]) for k in (
            "event_callback_eip", "failsafe_callback_eip", "syscall_callback_eip"))
        fs_base, gs_kernel, gs_user = (q(O[k]) for k in ("fs_base", "gs_base_kernel",
                                                          "gs_base_user"))
        traps = [struct.unpack_from("<BBH4xQ", ctx, O["trap_ctxt"] + 16 * i)
                 for i in range(256)]
        canon = E.is_canonical
        if not all(canon(a) for a in (rip, rsp, kernel_sp, fs_base, gs_kernel, gs_user,
                                      event, syscall, failsafe)) \
                or (ldt_ents and not canon(ldt_base)) \
                or not all(canon(t[3]) for t in traps):
            return -E.EINVAL
        if ldt_base & 0xFFF or ldt_ents > 8192:
            return -E.EINVAL
        if gdt_ents > 14 * 512:                       # pv_set_gdt: FIRST_RESERVED_GDT_ENTRY
            return -E.EINVAL
        nframes = -(-gdt_ents // 512)
        frames = list(struct.unpack_from(f"<{nframes}Q", ctx, O["gdt_frames"]))
        b = self.b
        if not all(b._valid_mfn(f) for f in frames):
            return -E.EINVAL
        in_kernel = bool(flags & E.VGCF_in_kernel)
        cr3_mfn = ctrl[3] >> 12                        # xen_cr3_to_pfn (x86_64)
        user_mfn = ctrl[1] >> 12
        if not b._valid_mfn(cr3_mfn) or (user_mfn and not b._valid_mfn(user_mfn)):
            return -E.EINVAL
        # pv_set_gdt (seg_desc type references), then the kernel and user roots
        # each take an L4 type reference (get_page_type_preemptible(
        # PGT_root_page_table)); a refusal undoes what was taken: -EINVAL.
        rc = b.set_gdt_frames(v, frames)
        if rc:
            return rc
        types = b.types
        rc = types.swap_root(cr3_mfn, 0)
        if not rc and user_mfn:
            rc = types.swap_root(user_mfn, 0)
            if rc:
                types.swap_root(0, cr3_mfn)
        if rc:
            for f in frames:
                types.put_type(f)
            v.gdt_frames, v.gdt_ents = [], 0
            return -E.EINVAL
        # accepted: load the vCPU's Xen-side state
        v.install_xen_slots(cr3_mfn)
        if user_mfn:
            v.install_xen_slots(user_mfn)
        v.kernel_cr3, v.user_cr3 = cr3_mfn, user_mfn
        # trap_ctxt[i] is vector i's gate (Xen copies the array as it is)
        v.trap_table = {i: (fl, tcs, addr) for i, (_v, fl, tcs, addr) in enumerate(traps)
                        if addr}
        v.callbacks = {}
        for typ, addr, mask in ((E.CALLBACKTYPE_event, event, 0),
                                (E.CALLBACKTYPE_failsafe, failsafe,
                                 flags & E.VGCF_failsafe_disables_events),
                                (E.CALLBACKTYPE_syscall, syscall,
                                 flags & E.VGCF_syscall_disables_events)):
            if addr:
                v.callbacks[typ] = (addr, E.CALLBACKF_mask_events if mask else 0)
        v.kernel_ss, v.kernel_sp = kernel_ss, kernel_sp
        v.ldt = (ldt_base, ldt_ents)
        v.gdt_frames, v.gdt_ents = frames, gdt_ents
        v.load_debugregs(dregs, bool(ctrl[4] & E.X86_CR4_DE))
        # the virtual IOPL from the context's RFLAGS (Linux's APs start with IOPL 1)
        # and CR4 through pv_fixup_guest_cr4 (arch_set_info_guest, domain.c@stable-4.17)
        v.iopl = (rflags >> 12) & 3
        v.cr4 = v.fixup_cr4(ctrl[4])
        v.user_mode = not in_kernel
        v.gs_kernel, v.gs_user = gs_kernel, gs_user
        cr0 = self.m.reg("cr0")
        cr0 = (cr0 | CR0_TS) if ctrl[0] & CR0_TS else (cr0 & ~CR0_TS)
        regs = dict(gprs)
        # Xen enables real interrupts (EFLAGS.IF) and the guest never sees IOPL
        # in pvmon's engine (the kernel runs at CPL 0, see pv/vcpu.py).
        regs.update(rip=rip, rsp=rsp, rflags=(rflags & ~((3 << 12) | (1 << 17))) | RFLAGS_IF | 2,
                    cr0=cr0, cr2=ctrl[2],
                    fs_base=fs_base, gs_base=gs_user if not in_kernel else gs_kernel)
        v.saved = {"regs": regs, "cr3": (user_mfn or cr3_mfn) << 12 if not in_kernel
                   else cr3_mfn << 12,
                   "segs": {"ds": ds, "es": es, "fs": 0, "gs": 0},
                   "cs": E.FLAT_USER_CS64 if not in_kernel else v.segs.kernel_cs,
                   "ss": E.FLAT_USER_SS64 if not in_kernel else v.segs.kernel_ss,
                   "cpl": 3 if not in_kernel else 0, "fpu": None, "kgs": 0}
        v.initialised = True
        return 0

    # ------------------------------------------------------------ switching
    def _set_state(self, vid: int, state: str) -> None:
        """Put vCPU ``vid`` in scheduler state ``state`` at the current
        virtual time, and its runstate with it (:data:`RUNSTATE_OF`)."""
        self.state[vid] = state
        self.vcpus[vid].runstate_change(RUNSTATE_OF[state])

    def _runnable(self, vid: int) -> bool:
        return self.state[vid] in (RUNNING, RUNNABLE)

    def _fire_all(self) -> None:
        """Fire every vCPU's due timers; a blocked vCPU whose singleshot timer
        fired wakes, a poller whose timeout passed wakes."""
        now = self.m.clock.now_ns
        for vid, v in enumerate(self.vcpus):
            if not v.up:
                continue
            shot = v.singleshot is not None and v.singleshot <= now
            v.fire_timers()
            st = self.state[vid]
            if st == BLOCKED and shot:
                self._wake(vid)
            elif st == POLLING:
                dl = self.polls[vid][1]
                if shot or (dl is not None and dl <= now):
                    self._wake(vid)

    def _wake_deadline(self, vid: int) -> int | None:
        v = self.vcpus[vid]
        ds = [v.singleshot]
        if self.state[vid] == POLLING:
            ds.append(self.polls[vid][1])
        ds = [d for d in ds if d is not None]
        return min(ds) if ds else None

    def reschedule(self, expired: bool) -> None:
        """Between two engine slices (the dispatch layer's on_resume):
        ``expired``: the slice ended because the quantum ran out. Fires due
        timers, and puts the next runnable vCPU on the engine when the
        current one left it or its quantum is spent; with none runnable,
        virtual time jumps to the earliest wake-up (the run is stuck if
        there is none)."""
        if self._slicer_due:
            self._install_slicer()
        self._reschedule(expired)

    def _install_slicer(self) -> None:
        """Count blocks from now on: until a second vCPU is up (Linux's early
        boot, its p2m rebuild's hundreds of millions of blocks among it) one
        vCPU runs alone and needs no quantum. Translated blocks carry the hook
        only if translated after it, so every block is dropped (one flush, at
        the VCPUOP_up that is the same call in every run)."""
        from pvmon.engine.slicer import Slicer
        m = self.m
        self._slicer_due = False
        self.slicer = m.slicer = Slicer(m.uc)
        self.slicer.reset(self.quantum_blocks)
        m.uc.ctl_flush_tb()

    def _reschedule(self, expired: bool) -> None:
        m = self.m
        clock = m.clock
        if expired:
            clock.advance(self.quantum_ns)
            self.slicer.reset(self.quantum_blocks)
        self._fire_all()
        why = self._resched
        cur = self.current
        if why is None:
            if not expired:
                return
            why = "quantum"
        n = len(self.vcpus)
        while True:
            order = [(cur + i) % n for i in range(1, n)] + [cur]
            if why == "yield":
                order = order[:-1] + [cur]
            for vid in order:
                if self._runnable(vid):
                    self._resched = None
                    if vid != cur:
                        self._switch(cur, vid, why)
                    # a context switch into vid, from another vCPU or from idle
                    # (it blocked, polled or yielded and comes back): Xen
                    # writes its runstate area (context_switch)
                    switched_in = vid != cur or self.state[vid] != RUNNING
                    self._set_state(vid, RUNNING)
                    if switched_in:
                        self.vcpus[vid].update_runstate()
                    return
            # nothing runnable: sleep to the earliest wake-up
            dls = [d for vid in range(n) if self.state[vid] in (BLOCKED, POLLING)
                   and (d := self._wake_deadline(vid)) is not None]
            if not dls:
                self._resched = None
                self.b.p.stuck("every vCPU is blocked with no timer armed and no event "
                               "pending")
                return
            t = min(dls)
            if t > clock.now_ns:      # the blocked vCPUs' runstate counts it
                clock.advance_to(t)
            self._fire_all()

    def _switch(self, old: int, new: int, why: str) -> None:
        m = self.m
        vo, vn = self.vcpus[old], self.vcpus[new]
        if self.state[old] == RUNNING:
            self._set_state(old, RUNNABLE)
        # its runstate area, as it leaves (runnable, blocked or offline)
        vo.update_runstate()
        uc = m.uc
        vals = dict(zip(_SAVE_REGS, m.regs(*_SAVE_REGS), strict=True))
        vo.saved = {"regs": {r: vals[r] for r in _CTX_REGS + ("fs_base", "gs_base")},
                    "cr3": m.internals.cr3,
                    "segs": {s: vals[s] for s in _SEGS},
                    "cs": vals["cs"], "ss": vals["ss"], "cpl": m.cpl,
                    "fpu": self._fpu.save(),
                    "kgs": uc.msr_read(MSR_KERNEL_GS_BASE)}
        s = vn.saved
        vn.saved = None
        if vn.gdt_frames:
            vn.load_gdt(vn.gdt_frames, vn.gdt_ents)
        ldt.switch(self.b, vo, vn)      # its LDT area and LDTR (pv/ldt.py)
        m.write_cr3(s["cr3"])
        for name, sel in s["segs"].items():
            m.set_segment(name, ldt.loadable(self.b, vn, sel) if sel & 4 else sel)
        # CS and SS with their hidden parts (a 32-bit process runs in compatibility
        # mode; the kernel's have DPL 0: pvmon.backends.xen.pv.segments)
        if s["cpl"] == 0:
            if vn.segs.xen_selectors and (s["cs"], s["ss"]) != (vn.segs.kernel_cs,
                                                               vn.segs.kernel_ss):
                vn.segs.to_kernel_frame(s["cs"], s["ss"])    # an iret loaded others
            else:
                vn.segs.to_kernel()
        else:
            vn.segs.to_user(s["cs"], s["ss"])
        m.set_cpl(s["cpl"])
        m.set_regs(**s["regs"])
        if s["fpu"] is not None:
            self._fpu.load(s["fpu"])
        else:   # a vCPU's first run: the x87/SSE state after FNINIT, MXCSR's reset value
            for r, val in ((x86.UC_X86_REG_FPCW, 0x37F), (x86.UC_X86_REG_FPSW, 0),
                           (x86.UC_X86_REG_MXCSR, 0x1F80)):
                uc.reg_write(r, val)
            for i in range(16):
                uc.reg_write(getattr(x86, f"UC_X86_REG_XMM{i}"), 0)
        uc.msr_write(MSR_KERNEL_GS_BASE, s["kgs"])
        self.current = new
        self.b.vcpu = vn
        vn.activate_debugregs()     # its breakpoints, if it enables any (pv/debugreg)
        if self.slicer is not None:
            self.slicer.reset(self.quantum_blocks)
        self.switches += 1
        if self.on_switch is not None:
            self.on_switch(old, new, why)


__all__ = ["MAX_VCPUS", "QUANTUM_BLOCKS", "QUANTUM_NS", "PvScheduler"]
