"""Behaviour of pvmon.engine.ucinternals on the real Unicorn 2.1.4 (no mocks).

Each test builds a tiny x86-64 machine with 4-level paging: a user code page, a user
read-write page, a user read-only page, a supervisor page and a non-present page.
"""

from __future__ import annotations

import gc
import struct

import pytest
import unicorn
from unicorn import x86_const as x86

from pvmon.engine import ucinternals
from pvmon.engine.ucinternals import UcInternals, check_unicorn
from pvmon.errors import EngineError

CODE, RW, RO_USER, SUPER, ABSENT, HANDLER = 0x10000, 0x11000, 0x12000, 0x13000, 0x14000, 0x16000
PTE = {CODE: 0x5, RW: 0x7, RO_USER: 0x5, SUPER: 0x3, HANDLER: 0x1}  # HANDLER: supervisor code
PF, GP, DF = 14, 13, 8


def load(addr: int) -> bytes:
    """``mov rax, [addr]`` (8 bytes)."""
    return bytes.fromhex("488b0425") + struct.pack("<I", addr)


def store(addr: int) -> bytes:
    """``mov [addr], rax`` (8 bytes)."""
    return bytes.fromhex("48890425") + struct.pack("<I", addr)


NON_CANONICAL_LOAD = bytes.fromhex("488b03")     # mov rax, [rbx] with rbx = 1 << 63
MOV_SS_AX = bytes.fromhex("8ed0")                # mov ss, ax
RDTSC, RDTSCP, NOP = bytes.fromhex("0f31"), bytes.fromhex("0f01f9"), b"\x90"


class Machine:
    """A paged x86-64 Uc with an INTR hook that records and skips faults."""

    def __init__(self) -> None:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        uc.mem_map(0, 0x20000)
        for table, nxt in ((0x1000, 0x2000), (0x2000, 0x3000), (0x3000, 0x4000)):
            uc.mem_write(table, struct.pack("<Q", nxt | 7))
        for va, flags in PTE.items():
            uc.mem_write(0x4000 + (va >> 12) * 8, struct.pack("<Q", va | flags))
        uc.reg_write(x86.UC_X86_REG_CR3, 0x1000)
        uc.reg_write(x86.UC_X86_REG_CR4, 0x20)
        uc.msr_write(0xC0000080, 0x500)
        uc.reg_write(x86.UC_X86_REG_CR0, 0x80010001)      # PG | WP | PE
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, 0, 7, 0))    # only the null descriptor
        uc.reg_write(x86.UC_X86_REG_RSP, RW + 0x800)
        self.uc = uc
        self.ui = UcInternals(uc)
        self.faults: list[tuple[int, int, int, int]] = []   # vector, offset, cr2, error
        self.skip: dict[int, int] = {}                      # rip -> where to resume
        self.clear = True
        self.on_fault = None
        uc.hook_add(unicorn.UC_HOOK_INTR, self._intr)

    def _intr(self, uc, intno, _ud) -> None:
        rip = uc.reg_read(x86.UC_X86_REG_RIP)
        self.faults.append((intno, rip - CODE, uc.reg_read(x86.UC_X86_REG_CR2),
                            self.ui.pending_error_code()))
        if self.on_fault is not None:
            self.on_fault(intno, rip)
            return
        if rip not in self.skip:
            uc.emu_stop()
            return
        uc.reg_write(x86.UC_X86_REG_RIP, self.skip[rip])
        if self.clear:
            self.ui.clear_exception_state()

    def run(self, *insns: bytes, cpl: int | None = None) -> list[tuple[int, int, int, int]]:
        """Run the instructions at CODE, skipping each faulting one; return the faults."""
        code, off = b"", 0
        self.skip.clear()
        for insn in insns:
            self.skip[CODE + off] = CODE + off + len(insn)
            code += insn
            off += len(insn)
        self.uc.mem_write(CODE, code + NOP)
        if cpl is not None:
            self.ui.set_cpl(cpl)
        self.faults.clear()
        self.uc.emu_start(CODE, CODE + len(code), count=100)
        return list(self.faults)

    def reg(self, r: int) -> int:
        return self.uc.reg_read(r)


@pytest.fixture
def m() -> Machine:
    return Machine()


# --- start-up checks ---------------------------------------------------------------------

def test_the_installed_unicorn_passes_the_self_test_and_the_result_is_cached():
    check_unicorn()
    assert ucinternals._checked
    check_unicorn()


