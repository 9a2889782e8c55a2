"""A local APIC (xAPIC mode, MMIO page at 0xFEE00000) for one vCPU.

The model covers what Linux 6.1/6.12 ``arch/x86/kernel/apic/apic.c`` uses on
a one-vCPU guest: identification, task and processor priority, EOI, the
logical destination registers, the spurious-vector register (software
enable), the ISR/TMR/IRR banks, the error status register, the ICR with
self-IPIs (``irq_work`` sends vector 0xF6 to itself), the six LVT entries and
the timer in one-shot and periodic mode.

Sources:

* Intel SDM vol. 3A chapter 11 (chapter 10 in editions before 2023), "Advanced
  Programmable Interrupt Controller": 11.4.1 (base 0xFEE00000), table 11-1
  (register offsets), 11.4.6 (ID), 11.4.8 (version), 11.5.1 (LVT),
  11.5.3 (ESR: "write before read"), 11.5.4 (timer, divide configuration),
  11.6.1 (ICR, delivery status), 11.6.2 (logical destination, DFR),
  11.8.3.1 (TPR, PPR, priority classes), 11.8.4 (IRR/ISR acceptance),
  11.8.5 (EOI), 11.9 (spurious interrupt vector register, software disable).
* xen.git ``xen/arch/x86/hvm/vlapic.c@stable-4.17``: the values a Xen HVM/PVH
  guest sees: version 0x00050014 (``VLAPIC_VERSION``: version 0x14, max LVT
  entry 5, no directed EOI), the writable bits of each LVT
  (``vlapic_lvt_mask``), SVR masked to 0x3FF, DFR ``val | 0x0FFFFFFF``,
  ``ICR2 & 0xFF000000``, ICR bit 12 always 0, reset values
  (``vlapic_do_init``: every LVT masked, SVR 0xFF, DFR all ones), accesses
  that do not fit inside one 32-bit register read 0 and are ignored
  (``vlapic_mmio_read``/``_write``), a fixed IPI with a vector below 16
  sets "send illegal vector" and delivers nothing, IPIs are delivered only
  to a software-enabled APIC, timer arithmetic (``vlapic_get_tmcct``,
  ``vlapic_update_timer``).
* xen.git ``xen/arch/x86/include/asm/hvm/vlapic.h@stable-4.17``:
  ``APIC_BUS_CYCLE_NS`` = 10, so the timer's bus clock is 100 MHz. This is the
  default of ``bus_hz``.

Where this model differs from Xen 4.17's vlapic, and why:

* ESR follows the SDM: a write copies the errors collected since the last
  write into the readable register and clears the collection. Xen 4.17 has
  no ESR case in ``vlapic_reg_write``, so there the register only ever
  accumulates.
* CMCI (0x2F0) reads 0 and ignores writes, as in Xen: with max LVT 5 the
  register does not exist and Linux never touches it (``lapic_get_maxlvt()``
  must be at least 6).
* The TSC-deadline timer mode is not modelled (the platform does not offer
  it in CPUID): in that mode the initial and current count read 0 and
  writes to the initial count are ignored, as Xen does.
* No x2APIC, no INIT/SIPI/SMI handling: IPIs that reach anyone but this vCPU
  (or are INIT, SIPI, SMI) are handed to ``ipi_hook``; an NMI to self sets
  :attr:`LocalApic.nmi_pending`.

Time is virtual: ``clock()`` returns nanoseconds of guest time and is called
only on accesses to the timer registers; :meth:`LocalApic.fire_due` and
:meth:`LocalApic.next_deadline_ns` take or give the same time base. Nothing
reads the wall clock, so a run is reproducible. No access, whatever its
offset, size or value, raises: a guest must never cause a host exception.
"""

from __future__ import annotations

from collections.abc import Callable

LAPIC_BASE = 0xFEE00000
"""Guest-physical base of the xAPIC MMIO page (SDM 11.4.1)."""
LAPIC_SIZE = 0x1000

