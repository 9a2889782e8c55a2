"""The x86-64 machine on Unicorn: RAM, registers, page walks, traps, the run loop.

The machine knows nothing of Xen or KVM. It turns what Unicorn reports into
calls on a :class:`TrapHandler` ("a syscall happened here", "vector 14 at this
RIP") and offers the primitives a platform needs to answer them: physical and
guest-virtual memory access, registers, CPL, TLB flushes, and a stop with a
reason.

Physical address space (machine frames): ``[0, ram_bytes)`` is guest RAM,
``[ram_bytes, ram_bytes + extra_bytes)`` is memory the platform keeps for
itself (shared_info, read-only M2P, descriptor tables). Both are backed by one
host mmap so reads are slices.
"""

from __future__ import annotations

import ctypes
import dataclasses
import mmap
import struct
from dataclasses import dataclass
from typing import Protocol

import unicorn
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc, UcError
from unicorn import unicorn_const as ucc
from unicorn import x86_const as x86

from pvmon.engine.clock import VirtualClock
from pvmon.engine.disasm import straight_line_length
from pvmon.engine.ucinternals import UcInternals

PAGE_SIZE = 4096
PAGE_SHIFT = 12

# Page-table entry bits (Intel SDM vol. 3, 4.5)
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD, PTE_A, PTE_D, PTE_PS, PTE_G = (
    1, 2, 4, 8, 16, 32, 64, 128, 256)
PTE_NX = 1 << 63
PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000

# #PF error code bits
PFEC_PRESENT, PFEC_WRITE, PFEC_USER, PFEC_RSVD, PFEC_INSN = 1, 2, 4, 8, 16

CR0_PE, CR0_MP, CR0_TS, CR0_ET, CR0_NE, CR0_WP, CR0_PG = (
    1, 2, 8, 16, 32, 1 << 16, 1 << 31)
CR4_PAE, CR4_PGE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 7, 1 << 9, 1 << 10
MSR_EFER = 0xC0000080
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1, 1 << 8, 1 << 10, 1 << 11

VECTOR_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
                7: "#NM", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
                16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM"}
# Exceptions that push an error code (SDM vol. 3, table 6-1)
VECTORS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17})

# General-purpose registers by name, for bulk access.
GPR = {n: getattr(x86, f"UC_X86_REG_{n.upper()}") for n in (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
    "r12", "r13", "r14", "r15", "rip", "rflags", "cs", "ss", "ds", "es", "fs", "gs",
    "cr0", "cr2", "cr3", "cr4", "fs_base", "gs_base")}


