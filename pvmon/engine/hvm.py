"""The engine side of an HVM platform: what pvmon's fourth Unicorn patch
(``patches/unicorn-2.1.4-hvm-platform.patch``) adds, and the 32-bit entry state.

A guest on an HVM platform (Xen PVH now, KVM next) owns its IDT, GDT, page
tables and privilege levels, so the CPU must deliver exceptions and interrupts
through the guest's IDT as hardware does. Unicorn 2.1.4 never does that (it
hands every exception to ``UC_HOOK_INTR`` hooks), offers no interrupt
injection, and cannot hook RDMSR/WRMSR (``hvm-facts.md`` 1.2, 1.6). The patch
adds four process-wide switches, which :class:`HvmCpu` sets for the engine it
runs, at the start of every run (:meth:`HvmCpu.activate`) and clears after:

* ``pvmon_hvm_mode``: exceptions (and #UD, when no ``UC_HOOK_INSN_INVALID``
  hook takes the instruction) go through the guest IDT by QEMU's own
  ``do_interrupt``: privilege switch, IST, error codes, #DF escalation;
* ``pvmon_raise_irq(uc, vector)``: an external interrupt the CPU takes at the
  first instruction boundary where RFLAGS.IF is set and no STI/MOV SS shadow
  is active; ``pvmon_irq_taken(uc, vector, rip)`` then reports it;
* ``pvmon_msr_hook(uc, write, msr, *value)``: RDMSR/WRMSR at CPL 0 ask pvmon
  first: 0 = run QEMU's built-in MSRs, 1 = handled, 2 = #GP(0);
* ``pvmon_triple_faults``: counts triple faults, which (like HLT) end
  ``emu_start`` without an error.

A Xen PV run never activates them and runs as before. Without the patched
library (``PVMON_UNICORN=stock``, or no ``pvmon engine build``)
:func:`available` is False and HVM guests are refused with one line.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from pvmon.errors import EngineError

#: The MSR callback's answers (the patch's ``pvmon_msr_hook`` contract).
MSR_NATIVE, MSR_HANDLED, MSR_GP = 0, 1, 2

_MSR_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32,
                           ctypes.POINTER(ctypes.c_uint64))
_IRQ_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64)


def value_hook(owner, fn: Callable[[int, int, int], tuple[int, int]], *, on_error: int,
               writes: tuple[int, ...]) -> Callable:
    """The callback shape the engine patches share, ``(uc, a, b, uint64_t *value)
    -> answer`` (the MSR, privileged-operation and debug-register hooks),
    around ``fn(a, b, value) -> (answer, value)``: the value goes back through
    the pointer for an answer in ``writes``. An exception from ``fn`` is kept in
    ``owner.error`` (the first one) and answered ``on_error``: it never unwinds
    through C."""
    def cb(_uc, a, b, value_p):
        try:
            answer, value = fn(a, b, value_p[0])
        except BaseException as exc:   # noqa: BLE001 - never unwind through C
            owner.error = owner.error or exc
            return on_error
        if answer in writes:
            value_p[0] = value & 0xFFFF_FFFF_FFFF_FFFF
        return answer
    return cb


def _symbols():
    try:
        return (ctypes.c_int.in_dll(uclib, "pvmon_hvm_mode"),
                ctypes.c_int.in_dll(uclib, "pvmon_irq_vector"),
                ctypes.c_int.in_dll(uclib, "pvmon_triple_faults"),
                ctypes.c_void_p.in_dll(uclib, "pvmon_irq_taken"),
                ctypes.c_void_p.in_dll(uclib, "pvmon_msr_hook"),
                ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)(
                    ("pvmon_raise_irq", uclib)),
                ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("pvmon_clear_irq", uclib)))
    except (ValueError, AttributeError):
        return None


_SYMS = _symbols()


def available() -> bool:
    """True when the running libunicorn carries pvmon's HVM platform patch."""
    return _SYMS is not None


def require() -> None:
    """Raise EngineError (one readable line) when the HVM patch is missing."""
    if _SYMS is None:
        raise EngineError("this guest mode needs pvmon's patched Unicorn (HVM platform "
                          "patch): run `pvmon engine build` (and unset PVMON_UNICORN=stock)")