VERSION = 0x00050014
"""Version register: version 0x14, max LVT entry 5 (Xen ``VLAPIC_VERSION``)."""

# register offsets (SDM table 11-1)
ID = 0x020
LVR = 0x030
TPR = 0x080
APR = 0x090
PPR = 0x0A0
EOI = 0x0B0
RRD = 0x0C0
LDR = 0x0D0
DFR = 0x0E0
SVR = 0x0F0
ISR = 0x100
TMR = 0x180
IRR = 0x200
ESR = 0x280
CMCI = 0x2F0
ICR_LOW = 0x300
ICR_HIGH = 0x310
LVT_TIMER = 0x320
LVT_THERMAL = 0x330
LVT_PERF = 0x340
LVT_LINT0 = 0x350
LVT_LINT1 = 0x360
LVT_ERROR = 0x370
TIMER_INITIAL = 0x380
TIMER_CURRENT = 0x390
TIMER_DIVIDE = 0x3E0

# bits
SVR_ENABLE = 1 << 8
LVT_MASKED = 1 << 16
ICR_DELIVERY_STATUS = 1 << 12
ICR_LEVEL = 1 << 15
ICR_LOGICAL = 1 << 11
TIMER_MODE_MASK = 3 << 17
TIMER_ONESHOT = 0 << 17
TIMER_PERIODIC = 1 << 17
TIMER_TSC_DEADLINE = 2 << 17
ESR_SEND_ILLEGAL = 1 << 5
ESR_RECEIVE_ILLEGAL = 1 << 6

# delivery modes (ICR and LVT bits 10:8) and ICR destination shorthands (bits 19:18)
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7
SH_NONE, SH_SELF, SH_ALL_INCLUDING_SELF, SH_ALL_EXCLUDING_SELF = 0, 1, 2, 3

# writable bits of each LVT entry (Xen vlapic_lvt_mask): vector, delivery status, mask ...
_LVT_BASE = LVT_MASKED | ICR_DELIVERY_STATUS | 0xFF
_LINT = _LVT_BASE | 0x700 | (1 << 13) | (1 << 14) | (1 << 15)
_LVT_WRITABLE = {
    LVT_TIMER: _LVT_BASE | TIMER_MODE_MASK,   # ... timer mode
    LVT_THERMAL: _LVT_BASE | 0x700,           # ... delivery mode
    LVT_PERF: _LVT_BASE | 0x700,
    LVT_LINT0: _LINT,                         # ... polarity, remote IRR, trigger
    LVT_LINT1: _LINT,
    LVT_ERROR: _LVT_BASE,
}

_NS_PER_S = 1_000_000_000


