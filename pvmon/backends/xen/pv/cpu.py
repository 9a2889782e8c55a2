"""The PV vCPU's hypercalls: a Xen PV guest cannot load an IDT, a GDT, a
kernel stack or segment bases itself, nor return from an exception with
``iret``; it asks Xen (set_trap_table, set_callbacks, callback_op,
stack_switch, fpu_taskswitch, set_segment_base, set_debugreg, get_debugreg,
set_gdt, update_descriptor, iret, nmi_op). HVM-style guests (PVH) do these
natively.

:class:`PvCpu` is a mixin of :class:`~pvmon.backends.xen.backend.XenBackend`
(its ``hc_*`` methods are that backend's hypercalls): it uses the backend's
``vcpu`` (a :class:`~pvmon.backends.xen.pv.vcpu.PvVcpu`), ``guest``, ``op``,
``_read``, ``_valid_mfn`` and ``types`` (the domain's
:class:`~pvmon.backends.xen.pv.pagetype.PageTypes`).
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi
from pvmon.backends.xen.pv import pagetype as PT

E = abi


class PvCpu:
    """The PV vCPU hypercalls of one domain."""

    def hc_set_trap_table(self, traps, *_):
        """Load entries into the virtual IDT until one with address 0; a NULL
        handle clears it. A non-canonical handler address stops the load with
        -EINVAL, the entries before it staying loaded (do_set_trap_table,
        xen/arch/x86/pv/callback.c@stable-4.17)."""
        if traps == 0:
            self.vcpu.trap_table.clear()
            return 0
        n = 0
        for i in range(256):
            vec, flags, cs, addr = struct.unpack("<BBH4xQ", self._read(traps + i * 16, 16))
            if addr == 0:
                break
            if not abi.is_canonical(addr):
                self.op = {"entries": n}
                return -E.EINVAL
            self.vcpu.trap_table[vec] = (flags, cs, addr)
            n += 1
        self.op = {"entries": n}
        return 0

    def hc_set_callbacks(self, event, failsafe, syscall, *_):
        """The three x86-64 callbacks at once, each registered with flags 0
        (so failsafe and syscall no longer mask events); a non-canonical
        address leaves that callback as it was, and the call still returns 0
        (do_set_callbacks ignores register_guest_callback's -EINVAL,
        xen/arch/x86/pv/callback.c@stable-4.17)."""
        for typ, addr in ((E.CALLBACKTYPE_event, event), (E.CALLBACKTYPE_failsafe, failsafe),
                          (E.CALLBACKTYPE_syscall, syscall)):
            self._register_callback(typ, 0, addr)
        return 0

    def _register_callback(self, typ: int, flags: int, addr: int) -> int:
        """register_guest_callback (xen/arch/x86/pv/callback.c@stable-4.17) for a
        64-bit PV vCPU: the address must be canonical (-EINVAL, checked before
        the type); event, failsafe, syscall, syscall32 and sysenter store their
        entry point (address 0 included: a syscall then raises #UD) with
        CALLBACKF_mask_events; nmi fills the trap table's NMI slot with events
        masked on entry (register_guest_nmi_callback: TI_SET_IF); any other
        type, sysenter_deprecated (3) among them, is -ENOSYS."""
        if not abi.is_canonical(addr):
            return -E.EINVAL
        if typ == E.CALLBACKTYPE_nmi:
            self.vcpu.trap_table[E.TRAP_nmi] = (E.TI_IF, E.FLAT_KERNEL_CS64, addr)
            return 0
        if typ not in abi.CALLBACKTYPES:
            return -E.ENOSYS
        self.vcpu.callbacks[typ] = (addr, flags & E.CALLBACKF_mask_events)
        return 0

    def hc_callback_op(self, cmd, arg, *_):
        """CALLBACKOP_register / CALLBACKOP_unregister (do_callback_op,
        xen/arch/x86/pv/callback.c@stable-4.17). Only the NMI callback can be
        unregistered (0); the other known types answer -EINVAL, unknown types
        and commands -ENOSYS."""
        self.op = {"cmd": abi.CALLBACKOP_CMDS.get(cmd, cmd)}
        if cmd == E.CALLBACKOP_register:
            typ, flags, addr = struct.unpack(
                "<HH4xQ", self._read(arg, E.CALLBACK_REGISTER_SIZE))
            self.op.update(type=abi.CALLBACKTYPES.get(typ, typ), address=addr)
            return self._register_callback(typ, flags, addr)
        if cmd == E.CALLBACKOP_unregister:
            typ = struct.unpack("<H2x", self._read(arg, E.CALLBACK_UNREGISTER_SIZE))[0]
            self.op.update(type=abi.CALLBACKTYPES.get(typ, typ))
            if typ == E.CALLBACKTYPE_nmi:
                self.vcpu.trap_table.pop(E.TRAP_nmi, None)   # unregister_guest_nmi_callback
                return 0
            return -E.EINVAL if typ in abi.CALLBACKTYPES else -E.ENOSYS
        return -E.ENOSYS

    def hc_stack_switch(self, ss, sp, *_):
        self.vcpu.kernel_ss, self.vcpu.kernel_sp = ss, sp
        self.op = {"ss": ss, "sp": sp}
        return 0

    def hc_fpu_taskswitch(self, set_, *_):
        self.vcpu.set_ts(bool(set_))
        return 0

    def hc_set_segment_base(self, which, base, *_):
        self.op = {"which": abi.SEGBASE_NAMES.get(which, which), "base": base}
        return self.vcpu.set_segment_base(which, base)

    def hc_set_debugreg(self, reg, value, *_):
        """Write a debug register as Xen 4.17 validates it (do_set_debugreg:
        ``reg`` is a C int, so only its low 32 bits count;
        :meth:`~pvmon.backends.xen.pv.vcpu.PvVcpu.set_debugreg`)."""
        return self.vcpu.set_debugreg(reg & 0xFFFF_FFFF, value)

    def hc_get_debugreg(self, reg, *_):
        """Read a debug register as Xen 4.17 answers (do_get_debugreg;
        :meth:`~pvmon.backends.xen.pv.vcpu.PvVcpu.get_debugreg`)."""
        return self.vcpu.get_debugreg(reg & 0xFFFF_FFFF)

    def hc_set_gdt(self, frame_list, entries, *_):
        """Load the vCPU's GDT (do_set_gdt, pv_set_gdt:
        xen/arch/x86/pv/descriptor-tables.c@stable-4.17): more than
        FIRST_RESERVED_GDT_ENTRY (14 pages') entries -EINVAL; each frame must be
        the domain's and take a descriptor-page type reference
        (get_page_and_type(PGT_seg_desc_page)), which a frame mapped writable
        or holding another type (a page table) refuses and a frame whose
        descriptors fail check_descriptor fails validation: -EINVAL, the
        references taken so far dropped. Then the old GDT's references are
        dropped (pv_destroy_gdt) and the new one is loaded."""
        if entries > PT.FIRST_RESERVED_GDT_ENTRY:
            return -E.EINVAL
        nframes = -(-entries // 512)
        frames = struct.unpack(f"<{nframes}Q", self._read(frame_list, 8 * nframes)) \
            if nframes else ()
        for f in frames:
            if not self._valid_mfn(f):
                return -E.EINVAL
        self.op = {"entries": entries, "frames": list(frames)}
        rc = self.set_gdt_frames(self.vcpu, list(frames))
        if rc:
            return rc
        self.vcpu.load_gdt(list(frames), entries)
        return 0

    def set_gdt_frames(self, v, frames: list[int]) -> int:
        """pv_set_gdt's references for vCPU ``v``: a PGT_seg_desc_page type
        reference on each of ``frames`` (frames of the domain), then the old
        GDT's dropped; on a refusal the ones taken are dropped and the old GDT
        kept. 0 or -EINVAL."""
        types = self.types
        for i, f in enumerate(frames):
            if types.get_type(f, PT.SEG_DESC):
                for g in frames[:i]:
                    types.put_type(g)
                return -E.EINVAL
        for g in v.gdt_frames:
            types.put_type(g)
        return 0

    def hc_update_descriptor(self, ma, desc, *_):
        """Write one descriptor (do_update_descriptor,
        xen/arch/x86/pv/descriptor-tables.c@stable-4.17): ``ma`` must be
        8-byte aligned and the descriptor pass check_descriptor (-EINVAL), which
        also decides what is written (a present DPL 0-2 becomes 3, a call
        gate's DPL moves into its selector's RPL); the frame must be the
        domain's and either a descriptor page (a loaded GDT frame) or able to
        take a writable type (a page table cannot: -EINVAL)."""
        fixed = PT.check_descriptor(desc)
        if ma & 7 or fixed is None or not self._valid_mfn(ma >> 12):
            return -E.EINVAL
        mfn = ma >> 12
        if self.types.type_of(mfn) != PT.SEG_DESC and self.types.is_page_table(mfn):
            return -E.EINVAL       # get_page_type(page, PGT_writable_page) fails
        self.op = {"ma": ma, "desc": desc}
        self.guest.write_machine(ma, struct.pack("<Q", fixed))
        self.vcpu.descriptor_written(ma, fixed)
        return 0

    def hc_iret(self, *_):
        return self.vcpu.iret()

    def hc_nmi_op(self, cmd, arg, *_):
        """XENNMI_register_callback {u64 handler_address; u64 pad} and
        XENNMI_unregister_callback: the same NMI slot as CALLBACKTYPE_nmi
        (do_nmi_op, xen/arch/x86/pv/callback.c@stable-4.17); other commands -ENOSYS."""
        self.op = {"cmd": abi.XENNMI_CMDS.get(cmd, cmd)}
        if cmd == E.XENNMI_register_callback:
            addr = struct.unpack("<Q8x", self._read(arg, 16))[0]
            self.op["address"] = addr
            return self._register_callback(E.CALLBACKTYPE_nmi, 0, addr)
        if cmd == E.XENNMI_unregister_callback:
            self.vcpu.trap_table.pop(E.TRAP_nmi, None)
            return 0
        return -E.ENOSYS
