"""VMware's VMI ROM (API 3.0) as a pvmon backend, ``vmi-3.0``.

A call reaches :meth:`VmiBackend.call` with regparm(3) arguments (EAX, EDX,
ECX, then the stack: [ESP+4], [ESP+8] at the ROM entry) and answers in EAX or
EDX:EAX (:attr:`VmiBackend.out`: the registers the call sets). Semantics from
the facts sheet, section 1.5-1.9 ([VMIH], [VMIC], [VMIT], [VMICLK], [SPEC]).
The virtual interrupt flag is the ROM's (0x200 = enabled); the CPU's own IF
stays set. Time: GetCycleFrequency is 1e9, so "cycles" are ns of pvmon's
virtual time ([HECHT]: a hypervisor may do so); alarms take an *absolute*
counter value and fire IRQ0 (vector 0x20) or the local APIC timer vector.
VMI calls return no errors: a call number with no entry in the table is
refused by ``get_reloc`` (relocation NONE); a call into the ROM where no entry
is stops the run as the guest's crash.
"""

from __future__ import annotations

import struct
from typing import Any

from pvmon.backends.base import Backend, GuestFault
from pvmon.backends.vmi import abi
from pvmon.platforms.hvm.lapic import LVT_MASKED, TIMER_MODE_MASK
from pvmon.platforms.hvm.lapic import LVT_TIMER as APIC_LVTT

U32 = 0xFFFFFFFF
#: The serial console the reference guest writes (COM1 THR; LSR reads "empty").
COM1, COM1_LSR = 0x3F8, 0x3FD


class _Events:
    def __init__(self) -> None:
        self.raised: list[int] = []


class _Console:
    def input_consumed(self) -> bool:
        return True


class VmiVcpu:
    """The virtual CPU as the ROM sees it: the virtual IF, the alarm."""

    user_mode = False

    def __init__(self, b: VmiBackend) -> None:
        self.b = b
        self.vif = 0                       # interrupts start disabled
        self.deadline: int | None = None  # absolute ns of the armed alarm
        self.period = 0
        self.alarm_flags = 0
        #: the local APIC's LVT timer entry as APICWrite set it (reset: masked,
        #: Intel SDM vol. 3 10.12.5.1); an alarm wired to LVTT fires its vector
        self.lvtt = LVT_MASKED
        self.alarm_pending = False              # the alarm fired, not yet taken
        self.halted = False
        self.blocked_ns = 0

    def upcall_mask(self) -> int:
        return 0 if self.vif else 1

    def upcall_pending(self) -> bool:
        return self.alarm_pending

    def can_upcall(self) -> bool:
        return self.alarm_pending and bool(self.vif)

    def deliver_upcall(self) -> bool:
        return False

    def alarm_vector(self) -> int | None:
        """The vector the alarm raises: IRQ0's (0x20), or with
        ``VMI_ALARM_WIRED_LVTT`` the LVT timer entry's (None while it is
        masked) ([VMIT] vmi_time.h; [VMICLK] vmi_time_bsp_init)."""
        if self.alarm_flags & abi.ALARM_WIRED_LVTT:
            return None if self.lvtt & LVT_MASKED else self.lvtt & 0xFF
        return abi.IRQ0_VECTOR

    def due_vector(self) -> int | None:
        if self.alarm_pending and self.vif:
            return self.alarm_vector()
        return None

    def fire_timers(self) -> bool:
        now = self.b.m.clock.now_ns
        dl = self.deadline
        if dl is None or dl > now:
            return False
        # a masked LVT timer entry drops the interrupt (SDM vol. 3 10.5.1)
        self.alarm_pending = self.alarm_pending or self.alarm_vector() is not None
        if self.period:
            # periodic: the next expiry after now (missed periods coalesce) [VMIT]
            n = (now - dl) // self.period + 1
            self.deadline = dl + n * self.period
        else:
            self.deadline = None
        return True

    def next_deadline(self) -> int | None:
        return self.deadline

    def idle_until(self, deadline: int) -> None:
        clock = self.b.m.clock
        if deadline > clock.now_ns:
            self.blocked_ns += deadline - clock.now_ns
            clock.advance_to(deadline)
        self.fire_timers()

    def deliver_trap(self, vector, error_code, cr2, rip) -> bool:
        return False

    def software_interrupt(self, vector: int, next_rip: int):
        return vector, None, next_rip

    def syscall_from_user(self, ret_rip: int) -> bool:
        return False


