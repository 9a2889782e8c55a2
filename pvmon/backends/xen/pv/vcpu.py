"""The PV vCPU: what Xen does to a 64-bit PV guest's CPU state.

Bounce frames (fault, event and syscall delivery), the iret hypercall,
kernel/user mode switches, the trap table and callbacks, segment bases and
the descriptor tables, over :class:`pvmon.backends.xen.vcpu.XenVcpu`
(vcpu_info, pvclock, timers and blocking, which every Xen guest mode shares).

Facts: the bounce frame {RCX, R11, [ERRCODE,] RIP, CS, RFLAGS, RSP, SS} on a
16-byte aligned stack, CS RPL cleared when interrupted in kernel mode, the
saved upcall mask in bits 32-39 of the CS slot and EFLAGS.IF = !mask
(xen/arch/x86/x86_64/entry.S create_bounce_frame); struct iret_context and
do_iret semantics (xen/include/public/arch-x86/xen-x86_64.h,
xen/arch/x86/pv/iret.c); vcpu_info and vcpu_time_info layouts
(xen/include/public/xen.h); pvclock scaling: ns = ((tsc - tsc_timestamp) <<
tsc_shift) * tsc_to_system_mul >> 32.

Engine decision: the guest kernel runs at CPL 0 in Unicorn and user mode at
CPL 3. Real 64-bit Xen runs both at ring 3 and tells them apart only by which
page-table root is loaded (the kernel L4, or the user L4 given with
MMUEXT_NEW_USER_BASEPTR) and by its own per-vCPU "kernel mode" flag
(xen/arch/x86/x86_64/entry.S, toggle_guest_mode in xen/arch/x86/pv/domain.c).
pvmon keeps that flag (``user_mode``) and the two roots exactly as Xen does,
but lets Unicorn run the kernel at CPL 0 because:

* Unicorn's CPL is the privilege its page walks check. At CPL 3 every kernel
  mapping would need _PAGE_USER, which Xen forces into guest kernel PTEs
  behind the guest's back (adjust_guest_l1e); pvmon writes guest PTEs verbatim
  (machine frame = pseudo-physical frame, so guest page tables are used by the
  MMU directly) and would have to rewrite them and hide the rewrite.
* At CPL 0 the kernel's frames, stacks and the CS/SS values it sees are still
  Xen's: bounce frames carry FLAT_KERNEL/FLAT_USER selectors (RPL 3), and the
  kernel runs with FLAT_KERNEL_CS64/SS64 whose hidden descriptors have DPL 0;
  the engine's ring switch makes its own IRETQ/LRETQ to them same-privilege
  returns (pvmon.backends.xen.pv.segments; without the PV engine patch it
  runs with pvmon's internal DPL-0 ENGINE_KERNEL_CS/SS instead).
* The cost: a privileged instruction the kernel executes (cli, mov to CR3,
  wrmsr, invlpg) runs instead of raising #GP as it would under Xen. A pvops
  Linux never does that; a kernel that did would behave differently here.

User mode, as Xen does it: ``iret`` to a CS with RPL 3 switches to the user L4
(TLB flushed on every CR3 write), swaps the GS bases (the kernel's stays in
``gs_kernel``; SEGBASE_GS_USER writes the other one, like SWAPGS would) and
drops the CPL to 3. ``syscall`` from user mode enters the registered syscall
callback with RCX/R11 in the frame; faults and events arriving in user mode
switch to the kernel L4 and the kernel stack given with stack_switch
(``kernel_sp``) and push the PV frame with the user CS/SS/RSP there. FS base
is shared by both modes and set directly by SEGBASE_FS.
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi
from pvmon.backends.xen.pv.debugreg import engine_addresses
from pvmon.backends.xen.pv.msr import PvMsrs
from pvmon.backends.xen.pv.segments import Segments
from pvmon.backends.xen.vcpu import XenVcpu
from pvmon.engine import debugregs
from pvmon.engine.machine import (
    CR0_TS,
    PAGE_SIZE,
    PTE_A,
    PTE_P,
    PTE_RW,
    PTE_US,
    GuestPageFault,
    Machine,
    Stop,
)

E = abi
#: The flags of the hypervisor's L4 entry (slot 256) in every guest L4.
_HV_L4E = PTE_P | PTE_RW | PTE_US | PTE_A
_U64 = struct.Struct("<Q")
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_IOPL = 3 << 12
VMASST_TYPE_architectural_iopl = 4   # xen/include/public/xen.h
# CR4 bits (Intel SDM vol. 3, 2.5) and Xen's PV masks (asm/pv/domain.h@stable-4.17)
CR4_TSD, CR4_DE, CR4_PAE, CR4_MCE = 1 << 2, 1 << 3, 1 << 5, 1 << 6
CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_FSGSBASE, CR4_OSXSAVE = 1 << 9, 1 << 10, 1 << 16, 1 << 18
PV_CR4_GUEST_MASK = CR4_TSD | CR4_DE | CR4_FSGSBASE | CR4_OSXSAVE
#: mmu_cr4_features & PV_CR4_GUEST_VISIBLE_MASK of the modelled host (all four)
CR4_HOST_VISIBLE = CR4_PAE | CR4_MCE | CR4_OSFXSR | CR4_OSXMMEXCPT
#: what pvmon's CPUID policy offers of TSC, DE, FSGSBASE, XSAVE (cpuid.py):
#: TSC and DE only, so FSGSBASE and OSXSAVE can never be set
CR4_POLICY_ALLOWED = CR4_TSD | CR4_DE
#: the engine's CR4 bits that follow the guest's (the rest stay pvmon's)
CR4_ENGINE_FOLLOWS = CR4_TSD | CR4_DE
# the engine patches' answers (pvmon.engine.hvm)
_NATIVE, _HANDLED, _GP = 0, 1, 2
RFLAGS_CLEAR_ON_TRAP = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18)  # TF NT RF VM AC
TI_IF = E.TI_IF   # trap_info.flags bit 2: mask events on entry (TI_GET_IF)

_ARCH_IOPL_BIT = 1 << VMASST_TYPE_architectural_iopl
#: CPUID leaf 0 EBX of a GenuineIntel CPU ("Genu")
_VENDOR_INTEL_EBX = 0x756E6547


class PvVcpu(XenVcpu):
    """One vCPU of a PV domain (``vcpu_id``), bound to a backend (for events,
    time and the platform) and the machine."""

    def __init__(self, backend, machine: Machine, layout, vcpu_id: int = 0) -> None:
        super().__init__(backend, machine, layout, vcpu_id)
        self.trap_table: dict[int, tuple[int, int, int]] = {}
        self.callbacks: dict[int, tuple[int, int]] = {}
        self.kernel_ss = 0
        self.kernel_sp = 0
        self.user_mode = False
        self.kernel_cr3 = layout.pt_base_pfn
        self.user_cr3 = 0
        self.gs_user = 0
        self.gs_kernel = 0
        #: Debug registers as Xen keeps them (struct arch_vcpu dr[4], dr6, dr7 and
        #: pv.dr7_emul, xen/arch/x86/include/asm/domain.h@stable-4.17): at reset
        #: (arch_vcpu_regs_init) 0, X86_DR6_DEFAULT and X86_DR7_DEFAULT. Loaded into
        #: the engine only while %dr7 enables a breakpoint (activate_debugregs).
        self.dr = [0, 0, 0, 0]
        self.dr6 = E.X86_DR6_DEFAULT
        self.dr7 = E.X86_DR7_DEFAULT
        #: The enable bits of %dr7's I/O breakpoints, kept apart from ``dr7``
        #: (Xen emulates those in port I/O rather than loading them into hardware).
        self.dr7_emul = 0
        #: The MSRs Xen emulates for this vCPU (pvmon.backends.xen.pv.msr).
        self.msrs = PvMsrs(self)
        #: The engine's CS/SS for mode switches (pvmon.backends.xen.pv.segments).
        self.segs = Segments(machine, layout, backend, self)
        if vcpu_id == 0 and self.segs.xen_selectors:
            self.segs.to_kernel()       # the domain builder started it in kernel mode
        #: The virtual I/O privilege level, 0-3 (Xen's ``v->arch.pv.iopl``, kept
        #: as EFLAGS bits 13:12 there): PHYSDEVOP_set_iopl, or ``iret`` with
        #: VMASST_TYPE_architectural_iopl.
        self.iopl = 0
        #: PHYSDEVOP_set_iobitmap: the guest-virtual I/O bitmap and how many
        #: ports it covers (``iobmp``, ``iobmp_limit``).
        self.iobmp = 0
        self.iobmp_limit = 0
        #: The guest's view of CR4 (Xen's ``v->arch.pv.ctrlreg[4]``), kept while
        #: the engine traps MOV to/from CR4 (``cr_trapped``); at creation
        #: pv_fixup_guest_cr4(v, 0): the modelled host's PAE, MCE, OSFXSR and
        #: OSXMMEXCPT (pv/domain.c@stable-4.17).
        self.cr4 = CR4_HOST_VISIBLE
        self.cr_trapped = False
        #: MMUEXT_SET_LDT's table (base, entries) and the frames mapped in its
        #: LDT area (slot -> frame; pvmon.backends.xen.pv.ldt).
        self.ldt = (0, 0)
        self.ldt_pages: dict[int, int] = {}
        self.gdt_frames: list[int] = []
        self.gdt_ents = 0
        #: The saved CPU state of a vCPU that is not on the engine (SMP;
        #: :mod:`pvmon.backends.xen.pv.smp`), None while it runs.
        self.saved: dict | None = None
        #: VCPUOP_initialise done (Xen's is_initialised); vCPU 0 is built so.
        self.initialised = vcpu_id == 0
        #: Not VPF_down: VCPUOP_up'd (vCPU 0 from the start).
        self.up = vcpu_id == 0
        if vcpu_id == 0:
            self.install_xen_slots(layout.pt_base_pfn)
        else:
            self.kernel_cr3 = 0

    # ------------------------------------------------------------- CPU state
    def set_ts(self, on: bool) -> None:
        cr0 = self.m.reg("cr0")
        self.m.set_reg("cr0", (cr0 | CR0_TS) if on else (cr0 & ~CR0_TS))

    def set_segment_base(self, which: int, base: int) -> int:
        if (base >> 47) not in (0, 0x1FFFF) and which != E.SEGBASE_GS_USER_SEL:
            return -E.EINVAL
        if which == E.SEGBASE_FS:
            self.m.set_reg("fs_base", base)
        elif which == E.SEGBASE_GS_KERNEL:
            if self.user_mode:
                self.gs_kernel = base
            else:
                self.m.set_reg("gs_base", base)
        elif which == E.SEGBASE_GS_USER:
            if self.user_mode:
                self.m.set_reg("gs_base", base)
            else:
                self.gs_user = base
        elif which == E.SEGBASE_GS_USER_SEL:
            self.gs_user = 0   # flat descriptors have base 0
        else:
            return -E.EINVAL
        return 0

    # ------------------------------------------------------------ I/O privilege
    def architectural_iopl(self) -> bool:
        """VMASST_TYPE_architectural_iopl is on for the domain."""
        return bool(self.b.vm_assist & _ARCH_IOPL_BIT)

    def set_iopl(self, iopl: int) -> int:
        """PHYSDEVOP_set_iopl (xen/arch/x86/physdev.c@stable-4.17): 0-3, else -EINVAL."""
        if iopl > 3:
            return -E.EINVAL
        self.iopl = iopl
        self.iopl_changed()
        return 0

    def iopl_changed(self) -> None:
        """Tell the engine what CLI/STI in the kernel now do (:meth:`privop`):
        after the IOPL, VMASST_TYPE_architectural_iopl or the vCPU on the
        engine changed."""
        tell = getattr(self.b.p, "set_cli_mode", None)   # the live platform's
        if tell is not None:
            cpl = 0 if self.architectural_iopl() else 1
            tell(1 if cpl <= self.iopl else 2)

    def set_iopl_from(self, arg: int) -> int:
        """PHYSDEVOP_set_iopl with its ``struct physdev_set_iopl`` at guest-virtual
        ``arg``: -EFAULT if unreadable, else :meth:`set_iopl`. The argument is
        read without being recorded: a recording keeps the guest memory each
        call read, and every Linux boot makes this call, so recording it would
        change every Linux trace (and recordings made before could not be
        replayed open loop past it). Open-loop replay, which has no guest
        memory beyond the recording, keeps the IOPL and answers 0."""
        if getattr(self.b.p, "m", None) is not self.m:      # open-loop replay
            return 0
        try:
            raw = self.m.read_virt(arg, 4)
        except GuestPageFault:
            return -E.EFAULT
        return self.set_iopl(int.from_bytes(raw, "little"))

    def set_iobitmap(self, bitmap: int, nr_ports: int) -> int:
        """PHYSDEVOP_set_iobitmap (physdev.c@stable-4.17): the bitmap (8 KiB,
        IOBMP_BYTES) must pass guest_handle_okay, whose ``__addr_ok`` looks at
        its start only (below 2^47 or from HYPERVISOR_VIRT_END up,
        asm/x86_64/uaccess.h), and ``nr_ports`` be at most 65536, else -EINVAL."""
        if nr_ports > 65536 or not (bitmap < 1 << 47 or bitmap >= E.HYPERVISOR_VIRT_END):
            return -E.EINVAL
        self.iobmp, self.iobmp_limit = bitmap, nr_ports
        return 0

    def io_allowed(self, port: int, size: int) -> bool:
        """guest_io_okay (pv/emul-priv-op.c@stable-4.17): the mode's assumed CPL
        (kernel 1, or 0 with architectural_iopl; user 3) at most the virtual
        IOPL, or every port's bit clear in the guest's I/O bitmap (bytes it
        cannot read count as set)."""
        if self.iopl_ok():
            return True
        if port + size > self.iobmp_limit:
            return False
        # read through the kernel's page tables (toggle_guest_pt in user mode);
        # a byte that cannot be read counts as all ones (no access)
        mask = 0
        for i in range(2):
            va = self.iobmp + (port >> 3) + i
            try:
                pa = self.m.walk(va, cr3=self.kernel_cr3 << 12)[0]
                byte = self.m.read_phys(pa, 1)[0]
            except (GuestPageFault, ValueError):
                byte = 0xFF
            mask |= byte << (8 * i)
        return not (mask >> (port & 7)) & ((1 << size) - 1)

    def iopl_ok(self) -> bool:
        """iopl_ok (pv/emul-priv-op.c@stable-4.17): the mode's assumed CPL
        (kernel 1, or 0 with architectural_iopl; user 3) at most the virtual IOPL."""
        if self.user_mode:
            return self.iopl == 3
        # architectural_iopl(), inline: every port access of a boot comes here
        return (0 if self.b.vm_assist & _ARCH_IOPL_BIT else 1) <= self.iopl

    def fixup_cr4(self, value: int) -> int:
        """pv_fixup_guest_cr4 (pv/domain.c@stable-4.17): the guest keeps only the
        bits it controls (TSD, DE, FSGSBASE, OSXSAVE) that the CPUID policy
        offers, and sees the host's PAE, MCE, OSFXSR and OSXMMEXCPT."""
        return (value & PV_CR4_GUEST_MASK & CR4_POLICY_ALLOWED) | CR4_HOST_VISIBLE

    def privop(self, op: int, reg: int, value: int) -> tuple[int, int]:
        """A privileged instruction the guest kernel executed at CPL 0, as Xen
        emulates it (pv/emul-priv-op.c@stable-4.17); ``op``: 0 CLI, 1 STI,
        2 MOV to CR``reg`` (``value`` written), 3 MOV from CR``reg``. Returns
        ``(answer, value)``: 0 natively (a CR write with ``value``), 1 handled
        (skipped, or the value read), 2 #GP(0).

        * CLI/STI (``op`` 0/1; the engine asks :meth:`iopl_changed` instead,
          once per change): with iopl_ok nothing happens (validate() returns
          X86EMUL_DONE: the event mask is not touched), else #GP(0).
        * CR4: the guest's view (``ctrlreg[4]``) is read back; a write is
          filtered by pv_fixup_guest_cr4 and only TSD and DE reach the engine.
        * CR0: a write that changes anything but TS is #GP ("Attempt to change
          unmodifiable CR0 flags"), TS goes through (do_fpu_taskswitch). CR2
          runs natively, and so does a CR3 read (the current kernel L4, which
          pvmon loads: read_cr).
        * CR3 write (write_cr): the frame ``value >> 12`` (xen_cr3_to_pfn; the
          low flag bits dropped) becomes the kernel root through
          new_guest_cr3, as MMUEXT_NEW_BASEPTR (an L4 type reference taken,
          validating it if it had none, the old root's dropped); the engine
          then loads it natively. A frame that is not the domain's or cannot
          take the L4 type: #GP(0) (X86EMUL_UNHANDLEABLE).
        * any other control register: #GP (read_cr/write_cr: unhandleable)."""
        if op in (0, 1):
            return (_HANDLED, 0) if self.iopl_ok() else (_GP, 0)
        if reg == 4:
            self.cr_trapped = True
            if op == 3:
                return _HANDLED, self.cr4
            self.cr4 = self.fixup_cr4(value)
            cur = self.m.reg("cr4")
            return _NATIVE, (cur & ~CR4_ENGINE_FOLLOWS) | (self.cr4 & CR4_ENGINE_FOLLOWS)
        if reg == 0 and op == 2:
            if (value ^ self.m.reg("cr0")) & ~CR0_TS:
                return _GP, 0
            return _NATIVE, value
        if reg == 3 and op == 2:
            mfn = value >> 12
            if self.b.new_guest_cr3(mfn, load=False):
                return _GP, 0
            return _NATIVE, mfn << 12
        if reg in (0, 2, 3):
            return _NATIVE, value
        return _GP, 0

    def emulate_gp(self, rip: int) -> bool:
        """A #GP(0) the engine raised at ``rip`` that Xen emulates instead
        (pv_emulate_privileged_op): CLI/STI in guest user mode, which the CPU
        refuses at CPL 3 with the hardware IOPL 0 that pvmon keeps, and which
        Xen lets through as a no-op when the virtual IOPL is 3 (validate():
        iopl_ok, X86EMUL_DONE). Returns True when done (RIP moved past it);
        False: deliver the #GP. (IN/OUT never get here: Unicorn lets them
        through at any CPL and the port hook refuses them, :meth:`io_allowed`.)"""
        if not self.user_mode or not self.iopl_ok():
            return False
        try:
            code = self.m.read_virt(rip, 1, user=True)
        except GuestPageFault:
            return False
        if code not in (b"\xfa", b"\xfb"):
            return False
        self.m.set_reg("rip", rip + 1)
        return True

    # ------------------------------------------------------- debug registers
    def cr4_de(self) -> bool:
        """The guest's CR4.DE (Xen's ``v->arch.pv.ctrlreg[4] & X86_CR4_DE``).
        While the engine traps MOV to/from CR4 (pvmon's fifth Unicorn patch)
        that is the CR4 Xen keeps for the guest (:meth:`privop`); without it
        the kernel writes CR4 natively and the engine's CR4 is the guest's
        view. CPUID reports DE, so pv_fixup_guest_cr4 keeps the bit."""
        cr4 = self.cr4 if self.cr_trapped else self.m.reg("cr4")
        return bool(cr4 & E.X86_CR4_DE)

    def set_debugreg(self, reg: int, value: int, de: bool | None = None) -> int:
        """set_debugreg (:meth:`_set_debugreg`), then the engine's registers
        follow as Xen's follow on the running vCPU: loaded when %dr7 enables a
        breakpoint (activate_debugregs, misc-hypercalls.c@stable-4.17), left
        alone while none is."""
        rc = self._set_debugreg(reg, value, de)
        if rc == 0 and self.b.vcpu is self:
            self.activate_debugregs()
        return rc

    def activate_debugregs(self) -> None:
        """Load this vCPU's %dr0-3, %dr6 and %dr7 (without the I/O breakpoints,
        which port I/O emulates) into the engine when %dr7 enables a
        breakpoint, or take the engine's away when it holds some and this
        vCPU enables none (activate_debugregs, traps.c@stable-4.17: Xen loads
        them lazily). Called after a change and when the vCPU goes on the engine.
        Before XSA-12's fix a stored %dr7 may hold bits 32-63 (set by
        VCPUOP_initialise, see :meth:`_set_debugreg`): loading it
        (paravirt_ctxt_switch_to, xen/arch/x86/domain.c@3.4.0-rc3) ends the run."""
        if self.dr7 >> 32 and self.dr7 & E.DR7_ACTIVE_MASK:
            self._xsa12_host_crash("the context switch to a vCPU whose %dr7 enables a "
                                   "breakpoint", self.dr7)
            return
        debugregs.for_machine(self.m).sync(engine_addresses(self.dr, self.dr7), self.dr6,
                                           self.dr7)

    def _xsa12_host_crash(self, where: str, dr7: int) -> None:
        """End the run as Xen before XSA-12's fix ends the host: ``mov`` to
        %dr7 of a value with bits 32-63 set raises #GP(0), which Xen takes in
        its own context as a fatal trap (do_general_protection, no fixup:
        panic). ``where``: what loads it; ``dr7``: the value."""
        p = self.b.p
        p.crash_stop(f"XSA-12: {where} loads %dr7 = {dr7:#x} (bits 32-63 set) into the "
                     "hardware: #GP inside Xen, a fatal trap, the host crashes (fixed by "
                     "xen.git e89c6d0573, 4.2)", p.cur_rip())

    def debug_exception(self) -> None:
        """The engine raised #DB (a breakpoint or a single step): merge its
        %dr6 into the vCPU's and reset it, as do_debug does
        (xen/arch/x86/traps.c@stable-4.17: ``dr6 |= hw & ~X86_DR6_DEFAULT;
        dr6 &= hw | ~X86_DR6_DEFAULT``); the caller then injects vector 1."""
        hw = debugregs.for_machine(self.m).take_dr6()
        keep = ~E.X86_DR6_DEFAULT & 0xFFFF_FFFF_FFFF_FFFF
        self.dr6 = (self.dr6 | (hw & keep)) & (hw | keep)

    def mov_dr(self, write: int, reg: int, value: int) -> tuple[int, int]:
        """``mov`` to (``write`` 1, ``value`` written) or from %dr``reg`` by the
        guest kernel, which Xen emulates for its ring-3 kernel through the
        hypercalls' own code (x86emul_write_dr: set_debugreg, -ENODEV -> #UD,
        any other error -> #GP(0); x86emul_read_dr: the get_debugreg answer,
        #UD for %dr4/%dr5 with CR4.DE; xen/arch/x86/x86_emulate.c@stable-4.17).
        Returns the engine hook's ``(answer, value)`` (:mod:`pvmon.engine.debugregs`)."""
        if write:
            rc = self.set_debugreg(reg, value)
        else:
            rc = self.get_debugreg(reg)
        if rc < 0:
            return (debugregs.DR_UD if rc == -E.ENODEV else debugregs.DR_GP), 0
        return debugregs.DR_HANDLED, 0 if write else rc

    def _set_debugreg(self, reg: int, value: int, de: bool | None = None) -> int:
        """set_debugreg (xen/arch/x86/pv/misc-hypercalls.c@stable-4.17) on this
        vCPU. ``reg`` is an unsigned int, ``value`` an unsigned 64-bit value,
        ``de`` the CR4.DE to judge with (None: :meth:`cr4_de`). Returns 0 or
        -errno: -EPERM for a breakpoint address in Xen's range or non-canonical
        (breakpoint_addr_ok), %dr7.GD, or an I/O breakpoint without CR4.DE;
        -EINVAL for a %dr6/%dr7 value above 32 bits; -ENODEV for %dr4/%dr5 with
        CR4.DE set and for any register above 7. Reserved bits of %dr6/%dr7 are
        forced, never refused.

        Older versions (capabilities, pvmon.backends.xen.history): without
        ``debugreg_dr45_alias`` (before xen.git f539ae2706, 4.11) %dr4/%dr5 and
        registers above 7 are -EINVAL and the upper 32 bits of %dr6/%dr7 are
        dropped silently; without ``debugreg_dr7_emul`` (before 30f43f4aa8,
        4.12) a %dr4 write is stored where no read sees it and a %dr5 write
        lands in the slot %dr7's I/O enables share (``dr7_emul``); without
        ``breakpoint_addr_ok`` (XSA-444's fix, 4.17.3) a breakpoint may also
        point at this vCPU's compat argument-translation area (access_ok); without
        ``xsa12_dr7_high_bits_dropped`` (XSA-12's fix, 4.2) bits 32-63 of %dr7
        are kept (set_debugreg in xen/arch/x86/traps.c@3.4.0-rc3), and the
        running vCPU's write of them into the hardware %dr7 is a #GP inside
        Xen: the run ends ("crash", the host would) and nothing is stored."""
        caps = self.b.ver.capabilities
        alias = "debugreg_dr45_alias" in caps
        if de is None and reg in (4, 5, 7):
            de = self.cr4_de()
        if reg <= 3:
            if not (value < 1 << 47 or value >= E.HYPERVISOR_VIRT_END
                    or "breakpoint_addr_ok" not in caps and self._in_arg_xlat(value)):
                return -E.EPERM
            self.dr[reg] = value
        elif reg in (4, 6):
            if reg == 4 and (de or not alias):
                return -E.ENODEV if alias else -E.EINVAL
            if value >> 32 and alias:
                return -E.EINVAL
            value = (value & ~E.DR_STATUS_RESERVED_ZERO) | E.X86_DR6_DEFAULT
            if reg == 6 or "debugreg_dr7_emul" in caps:
                self.dr6 = value
        elif reg in (5, 7):
            if reg == 5 and (de or not alias):
                return -E.ENODEV if alias else -E.EINVAL
            if value >> 32 and alias:
                return -E.EINVAL
            zero = E.DR_CONTROL_RESERVED_ZERO if "xsa12_dr7_high_bits_dropped" in caps \
                else E.DR_CONTROL_RESERVED_ZERO_XSA12
            value = (value & ~zero) | E.X86_DR7_DEFAULT
            if value & E.DR_GENERAL_DETECT:
                return -E.EPERM
            io_enable = 0
            if value & E.DR7_ACTIVE_MASK:
                # every breakpoint whose R/W field says I/O, enabled or not
                for i in range(4):
                    if (value >> (E.DR_CONTROL_SHIFT + i * E.DR_CONTROL_SIZE)) & 3 == E.DR_IO:
                        if not de:
                            return -E.EPERM
                        io_enable |= value & (3 << (2 * i))
            if reg == 5 and "debugreg_dr7_emul" not in caps:
                self.dr7_emul = value      # debugreg[5] = value, over the I/O stash
                return 0
            if value >> 32 and self.b.vcpu is self:
                # 3.4: write_debugreg(7, value) before debugreg[7] = value
                self._xsa12_host_crash("set_debugreg(7) on the running vCPU", value)
                return 0
            self.dr7_emul = io_enable
            self.dr7 = value & ~io_enable
        else:
            return -E.ENODEV if alias else -E.EINVAL
        return 0

    def _in_arg_xlat(self, addr: int) -> bool:
        """access_ok's is_compat_arg_xlat_range(addr, sizeof(long)) before XSA-444's
        fix (xen/include/asm-x86/x86_64/uaccess.h@RELEASE-4.11.0)."""
        off = addr - (E.ARG_XLAT_VIRT_START + (self.vcpu_id << E.ARG_XLAT_VA_SHIFT))
        return 0 <= off and off + 8 <= E.COMPAT_ARG_XLAT_SIZE

    def get_debugreg(self, reg: int) -> int:
        """do_get_debugreg / x86emul_read_dr (xen/arch/x86/x86_emulate.c@stable-4.17):
        %dr0-3 as stored; %dr4/%dr5 alias %dr6/%dr7 with CR4.DE clear and are
        -ENODEV with it set; %dr7 reads back with its I/O breakpoints' enable
        bits (``dr7 | dr7_emul``); above 7 -ENODEV. Returns the value (an
        unsigned 64-bit int) or -errno.

        Older versions: without ``debugreg_dr45_alias`` (do_get_debugreg,
        xen/arch/x86/traps.c@RELEASE-4.6.0) %dr4/%dr5 read %dr6/%dr7 only with
        CR4.DE *set* and 0 without, and above 7 is -EINVAL; without
        ``debugreg_dr7_emul`` (x86emul_read_dr@RELEASE-4.11.0) %dr5 reads %dr7
        without the I/O enables."""
        caps = self.b.ver.capabilities
        if reg in (4, 5):
            if "debugreg_dr45_alias" not in caps:
                if not self.cr4_de():
                    return 0
                return self.dr6 if reg == 4 else self.dr7
            if self.cr4_de():
                return -E.ENODEV
            if reg == 5 and "debugreg_dr7_emul" not in caps:
                return self.dr7
            reg += 2
        if reg <= 3:
            return self.dr[reg]
        if reg == 6:
            return self.dr6
        if reg == 7:
            return self.dr7 | self.dr7_emul
        return -E.ENODEV if "debugreg_dr45_alias" in caps else -E.EINVAL

    def load_debugregs(self, dregs: tuple[int, ...], de: bool) -> None:
        """The debug registers of a VCPUOP_initialise context (arch_set_info_guest,
        xen/arch/x86/domain.c@stable-4.17): reset, then set_debugreg for %dr0-3,
        %dr6 and %dr7 in that order, each refusal ignored (the register keeps its
        reset value). ``dregs``: the context's debugreg[8]; ``de``: the context's
        CR4.DE. Before ``debugreg_dr7_emul`` (4.12) Xen set all eight in order
        (arch_set_info_guest@RELEASE-4.11.0)."""
        self.dr, self.dr6, self.dr7, self.dr7_emul = [0, 0, 0, 0], E.X86_DR6_DEFAULT, \
            E.X86_DR7_DEFAULT, 0
        regs = (0, 1, 2, 3, 6, 7) if "debugreg_dr7_emul" in self.b.ver.capabilities \
            else range(8)
        for i in regs:
            self.set_debugreg(i, dregs[i], de)

    def load_gdt(self, frames: list[int], entries: int) -> None:
        self.gdt_frames = frames
        self.gdt_ents = entries
        gdt = self.layout.gdt_ma
        for i, f in enumerate(frames):
            self.m.write_phys_data(gdt + i * PAGE_SIZE, self.m.read_phys(f << 12, PAGE_SIZE))
        tail = entries * 8
        self.m.write_phys_data(gdt + tail, bytes(len(frames) * PAGE_SIZE - tail))
        self.m.flush_tlb()

    def descriptor_written(self, ma: int, desc: int) -> None:
        frame = ma >> 12
        if frame in self.gdt_frames:
            idx = self.gdt_frames.index(frame)
            self.m.write_u64_phys(self.layout.gdt_ma + idx * PAGE_SIZE + (ma & 0xFFF), desc)

    def install_xen_slots(self, l4_mfn: int) -> None:
        """Put the hypervisor's L4 slot (M2P, descriptor table) into an L4,
        as Xen does for every page validated as an L4 table."""
        self.m.write_u64_phys((l4_mfn << 12) + 256 * 8, self.layout.hv_l3_ma | _HV_L4E)

    def new_baseptr(self, mfn: int, user: bool, load: bool = True) -> None:
        """Make ``mfn`` the vCPU's kernel (or ``user``) root, its type reference
        already taken; the engine's CR3 follows when the vCPU is in that mode
        (``load``=False: the caller has the engine write it, as a native
        ``mov %cr3`` the engine trapped does)."""
        if mfn:     # install_xen_slots, inline (every switch_mm passes here twice)
            _U64.pack_into(self.m.mem, (mfn << 12) + 256 * 8, self.layout.hv_l3_ma | _HV_L4E)
        if user:
            self.user_cr3 = mfn
            if self.user_mode and load:
                self.m.write_cr3(mfn << 12)
        else:
            self.kernel_cr3 = mfn
            if not self.user_mode and load:
                self.m.write_cr3(mfn << 12)

    def _to_kernel(self) -> None:
        self.user_mode = False
        self.gs_user = self.m.reg("gs_base")
        self.m.set_reg("gs_base", self.gs_kernel)
        self.m.write_cr3(self.kernel_cr3 << 12)
        self.segs.to_kernel()
        self.m.set_cpl(0)

    def _flat_kernel_segs(self, cs: int, ss: int) -> None:
        """Load FLAT_KERNEL_CS/SS, as create_bounce_frame does for every handler,
        unless the kernel's ``cs`` and ``ss`` (the engine's) are those already."""
        if cs != E.FLAT_KERNEL_CS64 or ss != E.FLAT_KERNEL_SS64:
            self.segs.to_kernel()

    def _to_user(self, cs: int = E.FLAT_USER_CS64, ss: int = E.FLAT_USER_SS64) -> None:
        """Enter guest user mode with ``cs | 3`` and ``ss | 3``, which name
        usable descriptors (a 32-bit code segment runs it in compatibility mode;
        pvmon.backends.xen.pv.segments)."""
        self.user_mode = True
        self.gs_kernel = self.m.reg("gs_base")
        self.m.set_reg("gs_base", self.gs_user)
        self.m.write_cr3((self.user_cr3 or self.kernel_cr3) << 12)
        self.segs.to_user(cs, ss)
        self.m.set_cpl(3)

    # ----------------------------------------------------------- delivery
    def bounce(self, target: int, error_code: int | None = None, mask_events: bool = False,
               rip: int | None = None, clear_flags: int = 0,
               user_cs_ss: tuple[int, int] | None = None,
               uregs: tuple[int, int, int, bool] | None = None,
               failsafe: bool = False) -> bool:
        """Build Xen's PV exception frame and enter the guest kernel at
        ``target``; ``clear_flags``: RFLAGS bits cleared on entry besides
        TF/NT/RF/VM/AC; ``user_cs_ss``: the CS and SS the frame holds when
        leaving user mode (default: the interrupted ones; a ``syscall`` frame
        holds constants). ``uregs``: ``(cs, ss, rsp, from_user)``, the
        interrupted frame Xen's UREGS hold when they are not the engine's (an
        iret whose IRETQ faulted, a ``sysenter``): CS, SS and RSP pushed (CS
        with RPL cleared from kernel mode), the frame on the kernel stack
        (``from_user``) or at that RSP. ``failsafe``: a TBF_FAILSAFE frame,
        DS, ES, FS and GS (the selectors loaded) between R11 and RIP
        (create_bounce_frame@RELEASE-4.6.0). Returns False (and stops the machine
        with a crash) when there is no handler or the frame cannot be written,
        as Xen crashes the domain (create_bounce_frame,
        xen/arch/x86/x86_64/entry.S@stable-4.17).

        Every delivery enters the handler with FLAT_KERNEL_CS/SS; from kernel
        mode the frame holds the interrupted CS (RPL cleared) and SS, which
        are those unless an iret or the kernel itself loaded others."""
        p = self.b.p
        m = self.m
        rsp, rflags, rcx, r11, cs, ss = m.regs("rsp", "rflags", "rcx", "r11", "cs", "ss")
        if rip is None:
            rip = p.cur_rip()
        from_user = self.user_mode
        if uregs is not None:
            cs, ss, rsp, from_user = uregs
        elif user_cs_ss is not None and from_user:
            cs, ss = user_cs_ss
        if from_user:
            # the interrupted CS and SS (UREGS_cs/ss: FLAT_USER_CS32 in a 32-bit process)
            if self.user_mode:
                self._to_kernel()
            elif self.segs.xen_selectors:       # an iret to user mode that faulted
                self._flat_kernel_segs(*m.regs("cs", "ss"))
            sp = self.kernel_sp
        else:
            if self.segs.xen_selectors:
                self._flat_kernel_segs(*(m.regs("cs", "ss") if uregs is not None else (cs, ss)))
                cs &= ~3
            else:
                cs, ss = E.FLAT_KERNEL_CS64 & ~3, E.FLAT_KERNEL_SS64
            sp = rsp
        frame_rsp = rsp
        if not target:
            p.crash_stop("guest has no handler registered for this delivery", rip)
            return False
        sp &= ~0xF
        mask = self.upcall_mask()
        words = [rcx, r11]
        if error_code is not None:
            words.append(error_code)
        if failsafe:
            words += m.regs("ds", "es", "fs", "gs")
        # create_bounce_frame: EFLAGS.IF = !mask, EFLAGS.IOPL = the virtual IOPL
        # with VMASST_TYPE_architectural_iopl, else 0 (x86_64/entry.S@stable-4.17)
        flags = (rflags & ~(RFLAGS_IF | RFLAGS_IOPL)) | (0 if mask else RFLAGS_IF)
        if self.iopl and self.architectural_iopl():
            flags |= self.iopl << 12
        words += [rip, cs | (mask << 32), flags, frame_rsp, ss]
        sp = (sp - 8 * len(words)) & 0xFFFF_FFFF_FFFF_FFFF
        try:
            m.write_virt(sp, struct.pack(f"<{len(words)}Q", *words))
        except GuestPageFault as exc:
            p.crash_stop(f"fatal error while creating a bounce frame at {exc.va:#x}", rip)
            return False
        if mask_events:
            self.set_upcall_mask(1)
        m.set_regs(rsp=sp, rflags=(rflags & ~(RFLAGS_CLEAR_ON_TRAP | clear_flags)) | RFLAGS_IF)
        p.jump(target)
        return True

    def deliver_trap(self, vector: int, error_code: int | None, cr2: int | None,
                     rip: int, user_cs_ss: tuple[int, int] | None = None,
                     uregs: tuple[int, int, int, bool] | None = None) -> bool:
        """Deliver exception ``vector`` through the guest's trap table. With no
        handler for it Xen prints "Unhandled: vec N" and crashes the domain
        (pv_inject_event, xen/arch/x86/pv/traps.c; create_bounce_frame's null
        bounce IP, x86_64/entry.S@stable-4.17): so does pvmon."""
        ent = self.trap_table.get(vector)
        if ent is None:
            self.b.p.crash_stop(f"no trap handler for vector {vector}: Xen crashes the domain "
                                "(unhandled exception)", rip)
            return False
        flags, _cs, addr = ent
        if vector == 14 and cr2 is not None:
            self.m.write_u64_phys(self._vcpu_info + E.VCPU_INFO["cr2"], cr2)
        return self.bounce(addr, error_code, bool(flags & TI_IF), rip=rip,
                           user_cs_ss=user_cs_ss, uregs=uregs)

    def software_interrupt(self, vector: int, next_rip: int) -> tuple[int, int | None, int]:
        """What Xen delivers for ``int $vector`` (the 2-byte ``CD ib``) ending at
        ``next_rip``: ``(vector, error code or None, rip)`` to hand to
        :meth:`deliver_trap`.

        The guest runs in ring 3 and Xen's IDT gives every vector DPL 0 except
        #BP and #OF (``set_swint_gate``: DPL 3, init_idt_traps in
        xen/arch/x86/traps.c@stable-4.17) and 0x80 (int80_direct_trap, DPL 3,
        pv_trap_init in pv/traps.c). So:

        * ``int $3``/``int $4`` reach the trap table's #BP/#OF handler with RIP
          after the instruction; the trap table's DPL is not checked (the
          comment in do_general_protection says so);
        * ``int $0x80`` goes straight to a registered 0x80 handler whatever its
          DPL (int80_direct_trap, x86_64/entry.S); with none it takes
          int80_slow_path: a #GP with error code (0x80 << 3) | 2 and RIP back at
          the instruction, which do_general_protection passes on as such;
        * any other vector is that #GP, (vector << 3) | 2 at the instruction,
          which do_general_protection turns into the guest's own vector (RIP
          after, no error code) when the trap table's DPL permits the current
          mode: at least 1 from the guest kernel, 3 from guest user mode
          (permit_softint, asm/x86_64/regs.h).
        """
        if vector in (E.TRAP_int3, E.TRAP_overflow):
            return vector, None, next_rip
        gp = (E.TRAP_gp_fault, (vector << 3) | E.X86_XEC_IDT, next_rip - 2)
        ent = self.trap_table.get(vector)
        if vector == E.LEGACY_SYSCALL_VECTOR:
            return (vector, None, next_rip) if ent is not None else gp
        dpl = ent[0] & E.TI_DPL_MASK if ent is not None else 0
        if dpl >= (3 if self.user_mode else 1):
            return vector, None, next_rip
        return gp

    def can_upcall(self) -> bool:
        # upcall_pending() and not upcall_mask(), inline (asked after every
        # hypercall): vcpu_info's evtchn_upcall_pending and _mask bytes
        info = self._vcpu_info
        mem = self.m.mem
        return bool(mem[info]) and not mem[info + 1] and 0 in self.callbacks

    def deliver_upcall(self) -> bool:
        """Enter the event callback if an event is pending and not masked."""
        if not self.can_upcall():
            return False
        return self.bounce(self.callbacks[0][0], mask_events=True)

    def syscall_from_user(self, ret_rip: int) -> bool:
        """A ``syscall`` executed in guest user mode (``ret_rip``: the address
        after it), as Xen's lstar_enter/switch_to_kernel take it
        (xen/arch/x86/x86_64/entry.S@stable-4.17): RCX and R11 hold the return
        RIP and RFLAGS (SYSCALL wrote them; the frame and the handler see
        them), the registered syscall callback is entered with DF cleared (the
        PV ABI's virtual SYSCALL_MASK) and events masked if it was registered
        with CALLBACKF_mask_events. With no callback (never registered, or
        registered at address 0) Xen injects #UD at the ``syscall`` through the
        trap table, not #GP.

        A ``syscall`` from 32-bit user code (compatibility mode) enters through
        cstar_enter, whose frame holds FLAT_USER_CS32/FLAT_USER_SS32 (lstar_enter's
        FLAT_KERNEL_CS64/FLAT_KERNEL_SS), and switch_to_kernel picks the syscall32
        callback for it, #UD if that is 0 (it does not fall back to the 64-bit
        one). Events are masked by VGCF_syscall_disables_events, which only the
        64-bit syscall callback's CALLBACKF_mask_events sets (callback.c keeps
        syscall32's flag for 32-bit PV guests, compat_syscall): so for both.
        An Intel CPU raises #UD for SYSCALL in compatibility mode before Xen sees
        it; the engine executes it as AMD CPUs do, and pvmon follows cstar_enter."""
        m = self.m
        rflags = m.reg("rflags")
        m.set_regs(rcx=ret_rip, r11=rflags)
        compat = not m.internals.code64()
        cb = self.callbacks.get(E.CALLBACKTYPE_syscall)
        mask = bool(cb is not None and cb[1] & E.CALLBACKF_mask_events)
        if compat:
            cb = self.callbacks.get(E.CALLBACKTYPE_syscall32)
            frame = (E.FLAT_USER_CS32, E.FLAT_USER_SS32)
        else:
            frame = (E.FLAT_KERNEL_CS64, E.FLAT_KERNEL_SS64)
        if cb is None or not cb[0]:
            return self.deliver_trap(E.TRAP_invalid_op, None, None, ret_rip - 2,
                                     user_cs_ss=frame)
        return self.bounce(cb[0], mask_events=mask, rip=ret_rip, clear_flags=RFLAGS_DF,
                           user_cs_ss=frame)

    def iret(self) -> int:
        """HYPERVISOR_iret: pop struct iret_context from the guest stack
        (do_iret, xen/arch/x86/pv/iret.c@stable-4.17) and return to it as
        restore_all_guest does (x86_64/entry.S@stable-4.17). Returns the
        context's RAX.

        * CS RPL 3 switches to user mode; do_iret forces RPL 3 on both
          selectors (``cs | 3``, ``ss | 3``) in either mode, and the IRETQ
          loads their descriptors: an iret that stays in kernel mode loads them
          for the kernel too (Linux's frames name 0xe030/0xe02b, the kernel's
          own 0xe033/0xe02b).
        * With VGCF_in_syscall and a canonical RIP, restore_all_guest returns
          by SYSRET, which loads the fixed selectors of Xen's MSR_STAR, not the
          frame's: 0xe023 (SYSRETL) if CS is FLAT_USER_CS32, else 0xe033, and
          SS 0xe02b.
        * A selector that names no usable descriptor (or a RIP the code
          segment cannot take) makes the IRETQ fault inside Xen; since Xen 4.7
          (commit d9b7ef209a, "drop failsafe callback invocation from
          assembly") iret_exit_to_guest's fixup is handle_exception on the
          guest frame, so the guest gets that exception (#GP/#NP/#SS with the
          selector, :meth:`Segments.iret_fault`) through its trap table as if
          raised at the iret's target: frame RIP, CS, SS and RSP the iret's,
          RFLAGS and the event mask as the iret set them, on the kernel stack
          when it was going to user mode (create_bounce_frame toggles back).
          Without a handler Xen crashes the domain, as for any exception.
          Before 4.7 the failsafe callback took it (:meth:`iret_fault`)."""
        m = self.m
        rsp, cur_cs, cur_ss = m.regs("rsp", "cs", "ss")
        try:
            raw = m.read_virt(rsp, E.IRET_CONTEXT_SIZE)
        except GuestPageFault:
            self.b.p.crash_stop("iret with an unreadable stack", self.b.p.cur_rip())
            return 0
        rax, r11, rcx, flags, rip, cs, rflags, sp, ss = struct.unpack("<9Q", raw)
        self.b.op = {"rip": rip, "cs": cs, "rflags": rflags, "rsp": sp, "flags": flags}
        to_user = (cs & 3) == 3 and not self.user_mode
        if to_user and not self.user_cr3:
            self.b.p.crash_stop("iret to user mode without user page tables", rip)
            return 0
        cs, ss = (cs | 3) & 0xFFFF, (ss | 3) & 0xFFFF
        fault = None
        if flags & E.VGCF_in_syscall and (rip >> 47) in (0, 0x1FFFF):
            # restore_all_guest's SYSRET: MSR_STAR's selectors, whatever the frame says
            cs = E.FLAT_USER_CS32 if cs == E.FLAT_USER_CS32 else E.FLAT_USER_CS64
            ss = E.FLAT_USER_SS64
        elif to_user or cs != cur_cs or ss != cur_ss:
            fault = self.segs.iret_fault(cs, ss, rip)
        if fault is None:
            if to_user:
                self._to_user(cs, ss)
            elif (cs != cur_cs or ss != cur_ss) and self.segs.xen_selectors:
                self.segs.to_kernel_frame(cs, ss)
        if self.architectural_iopl() and self.iopl != (rflags >> 12) & 3:
            self.iopl = (rflags >> 12) & 3        # do_iret (pv/iret.c@stable-4.17)
            self.iopl_changed()
        regs = {"rsp": sp, "rflags": (rflags & ~((3 << 12) | (1 << 17))) | RFLAGS_IF}
        if not flags & E.VGCF_in_syscall:
            regs.update(r11=r11, rcx=rcx)
        m.set_regs(**regs)
        self.set_upcall_mask(0 if rflags & RFLAGS_IF else 1)
        if fault is not None:
            self.iret_fault(fault, rip, (cs, ss, sp, to_user))
        else:
            self.b.p.jump(rip)
        return rax

    def iret_fault(self, fault: tuple[int, int], rip: int,
                   uregs: tuple[int, int, int, bool]) -> bool:
        """Deliver what the faulting IRETQ of an iret (``fault``: vector, error
        code; ``rip``, ``uregs``: its frame, as :meth:`bounce` takes it) gives
        the guest. Xen 4.7 and later: that exception through the trap table.
        Before (``iret_fault_to_guest`` absent: xen-3.4, xen-4.6) the .Lfx0
        fixup enters the failsafe callback (failsafe_callback, TBF_FAILSAFE;
        events masked if it was registered with CALLBACKF_mask_events), and
        with none registered create_bounce_frame crashes the domain
        (x86_64/entry.S@RELEASE-4.6.0). Returns False when the run stopped."""
        if "iret_fault_to_guest" in self.b.ver.capabilities:
            return self.deliver_trap(fault[0], fault[1], None, rip, uregs=uregs)
        cb = self.callbacks.get(E.CALLBACKTYPE_failsafe)
        if cb is None or not cb[0]:
            self.b.p.crash_stop(
                f"iret to a selector with no usable descriptor (vector {fault[0]}, error "
                f"{fault[1]:#x}) and no failsafe callback: Xen before 4.7 crashes the domain "
                "(create_bounce_frame_bad_bounce_ip)", rip)
            return False
        return self.bounce(cb[0], mask_events=bool(cb[1] & E.CALLBACKF_mask_events), rip=rip,
                           uregs=uregs, failsafe=True)

    # ----------------------------------------------------------- sysenter
    def sysenter(self, rip: int) -> bool:
        """A ``sysenter`` at ``rip`` (64-bit or compatibility mode; under Xen
        both the kernel and its processes run in ring 3, where it works).

        With pvmon's CPUID vendor (GenuineIntel) the CPU enters Xen's
        sysenter_entry (x86_64/entry.S@stable-4.17; MSR_IA32_SYSENTER_EIP set
        by subarch_percpu_traps_init, x86_64/traps.c): it knows neither the
        return address nor the stack, so the frame holds RIP 0, CS 3 (a ring-3
        null selector), RSP 0 and SS FLAT_USER_SS, with RCX and R11 as they
        are; create_bounce_frame enters the sysenter callback
        (CALLBACKTYPE_sysenter, pv/callback.c), events masked if it was
        registered with CALLBACKF_mask_events (sysenter_disables_events), DF
        kept. With no callback (address 0) the same frame goes to the trap
        table's #GP handler with error code 0 (sysenter_gpf). From kernel mode
        the frame is pushed below RSP 0, which Xen cannot write: the domain
        crashes (domain_crash_page_fault) unless the top of the address space
        is mapped. An AMD or Hygon CPU raises #UD for SYSENTER in long mode
        (AMD APM vol. 3), which do_invalid_op passes on at the instruction.
        Returns False when the run stopped."""
        policy = getattr(self.b.p, "policy", None)     # the dispatch's CPUID policy
        if policy is not None and policy[(0, 0)][1] != _VENDOR_INTEL_EBX:
            return self.deliver_trap(E.TRAP_invalid_op, None, None, rip)
        frame = (3, E.FLAT_USER_SS64, 0, self.user_mode)
        cb = self.callbacks.get(E.CALLBACKTYPE_sysenter)
        if cb is None or not cb[0]:
            return self.deliver_trap(E.TRAP_gp_fault, 0, None, 0, uregs=frame)
        return self.bounce(cb[0], mask_events=bool(cb[1] & E.CALLBACKF_mask_events), rip=0,
                           uregs=frame)


__all__ = ["PvVcpu", "Stop"]