class HvmCpu:
    """The HVM switches of one engine. ``on_msr(write, msr, value) -> (answer,
    value)``: called for every RDMSR/WRMSR at CPL 0 (``value``: what WRMSR
    writes, 0 for RDMSR), answering :data:`MSR_NATIVE`, :data:`MSR_HANDLED`
    (with the value RDMSR returns) or :data:`MSR_GP`. ``on_irq_taken(vector,
    rip)``: the CPU took the raised interrupt ``vector``, interrupting ``rip``.
    Callbacks must not raise (an exception is kept and re-raised by
    :meth:`take_error`). Raises EngineError if the patch is missing."""

    def __init__(self, uc, on_msr: Callable[[int, int, int], tuple[int, int]],
                 on_irq_taken: Callable[[int, int], None]) -> None:
        require()
        (self._mode, self._vector, self._triples, self._irq_ptr, self._msr_ptr,
         self._raise, self._clear) = _SYMS
        self._uc = uc._uch.value if hasattr(uc._uch, "value") else uc._uch
        self.error: BaseException | None = None

        msr_cb = value_hook(self, on_msr, on_error=MSR_NATIVE, writes=(MSR_HANDLED,))

        def irq_cb(_uc, vector, rip):
            self.pending = None
            try:
                on_irq_taken(vector, rip)
            except BaseException as exc:   # noqa: BLE001
                self.error = self.error or exc

        self._msr_cb = _MSR_CB(msr_cb)
        self._irq_cb = _IRQ_CB(irq_cb)
        self.pending: int | None = None

    def activate(self) -> None:
        """Switch the patch on for this engine (call before ``emu_start``)."""
        self._mode.value = 1
        self._msr_ptr.value = ctypes.cast(self._msr_cb, ctypes.c_void_p).value
        self._irq_ptr.value = ctypes.cast(self._irq_cb, ctypes.c_void_p).value
        if self.pending is not None:
            self._vector.value = self.pending

    def deactivate(self) -> None:
        """Switch it off again (a Xen PV engine in the same process runs as before)."""
        self._mode.value = 0
        self._msr_ptr.value = None
        self._irq_ptr.value = None

    def raise_irq(self, vector: int) -> None:
        """Ask the CPU to take external interrupt ``vector`` (0-255) as soon as
        RFLAGS.IF allows; replaces a raised one not yet taken."""
        self.pending = vector
        self._raise(self._uc, vector)

    def clear_irq(self) -> None:
        """Withdraw a raised interrupt not yet taken."""
        self.pending = None
        self._clear(self._uc)

    @property
    def triple_faults(self) -> int:
        """Triple faults since the process started (all engines)."""
        return self._triples.value

    def take_error(self) -> None:
        """Re-raise an exception a callback swallowed, if any."""
        if self.error is not None:
            exc, self.error = self.error, None
            raise exc


_PRIVOP_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                              ctypes.POINTER(ctypes.c_uint64))
#: ``on_privop``'s operations (the fifth patch's ``pvmon_privop_hook`` contract).
OP_WRITE_CR, OP_READ_CR = 2, 3
#: What CLI/STI at CPL 0 do (:meth:`PvHooks.set_cli_sti`).
CLI_NATIVE, CLI_NOP, CLI_GP = 0, 1, 2


def _privop_symbols():
    try:
        return (ctypes.c_int.in_dll(uclib, "pvmon_io_fault"),
                ctypes.c_void_p.in_dll(uclib, "pvmon_privop_hook"),
                ctypes.c_int.in_dll(uclib, "pvmon_cli_sti"))
    except (ValueError, AttributeError):
        return None


_PRIVOP_SYMS = _privop_symbols()


def _string_io_symbols():
    try:
        return (ctypes.c_int.in_dll(uclib, "pvmon_string_io_gp"),
                ctypes.c_int.in_dll(uclib, "pvmon_rdtscp_tsd_gp"),
                ctypes.c_int.in_dll(uclib, "pvmon_ring0_gp"),
                ctypes.c_int.in_dll(uclib, "pvmon_popf_fixed"))
    except (ValueError, AttributeError):
        return None


#: the PV patch's switches for INS/OUTS, RDTSCP with CR4.TSD, the CPL-0-only
#: instructions and POPF's IF/IOPL (None: a library without them), all on while
#: PvHooks is active
_STRING_IO_SYMS = _string_io_symbols()


def privops_available() -> bool:
    """True when the running libunicorn carries pvmon's PV privileged-operation
    patch (``patches/unicorn-2.1.4-pv-privops.patch``)."""
    return _PRIVOP_SYMS is not None