#: Index of each general register in :attr:`Machine.gprs` (QEMU's ``env->regs`` order).
GPR_INDEX = {n: i for i, n in enumerate((
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"))}


def _pfec(need: int, entry: int) -> int:
    """The #PF error code for an access needing PTE bits ``need`` (P, and RW for a
    write, US for a user access) that stopped at paging entry ``entry``."""
    return (PFEC_PRESENT if entry & PTE_P else 0) | (PFEC_WRITE if need & PTE_RW else 0) \
        | (PFEC_USER if need & PTE_US else 0)


try:    # the same walk in C (pvmon/engine/_pagewalk.c), when setup.py built it
    from pvmon.engine._pagewalk import walk as _c_walk
except ImportError:             # pragma: no cover - the module is optional
    _c_walk = None


class GuestPageFault(Exception):
    """A guest-virtual access the guest's page tables do not allow.

    ``va``: the address; ``error_code``: the #PF error code it would raise.
    Platforms turn this into the ABI's -EFAULT; it never leaves pvmon.
    """

    def __init__(self, va: int, error_code: int) -> None:
        super().__init__(f"page fault at {va:#x} (error code {error_code:#x})")
        self.va = va
        self.error_code = error_code


@dataclass
class Stop:
    """Why the run loop ended. ``kind``: "shutdown", "crash", "triple_fault",
    "stuck", "error", "limit", "interrupted" (replay adds "recording_end").
    ``detail``: a readable sentence; ``code``: the guest's shutdown reason;
    ``signal``: the signal number behind an "interrupted" stop, if any."""

    kind: str
    detail: str = ""
    rip: int = 0
    code: int | None = None
    signal: int | None = None


class TrapHandler(Protocol):
    """What a platform (the dispatch layer) implements to answer traps."""

    def on_syscall(self) -> None: ...
    def on_invalid_opcode(self, rip: int) -> bool: ...
    def on_interrupt(self, vector: int, rip: int) -> None: ...
    def on_cpuid(self) -> None: ...
    def on_tsc(self, _uc: object = None) -> int: ...
    def on_io_in(self, port: int, size: int) -> int: ...
    def on_io_out(self, port: int, size: int, value: int) -> None: ...
    def on_resume(self) -> None: ...
    def after_step(self) -> None: ...


class Machine:
    """One vCPU, its RAM, and the Unicorn instance behind them.

    ``ram_bytes``: guest RAM (bytes, multiple of 4 KiB); ``extra_bytes``:
    platform-owned frames placed right after RAM.
    Raises :class:`pvmon.errors.EngineError` if the pinned Unicorn does not
    behave as measured (see :mod:`pvmon.engine.ucinternals`).
    """

    def __init__(self, ram_bytes: int, extra_bytes: int = 0,
                 clock: VirtualClock | None = None) -> None:
        if ram_bytes % PAGE_SIZE or extra_bytes % PAGE_SIZE:
            raise ValueError("memory sizes must be multiples of 4 KiB")
        self.ram_bytes = ram_bytes
        self.extra_bytes = extra_bytes
        self.phys_bytes = ram_bytes + extra_bytes
        self.clock = clock or VirtualClock()
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.internals = UcInternals(self.uc)
        # No memory hooks, so no exit check after every load and store (the largest
        # single cost in Unicorn's translated code; ucinternals.set_memory_exit_checks).
        self.internals.set_memory_exit_checks(False)
        #: Live general registers, indexed as ``GPR_INDEX`` (ucinternals ``gprs``).
        self.gprs = self.internals.gprs
        # private, not Python's default shared mapping: a forked process (a gdb
        # snapshot, pvmon.gdb.reverse) gets its own copy-on-write guest RAM
        self._mem = mmap.mmap(-1, self.phys_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._mem_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._mem))
        self.uc.mem_map_ptr(0, self.phys_bytes, ucc.UC_PROT_ALL, self._mem_ptr)
        self.mem = memoryview(self._mem)
        self.handler: TrapHandler | None = None
        self.stop_reason: Stop | None = None
        #: A stop asked for from outside the engine (:meth:`request_stop`), not yet honoured.
        self.stop_request: Stop | None = None
        self._hooks: list[int] = []
        self.step_pending = False
        #: Whole-TLB flushes asked of the engine so far (:meth:`flush_tlb` and
        #: :meth:`write_cr3`): a clock a caller reads to know whether the TLB
        #: was emptied since some moment (one flush the engine makes by itself,
        #: a CR3 the guest loads natively, is not counted).
        self.tlb_flushes = 0
        #: True while :meth:`run` runs (read by threads repeating a stop request).
        self.running = False
        #: The HVM platform's engine switches (:class:`pvmon.engine.hvm.HvmCpu`),
        #: switched on for each run; None for a PV guest.
        self.hvm = None
        #: A debugger (:mod:`pvmon.gdb`): ``on_break()`` is called on the engine
        #: thread when :attr:`debug_break` is set, before the next instruction.
        self.debugger = None
        self.debug_break = False
        #: Addresses where ``emu_start`` returns before executing them (a
        #: debugger's breakpoints; empty without one): :meth:`set_exits`.
        self.exits: list[int] = []
        #: A block budget (:class:`pvmon.engine.slicer.Slicer`) a platform that
        #: time-slices several vCPUs on this engine installs; None: none.
        self.slicer = None
        #: The last slice ended because the slicer's budget ran out.
        self.quantum_expired = False

    # ----------------------------------------------------------------- setup
    def attach(self, handler: TrapHandler) -> None:
        """Route every trap to ``handler`` (installs the Unicorn hooks)."""
        self.handler = handler
        uc = self.uc
        h = handler
        self._hooks += [
            uc.hook_add(ucc.UC_HOOK_INSN, self._cpuid_cb, None, 1, 0, x86.UC_X86_INS_CPUID),
            uc.hook_add(ucc.UC_HOOK_INSN_INVALID, self._invalid_cb),
            uc.hook_add(ucc.UC_HOOK_INTR, self._intr_cb),
        ]
        # SYSENTER, for a handler that answers it (Unicorn's helper_sysenter only
        # calls its hooks and steps past it; called only when one executes)
        if hasattr(h, "on_sysenter"):
            self._hooks.append(uc.hook_add(ucc.UC_HOOK_INSN, self._sysenter_cb, None, 1, 0,
                                           x86.UC_X86_INS_SYSENTER))
        # The hot traps (hypercalls, port I/O) through raw callbacks (ucinternals).
        self._trap_hook = self.internals.hook_syscall_and_ports(h.on_syscall, h.on_io_in,
                                                                h.on_io_out)
        # No memory hooks: even an UNMAPPED/FETCH_PROT hook slows every guest load
        # and store (measured: 11.6 s -> 7.7 s for the Debian 6.12 boot). An access
        # outside machine memory ends emu_start with UC_ERR_*_UNMAPPED instead,
        # which _classify_error reports as a guest crash.
        self._tsc_hook = self.internals.hook_tsc(h.on_tsc)     # called with the Uc
        # Empty exit list: emu_start ignores `until` and never probes an address
        # through the guest page tables when it returns (DESIGN.md, engine facts).
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])

    def _cpuid_cb(self, uc, data) -> int:
        self.handler.on_cpuid()
        return 1

    def _sysenter_cb(self, uc, data) -> None:
        self.handler.on_sysenter()

    def _invalid_cb(self, uc, data) -> bool:
        return bool(self.handler.on_invalid_opcode(self.reg("rip")))

    def _intr_cb(self, uc, vector, data) -> None:
        self.handler.on_interrupt(vector, self.reg("rip"))

    def setup_long_mode(self, cr3: int, gdt_base: int, gdt_limit: int) -> None:
        """Enter 64-bit paging mode with the guest's page-table root ``cr3``
        (a machine address) and a GDT at guest-virtual ``gdt_base``."""
        uc = self.uc
        uc.reg_write(x86.UC_X86_REG_CR3, cr3)
        uc.reg_write(x86.UC_X86_REG_CR4, CR4_PAE | CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT)
        uc.msr_write(MSR_EFER, EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE)
        uc.reg_write(x86.UC_X86_REG_CR0, CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG)
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, gdt_base, gdt_limit, 0))

    # -------------------------------------------------------------- registers
    def reg(self, name: str) -> int:
        """Read one register by lower-case name (``rip``, ``rax``, ``cr3``...)
        through the raw batch call (about 3x cheaper than the binding's)."""
        return self.internals.reg_read_batch([GPR[name]])[0]

    def set_reg(self, name: str, value: int) -> None:
        self.internals.reg_write_batch([GPR[name]], [value & 0xFFFF_FFFF_FFFF_FFFF])

    def regs(self, *names: str) -> list[int]:
        """Read several registers in one raw batch call."""
        return self.internals.reg_read_batch([GPR[n] for n in names])

    def set_regs(self, **values: int) -> None:
        """Write several registers in one raw batch call."""
        names = list(values)
        self.internals.reg_write_batch([GPR[n] for n in names],
                                       [values[n] & 0xFFFF_FFFF_FFFF_FFFF for n in names])

    def snapshot_regs(self) -> dict[str, int]:
        """All general-purpose and control registers, for the UI and crash reports."""
        names = list(GPR)
        return dict(zip(names, self.regs(*names)))

    @property
    def cpl(self) -> int:
        return self.internals.get_cpl()

    def set_cpl(self, cpl: int) -> None:
        self.internals.set_cpl(cpl)

    def set_segment(self, name: str, selector: int) -> None:
        self.uc.reg_write(GPR[name], selector)

    def set_ldt(self, selector: int, base: int, limit: int) -> None:
        """Load the LDTR as an LLDT of a present LDT descriptor would: the
        selector ``sldt`` reads, the table at guest-virtual ``base`` (64-bit)
        and its byte ``limit`` (inclusive). ``limit`` 0 with ``base`` 0 is a
        null LDTR (LLDT 0): every selector with TI=1 then raises #GP(selector)
        when loaded, as its descriptor lies beyond the limit. Descriptor loads
        read the table with supervisor accesses through the current page
        tables (a page not mapped there is a #PF at ``base`` + index * 8).
        No translated code depends on the LDTR (QEMU's segment helpers read
        it at run time), so nothing is flushed."""
        flags = (1 << 15) | (2 << 8) if limit else 0      # present, type 2 (LDT)
        self.uc.reg_write(x86.UC_X86_REG_LDTR, (selector & 0xFFFF, base, limit, flags))

    def ldt(self) -> tuple[int, int, int]:
        """The LDTR as ``(selector, base, limit)``."""
        sel, base, limit, _flags = self.uc.reg_read(x86.UC_X86_REG_LDTR)
        return sel, base, limit

    def msr_write(self, msr: int, value: int) -> None:
        self.uc.msr_write(msr, value)

    def flush_tlb(self) -> None:
        """Drop every cached translation (after the host edits a present PTE)."""
        self.tlb_flushes += 1
        self.internals.flush_tlb()

    def write_cr3(self, cr3: int) -> None:
        """Load CR3 (a machine address below 4 GiB: Unicorn 2.1.4 keeps the low 32
        bits). Unicorn's CR3 write flushes the TLB itself (``cpu_x86_update_cr3``),
        as a MOV to CR3 does without PCIDs."""
        self.tlb_flushes += 1
        self.internals.reg_write_batch([x86.UC_X86_REG_CR3], [cr3])

    def alias_frame(self, pa: int, ma: int) -> bool:
        """Make machine frame ``ma`` also appear at guest-physical ``pa`` (both
        4 KiB aligned), beyond machine memory: what a hypervisor does when an
        HVM guest asks for one of its frames in an unpopulated part of its
        physical address space. False when ``pa`` is inside machine memory, or
        already holds a frame (the caller answers the guest's error)."""
        if pa % PAGE_SIZE or ma % PAGE_SIZE or pa < self.phys_bytes \
                or not self.valid_phys(ma, PAGE_SIZE) or pa >= 1 << 52:
            return False
        try:
            self.uc.mem_map_ptr(pa, PAGE_SIZE, ucc.UC_PROT_ALL, self._mem_ptr + ma)
        except UcError:
            return False
        return True

    # -------------------------------------------------------- physical memory
    def valid_phys(self, pa: int, size: int = 1) -> bool:
        return 0 <= pa and pa + size <= self.phys_bytes

    def read_phys(self, pa: int, size: int) -> bytes:
        """Read machine memory. Raises ValueError outside the machine."""
        if not self.valid_phys(pa, size):
            raise ValueError(f"machine address {pa:#x}+{size} outside memory")
        return self._mem[pa:pa + size]

    def write_phys(self, pa: int, data: bytes) -> None:
        """Write machine memory through Unicorn so translated code is invalidated."""
        if pa < 0 or pa + len(data) > self.phys_bytes:       # valid_phys, inline
            raise ValueError(f"machine address {pa:#x}+{len(data)} outside memory")
        self.internals.mem_write(pa, data if data.__class__ is bytes else bytes(data))

    def write_phys_data(self, pa: int, data: bytes) -> None:
        """Write machine memory that holds data, never code (no TB invalidation)."""
        if not self.valid_phys(pa, len(data)):
            raise ValueError(f"machine address {pa:#x}+{len(data)} outside memory")
        self._mem[pa:pa + len(data)] = data

    def read_u64_phys(self, pa: int) -> int:
        return struct.unpack_from("<Q", self._mem, pa)[0]

    def write_u64_phys(self, pa: int, value: int) -> None:
        struct.pack_into("<Q", self._mem, pa, value & 0xFFFF_FFFF_FFFF_FFFF)

    # ------------------------------------------------- guest-virtual memory
    def walk(self, va: int, *, write: bool = False, user: bool = False,
             cr3: int | None = None) -> tuple[int, int]:
        """Translate guest-virtual ``va`` through the page tables at ``cr3``
        (default: the current CR3). Returns ``(machine address, pte address)``.
        Raises :class:`GuestPageFault` with the #PF error code the access would
        raise. 4 KiB, 2 MiB and 1 GiB pages are understood."""
        if cr3 is None:
            cr3 = self.internals.cr3
        need = PTE_P | (PTE_RW if write else 0) | (PTE_US if user else 0)
        if _c_walk is not None:
            r = _c_walk(self._mem_ptr, self.phys_bytes, cr3, va, need)
            if r.__class__ is int:
                raise GuestPageFault(va, _pfec(need, r))
            return r
        top = va >> 47
        if top and top != 0x1FFFF:
            raise GuestPageFault(va, _pfec(need, 0))
        mem = self._mem
        last = self.phys_bytes - 8
        table = cr3 & PTE_ADDR_MASK
        for shift in (39, 30, 21, 12):            # L4, L3, L2, L1
            ea = table | ((va >> (shift - 3)) & 0xFF8)
            if ea > last:
                raise GuestPageFault(va, _pfec(need, 0))
            e = struct.unpack_from("<Q", mem, ea)[0]
            if e & need != need:
                raise GuestPageFault(va, _pfec(need, e))
            if e & PTE_PS and (shift == 30 or shift == 21):    # 1 GiB / 2 MiB page
                size_mask = (1 << shift) - 1
                return (e & PTE_ADDR_MASK & ~size_mask) | (va & size_mask), ea
            table = e & PTE_ADDR_MASK
        return table | (va & 0xFFF), ea

    def read_insn(self, rip: int, *, user: bool = False) -> bytes:
        """The bytes an instruction at guest-virtual ``rip`` may span: 15 (the
        x86 maximum), or up to the end of ``rip``'s page when the next page is
        not mapped. Raises :class:`GuestPageFault` when ``rip``'s own page is not."""
        try:
            return self.read_virt(rip, 15, user=user)
        except GuestPageFault:
            return self.read_virt(rip, PAGE_SIZE - (rip & 0xFFF), user=user)

    def read_virt(self, va: int, size: int, *, user: bool = False) -> bytes:
        """Read ``size`` bytes at guest-virtual ``va`` (may cross pages).
        Raises :class:`GuestPageFault`."""
        if 0 < size and (va & 0xFFF) + size <= PAGE_SIZE:      # within one page
            if _c_walk is not None:     # walk(), inline: most hypercall arguments
                need = PTE_P | PTE_US if user else PTE_P
                r = _c_walk(self._mem_ptr, self.phys_bytes, self.internals.cr3, va, need)
                if r.__class__ is int:
                    raise GuestPageFault(va, _pfec(need, r))
                pa = r[0]
            else:
                pa = self.walk(va, user=user)[0]
            if pa + size > self.phys_bytes:
                raise GuestPageFault(va, PFEC_PRESENT)
            return self._mem[pa:pa + size]
        out = bytearray()
        while size > 0:
            pa, _ = self.walk(va, user=user)
            n = min(size, PAGE_SIZE - (va & 0xFFF))
            if pa + n > self.phys_bytes:
                raise GuestPageFault(va, PFEC_PRESENT)
            out += self._mem[pa:pa + n]
            va += n
            size -= n
        return bytes(out)

    def write_virt(self, va: int, data: bytes, *, user: bool = False) -> None:
        """Write ``data`` at guest-virtual ``va`` honouring write permission.
        Checks every page first, so a fault writes nothing."""
        chunks = []
        off = 0
        size = len(data)
        while off < size:
            pa, _ = self.walk(va + off, write=True, user=user)
            n = min(size - off, PAGE_SIZE - ((va + off) & 0xFFF))
            if pa + n > self.phys_bytes:
                raise GuestPageFault(va + off, PFEC_PRESENT | PFEC_WRITE)
            chunks.append((pa, off, n))
            off += n
        for pa, o, n in chunks:
            self.internals.mem_write(pa, bytes(data[o:o + n]))

    # ---------------------------------------------------------------- running
    def stop(self, stop: Stop) -> None:
        """End the run loop (from inside a hook: stops right after the trap)."""
        if self.stop_reason is None:
            self.stop_reason = stop
        self.uc.emu_stop()

    def request_stop(self, stop: Stop) -> None:
        """Ask the run loop to end with ``stop`` at its next safe point: when
        ``emu_start`` returns, after the trap being handled (if any) has
        returned, never inside a hook. Safe from any thread and from a signal
        handler: it only sets :attr:`stop_request` and asks Unicorn to leave
        ``emu_start`` (``uc_emu_stop``, which Unicorn's own timeout thread also
        calls). The first request wins; ``stop.rip`` is filled in when it is
        honoured. A call that lands just before ``emu_start`` begins is lost by
        Unicorn (the request stays set): callers on other threads repeat it
        until :attr:`running` is False (:class:`pvmon.engine.signals.StopOnSignals`
        does). Platforms waiting in wall time inside a hook (an idle guest
        waiting for console input) poll :attr:`stop_request` themselves."""
        if self.stop_request is None:
            self.stop_request = stop
        self.uc.emu_stop()

    def _honour_request(self) -> None:
        if self.stop_reason is None:
            self.stop_reason = dataclasses.replace(self.stop_request, rip=self.reg("rip"))

    def request_step(self) -> None:
        """Stop now and execute exactly one instruction before the next
        ``on_resume``; the handler's ``after_step`` runs right after it."""
        self.step_pending = True
        self.uc.emu_stop()

    def pause(self) -> None:
        """Return from the current ``emu_start`` without ending the run."""
        self.uc.emu_stop()

    def run(self, max_slices: int | None = None) -> Stop:
        """Run until a platform stops the machine, or until a stop asked for with
        :meth:`request_stop` is honoured between two slices. Between slices the
        handler's ``on_resume`` delivers whatever became pending (events,
        timers). Returns the :class:`Stop`."""
        uc = self.uc
        slices = 0
        self.running = True
        if self.hvm is not None:
            self.hvm.activate()
        try:
            while self.stop_reason is None:
                if self.stop_request is not None:
                    self._honour_request()
                    break
                if self.debug_break:            # a debugger stop (pvmon.gdb)
                    self.debug_break = False
                    self.debugger.on_break()
                    continue
                if max_slices is not None and slices >= max_slices:
                    return Stop("limit", "slice limit reached", self.reg("rip"))
                slices += 1
                rip = uc.reg_read(x86.UC_X86_REG_RIP)
                try:
                    if self.step_pending:
                        self.step_pending = False
                        self._step(rip)
                        self.handler.after_step()
                        continue
                    uc.emu_start(rip, 0)
                    if self.slicer is not None:
                        self.quantum_expired = self.slicer.expired
                        self.slicer.clear()
                except UcError as exc:
                    if self.stop_reason is None:
                        self.stop_reason = self._classify_error(exc)
                    break
                if self.stop_reason is not None:
                    break
                if self.stop_request is not None:
                    self._honour_request()
                    break
                if self.exits and not self.debug_break:   # at a debugger's breakpoint?
                    self.debug_break = uc.reg_read(x86.UC_X86_REG_RIP) in self.exits
                if self.debug_break:            # stopped mid-slice by the debugger
                    continue
                self.handler.on_resume()
        finally:
            self.running = False
            if self.hvm is not None:
                self.hvm.deactivate()
        return self.stop_reason

    def _step(self, rip: int) -> None:
        """Execute exactly the one instruction at ``rip``.

        A straight-line instruction runs to an exit address placed right after it:
        the cached blocks over it are dropped first so its new block ends there, and
        Unicorn drops the block holding an exit when ``emu_start`` returns. Anything
        else runs under ``count=1``, which is exact (DESIGN.md) but makes the next
        plain ``emu_start`` flush the whole translation cache (Unicorn 2.1.4 uc.c
        drops every block when the count hook goes), about 1 ms of retranslation
        per step on a Linux boot."""
        uc = self.uc
        try:
            size = straight_line_length(self.read_insn(rip), rip)
        except GuestPageFault:
            size = None
        if size is None:
            self.internals.set_memory_exit_checks(True)
            try:
                uc.emu_start(rip, 0, count=1)
            finally:
                self.internals.set_memory_exit_checks(False)
            return
        end = rip + size
        self._drop_blocks(rip, end)
        uc.ctl_set_exits([end])
        try:
            uc.emu_start(rip, 0)
        finally:
            uc.ctl_set_exits(self.exits)

    def step_one(self) -> None:
        """Execute exactly one guest instruction now, outside :meth:`run` (a
        debugger's single step). If the instruction made the platform ask for
        its own step (:meth:`request_step`: a trapped write redone), that step
        runs too, followed by the handler's ``after_step``. A guest stop or
        engine error sets :attr:`stop_reason`."""
        try:
            self._step(self.reg("rip"))
            while self.step_pending and self.stop_reason is None:
                self.step_pending = False
                self._step(self.reg("rip"))
                self.handler.after_step()
        except UcError as exc:
            if self.stop_reason is None:
                self.stop_reason = self._classify_error(exc)

    def set_exits(self, addresses: list[int]) -> None:
        """Make ``emu_start`` return before executing any of ``addresses``
        (guest-virtual; a debugger's breakpoints). Exits are compiled into the
        translated blocks, so the blocks over each address added or removed are
        dropped (all blocks, if one of them is not mapped now)."""
        changed = set(self.exits).symmetric_difference(addresses)
        self.exits = list(addresses)
        self.uc.ctl_set_exits(self.exits)
        try:
            for addr in changed:
                self._drop_blocks(addr, addr + 1)
        except UcError:
            self.uc.ctl_flush_tb()

    def _drop_blocks(self, start: int, end: int) -> None:
        """Invalidate translated blocks over guest-virtual ``[start, end)``, page by page
        (Unicorn translates only the first address of a range)."""
        while start < end:
            stop = min(end, (start | 0xFFF) + 1)
            self.uc.ctl_remove_cache(start, stop)
            start = stop

    def _classify_error(self, exc: UcError) -> Stop:
        rip = self.reg("rip")
        if exc.errno == ucc.UC_ERR_EXCEPTION:
            return Stop("triple_fault", "unhandled CPU exception (triple fault)", rip)
        if exc.errno == ucc.UC_ERR_INSN_INVALID:
            return Stop("crash", "invalid instruction", rip)
        if exc.errno in (ucc.UC_ERR_READ_UNMAPPED, ucc.UC_ERR_WRITE_UNMAPPED,
                         ucc.UC_ERR_FETCH_UNMAPPED):
            return Stop("crash", f"access outside machine memory ({exc})", rip)
        return Stop("crash", f"engine stopped: {exc}", rip)

    def close(self) -> None:
        try:
            self.uc.emu_stop()
        except UcError:
            pass


__all__ = ["GPR_INDEX", "PAGE_SIZE", "GuestPageFault", "Machine", "Stop", "TrapHandler", "unicorn"]