def test_self_test_runs_on_a_scratch_engine_and_leaves_the_bound_one_alone(m):
    before = m.ui.reg_read_batch([x86.UC_X86_REG_RAX, x86.UC_X86_REG_RIP, x86.UC_X86_REG_RSP])
    m.ui.set_cpl(2)
    m.ui.self_test()
    after = m.ui.reg_read_batch([x86.UC_X86_REG_RAX, x86.UC_X86_REG_RIP, x86.UC_X86_REG_RSP])
    assert after == before
    assert m.ui.get_cpl() == 2


@pytest.mark.parametrize("name, wrong", [
    ("ENV_ERROR_CODE", ucinternals.ENV_ERROR_CODE + 4),
    ("ENV_OLD_EXCEPTION", ucinternals.ENV_OLD_EXCEPTION + 4),
    ("ENV_HFLAGS", ucinternals.ENV_HFLAGS + 4),
    ("ENV_UC", ucinternals.ENV_UC + 8),
    ("UC_STRUCT_CPU", ucinternals.UC_STRUCT_CPU + 8),
    ("CPUSTATE_ENV_PTR", ucinternals.CPUSTATE_ENV_PTR + 8),
])
def test_the_self_test_rejects_a_wrong_offset_with_an_engine_error(monkeypatch, name, wrong):
    monkeypatch.setattr(ucinternals, name, wrong)
    with pytest.raises(EngineError, match="unicorn 2.1.4"):
        ucinternals._run_self_test()


def test_a_different_unicorn_version_is_refused(monkeypatch):
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    monkeypatch.setattr(unicorn, "__version__", "2.1.3")
    with pytest.raises(EngineError, match=r"needs unicorn 2\.1\.4.*2\.1\.3"):
        UcInternals(uc)


def test_an_engine_that_is_not_x86_64_is_refused():
    with pytest.raises(EngineError, match="UC_MODE_64"):
        UcInternals(unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32))


# --- error codes -------------------------------------------------------------------------

def test_a_pf_reported_to_the_hook_carries_the_guests_error_code(m):
    faults = m.run(load(ABSENT), store(RO_USER), store(ABSENT), cpl=0)
    assert faults == [(PF, 0, ABSENT, 0), (PF, 8, RO_USER, 0b011), (PF, 16, ABSENT, 0b010)]


def test_a_pf_at_cpl3_carries_the_user_bit(m):
    faults = m.run(load(SUPER), store(RO_USER), store(ABSENT), load(ABSENT), cpl=3)
    assert [(v, cr2, err) for v, _o, cr2, err in faults] == [
        (PF, SUPER, 0b101), (PF, RO_USER, 0b111), (PF, ABSENT, 0b110), (PF, ABSENT, 0b100)]


def test_a_gp_from_a_selector_past_the_gdt_limit_carries_the_selector(m):
    m.uc.reg_write(x86.UC_X86_REG_RAX, 0x2B)
    assert [(v, err) for v, _o, _c, err in m.run(MOV_SS_AX, cpl=0)] == [(GP, 0x28)]


def test_a_gp_from_a_non_canonical_access_has_error_code_zero_after_an_earlier_nonzero_one(m):
    m.uc.reg_write(x86.UC_X86_REG_RAX, 0x2B)
    m.uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    faults = m.run(MOV_SS_AX, NON_CANONICAL_LOAD, cpl=0)
    assert [(v, o, err) for v, o, _c, err in faults] == [(GP, 0, 0x28), (GP, 2, 0)]


def test_the_hook_sees_rip_at_the_faulting_instruction(m):
    faults = m.run(NOP, NOP, load(ABSENT), cpl=0)
    assert [(v, o) for v, o, _c, _e in faults] == [(PF, 2)]


# --- #DF escalation ----------------------------------------------------------------------

def test_without_clear_exception_state_a_second_fault_escalates_to_df(m):
    m.clear = False
    m.uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    faults = m.run(load(ABSENT), NON_CANONICAL_LOAD, cpl=0)
    assert [(v, o, err) for v, o, _c, err in faults] == [(PF, 0, 0), (DF, 8, 0)]


def test_after_clear_exception_state_a_second_fault_arrives_as_itself(m):
    m.uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    faults = m.run(load(ABSENT), NON_CANONICAL_LOAD, load(ABSENT), load(SUPER), cpl=3)
    assert [(v, o, err) for v, o, _c, err in faults] == [
        (PF, 0, 4), (GP, 8, 0), (PF, 11, 4), (PF, 19, 5)]


