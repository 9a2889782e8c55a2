"""The hypercalls a PVH guest makes that a PV guest does not: ``hvm_op``
parameters and the upcall vector, and the ``memory_op`` forms of an
auto-translated guest (add_to_physmap, memory_map). A mixin of
:class:`~pvmon.backends.xen.backend.XenBackend`, active when it serves a PVH
domain (``self.mode == "pvh"``); it uses the backend's ``vcpu`` (a
:class:`~pvmon.backends.xen.pvh.vcpu.PvhVcpu`), ``layout``, ``events``,
``_read`` and ``_write``.

Sources: xen/include/public/hvm/hvm_op.h, hvm/params.h, memory.h and
xen/arch/x86/hvm/hvm.c (hvmop_set_param, hvmop_get_param,
hvm_allow_set_param/get_param), xen/common/memory.c (xenmem_add_to_physmap),
all stable-4.17.
"""

from __future__ import annotations

import struct

from pvmon.backends.xen import abi
from pvmon.engine.machine import PAGE_SIZE

E = abi
#: Parameters a guest may set on itself (hvm_allow_set_param, hvm.c@stable-4.17):
#: CALLBACK_IRQ, VM86_TSS, ACPI_IOPORTS_LOCATION, VM_GENERATION_ID_ADDR,
#: STORE_EVTCHN, CONSOLE_EVTCHN, X87_FIP_WIDTH, VM86_TSS_SIZED; these answer
#: -EINVAL: PAE_ENABLED, DM_DOMAIN, the MEMORY_EVENT_* (8, 20-23, 25, 30),
#: NESTEDHVM, BUFIOREQ_EVTCHN; every other one -EPERM.
_GUEST_SETTABLE = frozenset({0, 15, 19, 34, 2, 18, 36, 37})
_SET_EINVAL = frozenset({4, 13, 20, 21, 22, 23, 24, 25, 26, 30})


