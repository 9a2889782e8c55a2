"""The KVM dispatch layer on a real Unicorn guest (a few instructions, no
kernel): CPUID answers KVM's leaves, an RDMSR reaches the KVM backend, port
0x3F8 reaches the UART and the console, an access where nothing lives reads
as open bus and is counted, an unknown ``vmcall`` gets -KVM_ENOSYS, and
``hlt`` with interrupts off ends the run as powered off."""

import struct

import pytest
from unicorn.x86_const import UC_X86_REG_IDTR, UC_X86_REG_RFLAGS, UC_X86_REG_RSP

from pvmon.backends.kvm.backend import KvmBackend
from pvmon.backends.kvm.versions import REGISTRY
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.kvm import KvmDispatch
from pvmon.engine.machine import Machine

MiB = 1 << 20


def _run(code: bytes, version: str = "kvm-6.12", setup=None):
    m = Machine(64 * MiB)
    b = KvmBackend(REGISTRY[version])
    acc = RecordingGuestAccess(m, record=True)
    events: list[dict] = []
    d = KvmDispatch(m, b, acc, events.append)
    b.attach(m, None, acc, d, 64 * MiB, "t")
    m.attach(d)
    # identity-map 4 GiB with 2 MiB pages, so the platform can read the
    # instruction at RIP (a vmcall) through the guest's page tables
    m.write_phys(0x10000, struct.pack("<Q", 0x11000 | 3))
    m.write_phys(0x11000, b"".join(struct.pack("<Q", (0x12000 + 0x1000 * g) | 3)
                                   for g in range(4)))
    m.write_phys(0x12000, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(2048)))
    m.write_phys(0x20000, struct.pack("<QQ", 0, 0x00AF9B000000FFFF))
    m.setup_long_mode(0x10000, 0x20000, 15)
    m.uc.reg_write(UC_X86_REG_RSP, 0x8000)
    m.write_phys(0x1000, code + b"\xF4")                  # ... hlt (IF=0)
    m.set_reg("rip", 0x1000)
    m.uc.reg_write(UC_X86_REG_RFLAGS, 2)
    if setup is not None:
        setup(m)
    stop = m.run()
    return m, d, events, stop


def test_a_guest_sees_kvm_through_cpuid_msrs_ports_and_open_bus():
    code = (b"\xB8\x00\x00\x00\x40\x0F\xA2"               # mov eax, 0x40000000; cpuid
            + b"\x41\x89\xD8"                             # mov r8d, ebx
            + b"\xB9\x05\x4D\x56\x4B\x0F\x32"             # mov ecx, MSR_KVM_POLL_CONTROL; rdmsr
            + b"\x41\x89\xC1"                             # mov r9d, eax
            + b"\x66\xBA\xF8\x03\xB0\x4B\xEE"             # mov dx, 0x3f8; mov al, 'K'; out dx, al
            + b"\x48\xA1" + struct.pack("<Q", 0xF0000000))   # movabs rax, [0xF0000000]
    m, d, events, stop = _run(code)
    assert stop.kind == "shutdown" and stop.code == 0
    assert m.reg("r8") == 0x4B4D564B                      # "KVMK"
    assert m.reg("r9") == 1                               # POLL_CONTROL resets to 1
    assert m.reg("rax") == (1 << 64) - 1 and d.open_bus == 2
    kinds = [e["k"] for e in events]
    assert kinds == ["cpuid", "msr", "io", "con", "mmio", "mmio", "halt"]
    assert events[3]["data"] == b"K" and events[3]["ch"] == "ring"
    assert events[1]["msr"] == 0x4B564D05 and events[1]["val"] == 1


def test_an_unknown_vmcall_returns_minus_kvm_enosys():
    m, d, events, _ = _run(b"\xB8\xE7\x03\x00\x00\x0F\x01\xC1")   # mov eax, 999; vmcall
    assert m.reg("rax") == (-1000) & ((1 << 64) - 1)
    hc = [e for e in events if e["k"] == "hc"]
    assert len(hc) == 1 and hc[0]["abi"] == "kvm" and hc[0]["ret"] == -1000
    assert d.b.unsupported == {"kvm_hc_999": 1}


LAPIC = 0xFEE00000
TIMER_VECTOR = 0xEC
HANDLER = 0x2000


def _store(addr: int, value: int) -> bytes:
    """mov eax, value; mov [addr64], eax"""
    return b"\xB8" + struct.pack("<I", value) + b"\xA3" + struct.pack("<Q", addr)


def _idt(m):
    """An IDT with one interrupt gate, vector 0xEC -> HANDLER (CS 0x08), and
    the handler: mark 0x3000, write the APIC EOI, iretq."""
    gate = struct.pack("<HHBBHII", HANDLER & 0xFFFF, 0x08, 0, 0x8E, HANDLER >> 16, 0, 0)
    m.write_phys(0x30000 + 16 * TIMER_VECTOR, gate)
    m.uc.reg_write(UC_X86_REG_IDTR, (0, 0x30000, 0xFFF, 0))
    m.write_phys(HANDLER, b"\xC6\x04\x25\x00\x30\x00\x00\x01"     # mov byte [0x3000], 1
                 + _store(LAPIC + 0xB0, 0) + b"\x48\xCF")             # EOI; iretq