def test_clear_exception_state_may_come_before_the_rip_change(m):
    def deliver(_intno, rip):
        m.ui.clear_exception_state()
        m.uc.reg_write(x86.UC_X86_REG_RIP, m.skip[rip])
    m.on_fault = deliver
    m.uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    faults = m.run(load(ABSENT), NON_CANONICAL_LOAD, cpl=0)
    assert [v for v, *_ in faults] == [PF, GP]


def test_clear_exception_state_between_runs_also_prevents_escalation(m):
    m.clear = False
    m.run(load(ABSENT), cpl=0)
    m.ui.clear_exception_state()
    m.uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    assert [v for v, *_ in m.run(NON_CANONICAL_LOAD)] == [GP]


# --- CPL ---------------------------------------------------------------------------------

def test_set_cpl_3_makes_a_supervisor_page_fault_with_a_user_mode_error_code(m):
    assert m.run(load(SUPER), cpl=0) == []
    assert [(v, err) for v, _o, _c, err in m.run(load(SUPER), cpl=3)] == [(PF, 5)]
    assert m.run(load(SUPER), cpl=0) == []


def test_get_cpl_reads_back_set_cpl_and_other_hflags_bits_are_kept(m):
    hflags = ucinternals.ctypes.c_uint32.from_address(m.ui._env + ucinternals.ENV_HFLAGS)
    other = hflags.value & ~3
    for cpl in (3, 1, 2, 0):
        m.ui.set_cpl(cpl)
        assert m.ui.get_cpl() == cpl
        assert hflags.value & ~3 == other


def test_set_cpl_survives_emu_start_exit_and_entry(m):
    m.ui.set_cpl(3)
    m.run(NOP)
    assert m.ui.get_cpl() == 3
    assert [err for *_x, err in m.run(load(SUPER))] == [5]
    assert m.ui.get_cpl() == 3


def test_set_cpl_from_the_intr_hook_applies_to_the_handler_at_once(m):
    """The engine's delivery path: a fault at CPL3 enters a CPL0 handler."""
    m.uc.mem_write(HANDLER, load(SUPER) + store(SUPER) + NOP)
    handler_done = HANDLER + 16
    calls = []

    def deliver(intno, rip):
        calls.append(intno)
        m.ui.set_cpl(0)
        m.ui.clear_exception_state()
        m.uc.reg_write(x86.UC_X86_REG_RIP, HANDLER)
    m.on_fault = deliver
    m.ui.set_cpl(3)
    m.uc.mem_write(CODE, load(SUPER) + NOP)
    m.uc.emu_start(CODE, handler_done, count=100)
    assert calls == [PF]
    assert m.reg(x86.UC_X86_REG_RIP) == handler_done
    assert m.ui.get_cpl() == 0


def test_set_cpl_from_a_code_hook_applies_from_the_next_block_unless_rip_is_written(m):
    code = NOP + load(SUPER) + NOP
    m.uc.mem_write(CODE, code)
    for write_rip in (False, True):
        def hook(uc, addr, _size, _ud, write_rip=write_rip):
            m.ui.set_cpl(3)
            if write_rip:
                m.ui.reg_write_batch([x86.UC_X86_REG_RIP], [addr + 1])
        h = m.uc.hook_add(unicorn.UC_HOOK_CODE, hook, None, CODE, CODE)
        m.ui.set_cpl(0)
        m.faults.clear()
        m.uc.emu_start(CODE, CODE + len(code), count=10)
        m.uc.hook_del(h)
        assert [(v, err) for v, _o, _c, err in m.faults] == ([(PF, 5)] if write_rip else [])


def test_writing_cs_does_not_change_the_cpl(m):
    m.ui.set_cpl(0)
    m.uc.reg_write(x86.UC_X86_REG_CS, 0x33)
    assert m.ui.get_cpl() == 0


def test_set_cpl_rejects_values_outside_0_to_3(m):
    for bad in (-1, 4, 8):
        with pytest.raises(ValueError):
            m.ui.set_cpl(bad)


# --- RDTSC / RDTSCP ----------------------------------------------------------------------

def test_hooked_rdtsc_returns_the_callbacks_value_in_edx_eax(m):
    seen_rip = []

    def tsc(uc):
        seen_rip.append(uc.reg_read(x86.UC_X86_REG_RIP))
        return 0xDEADBEEF_CAFEF00D
    m.ui.hook_tsc(tsc)
    m.ui.reg_write_batch([x86.UC_X86_REG_RAX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_RCX],
                         [-1, -1, 0x77])
    m.run(NOP, RDTSC, cpl=3)
    assert seen_rip == [CODE + 1]
    assert m.ui.reg_read_batch([x86.UC_X86_REG_RAX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_RCX,
                                x86.UC_X86_REG_RIP]) == [0xCAFEF00D, 0xDEADBEEF, 0x77, CODE + 3]