class VmiBackend(Backend):
    """The VMI 3.0 ROM."""

    abi = "vmi"
    CAPABILITIES = frozenset()

    def __init__(self, name: str = "vmi-3.0", version: str = "3.0") -> None:
        self.name, self.version = name, version
        self.ver = None
        self.hypercall_page = None
        self.op: dict = {}
        self.unsupported: dict[str, int] = {}
        self.console_out = lambda ch, data: None
        self.events = _Events()
        self.console = _Console()
        self.pinned: dict[int, int] = {}
        self.out: dict[str, int] = {}
        self.lazy = 0
        self.ldt = self.tr = 0
        self.dr = [0] * 8
        self.linear: dict[int, tuple[int, int, int]] = {}
        self.wallclock_base_ns = 1_500_000_000 * 10**9
        self.kernel_stack = (0, 0)

    def describe(self) -> dict:
        return {"name": self.name, "abi": self.abi, "version": self.version, "base": None,
                "differences": [{
                    "what": "VMI API 3.0 (Linux 2.6.21-2.6.36): option ROM at 0xC8000 "
                            "('cVmi', GPL v2 license, vmi_init/get_reloc), regparm(3) calls; "
                            "cycles are ns (GetCycleFrequency 1e9); the 2006 API 2.0 "
                            "proposal's numbering and deferred-call model are not offered",
                    "source": "arch/x86/include/asm/vmi.h, arch/x86/kernel/vmi_32.c, "
                              "vmi_time.h (Linux 2.6.3x)"}, {
                    "what": "ROM profile vmi-2.0 declares the March 2006 proposal's ROM rule: "
                            "scan C8000h-DFFFFh in 2 KiB steps, byte sum 0, header API 13.0, "
                            "32-byte call slots, 85 calls; pvmon's ROM passes that scan and "
                            "checksum and a 2006 guest refuses it only for its API version "
                            "(pvmon/backends/vmi/profiles.py, docs/vmi.md)",
                    "source": "VMI Interface Proposal Part 4 and RFC patch 3/24, LKML "
                              "2006-03-13 (<4415CE1C.1060608@vmware.com>)"}]}

    def attach(self, machine: Any, layout: Any, guest, platform, memory_bytes: int,
               name: str) -> None:
        self.m, self.layout, self.g, self.p = machine, layout, guest, platform
        self.ram = memory_bytes
        self.vcpu = VmiVcpu(self)

    def call_name(self, nr: int) -> str:
        return abi.hypercall_name(nr)

    # ------------------------------------------------------------------ call
    def call(self, nr: int, args: tuple[int, ...]) -> int:
        """Call ``nr`` with (EAX, EDX, ECX, [ESP+4], [ESP+8]). Returns EAX;
        :attr:`out` holds every register the call sets."""
        self.op = {}
        self.out = {}
        fn = _CALLS.get(nr)
        if fn is None:
            name = abi.hypercall_name(nr)
            self.unsupported[name] = self.unsupported.get(name, 0) + 1
            self.p.crash_stop(f"VMI call {nr} has no entry in the ROM", self.p.cur_rip())
            return 0
        try:
            fn(self, *args)
        except GuestFault as f:
            self.p.crash_stop(f"VMI {abi.hypercall_name(nr)}: bad pointer {f.address:#x}",
                              self.p.cur_rip())
        return self.out.get("eax", args[0] if args else 0)

    def _uc(self):
        return self.m.uc

    def _reg(self, name: str) -> int:
        from unicorn import x86_const as x86
        return self.m.uc.reg_read(getattr(x86, f"UC_X86_REG_{name.upper()}")) & U32

    def _set(self, name: str, value: int) -> None:
        from unicorn import x86_const as x86
        self.m.uc.reg_write(getattr(x86, f"UC_X86_REG_{name.upper()}"), value & U32)

    def _ret64(self, v: int) -> None:
        self.out = {"eax": v & U32, "edx": (v >> 32) & U32}

    # the calls -------------------------------------------------------------
    def _cpuid(self, eax, edx, ecx, *_):
        from pvmon.platforms.cpuid import lookup
        a, b, c, d = lookup(self.p.policy, eax, ecx)
        self.op = {"leaf": eax, "sub": ecx}
        self.out = {"eax": a, "ebx": b, "ecx": c, "edx": d}

    def _wrmsr(self, eax, edx, ecx, *_):
        self.op = {"msr": ecx, "val": (edx << 32) | eax}

    def _rdmsr(self, eax, edx, ecx, *_):
        self.op = {"msr": ecx}
        v = self.m.clock.read_tsc() if ecx == 0x10 else 0
        self._ret64(v)

    def _desc_ptr(self, eax) -> tuple[int, int]:
        raw = self.p.read_virt(eax, 6)
        limit, base = struct.unpack("<HI", raw)
        return limit, base

    def _set_gdt(self, eax, *_):
        from unicorn import x86_const as x86
        limit, base = self._desc_ptr(eax)
        self.op = {"base": base, "limit": limit}
        self.m.uc.reg_write(x86.UC_X86_REG_GDTR, (0, base, limit, 0))

    def _set_idt(self, eax, *_):
        from unicorn import x86_const as x86
        limit, base = self._desc_ptr(eax)
        self.op = {"base": base, "limit": limit}
        self.m.uc.reg_write(x86.UC_X86_REG_IDTR, (0, base, limit, 0))

    def _get_dt(self, reg: str, eax: int) -> None:
        from unicorn import x86_const as x86
        _s, base, limit, _f = self.m.uc.reg_read(getattr(x86, f"UC_X86_REG_{reg}"))
        self.p.write_virt(eax, struct.pack("<HI", limit, base))
        self.op = {"base": base, "limit": limit}

    def _get_gdt(self, eax, *_):
        self._get_dt("GDTR", eax)

    def _get_idt(self, eax, *_):
        self._get_dt("IDTR", eax)

    def _set_ldt(self, eax, *_):
        self.ldt = eax & 0xFFFF
        self.op = {"sel": self.ldt}

    def _set_tr(self, eax, *_):
        self.tr = eax & 0xFFFF
        self.op = {"sel": self.tr}

    def _get_ldt(self, *_):
        self.out = {"eax": self.ldt}

    def _get_tr(self, *_):
        self.out = {"eax": self.tr}

    def _write_entry(self, eax, edx, ecx, hi, *_):
        """Write{GDT,LDT,IDT}Entry(table base, index, low, high) [VMIC]."""
        self.op = {"base": eax, "index": edx, "desc": ecx | (hi << 32)}
        self.p.write_virt(eax + 8 * edx, struct.pack("<II", ecx, hi))

    def _update_kernel_stack(self, eax, edx, *_):
        self.kernel_stack = (eax, edx)
        self.op = {"ss": eax, "esp0": edx}

    def _set_cr(self, n: int):
        def f(self, eax, *_):
            self.op = {"cr": n, "val": eax}
            if n == 3:
                self.m.write_cr3(eax)
            else:
                self._set(f"cr{n}", eax)
        return f

    def _get_cr(self, n: int):
        def f(self, *_):
            self.out = {"eax": self._reg(f"cr{n}")}
        return f

    def _nop(self, *_):
        pass

    def _set_dr(self, eax, edx, *_):
        self.dr[eax & 7] = edx
        self.op = {"dr": eax, "val": edx}

    def _get_dr(self, eax, *_):
        self.out = {"eax": self.dr[eax & 7]}

    def _rdpmc(self, *_):
        self._ret64(0)

    def _rdtsc(self, *_):
        self._ret64(self.m.clock.read_tsc())

    def _clts(self, *_):
        self._set("cr0", self._reg("cr0") & ~8)

    def _enable(self, *_):
        self.vcpu.vif = abi.X86_EFLAGS_IF
        self.out = {}

    def _disable(self, *_):
        self.vcpu.vif = 0

    def _get_mask(self, *_):
        self.out = {"eax": self.vcpu.vif}

    def _set_mask(self, eax, *_):
        self.vcpu.vif = eax & abi.X86_EFLAGS_IF

    def _iret(self, *_):
        """IRET: the frame's EFLAGS.IF becomes the virtual IF; the ROM's own
        ``iret`` follows (ring 0: the CPU's IF comes back from the frame)."""
        esp = self._reg("esp")
        fl = struct.unpack("<I", self.p.read_virt(esp + 8, 4))[0]
        self.vcpu.vif = fl & abi.X86_EFLAGS_IF
        self.op = {"eflags": fl}

    def _halt(self, *_):
        """Halt: an interruptible halt, IF treated as enabled [SPEC]."""
        v = self.vcpu
        v.vif = abi.X86_EFLAGS_IF
        if v.alarm_pending:
            return
        if v.deadline is None:
            self.p.stuck("Halt with no alarm armed and no interrupt pending")
            return
        v.idle_until(v.deadline)

    def _reboot(self, eax, *_):
        self.op = {"hard": bool(eax)}
        self.p.end_run_shutdown("Reboot", 1)

    def _shutdown(self, *_):
        self.p.end_run_shutdown("Shutdown", 0)

    def _set_pxe(self, eax, edx, ecx, *_):
        """SetPxE(pte value, pte pointer (virtual), flags)."""
        self.op = {"pte": eax, "ptr": edx, "flags": ecx}
        self.p.write_virt(edx, struct.pack("<I", eax))
        self.m.flush_tlb()

    def _set_pxe_long(self, eax, edx, ecx, flags, *_):
        self.op = {"pte": eax | (edx << 32), "ptr": ecx, "flags": flags}
        self.p.write_virt(ecx, struct.pack("<II", eax, edx))
        self.m.flush_tlb()

    def _update_pxe(self, eax, edx, *_):
        self.op = {"ptr": eax, "flags": edx}
        self.m.flush_tlb()

    def _ident(self, eax, *_):
        self.out = {"eax": eax}

    def _allocate(self, eax, edx, ecx, start, count, *_):
        self.op = {"pfn": eax, "flags": edx, "clone": ecx, "start": start, "count": count}
        self.pinned[eax] = edx

    def _release(self, eax, edx, *_):
        self.op = {"pfn": eax, "flags": edx}
        self.pinned.pop(eax, None)

    def _inval(self, eax, *_):
        self.op = {"va": eax}
        self.m.flush_tlb()

    def _flush(self, eax, *_):
        self.op = {"flags": eax}
        self.m.flush_tlb()

    def _linear(self, eax, edx, ecx, pfn, *_):
        self.op = {"slot": eax, "va": edx, "pages": ecx, "pfn": pfn}
        self.linear[eax & 3] = (edx, ecx, pfn)

    def _iopl(self, eax, *_):
        self.op = {"mask": eax}
        fl = self._reg("eflags")
        self._set("eflags", (fl & ~0x3000) | (eax & 0x3000))

    def _apic_write(self, eax, edx, *_):
        """APICWrite(reg, value): the register's offset in the xAPIC page (Linux
        passes APIC_LVTT, APIC_EOI...; the ROM keeps the low 12 bits). The LVT
        timer entry is kept (an alarm wired to it takes its vector); EOI and
        the rest are accepted and not modelled."""
        reg = eax & 0xFFF
        self.op = {"reg": reg, "val": edx}
        if reg == APIC_LVTT:
            self.vcpu.lvtt = edx & (LVT_MASKED | TIMER_MODE_MASK | 0xFF)

    def _apic_read(self, eax, *_):
        """APICRead(reg): the LVT timer entry as written; 0 for the rest."""
        reg = eax & 0xFFF
        self.op = {"reg": reg}
        self.out = {"eax": self.vcpu.lvtt if reg == APIC_LVTT else 0}

    def _cycle_freq(self, *_):
        self._ret64(1_000_000_000)

    def _cycle_counter(self, eax, *_):
        now = self.m.clock.now_ns
        v = {abi.COUNTER_REAL: now, abi.COUNTER_AVAILABLE: now,
             abi.COUNTER_STOLEN: 0}.get(eax, 0)
        self.op = {"counter": eax}
        self._ret64(v)

    def _set_alarm(self, eax, edx, ecx, plo, phi, *_):
        """SetAlarm(flags, expiry: EDX low / ECX high, period on the stack):
        absolute counter value in cycles (= ns here) [VMIT]."""
        expiry = edx | (ecx << 32)
        period = plo | (phi << 32)
        self.op = {"flags": eax, "expiry": expiry, "period": period}
        v = self.vcpu
        if (eax & abi.ALARM_COUNTER_MASK) not in (abi.COUNTER_REAL, abi.COUNTER_AVAILABLE):
            return                                # STOLEN or unknown: no-op
        v.alarm_flags = eax
        v.period = period if eax & abi.ALARM_IS_PERIODIC else 0
        v.deadline = expiry

    def _cancel_alarm(self, eax, *_):
        v = self.vcpu
        armed = v.deadline is not None
        v.deadline = None
        v.period = 0
        self.out = {"eax": int(armed)}

    def _wallclock(self, *_):
        self._ret64(self.wallclock_base_ns + self.m.clock.now_ns)

    def _wallclock_updated(self, *_):
        self.out = {"eax": 0}

    def _lazy(self, eax, *_):
        self.lazy = eax
        self.op = {"mode": eax}

    # ------------------------------------------------------------- ports
    def port_in(self, port: int, size: int) -> int | None:
        if port == COM1_LSR:
            return 0x60                           # THR empty, transmitter idle
        return None

    def port_out(self, port: int, size: int, value: int) -> bool:
        if port == COM1:
            self.console_out("console", bytes([value & 0xFF]))
            return True
        return False