class PvHooks:
    """The engine switches a PV platform uses for its guest kernel's privileged
    instructions (the kernel runs at CPL 0; its hypervisor would run it
    deprivileged and emulate them). ``pvmon_hvm_mode`` stays off.

    * ``on_msr(write, msr, value) -> (answer, value)``: RDMSR/WRMSR at CPL 0
      (:data:`MSR_NATIVE`, :data:`MSR_HANDLED` with the value RDMSR returns,
      :data:`MSR_GP`); the HVM patch's hook.
    * ``on_privop(op, reg, value) -> (answer, value)``: MOV to CR``reg``
      (:data:`OP_WRITE_CR`, ``value`` written; answering natively writes the
      ``value`` returned), MOV from CR``reg`` (:data:`OP_READ_CR`) at CPL 0,
      with the same answers; needs the PV patch (None, or the patch missing:
      they run natively).
    * :meth:`set_cli_sti`: what CLI/STI at CPL 0 do from now on (no call per
      instruction; PV patch only).
    * :meth:`io_fault`: called from an IN/OUT hook, that instruction raises
      #GP(0) instead (PV patch only; without it the access goes through).
    * :meth:`set_ring3`: IRET, far RET/JMP/CALL and loads of SS at CPL 0
      check their selectors as at CPL 3 and keep the CPU at CPL 0 (the kernel
      of a 64-bit Xen PV guest runs in ring 3; PV patch only).
    * while active, INS/OUTS raise #GP(0) before touching memory or a port,
      for the VMM to emulate (:attr:`traps_string_io`); RDTSCP with CR4.TSD,
      and HLT, INVLPG, LGDT, LIDT, LLDT, LTR, LMSW, SWAPGS, SYSRET, SYSEXIT
      raise #GP(0) at CPL 0 too, and POPF changes neither IF nor IOPL, as for
      Xen's ring-3 kernel (PV patch only).

    Install it as ``machine.hvm`` (the machine activates it for each run). An
    exception in a callback is kept, the operation runs natively, and
    :meth:`deactivate` re-raises it. Raises EngineError if the HVM patch is
    missing."""

    def __init__(self, on_msr: Callable[[int, int, int], tuple[int, int]],
                 on_privop: Callable[[int, int, int], tuple[int, int]] | None = None) -> None:
        require()
        self._msr_ptr = _SYMS[4]
        self._io_fault, self._privop_ptr, self._cli_sti = _PRIVOP_SYMS or (None, None, None)
        self._cli_mode = CLI_NATIVE
        self.error: BaseException | None = None

        # handled: the value read; native: a CR write's (possibly changed) value
        writes = (MSR_HANDLED, MSR_NATIVE)
        self._msr_cb = _MSR_CB(value_hook(self, on_msr, on_error=MSR_NATIVE, writes=writes))
        self._privop_cb = _PRIVOP_CB(value_hook(self, on_privop, on_error=MSR_NATIVE,
                                                writes=writes)) \
            if on_privop is not None and self._privop_ptr is not None else None

    @property
    def traps_string_io(self) -> bool:
        """INS/OUTS raise #GP(0) while active (the PV patch's
        ``pvmon_string_io_gp``), for :mod:`pvmon.backends.xen.pv.stringio`."""
        return _STRING_IO_SYMS is not None

    @property
    def traps_io(self) -> bool:
        """:meth:`io_fault` works (the PV patch is in the library)."""
        return self._io_fault is not None

    def io_fault(self) -> None:
        """Make the IN/OUT whose hook is running raise #GP(0) (no-op without
        the PV patch)."""
        if self._io_fault is not None:
            self._io_fault.value = 1

    def set_cli_sti(self, mode: int) -> None:
        """CLI/STI at CPL 0 from now on: :data:`CLI_NATIVE`, :data:`CLI_NOP`
        or :data:`CLI_GP` (no-op without the PV patch)."""
        self._cli_mode = mode
        if self._cli_sti is not None and self._active:
            self._cli_sti.value = mode

    _active = False
    _ring3 = False

    @property
    def traps_rings(self) -> bool:
        """:meth:`set_ring3` works (the PV patch's ring switch is in the library)."""
        return _RING_SYMS is not None

    def set_ring3(self, on: bool) -> None:
        """From now on, IRET, far RET, far JMP/CALL to a code segment and MOV/POP
        to SS, DS, ES, FS and GS executed at CPL 0 check their selectors as at
        CPL 3, and the code and stack descriptors they load get DPL 0 (so the
        CPU stays at CPL 0): an IRETQ to an RPL-3 CS is a same-privilege return,
        one to RPL 0-2 #GP(selector), a data descriptor with DPL < 3
        #GP(selector). No-op without the patch."""
        self._ring3 = bool(on)
        if _RING_SYMS is not None and self._active:
            _RING_SYMS[0].value = int(self._ring3)

    def activate(self) -> None:
        """Point the patch's hooks at these callbacks (before ``emu_start``)."""
        self._active = True
        self._msr_ptr.value = ctypes.cast(self._msr_cb, ctypes.c_void_p).value
        if self._privop_cb is not None:
            self._privop_ptr.value = ctypes.cast(self._privop_cb, ctypes.c_void_p).value
        if self._cli_sti is not None:
            self._cli_sti.value = self._cli_mode
        if _RING_SYMS is not None:
            _RING_SYMS[0].value = int(self._ring3)
        if _STRING_IO_SYMS is not None:
            for flag in _STRING_IO_SYMS:
                flag.value = 1

    def deactivate(self) -> None:
        """Take the hooks away again; re-raise a callback's exception, if any."""
        self._active = False
        self._msr_ptr.value = None
        if self._privop_ptr is not None:
            self._privop_ptr.value = None
        if self._io_fault is not None:
            self._io_fault.value = 0
            self._cli_sti.value = CLI_NATIVE
        if _RING_SYMS is not None:
            _RING_SYMS[0].value = 0
        if _STRING_IO_SYMS is not None:
            for flag in _STRING_IO_SYMS:
                flag.value = 0
        if self.error is not None:
            exc, self.error = self.error, None
            raise exc


