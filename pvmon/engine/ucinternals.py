"""The one place in pvmon that reaches into Unicorn's internals.

Unicorn 2.1.4 leaves three gaps that a VMM delivering its own faults must close
(DESIGN.md, "Engine facts"):

* a ``UC_HOOK_INTR`` hook gets the vector but not the fault's error code;
* QEMU's "exception in flight" (``env->old_exception``) is reset only when QEMU
  itself delivers through the IDT, which Unicorn never does, so after the first
  #PF or #GP every later contributory fault turns into #DF and then a silent
  triple-fault stop;
* the CPL that memory and privilege checks use lives in ``env->hflags`` and is not
  changed by writing CS or SS through ``reg_write``.

It also adds what the Python binding lacks: ``UC_HOOK_INSN`` hooks for RDTSC and
RDTSCP (the binding refuses them) and a batched raw-ctypes register access for hot
paths (binding ``reg_read`` about 2.6 us, raw about 0.8 us, DESIGN.md "Speed").

And it removes two costs Unicorn adds over QEMU: the exit-request helper called
after every guest load and store (``uc->no_exit_request``,
:meth:`UcInternals.set_memory_exit_checks`), and the GIL hand-off of every
foreign call made inside a hook (register batches, ``uc_mem_write`` and QEMU's
exported ``tlb_flush_x86_64`` go through ``ctypes.PYFUNCTYPE`` prototypes, which
keep the GIL; the SYSCALL/IN/OUT hooks are raw callbacks without the binding's
wrapper).

How it works: :class:`UcInternals` follows ``uc_struct.cpu`` -> ``CPUState.env_ptr``
once, checks the pointer it found (readable memory, ``env->uc`` pointing back at the
engine, general registers equal to what ``uc_reg_read`` reports), and from then on
reads and writes fields of the live ``CPUX86State`` at fixed byte offsets through
cached ``ctypes`` views. That is cheaper than a ``uc_context_save``/``restore`` round
trip, works from inside any hook and does not depend on ``UC_CTL_CONTEXT_MODE`` (a
context restore in memory mode would also roll guest memory back).

Every offset below was read from the Unicorn 2.1.4 sources (tag ``2.1.4``:
``include/uc_priv.h``, ``qemu/target/i386/cpu.h``, ``excp_helper.c``,
``misc_helper.c``) and measured on the 2.1.4 manylinux x86-64 wheel; the
``uc_context_save`` blob offsets DESIGN.md quotes (5424, 5536, 216) are these env
offsets plus the 40-byte ``struct uc_context`` header. :func:`check_unicorn` proves
them once per process by provoking faults with known error codes on a scratch engine.

``UC_STRUCT_NO_EXIT_REQUEST`` sits after the page-size fields that
``UC_STRUCT_TARGET_PAGE_SIZE`` anchors (checked before the write), ``ENV_CR3`` is
checked against ``uc_reg_read(CR3)`` at construction.

Re-deriving after a Unicorn upgrade: ``UC_STRUCT_CPU``/``CPUSTATE_ENV_PTR`` by scanning
``uc_struct`` for a pointer whose target holds, within 0x400 bytes, a pointer to memory
equal to the ``uc_context_save`` blob past its header; ``ENV_UC`` by scanning env for the
``uc`` handle; the other fields from ``qemu/target/i386/cpu.h`` (hflags, error_code,
old_exception), then run :func:`check_unicorn`, whose messages name the field that broke.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from collections.abc import Callable, Sequence

import unicorn
from unicorn import x86_const as x86
from unicorn.unicorn_py3.arch.types import uc_hook_h
from unicorn.unicorn_py3.unicorn import uclib

from pvmon.errors import EngineError

__all__ = ["PINNED_UNICORN", "UcInternals", "check_unicorn"]

#: The only Unicorn release whose internals this module knows.
PINNED_UNICORN = "2.1.4"
#: ``uc_version()`` combined word for 2.1.4 final (major, minor, patch, 0xff).
_PINNED_LIB_VERSION = 0x020104FF

# --- byte offsets, Unicorn 2.1.4 manylinux x86-64 wheel ------------------------------
#: ``offsetof(struct uc_struct, cpu)``: the ``CPUState *`` (include/uc_priv.h; measured).
UC_STRUCT_CPU = 0x1B8
#: ``offsetof(CPUState, env_ptr)`` (qemu/include/hw/core/cpu.h; measured).
CPUSTATE_ENV_PTR = 0x128
#: ``sizeof(struct uc_context)`` header before the ``CPUX86State`` copy in a context blob.
UC_CONTEXT_HEADER = 40
#: ``offsetof(CPUX86State, regs)``: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15, 8 bytes each.
ENV_REGS = 0
#: ``offsetof(CPUX86State, eip)``.
ENV_EIP = 128
#: ``offsetof(CPUX86State, hflags)``, uint32; bits 0-1 are the CPL (``HF_CPL_MASK``).
#: Context-blob offset 216.
ENV_HFLAGS = 176
#: ``offsetof(CPUX86State, error_code)``, int32, set by ``raise_interrupt2`` for the fault
#: being reported. Context-blob offset 5424.
ENV_ERROR_CODE = 5384
#: ``offsetof(CPUX86State, exception_is_int)``, int32 right after ``error_code``: 1 when the
#: exception being reported was raised by a software interrupt (``int n``, ``int3``; RIP
#: is then past the instruction), 0 for a fault. Set by ``raise_interrupt2`` with it.
ENV_EXCEPTION_IS_INT = ENV_ERROR_CODE + 4
#: ``offsetof(CPUX86State, old_exception)``, int32, -1 = none; ``check_exception`` turns a
#: contributory fault after #PF/#GP/#TS/#NP/#SS/#DE into #DF. Context-blob offset 5536.
ENV_OLD_EXCEPTION = 5496
#: ``offsetof(CPUX86State, uc)``: back-pointer to the engine, used to check the env pointer.
ENV_UC = 7000
#: ``offsetof(CPUX86State, cr)`` + 3 * 8: CR3 (after segs[6], ldt, tr, gdt, idt; measured).
ENV_CR3 = 448
#: ``offsetof(struct uc_struct, no_exit_request)``, bool (include/uc_priv.h; measured).
UC_STRUCT_NO_EXIT_REQUEST = 0x7F2
#: ``offsetof(struct uc_struct, target_page_size)``..``qemu_icache_linesize``: uint32 4096,
#: uint32 4095, uint64 4096, uint64 4096, int 64, then ``context_content``,
#: ``cpu_context_size``, ``next_pc``, ``hook_insert``, ``first_tb`` and ``no_exit_request``.
#: Checked as an anchor before the flag is written.
UC_STRUCT_TARGET_PAGE_SIZE = 0x7C0

HF_CPL_MASK = 0x3
#: ``HF_CS64_MASK`` (qemu/target/i386/cpu.h): CS is a 64-bit code segment (clear in
#: compatibility mode).
HF_CS64_MASK = 1 << 15

_U64 = (1 << 64) - 1
_INSN_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)  # uc_cb_insn_cpuid_t
# uc_cb_insn_syscall_t, uc_cb_insn_in_t, uc_cb_insn_out_t (include/unicorn/unicorn.h)
_SYSCALL_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_IN_CB = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                          ctypes.c_void_p)
_OUT_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32,
                           ctypes.c_void_p)
# Pointer arguments are declared c_void_p and passed as precomputed ints: the cheapest
# ctypes call shape (0.43 us versus 0.80 us with array objects, measured).
# PYFUNCTYPE: these foreign calls keep the GIL. They are short, never call back into
# Python, and run inside the engine's hooks, where releasing the GIL (what CFUNCTYPE
# functions do) hands it to any other thread, the TUI's say, and then waits to get it
# back: one wait per call, thousands a second.
_REG_BATCH2 = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.c_void_p, ctypes.c_int)
# Own function objects so the binding's prototypes on the shared CDLL stay untouched.
_uc_reg_read_batch2 = _REG_BATCH2(("uc_reg_read_batch2", uclib))
_uc_reg_write_batch2 = _REG_BATCH2(("uc_reg_write_batch2", uclib))
_uc_reg_write = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ("uc_reg_write", uclib))
_uc_mem_write = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p,
                                  ctypes.c_size_t)(("uc_mem_write", uclib))
# QEMU's whole-TLB flush (accel/tcg/cputlb.c), what UC_CTL_TLB_FLUSH runs
# (tcg_flush_softmmu_tlb): void tlb_flush(CPUState *cpu).
_tlb_flush = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("tlb_flush_x86_64", uclib))
_uc_hook_add = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(uc_hook_h), ctypes.c_int, ctypes.c_void_p,
    ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int)(("uc_hook_add", uclib))
_uc_hook_del = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, uc_hook_h)(("uc_hook_del", uclib))

def _load_trampolines() -> tuple[type, dict[str, int]] | None:
    """The compiled ``Trampoline`` type and its C callbacks' addresses
    (pvmon/engine/_trampoline.c), or None when the module was not built (then
    the hooks are ctypes callbacks, about 0.35 us slower a call)."""
    if os.environ.get("PVMON_HOOKS", "").strip().lower() == "ctypes":
        return None
    try:
        from pvmon.engine import _trampoline
        lib = ctypes.CDLL(_trampoline.__file__)
        names = ("syscall", "in", "out", "rdtsc", "rdtscp")
        addrs = {n: ctypes.cast(getattr(lib, f"pvmon_tramp_{n}"), ctypes.c_void_p).value
                 for n in names}
    except (ImportError, OSError, AttributeError):
        return None
    return _trampoline.Trampoline, addrs


_TRAMPOLINES = _load_trampolines()


_PC_REGS = frozenset({x86.UC_X86_REG_RIP, x86.UC_X86_REG_EIP, x86.UC_X86_REG_IP})
_GPRS = (x86.UC_X86_REG_RAX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX, x86.UC_X86_REG_RBX,
         x86.UC_X86_REG_RSP, x86.UC_X86_REG_RBP, x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDI,
         x86.UC_X86_REG_R8, x86.UC_X86_REG_R9, x86.UC_X86_REG_R10, x86.UC_X86_REG_R11,
         x86.UC_X86_REG_R12, x86.UC_X86_REG_R13, x86.UC_X86_REG_R14, x86.UC_X86_REG_R15)


def _readable(addr: int, size: int) -> bool:
    """True if ``size`` bytes at host address ``addr`` can be read without a crash.

    Asks the kernel to copy them into a pipe: ``write`` fails with EFAULT instead of
    faulting the process.
    """
    if addr <= 0 or addr + size > 1 << 47:
        return False
    r, w = os.pipe()
    try:
        done = 0
        while done < size:
            n = _libc_write(w, ctypes.c_void_p(addr + done), min(size - done, 4096))
            if n <= 0:
                return False
            os.read(r, n)
            done += n
        return True
    finally:
        os.close(r)
        os.close(w)


_libc = ctypes.CDLL(None, use_errno=True)
_libc_write = _libc.write
_libc_write.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
_libc_write.restype = ctypes.c_ssize_t


def _check_version() -> None:
    if unicorn.__version__ != PINNED_UNICORN:
        raise EngineError(
            f"pvmon needs unicorn {PINNED_UNICORN} (it reaches into its internals), "
            f"but unicorn {unicorn.__version__} is installed: pip install unicorn=={PINNED_UNICORN}")
    lib = unicorn.uc_version()[2]
    if lib != _PINNED_LIB_VERSION:
        raise EngineError(
            f"the unicorn {PINNED_UNICORN} Python binding loaded a native library reporting "
            f"version {lib:#010x}, not {_PINNED_LIB_VERSION:#010x}; reinstall unicorn")


class UcInternals:
    """Bound to one ``unicorn.Uc`` in x86-64 mode; reads and writes its live CPU state.

    Construction runs :func:`check_unicorn` (cached per process) and then checks that
    the ``CPUX86State`` pointer found for *this* engine is right. Keep the ``Uc`` alive
    as long as this object (it holds a reference). Not thread-safe; neither is Unicorn.
    """

    def __init__(self, uc: unicorn.Uc, *, _self_test: bool = True) -> None:
        _check_version()
        if _self_test:
            check_unicorn()
        if getattr(uc, "_arch", None) != unicorn.UC_ARCH_X86 or \
                getattr(uc, "_mode", None) != unicorn.UC_MODE_64:
            raise EngineError("UcInternals needs a Uc(UC_ARCH_X86, UC_MODE_64)")
        self._uc = uc
        self._uch = uc._uch.value
        # Any API call runs UC_INIT, which creates the CPU lazily; make sure it exists.
        uc.reg_read(x86.UC_X86_REG_RAX)
        self._env = self._find_env()
        self._cpu = ctypes.c_uint64.from_address(self._uch + UC_STRUCT_CPU).value
        self._cr3 = ctypes.c_uint64.from_address(self._env + ENV_CR3)
        cr3 = uc.reg_read(x86.UC_X86_REG_CR3)
        uc.reg_write(x86.UC_X86_REG_CR3, cr3 ^ 0x5000)
        moved = self._cr3.value == cr3 ^ 0x5000
        uc.reg_write(x86.UC_X86_REG_CR3, cr3)
        if not moved or self._cr3.value != cr3:
            raise EngineError(f"unicorn {PINNED_UNICORN} internals do not match this build: "
                              f"env->cr[3] at env+{ENV_CR3} does not follow CR3 writes")
        self._no_exit_request = self._find_no_exit_request()
        env = self._env
        self._hflags = ctypes.c_uint32.from_address(env + ENV_HFLAGS)
        self._error_code = ctypes.c_int32.from_address(env + ENV_ERROR_CODE)
        self._exception_is_int = ctypes.c_int32.from_address(env + ENV_EXCEPTION_IS_INT)
        self._old_exception = ctypes.c_int32.from_address(env + ENV_OLD_EXCEPTION)
        #: ``env->regs``: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (see :attr:`gprs`).
        self.gprs = (ctypes.c_uint64 * 16).from_address(env + ENV_REGS)
        #: ``env->eip`` as a ``c_uint64`` (read ``.value``); see :attr:`gprs`.
        self.eip = ctypes.c_uint64.from_address(env + ENV_EIP)
        self._rax = ctypes.c_uint64.from_address(env + ENV_REGS + 0 * 8)
        self._rcx = ctypes.c_uint64.from_address(env + ENV_REGS + 1 * 8)
        self._rdx = ctypes.c_uint64.from_address(env + ENV_REGS + 2 * 8)
        self._batches: dict[tuple[int, ...], tuple] = {}
        self._hooks: dict[int, tuple[tuple[int, ...], tuple]] = {}
        self._pc_buf = ctypes.c_uint64()
        self._pc_addr = ctypes.addressof(self._pc_buf)

    # --- locating env -----------------------------------------------------------------
    def _find_env(self) -> int:
        h = self._uch
        where = f"unicorn {PINNED_UNICORN} internals do not match this build"
        if not _readable(h + UC_STRUCT_CPU, 8):
            raise EngineError(f"{where}: uc_struct at {h:#x} is unreadable")
        cpu = ctypes.c_uint64.from_address(h + UC_STRUCT_CPU).value
        if not _readable(cpu + CPUSTATE_ENV_PTR, 8):
            raise EngineError(f"{where}: uc->cpu ({cpu:#x} at uc+{UC_STRUCT_CPU:#x}) is unreadable")
        env = ctypes.c_uint64.from_address(cpu + CPUSTATE_ENV_PTR).value
        if not _readable(env, ENV_UC + 8):
            raise EngineError(f"{where}: cpu->env_ptr ({env:#x}) is unreadable")
        back = ctypes.c_uint64.from_address(env + ENV_UC).value
        if back != h:
            raise EngineError(f"{where}: env->uc at env+{ENV_UC} is {back:#x}, expected {h:#x}")
        regs = struct.unpack_from("<16Q", ctypes.string_at(env + ENV_REGS, 128))
        want = tuple(self._uc.reg_read(r) for r in _GPRS)
        eip = ctypes.c_uint64.from_address(env + ENV_EIP).value
        if regs != want or eip != self._uc.reg_read(x86.UC_X86_REG_RIP):
            raise EngineError(f"{where}: env->regs/eip at env+{ENV_REGS}/{ENV_EIP} differ "
                              "from uc_reg_read")
        return env

    # --- general registers in place --------------------------------------------------
    # ``gprs[i]`` reads or writes general register i of the live ``CPUX86State``
    # (0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15), which is
    # what ``uc_reg_read``/``uc_reg_write`` do for these registers, at about 0.05 us
    # instead of 0.8-2.6 us. Valid between runs and inside instruction hooks (the
    # helpers that call them are unflagged TCG helpers, so guest registers are in
    # ``env`` on entry and reloaded on return); not for RIP writes (use the batch
    # write, which also tells Unicorn not to restore the PC).

    def flush_tlb(self) -> None:
        """Drop every cached translation (QEMU's ``tlb_flush``, what ``uc_ctl``
        ``UC_CTL_TLB_FLUSH`` runs), keeping the GIL. Cost: about 0.3 us plus
        the refills."""
        _tlb_flush(self._cpu)

    def mem_write(self, addr: int, data: bytes) -> None:
        """``uc_mem_write`` (machine address; translated code over it is dropped),
        keeping the GIL. Raises ``UcError`` outside mapped memory."""
        err = _uc_mem_write(self._uch, addr, data, len(data))
        if err:
            raise unicorn.UcError(err)

    @property
    def cr3(self) -> int:
        """``env->cr[3]``, what ``uc_reg_read(CR3)`` returns. Cost: about 0.1 us."""
        return self._cr3.value

    # --- exit checks after memory accesses -------------------------------------------
    def set_memory_exit_checks(self, enabled: bool) -> None:
        """Turn Unicorn's exit-request check after every guest load and store on or off.

        Unicorn 2.1.4 emits a call to ``helper_check_exit_request`` after each memory
        access and after each ``UC_HOOK_CODE`` callback (``qemu/tcg/tcg-op.c``,
        ``check_exit_request``) unless ``uc->no_exit_request`` is set, so that a memory
        hook calling ``uc_emu_stop`` ends the block at once. The call is an unflagged
        TCG helper: the translated code spills the guest registers around every load
        and store. pvmon installs no memory hooks, so it turns the checks off; a stop
        requested from an instruction hook (hypercall, RDTSC) still takes effect at
        the start of the next translation block, which Unicorn checks regardless
        (``gen_tb_start``). Applies to blocks translated afterwards. Keep the checks
        on while running with ``count=`` (the count hook stops through them).
        Cost: about 0.1 us.
        """
        self._no_exit_request.value = 0 if enabled else 1

    def _find_no_exit_request(self) -> ctypes.c_uint8:
        h = self._uch
        anchor = h + UC_STRUCT_TARGET_PAGE_SIZE
        if not _readable(anchor, 0x34):
            raise EngineError(f"unicorn {PINNED_UNICORN} internals do not match this build: "
                              f"uc_struct at {h:#x} is unreadable")
        page, align, host_page, real_page, icache = struct.unpack_from(
            "<IIQQi", ctypes.string_at(anchor, 28))
        flag = ctypes.c_uint8.from_address(h + UC_STRUCT_NO_EXIT_REQUEST)
        if (page, align, host_page, real_page, icache) != (4096, 4095, 4096, 4096, 64) \
                or flag.value not in (0, 1):
            raise EngineError(
                f"unicorn {PINNED_UNICORN} internals do not match this build: uc_struct "
                f"page-size fields at uc+{UC_STRUCT_TARGET_PAGE_SIZE:#x} read "
                f"{(page, align, host_page, real_page, icache)}, expected (4096, 4095, 4096, "
                "4096, 64)")
        return flag

    # --- faults -----------------------------------------------------------------------
    def pending_error_code(self) -> int:
        """Error code (unsigned, 32-bit) of the fault being reported to a ``UC_HOOK_INTR`` hook.

        Read from ``env->error_code``, which QEMU's ``raise_interrupt2`` fills just
        before Unicorn calls the hook: the #PF error code (P/W/U/RSVD/I bits), the
        selector-based code of #GP/#TS/#NP/#SS, 0 for faults without one. Meaningful
        only inside the INTR hook (afterwards it holds the last fault's value).
        Cost: about 0.1 us.
        """
        return self._error_code.value & 0xFFFFFFFF

    def pending_is_software_int(self) -> bool:
        """True if the exception being reported to a ``UC_HOOK_INTR`` hook comes from
        a software interrupt instruction (``int n``, ``int3``), False for a fault.

        Read from ``env->exception_is_int``, filled by ``raise_interrupt2`` with the
        vector and error code. A software interrupt reaches the hook as its own vector
        (Unicorn does no IDT DPL check) with RIP after the instruction, so ``int $14``
        and a #PF, say, differ only here. Meaningful only inside the INTR hook.
        Cost: about 0.1 us.
        """
        return bool(self._exception_is_int.value)

    def clear_exception_state(self) -> None:
        """Forget the fault "in flight" so the next fault arrives as itself, not as #DF.

        Sets ``env->old_exception`` to -1, which is what QEMU's ``do_interrupt_all``
        does after a real delivery (Unicorn skips that). Call it once the engine has
        delivered (or decided to skip) the fault, inside the INTR hook; the order
        relative to RIP/RSP writes does not matter, it touches only that field. Not
        calling it makes the next #DE/#TS/#NP/#SS/#GP/#PF a #DF (error code 0), and a
        fault after that a silent triple-fault stop. Cost: about 0.1 us.
        """
        self._old_exception.value = -1

    # --- CPL --------------------------------------------------------------------------
    def get_cpl(self) -> int:
        """The CPL (0-3) Unicorn checks: ``env->hflags & 3``. Cost: about 0.1 us."""
        return self._hflags.value & HF_CPL_MASK

    def code64(self) -> bool:
        """The CPU runs 64-bit code: ``env->hflags & HF_CS64_MASK`` (False in
        compatibility mode, under a 32-bit CS). Cost: about 0.1 us."""
        return bool(self._hflags.value & HF_CS64_MASK)

    def set_cpl(self, cpl: int) -> None:
        """Set the CPL (0-3) Unicorn uses for page-permission and privilege checks.

        Writes only ``env->hflags`` bits 0-1, like QEMU does when it loads SS; segment
        registers, CS.DPL and everything else are left alone. Persists across
        ``emu_start`` returns and re-entries (measured). Takes effect at the next
        translation-block lookup: at once from an INTR hook or between runs (QEMU keys
        its TB cache on hflags, so no flush is needed); from a code or instruction hook
        the rest of the current block still runs at the old CPL unless the hook also
        writes RIP. Cost: about 0.2 us.
        """
        if cpl not in (0, 1, 2, 3):
            raise ValueError(f"CPL must be 0..3, got {cpl!r}")
        h = self._hflags
        h.value = (h.value & ~HF_CPL_MASK) | cpl

    # --- RDTSC / RDTSCP ---------------------------------------------------------------
    def hook_tsc(self, callback: Callable[[unicorn.Uc], int]) -> int:
        """Hook RDTSC and RDTSCP; ``callback(uc)`` returns the 64-bit TSC to report.

        Installs two raw ``uc_hook_add(UC_HOOK_INSN, ..., UC_X86_INS_RDTSC/RDTSCP)``
        hooks (the binding refuses these insn ids). The wrapper writes RAX=low 32 bits,
        RDX=high 32 bits (upper halves zero, as on hardware) and for RDTSCP RCX=0
        (TSC_AUX), then returns 1 so Unicorn skips its own host-derived TSC; RIP then
        advances past the instruction as usual. RIP reads the instruction's address
        inside the callback. With CR4.TSD set and CPL>0 Unicorn raises #GP before any
        hook runs. If the callback raises, emulation stops and ``emu_start`` re-raises
        the exception (as for binding hooks). Returns a handle for :meth:`del_hook`.
        The callbacks are the C trampolines of pvmon/engine/_trampoline.c when that
        module is built (about 0.1 us a call plus the callback, against 0.2-0.35 us
        for the ctypes callbacks used otherwise or with ``PVMON_HOOKS=ctypes``).
        """
        uc = self._uc
        if _TRAMPOLINES is not None:
            kind, addrs = _TRAMPOLINES
            t = kind(None, None, None, callback, uc, self._hook_failed,
                     *self._gpr_slots())
            return self._add_c_hooks(t, ((x86.UC_X86_INS_RDTSC, addrs["rdtsc"]),
                                         (x86.UC_X86_INS_RDTSCP, addrs["rdtscp"])))
        rax, rcx, rdx = self._rax, self._rcx, self._rdx

        def on_rdtsc(_h, _ud) -> int:
            try:
                v = int(callback(uc)) & _U64
                rax.value = v & 0xFFFFFFFF
                rdx.value = v >> 32
                return 1
            except BaseException as e:  # noqa: BLE001 - re-raised by emu_start
                self._hook_failed(e)
                return 1

        def on_rdtscp(_h, _ud) -> int:
            try:
                v = int(callback(uc)) & _U64
                rax.value = v & 0xFFFFFFFF
                rdx.value = v >> 32
                rcx.value = 0
                return 1
            except BaseException as e:  # noqa: BLE001 - re-raised by emu_start
                self._hook_failed(e)
                return 1

        return self._add_raw_hooks(((x86.UC_X86_INS_RDTSC, _INSN_CB(on_rdtsc)),
                                    (x86.UC_X86_INS_RDTSCP, _INSN_CB(on_rdtscp))))

    # --- SYSCALL, IN, OUT ---------------------------------------------------------------
    def hook_syscall_and_ports(self, on_syscall: Callable[[], None],
                               on_in: Callable[[int, int], int],
                               on_out: Callable[[int, int, int], None]) -> int:
        """Hook SYSCALL, IN and OUT with raw ``uc_hook_add(UC_HOOK_INSN, ...)`` callbacks.

        The same hooks the binding installs, without its per-call wrapper (about
        0.3 us a call; the Linux boots make 150,000 of these traps), and through
        the C trampolines of pvmon/engine/_trampoline.c when built (see
        :meth:`hook_tsc`). ``on_syscall()``;
        ``on_in(port, size)`` returns the value read (``size`` in bytes: 1, 2, 4);
        ``on_out(port, size, value)``. An exception stops emulation and ``emu_start``
        re-raises it, as for binding hooks. Returns a handle for :meth:`del_hook`.
        """
        fail = self._hook_failed
        if _TRAMPOLINES is not None:
            kind, addrs = _TRAMPOLINES
            t = kind(on_syscall, on_in, on_out, None, None, fail, *self._gpr_slots())
            return self._add_c_hooks(t, ((x86.UC_X86_INS_SYSCALL, addrs["syscall"]),
                                         (x86.UC_X86_INS_IN, addrs["in"]),
                                         (x86.UC_X86_INS_OUT, addrs["out"])))

        def sys_cb(_h, _ud) -> None:
            try:
                on_syscall()
            except BaseException as e:  # noqa: BLE001 - re-raised by emu_start
                fail(e)

        def in_cb(_h, port, size, _ud) -> int:
            try:
                return on_in(port, size) & 0xFFFFFFFF
            except BaseException as e:  # noqa: BLE001 - re-raised by emu_start
                fail(e)
                return 0

        def out_cb(_h, port, size, value, _ud) -> None:
            try:
                on_out(port, size, value)
            except BaseException as e:  # noqa: BLE001 - re-raised by emu_start
                fail(e)

        return self._add_raw_hooks((
            (x86.UC_X86_INS_SYSCALL, _SYSCALL_CB(sys_cb)),
            (x86.UC_X86_INS_IN, _IN_CB(in_cb)),
            (x86.UC_X86_INS_OUT, _OUT_CB(out_cb))))

    def _hook_failed(self, e: BaseException) -> None:
        """A raw hook raised: stop emulation; ``emu_start`` re-raises the first such
        exception, as it does for the binding's hooks."""
        uc = self._uc
        if getattr(uc, "_hook_exception", None) is None:
            uc._hook_exception = e
        uc.emu_stop()

    def _add_raw_hooks(self, pairs) -> int:
        """Install ``(insn id, ctypes callback)`` pairs as UC_HOOK_INSN hooks; one handle."""
        return self._install(((insn, ctypes.cast(cb, ctypes.c_void_p), cb) for insn, cb in pairs),
                             None)

    def _gpr_slots(self) -> tuple[int, int, int]:
        """Addresses of the engine's RAX, RCX and RDX slots (env->regs)."""
        return (ctypes.addressof(self._rax), ctypes.addressof(self._rcx),
                ctypes.addressof(self._rdx))

    def _add_c_hooks(self, tramp, pairs) -> int:
        """Install ``(insn id, C callback address)`` pairs as UC_HOOK_INSN hooks whose
        user_data is the compiled Trampoline ``tramp``; one handle."""
        return self._install(((insn, addr, tramp) for insn, addr in pairs), tramp.address)

    def _install(self, hooks, user_data: int | None) -> int:
        """``uc_hook_add(UC_HOOK_INSN)`` for each ``(insn id, callback address, owner)``,
        all or none; one handle. Each owner (the ctypes callback or the trampoline) is
        parked where the binding keeps its own callbacks: Unicorn may call the hook for
        as long as the Uc lives, even if this object is dropped first."""
        uc = self._uc
        handles: list[int] = []
        owners: list = []
        for insn, addr, owner in hooks:
            hh = uc_hook_h()
            err = _uc_hook_add(self._uch, ctypes.byref(hh), unicorn.UC_HOOK_INSN,
                               addr, user_data, 1, 0, insn)
            if err != unicorn.UC_ERR_OK:
                for done in handles:
                    _uc_hook_del(self._uch, uc_hook_h(done))
                raise unicorn.UcError(err)
            handles.append(hh.value)
            owners.append(owner)
            uc._callbacks[hh.value] = owner
        self._hooks[handles[0]] = (tuple(handles), tuple(owners))
        return handles[0]

    def del_hook(self, handle: int) -> None:
        """Remove hooks installed by :meth:`hook_tsc` or :meth:`hook_syscall_and_ports`."""
        try:
            raw, _cbs = self._hooks.pop(handle)
        except KeyError:
            raise ValueError(f"no UcInternals hook with handle {handle!r}") from None
        for h in raw:
            self._uc._callbacks.pop(h, None)
            err = _uc_hook_del(self._uch, uc_hook_h(h))
            if err != unicorn.UC_ERR_OK:
                raise unicorn.UcError(err)

    # --- registers --------------------------------------------------------------------
    def _batch(self, regs: Sequence[int]) -> tuple:
        key = tuple(regs)
        b = self._batches.get(key)
        if b is None:
            n = len(key)
            ids = (ctypes.c_int * n)(*key)
            vals = (ctypes.c_uint64 * n)()
            ptrs = (ctypes.c_void_p * n)(*(ctypes.addressof(vals) + 8 * i for i in range(n)))
            sizes = (ctypes.c_size_t * n)(*([8] * n))
            pc = next((r for r in key if r in _PC_REGS), None)
            idx = key.index(pc) if pc is not None else -1
            args = (self._uch, ctypes.addressof(ids), ctypes.addressof(ptrs),
                    ctypes.addressof(sizes), n)
            # The arrays ride along so the addresses in args stay valid.
            b = (args, vals, pc, idx, (ids, ptrs, sizes))
            self._batches[key] = b
        return b

    def reg_read_batch(self, regs: list[int]) -> list[int]:
        """Read registers of up to 64 bits in one raw ``uc_reg_read_batch2`` call.

        Returns unsigned ints in the order of ``regs``. Registers wider than 8 bytes
        (XMM, GDTR, MSR, FPx) are refused by Unicorn with ``UcError(UC_ERR_OVERFLOW)``
        rather than overrunning the buffer. Buffers are cached per register tuple, so
        reuse the same few lists on hot paths. Cost: 0.7-1.3 us for 1-8 registers
        (binding ``reg_read`` 1.8 us each, binding ``reg_read_batch`` 10 us for 4).
        """
        b = self._batches.get(tuple(regs)) or self._batch(regs)
        err = _uc_reg_read_batch2(*b[0])
        if err:
            raise unicorn.UcError(err)
        return b[1][:]

    def reg_write_batch(self, regs: list[int], values: list[int]) -> None:
        """Write registers in one raw ``uc_reg_write_batch2`` call (values taken mod 2**64).

        A write to RIP/EIP/IP is repeated through ``uc_reg_write``: in 2.1.4 only that
        call sets ``skip_sync_pc_on_exit``; without it a PC written from a code hook is
        overwritten by QEMU's PC restore when the block exits (measured). A PC written
        from a CPUID hook is ignored whichever call writes it (measured). Cost: about
        1.0-1.4 us for 1-8 registers, +0.4 us when RIP is among them.
        """
        args, vals, pc, idx, _keep = self._batches.get(tuple(regs)) or self._batch(regs)
        if len(values) != args[4]:
            raise ValueError(f"{args[4]} registers but {len(values)} values")
        vals[:] = values
        err = _uc_reg_write_batch2(*args)
        if err:
            raise unicorn.UcError(err)
        if pc is not None:
            self._pc_buf.value = vals[idx]
            err = _uc_reg_write(self._uch, pc, self._pc_addr)
            if err:
                raise unicorn.UcError(err)

    # --- self-test --------------------------------------------------------------------
    def self_test(self) -> None:
        """Prove every offset and behaviour above on a fresh scratch ``Uc``.

        Provokes, with 4-level paging on: #PF reading a non-present page at CPL0
        (error 0), #PF writing a read-only page at CPL0 with CR0.WP (error 3), #PF
        writing a read-only user page at CPL3 (error 7), #PF reading a supervisor page
        at CPL3 (error 5), #GP from a non-canonical access (error 0), #GP from
        ``mov ss`` of a selector past the GDT limit (error 0x28); checks each vector,
        RIP, CR2 and :meth:`pending_error_code`; checks that a #GP after an uncleared
        #PF arrives as #DF and after :meth:`clear_exception_state` as #GP; that
        :meth:`set_cpl` survives ``emu_start``; that :meth:`hook_tsc` feeds RDTSC and
        RDTSCP; that batched register access round-trips; and that
        :meth:`set_memory_exit_checks` moves where a memory hook's stop lands. Raises
        :class:`EngineError` naming the first mismatch.
        """
        _run_self_test()


# --- self-test machinery -------------------------------------------------------------
_CODE = 0x10000       # user-executable code page
_RW = 0x11000         # user read-write page (stack)
_RO_USER = 0x12000    # user read-only page
_SUPER = 0x13000      # supervisor read-write page
_ABSENT = 0x14000     # not present


def _scratch_engine() -> unicorn.Uc:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x20000)
    pte = {_CODE: 0x5, _RW: 0x7, _RO_USER: 0x5, _SUPER: 0x3}
    tables = struct.pack("<Q", 0x2000 | 7) + bytes(4088)          # PML4 at 0x1000
    tables += struct.pack("<Q", 0x3000 | 7) + bytes(4088)         # PDPT at 0x2000
    tables += struct.pack("<Q", 0x4000 | 7) + bytes(4088)         # PD at 0x3000
    pt = bytearray(4096)                                          # PT at 0x4000
    for va, flags in pte.items():
        struct.pack_into("<Q", pt, (va >> 12) * 8, va | flags)
    uc.mem_write(0x1000, tables + bytes(pt))
    uc.reg_write(x86.UC_X86_REG_CR3, 0x1000)
    uc.reg_write(x86.UC_X86_REG_CR4, 0x20)                        # PAE
    uc.msr_write(0xC0000080, 0x500)                               # EFER.LME|LMA
    uc.reg_write(x86.UC_X86_REG_CR0, 0x80010001)                  # PG|WP|PE
    uc.reg_write(x86.UC_X86_REG_GDTR, (0, 0, 7, 0))               # one null descriptor
    uc.reg_write(x86.UC_X86_REG_RSP, _RW + 0x800)
    return uc