@pytest.mark.parametrize("masked", [False, True])
def test_the_tsc_deadline_timer_interrupts_a_halted_guest_through_its_idt(masked):
    """The guest enables its APIC, puts the LVT timer in TSC-deadline mode,
    arms IA32_TSC_DEADLINE 5000 ticks ahead and halts: virtual time jumps to
    the deadline and vector 0xEC runs the handler (not when the LVT is masked)."""
    lvt = (2 << 17) | TIMER_VECTOR | ((1 << 16) if masked else 0)
    code = (b"\x6A\x08\x68" + struct.pack("<I", 0x1009) + b"\x48\xCB"   # load CS 0x08
            + _store(LAPIC + 0xF0, 0x1FF)                                 # SVR: enabled
            + _store(LAPIC + 0x320, lvt)                                  # LVT timer
            + b"\x0F\x31\x05" + struct.pack("<I", 5000)                  # rdtsc; add eax, 5000
            + b"\xB9\xE0\x06\x00\x00\x0F\x30"                          # wrmsr TSC_DEADLINE
            + b"\xFB\xF4\xFA")                                            # sti; hlt; cli
    m, d, events, stop = _run(code, setup=_idt)
    assert stop.kind == "shutdown", stop
    deadline = next(e["val"] for e in events if e["k"] == "msr")
    assert m.clock.now_ns >= deadline and d.b.vcpu.tsc_deadline == 0
    irqs = [e for e in events if e["k"] == "irq"]
    if masked:
        assert irqs == [] and m.read_phys(0x3000, 1) == b"\0"
    else:
        assert [e["vec"] for e in irqs] == [TIMER_VECTOR] and irqs[0]["t"] == deadline
        assert m.read_phys(0x3000, 1) == b"\1" and not d.lapic.isr


def test_with_pv_eoi_the_guest_acknowledges_by_clearing_the_bit_kvm_set():
    """MSR_KVM_PV_EOI_EN points at 0x4000; the timer interrupt is taken with
    nothing else pending, so the host sets bit 0 there; the handler clears it
    (btr) instead of writing the APIC EOI register, and the host retires the
    vector at its next look (KVM's apic_sync_pv_eoi_from_guest)."""
    def setup(m):
        _idt(m)
        m.write_phys(HANDLER, b"\xC6\x04\x25\x00\x30\x00\x00\x01"            # mov byte [0x3000], 1
                     + b"\x0F\xBA\x34\x25\x00\x40\x00\x00\x00"               # btr dword [0x4000], 0
                     + b"\x72\x0E" + _store(LAPIC + 0xB0, 0)                 # jc 1f; EOI
                     + b"\x48\xCF")                                          # 1: iretq
    code = (b"\x6A\x08\x68" + struct.pack("<I", 0x1009) + b"\x48\xCB"
            + b"\xB9\x04\x4D\x56\x4B\xB8\x01\x40\x00\x00\x31\xD2\x0F\x30"     # wrmsr PV_EOI_EN
            + _store(LAPIC + 0xF0, 0x1FF) + _store(LAPIC + 0x320, (2 << 17) | TIMER_VECTOR)
            + b"\x0F\x31\x05" + struct.pack("<I", 5000)
            + b"\xB9\xE0\x06\x00\x00\x0F\x30"
            + b"\xFB\xF4\xFA")
    m, d, events, stop = _run(code, setup=setup)
    assert stop.kind == "shutdown" and m.read_phys(0x3000, 1) == b"\1"
    assert d.pv_eois == 1 and not d.lapic.isr
    assert not [e for e in events if e["k"] == "mmio" and e["addr"] == LAPIC + 0xB0]
    assert m.read_phys(0x4000, 4) == bytes(4)


def _bare():
    m = Machine(64 * MiB)
    b = KvmBackend(REGISTRY["kvm-6.12"])
    acc = RecordingGuestAccess(m, record=True)
    d = KvmDispatch(m, b, acc, [].append)
    b.attach(m, None, acc, d, 64 * MiB, "t")
    return m, b, d


def test_no_port_msr_or_mmio_access_a_guest_can_make_raises():
    """Every entry point the engine calls for the KVM platform, with arbitrary
    ports, MSRs, offsets, sizes and values (a hostile guest), answers without
    an exception and with a value of the access's width."""
    import random

    from pvmon.backends.kvm.abi import MSR_FEATURE
    from pvmon.engine.hvm import MSR_GP, MSR_HANDLED
    rnd = random.Random(18)
    m, _, d = _bare()
    msrs = [*MSR_FEATURE, 0x6E0, 0x1B, 0x10, 0xDEADBEEF, 0xC0000080]
    for _ in range(4000):
        what = rnd.randrange(5)
        size = rnd.choice((1, 2, 4))
        value = rnd.getrandbits(64)
        if what == 0:
            port = rnd.choice((rnd.randrange(0x10000), 0x3F8 + rnd.randrange(8), 0x64, 0xCF9))
            if port in (0x64, 0xCF9):
                value &= ~0x4 if port == 0xCF9 else ~0xFF   # not the reset command
            d.port_out(port, size, value & ((1 << 8 * size) - 1))
        elif what == 1:
            v = d.port_in(rnd.randrange(0x10000), size)
            assert v is None or 0 <= v < 1 << 8 * size
        elif what == 2:
            answer, v = d._on_msr(rnd.randrange(2), rnd.choice(msrs), value)
            assert answer in (MSR_GP, MSR_HANDLED, 0) and 0 <= v < 1 << 64
        elif what == 3:
            off = rnd.randrange(0x1000)
            d._ioapic_write(None, off, size, value & 0xFFFFFFFF, None)
            assert 0 <= d._ioapic_read(None, off, size, None) < 1 << 32
        else:
            d.uart.receive(bytes([rnd.randrange(256)]))
            d.update_irq()
    assert m.stop_reason is None