def test_hooked_rdtscp_also_sets_ecx_to_tsc_aux_zero(m):
    m.ui.hook_tsc(lambda uc: 0x1_0000_0002)
    m.uc.reg_write(x86.UC_X86_REG_RCX, -1)
    m.run(RDTSCP, cpl=0)
    assert m.ui.reg_read_batch([x86.UC_X86_REG_RAX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_RCX,
                                x86.UC_X86_REG_RIP]) == [2, 1, 0, CODE + 3]


def test_hooked_rdtsc_is_deterministic_and_del_hook_restores_the_host_tsc(m):
    ticks = iter(range(100, 200))
    h = m.ui.hook_tsc(lambda uc: next(ticks))
    values = []
    for _ in range(3):
        m.run(RDTSC)
        values.append(m.reg(x86.UC_X86_REG_RAX))
    assert values == [100, 101, 102]
    m.ui.del_hook(h)
    m.run(RDTSC)
    host = m.reg(x86.UC_X86_REG_RAX) | m.reg(x86.UC_X86_REG_RDX) << 32
    assert host > 1_000_000
    with pytest.raises(ValueError):
        m.ui.del_hook(h)


def test_an_exception_in_the_tsc_callback_stops_emulation_and_is_raised_by_emu_start(m):
    def boom(uc):
        raise RuntimeError("tsc callback failed")
    m.ui.hook_tsc(boom)
    with pytest.raises(RuntimeError, match="tsc callback failed"):
        m.run(RDTSC, NOP, NOP)


# --- batched registers -------------------------------------------------------------------

GPRS = [x86.UC_X86_REG_RAX, x86.UC_X86_REG_RBX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX,
        x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDI, x86.UC_X86_REG_R8, x86.UC_X86_REG_R15]


def test_reg_write_batch_then_reg_read_batch_round_trips_and_agrees_with_the_binding(m):
    values = [1, 2**64 - 1, 0x8000_0000_0000_0000, 3, 4, 5, 6, 7]
    m.ui.reg_write_batch(GPRS, values)
    assert m.ui.reg_read_batch(GPRS) == values
    assert [m.reg(r) for r in GPRS] == values
    m.ui.reg_write_batch(GPRS[:1], [-1])
    assert m.ui.reg_read_batch(GPRS[:1]) == [2**64 - 1]


def test_reg_read_batch_reads_narrow_registers_zero_extended(m):
    m.uc.reg_write(x86.UC_X86_REG_RAX, 2**64 - 1)
    m.ui.reg_read_batch([x86.UC_X86_REG_RAX])
    assert m.ui.reg_read_batch([x86.UC_X86_REG_CS, x86.UC_X86_REG_CR0, x86.UC_X86_REG_CR3]) == [
        m.reg(x86.UC_X86_REG_CS), 0x80010001, 0x1000]


def test_reg_read_batch_refuses_registers_wider_than_64_bits(m):
    with pytest.raises(unicorn.UcError):
        m.ui.reg_read_batch([x86.UC_X86_REG_XMM0])
    with pytest.raises(unicorn.UcError):
        m.ui.reg_read_batch([x86.UC_X86_REG_GDTR])


def test_reg_write_batch_needs_one_value_per_register(m):
    with pytest.raises(ValueError):
        m.ui.reg_write_batch(GPRS, [1, 2])


def test_rip_written_by_reg_write_batch_in_a_code_hook_redirects_execution(m):
    inc_rbx = bytes.fromhex("48ffc3")
    m.uc.mem_write(HANDLER, inc_rbx + NOP)    # HANDLER page is supervisor code
    code = NOP + inc_rbx + inc_rbx + NOP

    def hook(uc, addr, _size, _ud):
        m.ui.reg_write_batch([x86.UC_X86_REG_RBX, x86.UC_X86_REG_RIP], [10, HANDLER])
    m.uc.hook_add(unicorn.UC_HOOK_CODE, hook, None, CODE, CODE)
    m.uc.mem_write(CODE, code)
    m.ui.set_cpl(0)
    m.uc.emu_start(CODE, HANDLER + 3, count=10)
    assert (m.reg(x86.UC_X86_REG_RIP), m.reg(x86.UC_X86_REG_RBX)) == (HANDLER + 3, 11)