_LOAD_SEG = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32,
                              ctypes.c_uint64)
#: QEMU's segment register numbers (``R_ES``..``R_GS``), for :class:`SegmentLoader`.
SEG_INDEX = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5}


def _ring_symbols():
    try:
        return (ctypes.c_int.in_dll(uclib, "pvmon_pv_ring3"),
                _LOAD_SEG(("pvmon_load_seg", uclib)))
    except (ValueError, AttributeError):
        return None


_RING_SYMS = _ring_symbols()


def rings_available() -> bool:
    """True when the running libunicorn has the PV patch's ring switch and
    segment loader (``pvmon_pv_ring3``, ``pvmon_load_seg``)."""
    return _RING_SYMS is not None


class SegmentLoader:
    """Loads a segment register of engine ``uc`` with a selector and the
    hidden part (base, limit, flags) of an 8-byte descriptor the VMM gives, as
    a far transfer would but with no checks (the PV patch's ``pvmon_load_seg``):
    a CS descriptor's L and D bits choose 64-bit or compatibility mode, an SS
    descriptor's DPL sets the CPL. Without the patch only the selector is
    written (Unicorn's register write in 64-bit mode), as before.
    ``load(name, selector, desc)``; ``name`` one of :data:`SEG_INDEX`."""

    def __init__(self, uc) -> None:
        self._uc = uc
        self._fn = _RING_SYMS[1] if _RING_SYMS is not None else None
        self._h = uc._uch.value if hasattr(uc._uch, "value") else uc._uch

    @property
    def loads_descriptors(self) -> bool:
        """The hidden part is loaded too (the patch is in the library)."""
        return self._fn is not None

    def load(self, name: str, selector: int, desc: int) -> None:
        if self._fn is not None:
            self._fn(self._h, SEG_INDEX[name], selector & 0xFFFF, desc & 0xFFFF_FFFF_FFFF_FFFF)
        else:
            self._uc.reg_write(getattr(x86, f"UC_X86_REG_{name.upper()}"), selector & 0xFFFF)


# --------------------------------------------------------------- 32-bit entry
#: Where :func:`enter_protected32` builds its scratch GDT and trampoline (guest
#: physical; the guest may overwrite both once it runs).
TRAMPOLINE_PA = 0x1000
_CS32, _DS32, _CS64 = 0x08, 0x10, 0x18


def _desc(base: int, limit: int, access: int, flags: int) -> int:
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40)
            | (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((base >> 24) & 0xFF) << 56))