class LocalApic:
    """The xAPIC of one vCPU, driven by MMIO accesses and by the platform.

    The platform maps :data:`LAPIC_BASE` with ``uc.mmio_map`` and forwards
    each access to :meth:`read` / :meth:`write` (``offset`` from the page
    base). Before resuming the guest it calls :meth:`fire_due`, and, when the
    guest can take an interrupt (RFLAGS.IF=1, no interrupt shadow), asks
    :meth:`highest_deliverable`, delivers that vector through the IDT and
    calls :meth:`accept` with it. :meth:`next_deadline_ns` tells it how long
    a halted vCPU may sleep.

    :param apic_id: this APIC's id (bits 31:24 of the ID register). Xen
        gives vCPU ``n`` the id ``2 * n`` (``vlapic_reset``).
    :param clock: virtual time in nanoseconds (monotonic, deterministic).
    :param bus_hz: timer input clock before the divider; Xen's vlapic
        counts one tick per 10 ns (100 MHz).
    :param ipi_hook: called with ``(icr_low, icr_high)`` for every ICR write
        not addressed solely to this APIC (a shorthand other than self, a
        logical or broadcast destination, another APIC id), and for INIT,
        SIPI and SMI to self. None drops them (a one-vCPU guest has nobody
        else to reach).
    :param on_eoi: called with ``(vector, level)`` after an EOI retires an
        in-service vector; ``level`` is its TMR bit (a level-triggered
        interrupt, whose source must be told).

    State the platform may read (and a saved-state loader may set):
    ``irr``, ``isr`` and ``tmr`` are 256-bit ints (bit ``n`` = vector ``n``);
    ``tpr``, ``ldr``, ``dfr``, ``svr``, ``esr``, ``icr_low``, ``icr_high``,
    ``timer_initial``, ``timer_divide`` hold the register values; ``lvt``
    maps each LVT offset to its value; ``nmi_pending`` is set by an NMI IPI
    to self and cleared by the platform when it delivers the NMI.
    """

    def __init__(self, apic_id: int = 0, *, clock: Callable[[], int],
                 bus_hz: int = 100_000_000,
                 ipi_hook: Callable[[int, int], None] | None = None,
                 on_eoi: Callable[[int, bool], None] | None = None) -> None:
        if not 0 <= apic_id <= 0xFF or bus_hz <= 0:
            raise ValueError(f"bad LocalApic arguments: apic_id={apic_id}, bus_hz={bus_hz}")
        self.clock = clock
        self.bus_hz = bus_hz
        self.ipi_hook = ipi_hook
        self.on_eoi = on_eoi
        self._id = apic_id << 24
        self.reset()

    # -- state ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Power-on/INIT state (Xen ``vlapic_do_init``; SDM 11.4.7.1): every
        LVT masked, SVR 0xFF (software disabled), DFR flat, divider 2,
        timer stopped, no pending or in-service vectors. The ID survives."""
        self.irr = 0          # 256-bit bitmaps, bit n = vector n
        self.isr = 0
        self.tmr = 0
        self.tpr = 0
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.svr = 0xFF
        self.esr = 0          # the readable ESR
        self._esr_pending = 0   # errors since the last ESR write
        self.icr_low = 0
        self.icr_high = 0
        self.lvt = {offset: LVT_MASKED for offset in _LVT_WRITABLE}
        self.timer_initial = 0
        self.timer_divide = 0           # TDCR value; divider 2
        self._timer_start_ns = 0        # time the current countdown began
        self._timer_fired = 0           # expiries since _timer_start_ns
        self._timer_armed = False
        self.nmi_pending = False

    @property
    def apic_id(self) -> int:
        """The APIC id (ID register bits 31:24)."""
        return self._id >> 24

    @property
    def software_enabled(self) -> bool:
        """SVR bit 8 (SDM 11.9): when clear the APIC delivers nothing."""
        return bool(self.svr & SVR_ENABLE)

    @property
    def ppr(self) -> int:
        """Processor priority (SDM 11.8.3.1): the TPR, or the class of the
        highest in-service vector if that is higher."""
        isrv = self.isr.bit_length() - 1 if self.isr else 0
        return self.tpr if (self.tpr & 0xF0) >= (isrv & 0xF0) else isrv & 0xF0

    @property
    def divider(self) -> int:
        """Timer divider from TDCR bits 3, 1:0 (SDM figure 11-10): 1 to 128."""
        code = ((self.timer_divide & 3) | ((self.timer_divide & 8) >> 1)) + 1
        return 1 << (code & 7)

    # -- interrupt side -------------------------------------------------------------------------

    def raise_vector(self, vector: int, level: bool = False) -> None:
        """Make ``vector`` pending (IRR), as an interrupt message arriving
        does (SDM 11.8.4); ``level`` sets its TMR bit. Vectors 0-15 are
        illegal: they set ESR "receive illegal vector" instead (Xen
        ``vlapic_set_irq``). Pending vectors are kept even while the APIC is
        software-disabled; they just are not delivered."""
        vector &= 0xFF
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL)
            return
        self.irr |= 1 << vector
        if level:
            self.tmr |= 1 << vector
        else:
            self.tmr &= ~(1 << vector)

    def highest_deliverable(self) -> int | None:
        """The vector the CPU would take now: the highest pending one whose
        priority class (bits 7:4) is above the PPR's. None when the APIC is
        software-disabled or nothing qualifies (SDM 11.8.3.1, 11.8.4)."""
        if not self.irr or not self.software_enabled:
            return None
        vector = self.irr.bit_length() - 1
        return vector if (vector & 0xF0) > (self.ppr & 0xF0) else None

    def accept(self, vector: int) -> None:
        """The CPU took ``vector``: move it from IRR to ISR (SDM 11.8.4)."""
        bit = 1 << (vector & 0xFF)
        self.irr &= ~bit
        self.isr |= bit

    def _eoi(self) -> None:
        """Retire the highest in-service vector (SDM 11.8.5); nothing if none."""
        if not self.isr:
            return
        vector = self.isr.bit_length() - 1
        self.isr &= ~(1 << vector)
        level = bool(self.tmr >> vector & 1)
        if self.on_eoi is not None:
            self.on_eoi(vector, level)

    def _error(self, bits: int) -> None:
        """Collect an error (SDM 11.5.3) and, once per new error, raise the
        LVT error vector if it is unmasked and legal (Xen ``vlapic_error``)."""
        if self._esr_pending & bits == bits:
            return
        self._esr_pending |= bits
        lvt = self.lvt[LVT_ERROR]
        if not lvt & LVT_MASKED and (lvt & 0xFF) >= 16:
            self.raise_vector(lvt & 0xFF)

    # -- timer ----------------------------------------------------------------------------------

    def _timer_mode(self) -> int:
        return self.lvt[LVT_TIMER] & TIMER_MODE_MASK

    def _counting_mode(self) -> bool:
        return self._timer_mode() in (TIMER_ONESHOT, TIMER_PERIODIC)

    def _deadline(self, n: int, divider: int | None = None) -> int:
        """Time of the ``n``-th expiry after the countdown began (ns, rounded
        up), with the current divider unless told another."""
        cycles = n * self.timer_initial * (divider or self.divider) * _NS_PER_S
        return self._timer_start_ns + -(-cycles // self.bus_hz)

    def _ticks_since_start(self, now_ns: int) -> int:
        return (now_ns - self._timer_start_ns) * self.bus_hz // (self.divider * _NS_PER_S)

    def _arm(self, start_ns: int) -> None:
        self._timer_start_ns = start_ns
        self._timer_fired = 0
        self._timer_armed = self.timer_initial > 0 and self._counting_mode()

    def current_count(self, now_ns: int) -> int:
        """The current-count register at ``now_ns`` (Xen ``vlapic_get_tmcct``):
        counts down from the initial count at the divided bus rate; a
        one-shot timer stays at 0 after it expires, a periodic one reloads."""
        if not self._timer_armed or not self._counting_mode():
            return 0
        ticks = self._ticks_since_start(now_ns)
        if self._timer_mode() == TIMER_PERIODIC:
            return self.timer_initial - ticks % self.timer_initial
        return max(self.timer_initial - ticks, 0)

    def next_deadline_ns(self) -> int | None:
        """When the timer next interrupts (virtual ns), or None if it is
        stopped or its LVT entry is masked."""
        if not self._timer_armed or self.lvt[LVT_TIMER] & LVT_MASKED:
            return None
        return self._deadline(self._timer_fired + 1)

    def fire_due(self, now_ns: int) -> bool:
        """Process every timer expiry up to ``now_ns``: put the timer vector
        in IRR (once: missed periods coalesce, as an IRR bit does) unless the
        LVT entry is masked; stop a one-shot timer, move a periodic one to
        its next period. Returns whether the vector was raised."""
        if not self._timer_armed or now_ns < self._deadline(self._timer_fired + 1):
            return False
        if self._timer_mode() == TIMER_PERIODIC:
            period_ns_scaled = self.timer_initial * self.divider * _NS_PER_S
            self._timer_fired = (now_ns - self._timer_start_ns) * self.bus_hz // period_ns_scaled
        else:
            self._timer_armed = False
        lvt = self.lvt[LVT_TIMER]
        if lvt & LVT_MASKED:
            return False
        self.raise_vector(lvt & 0xFF)
        return True

    def _rebase_timer(self, now_ns: int, old_divider: int) -> None:
        """Keep the countdown in progress across an LVT-timer or divider
        write (Xen ``vlapic_update_timer`` with ``tmict_updated`` false): the
        next expiry stays where it was (scaled by a divider change), later
        periods use the new settings."""
        if not self._timer_armed:
            return
        new_divider = self.divider
        remaining = self._deadline(self._timer_fired + 1, old_divider) - now_ns
        remaining = remaining * new_divider // old_divider
        period = -(-self.timer_initial * new_divider * _NS_PER_S // self.bus_hz)
        self._arm(now_ns + remaining - period)

    # -- MMIO -----------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """A guest load of ``size`` bytes at ``offset`` in the APIC page.

        Any access that fits inside one 32-bit register (offset bits 3:0 plus
        size at most 4, size 1, 2 or 4) reads that part of the register;
        anything else, and every reserved or write-only register, reads 0.
        """
        alignment = offset & 0xF
        if size not in (1, 2, 4) or alignment + size > 4 or not 0 <= offset < LAPIC_SIZE:
            return 0
        value = self._read_register(offset & ~0xF)
        return (value >> (8 * alignment)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest store of ``size`` bytes of ``value`` at ``offset``.

        Accesses shaped as :meth:`read` accepts update that part of the
        register (the rest keeps its current value, as Xen merges); all
        others, and writes to read-only or reserved registers, are ignored.
        """
        alignment = offset & 0xF
        if size not in (1, 2, 4) or alignment + size > 4 or not 0 <= offset < LAPIC_SIZE:
            return
        reg = offset & ~0xF
        shift = 8 * alignment
        mask = ((1 << (8 * size)) - 1) << shift
        if size < 4:
            value = (self._read_register(reg) & ~mask) | ((value << shift) & mask)
        self._write_register(reg, value & 0xFFFFFFFF)

    def _read_register(self, reg: int) -> int:
        if ISR <= reg < ISR + 0x80:
            return self.isr >> (2 * (reg - ISR)) & 0xFFFFFFFF
        if TMR <= reg < TMR + 0x80:
            return self.tmr >> (2 * (reg - TMR)) & 0xFFFFFFFF
        if IRR <= reg < IRR + 0x80:
            return self.irr >> (2 * (reg - IRR)) & 0xFFFFFFFF
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == TIMER_INITIAL:
            return self.timer_initial if self._counting_mode() else 0
        if reg == TIMER_CURRENT:
            return self.current_count(self.clock())
        return {
            ID: self._id, LVR: VERSION, TPR: self.tpr, PPR: self.ppr, LDR: self.ldr,
            DFR: self.dfr, SVR: self.svr, ESR: self.esr, ICR_LOW: self.icr_low,
            ICR_HIGH: self.icr_high, TIMER_DIVIDE: self.timer_divide,
        }.get(reg, 0)   # APR, EOI, RRD, CMCI and reserved offsets read 0

    def _write_register(self, reg: int, value: int) -> None:
        if reg == ID:
            self._id = value & 0xFF000000
        elif reg == TPR:
            self.tpr = value & 0xFF
        elif reg == EOI:
            self._eoi()
        elif reg == LDR:
            self.ldr = value & 0xFF000000
        elif reg == DFR:
            self.dfr = value | 0x0FFFFFFF
        elif reg == SVR:
            self._write_svr(value)
        elif reg == ESR:
            self.esr, self._esr_pending = self._esr_pending, 0
        elif reg == ICR_LOW:
            self.icr_low = value & ~ICR_DELIVERY_STATUS
            self._send_ipi(self.icr_low, self.icr_high)
        elif reg == ICR_HIGH:
            self.icr_high = value & 0xFF000000
        elif reg in self.lvt:
            self._write_lvt(reg, value)
        elif reg == TIMER_INITIAL:
            if self._counting_mode():
                now = self.clock()
                self.fire_due(now)            # an expiry before this store still counts
                self.timer_initial = value
                self._arm(now)
        elif reg == TIMER_DIVIDE:
            now = self.clock()
            self.fire_due(now)
            old_divider = self.divider
            self.timer_divide = value & 0xB
            self._rebase_timer(now, old_divider)
        # LVR, PPR, ISR/TMR/IRR, CMCI, the current count and reserved offsets are read-only

    def _write_svr(self, value: int) -> None:
        """SVR (SDM 11.9, Xen mask 0x3FF). Clearing bit 8 masks every LVT."""
        self.svr = value & 0x3FF
        if not value & SVR_ENABLE:
            self.fire_due(self.clock())
            for reg in self.lvt:
                self.lvt[reg] |= LVT_MASKED

    def _write_lvt(self, reg: int, value: int) -> None:
        """An LVT entry: only its writable bits; forced masked while the APIC
        is software-disabled (SDM 11.5.1, Xen ``vlapic_reg_write``)."""
        if not self.software_enabled:
            value |= LVT_MASKED
        value &= _LVT_WRITABLE[reg]
        if reg != LVT_TIMER:
            self.lvt[reg] = value
            return
        now = self.clock()
        self.fire_due(now)                    # expiries so far see the old entry
        old_mode = self._timer_mode()
        self.lvt[reg] = value
        new_mode = self._timer_mode()
        if (old_mode == TIMER_TSC_DEADLINE) != (new_mode == TIMER_TSC_DEADLINE):
            self.timer_initial = 0            # Xen clears TMICT entering/leaving TSC-deadline
            self._timer_armed = False
        elif not self._counting_mode():
            self._timer_armed = False
        elif old_mode != new_mode:
            self._rebase_timer(now, self.divider)

    def _send_ipi(self, low: int, high: int) -> None:
        """Deliver an ICR write (SDM 11.6.1; Xen ``vlapic_ipi``): fixed and
        lowest-priority IPIs that reach this APIC set their vector in IRR
        (edge, and only while software-enabled); an NMI to self sets
        :attr:`nmi_pending`; the rest go to ``ipi_hook``."""
        mode = (low >> 8) & 7
        shorthand = (low >> 18) & 3
        vector = low & 0xFF
        if mode in (DM_FIXED, DM_LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL)
            return
        if shorthand == SH_NONE:
            dest, logical = high >> 24, bool(low & ICR_LOGICAL)
            to_self = self._matches(dest, logical)
            to_others = logical or dest != self.apic_id   # not solely this APIC
        else:
            to_self = shorthand in (SH_SELF, SH_ALL_INCLUDING_SELF)
            to_others = shorthand in (SH_ALL_INCLUDING_SELF, SH_ALL_EXCLUDING_SELF)
        if to_self:
            if mode in (DM_FIXED, DM_LOWEST):
                if self.software_enabled:
                    self.raise_vector(vector)
            elif mode == DM_NMI:
                self.nmi_pending = True
            else:
                to_others = True              # INIT, SIPI, SMI: the platform decides
        if to_others and self.ipi_hook is not None:
            self.ipi_hook(low, high)

    def _matches(self, dest: int, logical: bool) -> bool:
        """Destination match (SDM 11.6.2): physical id or broadcast 0xFF;
        logical flat (DFR model 0xF) or cluster (model 0x0)."""
        if dest == 0xFF:
            return True
        if not logical:
            return dest == self.apic_id
        ldr = self.ldr >> 24
        if self.dfr >> 28 == 0xF:
            return bool(ldr & dest)
        return (dest >> 4) == (ldr >> 4) and bool(dest & ldr & 0xF)
