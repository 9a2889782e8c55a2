"""The local APIC model (pvmon/platforms/hvm/lapic.py), driven the way Linux's
arch/x86/kernel/apic/apic.c and the platform drive it."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX

from pvmon.platforms.hvm import lapic as L
from pvmon.platforms.hvm.lapic import LocalApic


class Clock:
    """Virtual time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def make(apic_id: int = 0, **kw) -> tuple[LocalApic, Clock]:
    clock = Clock()
    return LocalApic(apic_id, clock=clock, **kw), clock


def rd(apic: LocalApic, reg: int) -> int:
    return apic.read(reg, 4)


def wr(apic: LocalApic, reg: int, value: int) -> None:
    apic.write(reg, 4, value)


def enable(apic: LocalApic) -> None:
    """Linux setup_local_APIC's SVR write: vector 0xFF, enable, focus disabled."""
    wr(apic, L.SVR, (rd(apic, L.SVR) & ~0xFF) | L.SVR_ENABLE | (1 << 9) | 0xFF)


def test_a_reset_apic_reports_xens_version_its_id_and_is_software_disabled() -> None:
    apic, _ = make(apic_id=2)
    assert rd(apic, L.LVR) == 0x00050014 and (rd(apic, L.LVR) >> 16) & 0xFF == 5  # max LVT 5
    assert rd(apic, L.ID) == 2 << 24
    assert rd(apic, L.SVR) == 0xFF and not apic.software_enabled
    assert rd(apic, L.DFR) == 0xFFFFFFFF
    for reg in (L.LVT_TIMER, L.LVT_THERMAL, L.LVT_PERF, L.LVT_LINT0, L.LVT_LINT1, L.LVT_ERROR):
        assert rd(apic, reg) == L.LVT_MASKED
    apic.raise_vector(0x40)
    assert apic.highest_deliverable() is None        # pending, but the APIC is disabled


def test_linux_setup_local_apic_runs_through_and_leaves_the_apic_enabled() -> None:
    apic, _ = make()
    eois: list[tuple[int, bool]] = []
    apic.on_eoi = lambda vector, level: eois.append((vector, level))
    # stale state from "firmware": two in-service vectors and nothing pending
    enable(apic)
    for vector in (0x31, 0x80):
        apic.raise_vector(vector)
        apic.accept(vector)
    wr(apic, L.SVR, 0xFF)                             # back to disabled, as Linux finds it
    # apic_pending_intr_clear: read IRR and ISR, one EOI per ISR bit, until both are empty
    for _round in range(512):
        irr = [rd(apic, L.IRR + 0x10 * i) for i in range(8)]
        isr = [rd(apic, L.ISR + 0x10 * i) for i in range(8)]
        if any(isr):
            for _ in range(sum(word.bit_count() for word in isr)):
                wr(apic, L.EOI, 0)
            continue
        if not any(irr):
            break
    else:
        raise AssertionError("stale IRR/ISR never cleared")
    assert eois == [(0x80, False), (0x31, False)]     # highest first
    # TPR to 0, flat logical destination, LDR = 1 << cpu
    wr(apic, L.TPR, rd(apic, L.TPR) & ~0xFF)
    wr(apic, L.DFR, 0xFFFFFFFF)
    wr(apic, L.LDR, 1 << 24)
    assert rd(apic, L.LDR) == 1 << 24 and rd(apic, L.DFR) == 0xFFFFFFFF
    enable(apic)
    assert rd(apic, L.SVR) == 0x3FF and apic.software_enabled
    # LINT0 ExtINT (unmasked on the boot CPU), LINT1 NMI
    wr(apic, L.LVT_LINT0, 0x700)
    wr(apic, L.LVT_LINT1, 0x400)
    assert (rd(apic, L.LVT_LINT0), rd(apic, L.LVT_LINT1)) == (0x700, 0x400)
    # lapic_setup_esr: clear, read, program the error vector, clear, read
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == 0
    wr(apic, L.LVT_ERROR, 0xFE)
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == 0
    assert rd(apic, L.LVT_ERROR) == 0xFE
    assert rd(apic, L.PPR) == 0 and apic.highest_deliverable() is None