def enter_protected32(machine, entry: int, ebx: int) -> None:
    """Put the CPU in the state a 32-bit protected-mode entry expects (the
    Xen PVH entry, ``XEN_ELFNOTE_PHYS32_ENTRY``): CR0.PE set and paging off,
    CR4 0, EFER 0, flat 4 GiB 32-bit CS (0x08) and DS/ES/SS (0x10), EFLAGS 0x2,
    EBX = ``ebx``, EIP = ``entry`` (both 32-bit physical). Source: the entry
    contract in Linux ``arch/x86/platform/pvh/head.S`` and xen.git
    ``docs/misc/pvh.pandoc``.

    Unicorn's 64-bit engine starts in long mode, so this runs a short
    trampoline (hvm-facts.md 1.8): a far return to a 32-bit code segment
    (compatibility mode), CR0.PG cleared (which clears EFER.LMA), EFER and CR4
    cleared, the data segments loaded, a jump to ``entry``. It uses the two
    pages at :data:`TRAMPOLINE_PA` and a scratch identity map it builds there,
    which the guest is free to overwrite. Raises EngineError if the engine
    does not end in that state."""
    uc = machine.uc
    base = TRAMPOLINE_PA
    gdt = base
    pml4, pdpt, pd = base + 0x1000, base + 0x2000, base + 0x3000
    code = base + 0x800
    machine.write_phys(gdt, struct.pack("<4Q", 0,
                                        _desc(0, 0xFFFFF, 0x9B, 0xC),    # 32-bit code
                                        _desc(0, 0xFFFFF, 0x93, 0xC),    # data
                                        _desc(0, 0xFFFFF, 0x9B, 0xA)))   # 64-bit code
    machine.write_phys(pml4, struct.pack("<Q", pdpt | 3))
    machine.write_phys(pdpt, struct.pack("<Q", pd | 3))
    machine.write_phys(pd, b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(512)))
    # 64-bit: push $0x08; push $tramp32; lretq          (to compatibility mode)
    # 32-bit: mov %cr0,%eax; and $0x7fffffff,%eax; mov %eax,%cr0   (paging off, LMA clear)
    #         xor %eax,%eax; xor %edx,%edx; mov $0xc0000080,%ecx; wrmsr   (EFER = 0)
    #         mov %eax,%cr4; mov $0x10,%eax; mov %eax,%ds; mov %eax,%es; mov %eax,%ss
    #         mov %eax,%fs; mov %eax,%gs; xor %eax,%eax; hlt
    tramp32 = code + 0x20
    c64 = bytes([0x6A, _CS32, 0x68]) + struct.pack("<I", tramp32) + bytes([0x48, 0xCB])
    c32 = bytes([0x0F, 0x20, 0xC0, 0x25, 0xFF, 0xFF, 0xFF, 0x7F, 0x0F, 0x22, 0xC0,
                 0x31, 0xC0, 0x31, 0xD2, 0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x30,
                 0x0F, 0x22, 0xE0, 0xB8, 0x10, 0x00, 0x00, 0x00, 0x8E, 0xD8, 0x8E, 0xC0,
                 0x8E, 0xD0, 0x8E, 0xE0, 0x8E, 0xE8, 0x31, 0xC0, 0xF4])
    machine.write_phys(code, c64)
    machine.write_phys(tramp32, c32)
    uc.reg_write(x86.UC_X86_REG_GDTR, (0, gdt, 4 * 8 - 1, 0))
    uc.reg_write(x86.UC_X86_REG_CR3, pml4)
    uc.reg_write(x86.UC_X86_REG_CR4, 1 << 5)                  # PAE
    uc.msr_write(0xC0000080, (1 << 8) | (1 << 10))            # LME | LMA
    uc.reg_write(x86.UC_X86_REG_CR0, 0x80000011)              # PG | ET | PE
    uc.reg_write(x86.UC_X86_REG_RSP, base + 0xFF0)
    # the 64-bit CS descriptor cache: far-return there first (reg_write of CS
    # in 64-bit mode stores only the selector)
    lret = bytes([0x6A, _CS64, 0x68]) + struct.pack("<I", code) + bytes([0x48, 0xCB])
    machine.write_phys(code + 0x100, lret)
    uc.emu_start(code + 0x100, 0)      # lretq, lretq, the 32-bit steps, hlt
    cr0, efer = uc.reg_read(x86.UC_X86_REG_CR0), uc.msr_read(0xC0000080)
    cs = uc.reg_read(x86.UC_X86_REG_CS)
    if cr0 & 0x80000000 or efer & (1 << 10) or cs != _CS32:
        raise EngineError(f"could not enter 32-bit protected mode (CR0 {cr0:#x}, "
                          f"EFER {efer:#x}, CS {cs:#x})")
    uc.reg_write(x86.UC_X86_REG_CR3, 0)
    uc.reg_write(x86.UC_X86_REG_RFLAGS, 0x2)
    uc.reg_write(x86.UC_X86_REG_RSP, 0)
    uc.reg_write(x86.UC_X86_REG_RBX, ebx)
    uc.reg_write(x86.UC_X86_REG_RIP, entry)
    machine.write_phys(base, bytes(0x4000))


__all__ = [
    "CLI_GP",
    "CLI_NATIVE",
    "CLI_NOP",
    "MSR_GP",
    "MSR_HANDLED",
    "MSR_NATIVE",
    "OP_READ_CR",
    "OP_WRITE_CR",
    "SEG_INDEX",
    "HvmCpu",
    "PvHooks",
    "SegmentLoader",
    "available",
    "enter_protected32",
    "privops_available",
    "require",
    "rings_available",
]
