"""The VMI ABI tables (VMware's Virtual Machine Interface, API 3.0: the
version Linux 2.6.21-2.6.36 implemented), with their sources. Facts:
``/work/shared/research/pv-abi-facts.md`` section 1, read from Linux
``arch/x86/include/asm/vmi.h`` [VMIH], ``arch/x86/kernel/vmi_32.c`` [VMIC],
``arch/x86/include/asm/vmi_time.h`` [VMIT], ``arch/x86/kernel/vmiclock_32.c``
[VMICLK] and the 2006 "Paravirtualization API Version 2.0" text [SPEC].

The module is the ABI's name tables for tools
(:func:`pvmon.backends.registry.abi_names`)."""

from __future__ import annotations

#: API 3.0 call numbers [VMIH], [VMIT]; 49-60 and 72 are undefined in Linux.
HYPERCALLS: dict[int, str] = {
    0: "CPUID", 1: "WRMSR", 2: "RDMSR", 3: "SetGDT", 4: "SetLDT", 5: "SetIDT",
    6: "SetTR", 7: "GetGDT", 8: "GetLDT", 9: "GetIDT", 10: "GetTR",
    11: "WriteGDTEntry", 12: "WriteLDTEntry", 13: "WriteIDTEntry", 14: "UpdateKernelStack",
    15: "SetCR0", 16: "SetCR2", 17: "SetCR3", 18: "SetCR4", 19: "GetCR0", 20: "GetCR2",
    21: "GetCR3", 22: "GetCR4", 23: "WBINVD", 24: "SetDR", 25: "GetDR", 26: "RDPMC",
    27: "RDTSC", 28: "CLTS", 29: "EnableInterrupts", 30: "DisableInterrupts",
    31: "GetInterruptMask", 32: "SetInterruptMask", 33: "IRET", 34: "SYSEXIT", 35: "Halt",
    36: "Reboot", 37: "Shutdown", 38: "SetPxE", 39: "SetPxELong", 40: "UpdatePxE",
    41: "UpdatePxELong", 42: "MachineToPhysical", 43: "PhysicalToMachine",
    44: "AllocatePage", 45: "ReleasePage", 46: "InvalPage", 47: "FlushTLB",
    48: "SetLinearMapping", 61: "SetIOPLMask", 62: "SetInitialAPState", 63: "APICWrite",
    64: "APICRead", 65: "IODelay", 66: "GetCycleFrequency", 67: "GetCycleCounter",
    68: "SetAlarm", 69: "CancelAlarm", 70: "GetWallclockTime", 71: "WallclockUpdated",
    73: "SetLazyMode",
}
HYPERCALL_NUMBERS: dict[str, int] = {v: k for k, v in HYPERCALLS.items()}
SUBOPS: dict[str, dict[int, str]] = {}
ERRNO_NAMES: dict[int, str] = {}
#: number of call slots the ROM offers (0-73)
NUM_CALLS = 74

#: ROM header [VMIH] struct vrom_header
ROM_SIGNATURE = 0xAA55
VROM_SIGNATURE = 0x696D5663          # "cVmi"
API_MAJOR, API_MINOR = 3, 0
OFF_VMI_INIT, OFF_GET_RELOC = 0x80, 0x88
PCI_VENDOR_VMWARE, PCI_DEVICE_VMI = 0x15AD, 0x0801

#: relocation types [VMIH]
RELOC_NONE, RELOC_CALL_REL, RELOC_JUMP_REL, RELOC_NOP = 0, 1, 2, 3
#: calls only reached by inline patching as a jump [VMIC]
JUMP_CALLS = frozenset({33, 34})

#: SetAlarm flags [VMIT]
ALARM_COUNTER_MASK, ALARM_IS_PERIODIC, ALARM_WIRED_LVTT = 0xFF, 0x100, 0x10000
COUNTER_REAL, COUNTER_AVAILABLE, COUNTER_STOLEN = 0, 1, 2
#: FlushTLB flags
FLUSH_TLB, FLUSH_GLOBAL = 1, 2
X86_EFLAGS_IF = 0x200
#: the vector IRQ0 reaches with the PIC at its Linux base (FIRST_EXTERNAL_VECTOR) [VMICLK]
IRQ0_VECTOR = 0x20


def hypercall_name(nr: int) -> str:
    """The VMI call name of ``nr``, or ``vmi_<nr>``."""
    return HYPERCALLS.get(nr, f"vmi_{nr}")