def test_a_tsc_hook_keeps_working_after_the_ucinternals_object_is_dropped():
    mach = Machine()
    mach.ui.hook_tsc(lambda uc: 1234)
    mach.ui = UcInternals(mach.uc)     # the first object is now garbage
    gc.collect()
    mach.run(RDTSC)
    assert mach.reg(x86.UC_X86_REG_RAX) == 1234


def test_straight_line_length_for_single_steps():
    from pvmon.engine.disasm import straight_line_length
    assert straight_line_length(bytes.fromhex("48893e"), 0x1000) == 3        # mov [rsi], rdi
    assert straight_line_length(bytes.fromhex("f0480fb13e"), 0x1000) == 5    # lock cmpxchg
    assert straight_line_length(bytes.fromhex("f348a5"), 0x1000) == 3        # rep movsq
    assert straight_line_length(bytes.fromhex("4887 3e".replace(" ", "")), 0) == 3  # xchg
    for branch in ("eb00", "e800000000", "c3", "0f05", "cc", "f4", "0f0b", "7400", "e2fe"):
        assert straight_line_length(bytes.fromhex(branch), 0x1000) is None, branch
    assert straight_line_length(b"\x0f", 0x1000) is None                      # truncated


def test_raw_syscall_and_port_hooks_see_each_trap_and_answer_in(m):
    seen = []
    m.ui.hook_syscall_and_ports(lambda: seen.append("syscall"),
                                lambda port, size: seen.append(("in", port, size)) or 0xABCD,
                                lambda port, size, v: seen.append(("out", port, size, v)))
    m.uc.reg_write(x86.UC_X86_REG_RDX, 0x42)
    m.uc.reg_write(x86.UC_X86_REG_RAX, 0)
    m.run(bytes.fromhex("66ed"),      # in ax, dx
          bytes.fromhex("ee"),        # out dx, al
          bytes.fromhex("0f05"))      # syscall
    assert seen == [("in", 0x42, 2), ("out", 0x42, 1, 0xCD), "syscall"]
    assert m.reg(x86.UC_X86_REG_RAX) & 0xFFFF == 0xABCD


def test_an_exception_in_a_raw_hook_comes_out_of_emu_start(m):
    def boom():
        raise RuntimeError("handler failed")
    m.ui.hook_syscall_and_ports(boom, lambda p, s: 0, lambda p, s, v: None)
    with pytest.raises(RuntimeError, match="handler failed"):
        m.run(bytes.fromhex("0f05"))


def test_disassembly_names_the_targets_of_direct_jumps_and_calls():
    from pvmon.engine.disasm import disassemble_around
    code = bytes.fromhex("e80b000000" "90" "eb05" "c3")   # call +0xb; nop; jmp +5; ret
    names = {0x1010: "helper", 0x100B: "tail+0x3"}
    out = disassemble_around(code, 0x1000, 0x1005, symbolize=lambda a: names.get(a, hex(a)))
    assert [i.text for i in out] == ["call 0x1010  <helper>", "nop", "jmp 0x100d", "ret"]
    plain = disassemble_around(code, 0x1000, 0x1005)
    assert plain[0].text == "call 0x1010"


# --- the C trampolines (pvmon/engine/_trampoline.c) -------------------------------------
def test_the_compiled_trampolines_are_in_use_when_built():
    assert ucinternals._TRAMPOLINES is not None, "pvmon/engine/_trampoline.c was not built"


def test_in_and_out_hooks_get_port_size_and_value_and_in_returns_32_bits(m):
    seen = []

    def on_in(port, size):
        seen.append(("in", port, size))
        return 0x1_2345_6789          # masked to 32 bits
    h = m.ui.hook_syscall_and_ports(lambda: None, on_in,
                                    lambda p, s, v: seen.append(("out", p, s, v)))
    m.uc.reg_write(x86.UC_X86_REG_RAX, 0xABCD)
    m.run(bytes.fromhex("e542"), bytes.fromhex("66e780"))      # in eax,0x42; out 0x80,ax
    assert seen == [("in", 0x42, 4), ("out", 0x80, 2, 0x6789)]
    assert m.reg(x86.UC_X86_REG_RAX) == 0x23456789
    m.ui.del_hook(h)


def test_an_exception_in_the_in_hook_stops_emulation_and_is_raised_by_emu_start(m):
    def on_in(port, size):
        raise RuntimeError("port handler failed")
    h = m.ui.hook_syscall_and_ports(lambda: None, on_in, lambda p, s, v: None)
    with pytest.raises(RuntimeError, match="port handler failed"):
        m.run(bytes.fromhex("e442"), NOP, NOP)
    m.ui.del_hook(h)