class PvhHypercalls:
    """hvm_op and the auto-translated memory_op sub-ops of one PVH domain."""

    def init_hvm_params(self) -> None:
        """The parameters the toolstack sets before the guest starts
        (libxl: store and console rings and their event channels)."""
        lay = self.layout
        self.hvm_params = {abi.HVM_PARAM_STORE_PFN: lay.store_pfn,
                           abi.HVM_PARAM_STORE_EVTCHN: lay.store_evtchn,
                           abi.HVM_PARAM_CONSOLE_PFN: lay.console_pfn,
                           abi.HVM_PARAM_CONSOLE_EVTCHN: lay.console_evtchn}

    def hc_hvm_op(self, cmd, arg, *_):
        """HVMOP_set_param / get_param {u16 domid, pad, u32 index, u64 value}
        and HVMOP_set_evtchn_upcall_vector {u32 vcpu, u8 vector}; a PV domain
        gets -ENOSYS for all of them (do_hvm_op checks is_hvm_domain)."""
        self.op = {"cmd": abi.HVMOP_CMDS.get(cmd, cmd)}
        if self.mode != "pvh":
            return -E.ENOSYS
        if cmd in (abi.HVMOP_set_param, abi.HVMOP_get_param):
            dom, index, value = struct.unpack("<H2xIQ", self._read(arg, 16))
            self.op.update(param=abi.HVM_PARAMS.get(index, index))
            if dom not in (abi.DOMID_SELF, self.domid):
                return -E.ESRCH
            if index >= abi.HVM_NR_PARAMS:
                return -E.EINVAL
            if cmd == abi.HVMOP_get_param:
                value = self.hvm_params.get(index, 0)
                self.op["value"] = value
                self._write(arg + 8, struct.pack("<Q", value))
                return 0
            self.op["value"] = value
            if index in _SET_EINVAL:
                return -E.EINVAL
            if index not in _GUEST_SETTABLE:
                return -E.EPERM
            if index == abi.HVM_PARAM_CALLBACK_IRQ:
                typ, vec = value >> 56, value & 0xFF
                if typ == abi.HVM_PARAM_CALLBACK_TYPE_VECTOR:
                    # no range check (hvm_set_callback_via, irq.c@stable-4.17)
                    self.vcpu.callback_vector = vec
                elif not self.vcpu.upcall_vector_per_vcpu:
                    # GSI / PCI INTx callbacks need the emulated IO-APIC and
                    # platform PCI device a PVH domain has not got: accepted, and
                    # no upcall is delivered (hvm_set_callback_via)
                    self.vcpu.callback_vector = None
            self.hvm_params[index] = value
            return 0
        if cmd == abi.HVMOP_set_evtchn_upcall_vector:
            # {u32 vcpu, u8 vector} (hvmop_set_evtchn_upcall_vector, hvm.c@stable-4.17;
            # the call exists in every version pvmon models with PVH; whether the
            # guest is told it also works with PIRQs is the CPUID bit of
            # capability hvm_upcall_vector)
            vcpu, vector = struct.unpack("<IB", self._read(arg, 5))
            self.op.update(vcpu=vcpu, vector=vector)
            if vector < 0x10:
                return -E.EINVAL
            if vcpu != 0:
                return -E.ENOENT
            self.vcpu.set_upcall_vector(vector)
            return 0
        if cmd == 9:   # pagetable_dying {u16 domid, pad, u64 gpa}
            dom, gpa = struct.unpack("<H6xQ", self._read(arg, 16))
            self.op.update(gpa=gpa)
            if dom not in (abi.DOMID_SELF, self.domid):
                return -E.ESRCH
            # a hint for shadow paging only; with HAP Xen answers -EINVAL
            # (do_hvm_op HVMOP_pagetable_dying, hvm.c@stable-4.17)
            return -E.EINVAL
        return -E.ENOSYS

    #: grant_table_op sub-ops an HVM guest may use (hvm_grant_table_op,
    #: xen/arch/x86/hvm/hypercall.c@stable-4.17); the rest are -ENOSYS.
    HVM_GNTTAB_OPS = frozenset({"query_size", "setup_table", "set_version", "get_version",
                                "copy", "map_grant_ref", "unmap_grant_ref", "swap_grant_ref"})

    def hvm_refuses(self, name: str, args: tuple) -> int | None:
        """The errno Xen's HVM wrappers answer before the common handler runs
        for a PVH guest's call ``name`` (None: the handler runs):
        memory_op machphys_mapping and machine_memory_map -ENOSYS
        (hvm_memory_op); grant_table_op outside :data:`HVM_GNTTAB_OPS` -ENOSYS;
        every physdev_op -ENOSYS for a domU without PIRQs (hvm_physdev_op)."""
        if name == "memory_op" and args[0] & 0x3F in (10, 12):
            return -E.ENOSYS
        if name == "grant_table_op":
            sub = abi.GNTTABOP_CMDS.get(args[0] & abi.GNTTABOP_CMD_MASK)
            return None if sub in self.HVM_GNTTAB_OPS else -E.ENOSYS
        if name == "physdev_op":
            return -E.ENOSYS
        return None

    def hvm_table(self, table: dict) -> dict:
        """The hypercall table of a PVH domain, made once at attach from the
        PV one: only the hvm64 calls (:data:`abi.HVM64_HYPERCALLS`), with
        Xen's HVM wrappers in front of memory_op, grant_table_op and physdev_op
        (:meth:`hvm_refuses`) and mmuext_op as Xen answers an HVM domain
        (:meth:`hc_mmuext_op_hvm`)."""
        out = {}
        for nr, fn in table.items():
            name = abi.HYPERCALLS.get(nr)
            if name not in abi.HVM64_HYPERCALLS:
                continue
            if name == "mmuext_op":
                fn = lambda ops, count, done, dom, *_: self.hc_mmuext_op_hvm(ops, count, done, dom)
            elif name in ("memory_op", "grant_table_op", "physdev_op"):
                fn = self._hvm_wrapped(name, fn)
            out[nr] = fn
        return out

    def _hvm_wrapped(self, name: str, fn):
        def wrapped(*args):
            rc = self.hvm_refuses(name, args)
            if rc is None:
                return fn(*args)
            self.op = {"cmd": abi.SUBOPS.get(name, {}).get(
                args[0] & 0x3F if name == "memory_op" else args[0], args[0])}
            return rc
        return wrapped

    def hc_mmuext_op_hvm(self, ops: int, count: int, done_ptr: int, foreigndom: int) -> int:
        """mmuext_op from a PVH guest (do_mmuext_op, xen/arch/x86/mm.c@stable-4.17;
        get_pg_owner, xen/common/page_alloc.c). The page owner is checked before
        any entry is read, and it must be a PV domain (``if ( !is_pv_domain(pg_owner)
        ) return -EINVAL``): DOMID_SELF (the PVH domain itself), DOMID_IO and
        DOMID_XEN (system domains) are -EINVAL; the caller's own id is -ESRCH
        (get_pg_owner: "Cannot specify itself as foreign domain"); domain 0, a PV
        domain, is -EPERM (xsm_mmuext_op, XSM_TARGET: a domU has no privilege over
        it); any other id -ESRCH (no such domain). Nothing is done and ``done_ptr``
        is not written. (The pin/unpin-only branch for an HVM caller, ``if (
        is_hvm_domain(currd) )``, is reached only with a PV page owner, which a
        domU never has. Real Xen 4.17.7 answered -EINVAL to a PVH dom0's own
        MMUEXT_SET_LDT and PIN_L1_TABLE: docs/xen-oracle.md, difference 26.)"""
        foreigndom &= 0xFFFF
        self.op = {"count": count & ~abi.MMU_UPDATE_PREEMPTED, "foreigndom": foreigndom}
        if foreigndom in (abi.DOMID_SELF, abi.DOMID_IO, abi.DOMID_XEN):
            return -E.EINVAL
        if foreigndom == self.domid:
            return -E.ESRCH
        if foreigndom == 0:
            return -E.EPERM
        return -E.ESRCH

    def add_to_physmap(self, arg: int) -> int:
        """XENMEM_add_to_physmap {u16 domid, u16 size, u32 space, u64 idx,
        u64 gpfn}: put shared_info (space 0) or grant frame ``idx`` (space 1)
        at guest frame ``gpfn``. The frame's old contents move with it, as
        the guest expects of Xen's page (xenmem_add_to_physmap_one)."""
        dom, _size, space, idx, gpfn = struct.unpack("<HHIQQ", self._read(arg, 24))
        self.op.update(space=abi.XENMAPSPACE.get(space, space), idx=idx, gpfn=gpfn)
        if dom not in (abi.DOMID_SELF, self.domid):
            return -E.ESRCH
        if self.mode != "pvh":
            return -E.EINVAL     # a PV domain is not translated (xenmem_add_to_physmap)
        ma = gpfn * PAGE_SIZE
        if not 0 <= gpfn < self.layout.nr_pages and not (space == 1 and gpfn < 1 << 40):
            return -E.EINVAL
        if space == 0:
            if idx != 0:
                return -E.EINVAL
            self.move_shared_info(ma)
            return 0
        if space == 1:
            status = bool(idx & abi.XENMAPIDX_grant_table_status)
            frame = idx & ~abi.XENMAPIDX_grant_table_status
            return self.gnttab.map_frame_at(frame, status, ma)
        return -E.EINVAL if space in abi.XENMAPSPACE else -E.ENOSYS

    def move_shared_info(self, ma: int) -> None:
        """shared_info (with vcpu_info[0] at its start, unless registered
        elsewhere) now lives at machine address ``ma``."""
        old = self.events.si
        if old == ma:
            return
        page = self.m.read_phys(old, PAGE_SIZE)
        self.m.write_phys_data(ma, page)
        self.events.si = ma
        if self.vcpu._vcpu_info == old:
            self.vcpu._vcpu_info = ma
        self.shared_info_ma = ma