def test_lvt_entries_keep_only_their_writable_bits_and_stay_masked_while_disabled() -> None:
    apic, _ = make()
    wr(apic, L.LVT_ERROR, 0xFE)                       # disabled: forced masked
    assert rd(apic, L.LVT_ERROR) == L.LVT_MASKED | 0xFE
    enable(apic)
    wr(apic, L.LVT_ERROR, 0xFFFFFFFF)                 # only mask, delivery status, vector
    assert rd(apic, L.LVT_ERROR) == L.LVT_MASKED | (1 << 12) | 0xFF
    wr(apic, L.LVT_TIMER, L.TIMER_PERIODIC | 0xEC)
    assert rd(apic, L.LVT_TIMER) == 0x200EC
    wr(apic, L.SVR, 0xFF)                             # software disable masks every LVT
    assert rd(apic, L.LVT_TIMER) == 0x200EC | L.LVT_MASKED


def test_a_self_ipi_of_vector_f6_lands_in_irr_at_once_and_icr_never_shows_pending() -> None:
    apic, _ = make()
    enable(apic)
    wr(apic, L.ICR_LOW, (L.SH_SELF << 18) | (1 << 14) | 0xF6)   # Linux __apic_send_IPI_self
    assert rd(apic, L.IRR + 0x70) == 1 << (0xF6 - 0xE0)
    assert rd(apic, L.ICR_LOW) & L.ICR_DELIVERY_STATUS == 0
    assert apic.highest_deliverable() == 0xF6
    apic.accept(0xF6)
    assert rd(apic, L.ISR + 0x70) == 1 << (0xF6 - 0xE0) and rd(apic, L.IRR + 0x70) == 0
    assert rd(apic, L.PPR) == 0xF0
    wr(apic, L.EOI, 0)
    assert apic.isr == 0 and rd(apic, L.PPR) == 0


def test_an_ipi_to_its_own_physical_id_is_delivered_and_one_to_another_goes_to_the_hook() -> None:
    sent: list[tuple[int, int]] = []
    apic, _ = make(apic_id=2, ipi_hook=lambda low, high: sent.append((low, high)))
    enable(apic)
    wr(apic, L.ICR_HIGH, 2 << 24)
    wr(apic, L.ICR_LOW, 0xFD)
    assert apic.highest_deliverable() == 0xFD and sent == []
    wr(apic, L.ICR_HIGH, 4 << 24)
    wr(apic, L.ICR_LOW, 0xFC)
    assert sent == [(0xFC, 4 << 24)] and not apic.irr >> 0xFC & 1
    wr(apic, L.ICR_LOW, (L.SH_SELF << 18) | (L.DM_NMI << 8))
    assert apic.nmi_pending


def test_tpr_and_in_service_vectors_block_lower_priority_classes() -> None:
    apic, _ = make()
    enable(apic)
    wr(apic, L.TPR, 0x50)
    for vector in (0x45, 0x5F):
        apic.raise_vector(vector)
    assert rd(apic, L.PPR) == 0x50 and apic.highest_deliverable() is None
    apic.raise_vector(0x61)
    assert apic.highest_deliverable() == 0x61
    apic.accept(0x61)
    assert rd(apic, L.PPR) == 0x60 and apic.highest_deliverable() is None
    apic.raise_vector(0x70)                           # a higher class preempts
    assert apic.highest_deliverable() == 0x70
    wr(apic, L.EOI, 0)                                # retires 0x61
    wr(apic, L.TPR, 0)
    assert apic.highest_deliverable() == 0x70
    apic.accept(0x70)
    wr(apic, L.EOI, 0)
    assert apic.highest_deliverable() == 0x5F


def test_esr_shows_errors_only_after_a_write_and_a_second_write_clears_it() -> None:
    apic, _ = make()
    enable(apic)
    wr(apic, L.LVT_ERROR, 0xFE)
    wr(apic, L.ICR_LOW, (L.SH_SELF << 18) | 0x05)    # fixed IPI with an illegal vector
    assert rd(apic, L.ESR) == 0 and apic.irr == 1 << 0xFE   # error interrupt raised
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == L.ESR_SEND_ILLEGAL
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == 0
    apic.raise_vector(3)                              # an illegal vector arriving
    wr(apic, L.ESR, 0)
    assert rd(apic, L.ESR) == L.ESR_RECEIVE_ILLEGAL