_CALLS = {
    0: VmiBackend._cpuid, 1: VmiBackend._wrmsr, 2: VmiBackend._rdmsr,
    3: VmiBackend._set_gdt, 4: VmiBackend._set_ldt, 5: VmiBackend._set_idt,
    6: VmiBackend._set_tr, 7: VmiBackend._get_gdt, 8: VmiBackend._get_ldt,
    9: VmiBackend._get_idt, 10: VmiBackend._get_tr, 11: VmiBackend._write_entry,
    12: VmiBackend._write_entry, 13: VmiBackend._write_entry,
    14: VmiBackend._update_kernel_stack,
    15: VmiBackend._set_cr(None, 0), 16: VmiBackend._set_cr(None, 2),
    17: VmiBackend._set_cr(None, 3), 18: VmiBackend._set_cr(None, 4),
    19: VmiBackend._get_cr(None, 0), 20: VmiBackend._get_cr(None, 2),
    21: VmiBackend._get_cr(None, 3), 22: VmiBackend._get_cr(None, 4),
    23: VmiBackend._nop, 24: VmiBackend._set_dr, 25: VmiBackend._get_dr,
    26: VmiBackend._rdpmc, 27: VmiBackend._rdtsc, 28: VmiBackend._clts,
    29: VmiBackend._enable, 30: VmiBackend._disable, 31: VmiBackend._get_mask,
    32: VmiBackend._set_mask, 33: VmiBackend._iret, 35: VmiBackend._halt,
    36: VmiBackend._reboot, 37: VmiBackend._shutdown, 38: VmiBackend._set_pxe,
    39: VmiBackend._set_pxe_long, 40: VmiBackend._update_pxe, 41: VmiBackend._update_pxe,
    42: VmiBackend._ident, 43: VmiBackend._ident, 44: VmiBackend._allocate,
    45: VmiBackend._release, 46: VmiBackend._inval, 47: VmiBackend._flush,
    48: VmiBackend._linear, 61: VmiBackend._iopl, 62: VmiBackend._nop,
    63: VmiBackend._apic_write, 64: VmiBackend._apic_read, 65: VmiBackend._nop,
    66: VmiBackend._cycle_freq, 67: VmiBackend._cycle_counter, 68: VmiBackend._set_alarm,
    69: VmiBackend._cancel_alarm, 70: VmiBackend._wallclock,
    71: VmiBackend._wallclock_updated, 73: VmiBackend._lazy,
}


def make_backend() -> VmiBackend:
    """``vmi-3.0``."""
    return VmiBackend()
