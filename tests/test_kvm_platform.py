"""The KVM dispatch layer on a real Unicorn guest (a few instructions, no
kernel): CPUID answers KVM's leaves, an RDMSR reaches the KVM backend, port
0x3F8 reaches the UART and the console, an access where nothing lives reads
as open bus and is counted, an unknown ``vmcall`` gets -KVM_ENOSYS, and
``hlt`` with interrupts off ends the run as powered off."""

import struct

from unicorn.x86_const import UC_X86_REG_RFLAGS

from pvmon.backends.kvm.backend import KvmBackend
from pvmon.backends.kvm.versions import REGISTRY
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.kvm import KvmDispatch
from pvmon.engine.machine import Machine

MiB = 1 << 20


def _run(code: bytes, version: str = "kvm-6.12"):
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
    m.write_phys(0x1000, code + b"\xF4")                  # ... hlt (IF=0)
    m.set_reg("rip", 0x1000)
    m.uc.reg_write(UC_X86_REG_RFLAGS, 2)
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