def test_a_one_shot_timer_counts_down_at_the_divided_bus_clock_and_fires_once() -> None:
    apic, clock = make()                              # Xen's bus: 100 MHz, 10 ns a tick
    enable(apic)
    wr(apic, L.TIMER_DIVIDE, 0x3)                     # divide by 16: 160 ns a tick
    wr(apic, L.LVT_TIMER, L.TIMER_ONESHOT | 0xEC)
    start = clock.now
    wr(apic, L.TIMER_INITIAL, 1000)                   # 160 us
    assert apic.next_deadline_ns() == start + 160_000
    clock.now = start + 80_000
    assert rd(apic, L.TIMER_CURRENT) == 500
    assert not apic.fire_due(start + 159_999)
    assert apic.fire_due(start + 160_000)
    assert apic.highest_deliverable() == 0xEC
    clock.now = start + 500_000
    assert rd(apic, L.TIMER_CURRENT) == 0 and rd(apic, L.TIMER_INITIAL) == 1000
    assert apic.next_deadline_ns() is None and not apic.fire_due(clock.now)


def test_a_periodic_timer_reloads_keeps_its_phase_and_coalesces_missed_periods() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, L.TIMER_DIVIDE, 0xB)                     # divide by 1
    wr(apic, L.LVT_TIMER, L.TIMER_PERIODIC | 0xEC)
    start = clock.now
    wr(apic, L.TIMER_INITIAL, 100)                    # 1000 ns a period
    assert apic.fire_due(start + 1000)
    apic.accept(0xEC)
    wr(apic, L.EOI, 0)
    assert apic.next_deadline_ns() == start + 2000
    assert apic.fire_due(start + 3500)                # periods 2 and 3: one IRR bit
    assert apic.irr == 1 << 0xEC
    assert apic.next_deadline_ns() == start + 4000
    clock.now = start + 3500
    assert rd(apic, L.TIMER_CURRENT) == 50
    wr(apic, L.TIMER_INITIAL, 0)                      # writing 0 stops it
    assert apic.next_deadline_ns() is None and rd(apic, L.TIMER_CURRENT) == 0


def test_a_masked_timer_counts_but_raises_nothing_and_unmasking_late_does_not_replay() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, L.LVT_TIMER, L.LVT_MASKED | 0xEC)
    start = clock.now
    wr(apic, L.TIMER_INITIAL, 50)                     # divide by 2: 1000 ns
    assert apic.next_deadline_ns() is None
    clock.now = start + 500
    assert rd(apic, L.TIMER_CURRENT) == 25
    clock.now = start + 2000
    wr(apic, L.LVT_TIMER, 0xEC)                       # expired while masked: lost
    assert apic.irr == 0 and not apic.fire_due(start + 10_000)


def test_changing_the_divider_mid_countdown_scales_what_is_left() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, L.TIMER_DIVIDE, 0xB)                     # divide by 1: 10 ns a tick
    wr(apic, L.LVT_TIMER, 0xEC)
    start = clock.now
    wr(apic, L.TIMER_INITIAL, 100)                    # due at start + 1000
    clock.now = start + 400
    wr(apic, L.TIMER_DIVIDE, 0x0)                     # divide by 2: 600 ns left become 1200
    assert apic.next_deadline_ns() == start + 1600
    assert apic.divider == 2


def test_a_bus_clock_parameter_sets_the_tick() -> None:
    apic, clock = make(bus_hz=1_000_000_000)          # 1 GHz: 1 ns a tick before dividing
    enable(apic)
    wr(apic, L.TIMER_DIVIDE, 0xB)
    wr(apic, L.LVT_TIMER, 0xEC)
    wr(apic, L.TIMER_INITIAL, 1234)
    assert apic.next_deadline_ns() == clock.now + 1234