def _asm_fault_program() -> tuple[bytes, list[tuple[int, int, int, int | None, int]]]:
    """Code and expectations: (offset, length, vector, cr2 or None, error code)."""
    def load(a: int) -> bytes:
        return bytes.fromhex("488b0425") + struct.pack("<I", a)    # mov rax, [a]

    def store(a: int) -> bytes:
        return bytes.fromhex("48890425") + struct.pack("<I", a)    # mov [a], rax

    parts = [
        # (bytes, vector, cr2, error code, cpl)
        (load(_ABSENT), 14, _ABSENT, 0),                           # not present, read, CPL0
        (store(_RO_USER), 14, _RO_USER, 3),                        # P|W, CPL0, CR0.WP
        (bytes.fromhex("488b03"), 13, None, 0),                    # mov rax,[rbx] non-canonical
        (bytes.fromhex("8ed0"), 13, None, 0x28),                   # mov ss, ax (ax = 0x2b)
    ]
    code, table, off = b"", [], 0
    for raw, vec, cr2, err in parts:
        table.append((off, len(raw), vec, cr2, err))
        code += raw
        off += len(raw)
    return code, table


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise EngineError(f"unicorn {PINNED_UNICORN} self-test failed: {what}")


def _run_self_test() -> None:
    _check_version()
    uc = _scratch_engine()
    ui = UcInternals(uc, _self_test=False)
    seen: list[tuple[int, int, int, int]] = []
    plan: dict[int, int] = {}        # rip -> next rip
    clear = [True]

    def on_intr(uc_: unicorn.Uc, intno: int, _ud) -> None:
        rip = uc_.reg_read(x86.UC_X86_REG_RIP)
        seen.append((intno, rip, uc_.reg_read(x86.UC_X86_REG_CR2), ui.pending_error_code()))
        if rip not in plan:
            uc_.emu_stop()
            return
        uc_.reg_write(x86.UC_X86_REG_RIP, plan[rip])
        if clear[0]:
            ui.clear_exception_state()

    hk = uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)

    def run(code: bytes, cpl: int) -> None:
        seen.clear()
        uc.mem_write(_CODE, code + b"\x90")
        ui.set_cpl(cpl)
        uc.emu_start(_CODE, _CODE + len(code), count=64)
        _expect(ui.get_cpl() == cpl, f"CPL {cpl} did not survive emu_start (now {ui.get_cpl()})")

    def plan_for(code_table) -> None:
        plan.clear()
        for off, n, *_ in code_table:
            plan[_CODE + off] = _CODE + off + n

    # 1. Known faults at CPL0, each reported as itself with its error code.
    code, table = _asm_fault_program()
    plan_for(table)
    uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    uc.reg_write(x86.UC_X86_REG_RAX, 0x2B)
    run(code, 0)
    got = [(v, rip - _CODE, err) for v, rip, _cr2, err in seen]
    want = [(vec, off, err) for off, _n, vec, _cr2, err in table]
    hint = (f"a #DF means env->old_exception at env+{ENV_OLD_EXCEPTION} was not cleared"
            if any(v == 8 for v, *_ in got) else f"env->error_code at env+{ENV_ERROR_CODE}?")
    _expect(got == want, f"faults at CPL0 reported as (vector, offset, error) {got}, "
                         f"expected {want} ({hint})")
    for (_v, _rip, cr2, _e), (off, _n, _vec, want_cr2, _err) in zip(seen, table):
        if want_cr2 is not None:
            _expect(cr2 == want_cr2, f"#PF at offset {off}: CR2 {cr2:#x}, expected {want_cr2:#x}")

    # 2. Without clear_exception_state a #GP after a #PF escalates to #DF ...
    code, table = _asm_fault_program()
    code, table = code[:8] + code[16:19], [table[0], (8, 3, 13, None, 0)]
    plan_for(table)
    clear[0] = False
    run(code, 0)
    clear[0] = True
    got = [(v, rip - _CODE, err) for v, rip, _c, err in seen]
    _expect(got == [(14, 0, 0), (8, 8, 0)],
            f"uncleared #PF then #GP gave {got}, expected #PF then #DF "
            f"(env->old_exception at env+{ENV_OLD_EXCEPTION}?)")
    ui.clear_exception_state()
    # ... and with it the same #GP arrives as itself.
    run(code, 0)
    got = [(v, rip - _CODE, err) for v, rip, _c, err in seen]
    _expect(got == [(14, 0, 0), (13, 8, 0)],
            f"cleared #PF then #GP gave {got}, expected #PF then #GP")

    # 3. At CPL3 the same kind of accesses fault with the U bit set.
    load_super = bytes.fromhex("488b0425") + struct.pack("<I", _SUPER)
    store_ro = bytes.fromhex("48890425") + struct.pack("<I", _RO_USER)
    code = load_super + store_ro
    plan_for([(0, 8), (8, 8)])
    run(code, 3)
    got = [(v, rip - _CODE, cr2, err) for v, rip, cr2, err in seen]
    want3 = [(14, 0, _SUPER, 5), (14, 8, _RO_USER, 7)]
    _expect(got == want3, f"faults at CPL3 gave (vector, offset, cr2, error) {got}, "
                          f"expected {want3} (env->hflags at env+{ENV_HFLAGS}?)")
    # The same supervisor read succeeds at CPL0.
    seen.clear()
    ui.set_cpl(0)
    run(load_super, 0)
    _expect(seen == [], f"supervisor read at CPL0 faulted: {seen}")
    uc.hook_del(hk)

    # 3b. A software interrupt reaches the hook as its own vector, RIP past it and
    #     exception_is_int set; a fault leaves it clear.
    kinds: list[tuple[int, int, bool]] = []

    def on_intr_kind(uc_: unicorn.Uc, intno: int, _ud) -> None:
        rip = uc_.reg_read(x86.UC_X86_REG_RIP)
        kinds.append((intno, rip - _CODE, ui.pending_is_software_int()))
        ui.clear_exception_state()
        if intno == 13:                       # the faulting load: skip it
            uc_.reg_write(x86.UC_X86_REG_RIP, rip + 3)

    hk = uc.hook_add(unicorn.UC_HOOK_INTR, on_intr_kind)
    uc.reg_write(x86.UC_X86_REG_RBX, 1 << 63)
    run(bytes.fromhex("cd0e") + bytes.fromhex("488b03"), 3)   # int $14; mov rax,[rbx]
    want_kinds = [(14, 2, True), (13, 2, False)]
    _expect(kinds == want_kinds,
            f"int $14 then a #GP gave (vector, offset, software) {kinds}, expected "
            f"{want_kinds} (env->exception_is_int at env+{ENV_EXCEPTION_IS_INT}?)")
    uc.hook_del(hk)
    # A block that ended in a software interrupt survives the next mem_write of its
    # page (measured); the next step rewrites the same address.
    uc.ctl_flush_tb()

    # 4. RDTSC / RDTSCP through hook_tsc.
    tsc = [0x1122334455667788]
    handle = ui.hook_tsc(lambda _uc: tsc[0])
    ui.reg_write_batch([x86.UC_X86_REG_RAX, x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDX],
                       [_U64, _U64, _U64])
    code = bytes.fromhex("0f31") + bytes.fromhex("4889c6") + bytes.fromhex("4889d7")  # rdtsc
    code += bytes.fromhex("0f01f9")                                                    # rdtscp
    run(code, 3)
    rsi, rdi, rax, rdx, rcx, rip = ui.reg_read_batch(
        [x86.UC_X86_REG_RSI, x86.UC_X86_REG_RDI, x86.UC_X86_REG_RAX, x86.UC_X86_REG_RDX,
         x86.UC_X86_REG_RCX, x86.UC_X86_REG_RIP])
    _expect((rsi, rdi) == (0x55667788, 0x11223344),
            f"hooked rdtsc gave EDX:EAX {rdi:#x}:{rsi:#x}, expected 0x11223344:0x55667788")
    _expect((rax, rdx, rcx) == (0x55667788, 0x11223344, 0),
            f"hooked rdtscp gave EDX:EAX {rdx:#x}:{rax:#x} ECX {rcx:#x}")
    _expect(rip == _CODE + len(code), f"RIP after rdtscp {rip:#x}, expected {_CODE + len(code):#x}")
    ui.del_hook(handle)

    # 5. A stop requested from a memory hook ends the block at the access while the
    #    exit checks are on, and only at the next block once they are off.
    def stop_on_read(uc_: unicorn.Uc, *_a) -> None:
        uc_.emu_stop()

    code = bytes.fromhex("488b0425") + struct.pack("<I", _RW) + bytes.fromhex("48ffc3" * 3)
    hk = uc.hook_add(unicorn.UC_HOOK_MEM_READ, stop_on_read)
    ui.set_cpl(0)
    for enabled, want_rbx in ((True, 0), (False, 3)):
        ui.set_memory_exit_checks(enabled)
        uc.ctl_flush_tb()
        uc.reg_write(x86.UC_X86_REG_RBX, 0)
        uc.mem_write(_CODE, code + b"\x90")
        uc.emu_start(_CODE, _CODE + len(code))
        rbx = uc.reg_read(x86.UC_X86_REG_RBX)
        _expect(rbx == want_rbx,
                f"with memory exit checks {'on' if enabled else 'off'} a stop from a read "
                f"hook let {rbx} of 3 later instructions run, expected {want_rbx} "
                f"(uc->no_exit_request at uc+{UC_STRUCT_NO_EXIT_REQUEST:#x}?)")
    uc.hook_del(hk)
    ui.set_memory_exit_checks(True)


_checked: bool = False
_check_lock = threading.Lock()


def check_unicorn() -> None:
    """Check the installed Unicorn against everything this module assumes; once per process.

    Runs :meth:`UcInternals.self_test` on a scratch engine the first time it is called
    and caches success (a failure is not cached: it raises :class:`EngineError` again
    on the next call). Call it at engine start-up. Cost: 2-10 ms the first time.
    """
    global _checked
    if _checked:
        return
    with _check_lock:
        if not _checked:
            _run_self_test()
            _checked = True