def test_byte_and_word_accesses_inside_a_register_work_and_others_read_zero() -> None:
    apic, _ = make(apic_id=3)
    assert apic.read(L.ID + 3, 1) == 3
    assert apic.read(L.LVR, 2) == 0x0014
    apic.write(L.SVR + 1, 1, 0x01)                    # set bit 8 alone
    assert rd(apic, L.SVR) == 0x1FF and apic.software_enabled
    assert apic.read(L.LVR + 2, 4) == 0               # crosses the register
    assert apic.read(L.LVR, 8) == 0 and apic.read(L.LVR, 3) == 0 and apic.read(L.LVR, 0) == 0
    assert rd(apic, 0x040) == 0 and rd(apic, 0x3F0) == 0 and rd(apic, 0xFF0) == 0
    assert rd(apic, L.EOI) == 0 and rd(apic, L.CMCI) == 0
    wr(apic, L.LVR, 0)                                # read-only
    wr(apic, L.CMCI, 0xEC)                            # absent with max LVT 5
    assert rd(apic, L.LVR) == L.VERSION and rd(apic, L.CMCI) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(-16, 0x1100), st.integers(-1, 9),
                          st.integers(-(1 << 40), 1 << 40)), max_size=40))
def test_no_access_a_guest_can_make_raises_or_breaks_the_register_widths(accesses) -> None:
    apic, clock = make()
    for is_write, offset, size, value in accesses:
        clock.now += 137
        if is_write:
            apic.write(offset, size, value)
        else:
            assert 0 <= apic.read(offset, size) < 1 << 32
        apic.fire_due(clock.now)
        vector = apic.highest_deliverable()
        if vector is not None:
            apic.accept(vector)
    for reg in range(0, L.LAPIC_SIZE, 0x10):
        assert 0 <= rd(apic, reg) < 1 << 32


def test_guest_loads_and_stores_through_unicorn_mmio_reach_the_model() -> None:
    """The platform's wiring: a real Unicorn guest (32-bit, flat) enables the
    APIC, sends itself vector 0xF6 and reads registers back through
    ``uc.mmio_map``, with a byte load of the ID register's top byte."""
    apic, _ = make(apic_id=2)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mmio_map(L.LAPIC_BASE, L.LAPIC_SIZE,
                lambda _uc, offset, size, _ud: apic.read(offset, size), None,
                lambda _uc, offset, size, value, _ud: apic.write(offset, size, value), None)

    def at(reg: int) -> bytes:
        return struct.pack("<I", L.LAPIC_BASE + reg)

    code = (b"\xC7\x05" + at(L.SVR) + struct.pack("<I", 0x1FF)             # mov [SVR], 0x1ff
            + b"\xC7\x05" + at(L.ICR_LOW) + struct.pack("<I", 0x440F6)      # mov [ICR], 0x440f6
            + b"\xA1" + at(L.ICR_LOW)                                       # mov eax, [ICR]
            + b"\x8B\x1D" + at(L.LVR)                                       # mov ebx, [LVR]
            + b"\x8A\x0D" + at(L.ID + 3))                                   # mov cl, [ID+3]
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, code)
    uc.emu_start(0x1000, 0x1000 + len(code))
    assert uc.reg_read(UC_X86_REG_EAX) == 0x440F6                 # bit 12 clear
    assert uc.reg_read(UC_X86_REG_EBX) == L.VERSION
    assert uc.reg_read(UC_X86_REG_ECX) & 0xFF == 2
    assert apic.software_enabled and apic.highest_deliverable() == 0xF6


def test_rewriting_the_initial_count_after_an_unprocessed_expiry_keeps_that_interrupt() -> None:
    apic, clock = make()
    enable(apic)
    wr(apic, L.TIMER_DIVIDE, 0xB)
    wr(apic, L.LVT_TIMER, 0xEC)
    start = clock.now
    wr(apic, L.TIMER_INITIAL, 100)                    # due at start + 1000
    clock.now = start + 1500                          # the guest ran past it
    wr(apic, L.TIMER_INITIAL, 100)                    # and re-armed
    assert apic.irr == 1 << 0xEC
    assert apic.next_deadline_ns() == start + 2500
