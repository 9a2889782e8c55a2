"""The lguest host (``drivers/lguest``) and Launcher (``tools/lguest``) as a
pvmon backend: ``lguest-4.13``, the final mainline ABI (4.1-4.13).

Every call's semantics and every "kill_guest" come from the facts sheet
(section 2) and the sources it names ([LGHC] hypercalls.c, [LGI]
interrupts_and_traps.c, [LGS] segments.c, [LGP] page_tables.c, [LGL]
lguest.c): a call lguest would kill the guest for stops the run as a crash
whose detail is the host's message, never a host exception. The host built
here is a non-PAE host (lguest's host and guest share CONFIG_X86_PAE), so
LHCALL_SET_PMD is "Bad hypercall" as in a non-PAE ``do_hcall``.

Model (docs/lguest.md): the CPU walks the guest's own page tables (no
shadow page tables), so page-table calls validate what lguest validates and
flush the TLB where lguest would drop shadows; the host's IDT, GDT and TSS
live in the Switcher pages (:mod:`pvmon.backends.lguest.builder`).
"""

from __future__ import annotations

import struct
from typing import Any

from pvmon.backends.base import Backend, GuestFault
from pvmon.backends.lguest import abi
from pvmon.backends.lguest import builder as B

U32 = 0xFFFFFFFF
#: Launcher PCI: the virtio console at 00:01.0 [LGL] ``setup_console``,
#: ``emulate_insn``; its config space as pvmon lays it out (docs/lguest.md).
PCI_CONF_ADDR, PCI_CONF_DATA = 0xCF8, 0xCFC
CONSOLE_DEVFN = 1 << 3
VIRTIO_CONSOLE_ID = 0x10431AF4
CAP_DEVICE_CFG, CAP_PCI_CFG = 0x40, 0x50
PCI_CFG_DATA = CAP_PCI_CFG + 16
EMERG_WR = 8            # offsetof(struct virtio_console_config, emerg_wr)


class LguestKilled(Exception):
    """kill_guest(): the message the host gives."""


class LguestConsole:
    """The console device's input side (no input: the guest has no reader)."""

    def input_consumed(self) -> bool:
        return True


class LguestEvents:
    def __init__(self) -> None:
        self.raised: list[int] = []


class LguestVcpu:
    """The guest's one CPU as lguest's host sees it (``struct lg_cpu``):
    pending IRQs, the clock event, halted, and the guest-visible interrupt
    flag in ``lguest_data.irq_enabled``."""

    user_mode = False

    def __init__(self, backend: LguestBackend) -> None:
        self.b = backend
        self.deadline: int | None = None
        self.irqs_pending = 0
        self.halted = False
        self.blocked_ns = 0

    # ------------------------------------------------------------ lguest_data
    def _ld(self, off: int, size: int = 4) -> int:
        ld = self.b.lguest_data
        if ld is None:
            return 0
        return int.from_bytes(self.b.m.read_phys(ld + off, size), "little")

    def _ld_write(self, off: int, value: int) -> None:
        ld = self.b.lguest_data
        if ld is not None:
            self.b.m.write_phys_data(ld + off, struct.pack("<I", value & U32))

    def upcall_mask(self) -> int:
        """Non-zero while the guest has interrupts off (irq_enabled 0)."""
        return 0 if self._ld(abi.LD_IRQ_ENABLED) & abi.X86_EFLAGS_IF else 1

    def upcall_pending(self) -> bool:
        return self.deliverable_irq() is not None

    def deliverable_irq(self) -> int | None:
        """The lowest pending IRQ not blocked by ``blocked_interrupts``
        ([LGI] ``interrupt_pending``), or None."""
        if self.b.lguest_data is None:
            return None
        pend = self.irqs_pending & ~self._ld(abi.LD_BLOCKED_INTERRUPTS) & U32
        if not pend:
            return None
        return (pend & -pend).bit_length() - 1

    def due_vector(self) -> int | None:
        """[LGI] ``try_deliver_interrupt``: the vector to deliver now, or
        None. A halted guest is woken with irq_enabled = X86_EFLAGS_IF; a
        guest with interrupts off gets irq_pending = X86_EFLAGS_IF instead;
        an IRQ whose IDT entry is absent is not delivered."""
        irq = self.deliverable_irq()
        if irq is None:
            return None
        if self.halted:
            self._ld_write(abi.LD_IRQ_ENABLED, abi.X86_EFLAGS_IF)
            self.halted = False
        elif not self._ld(abi.LD_IRQ_ENABLED) & abi.X86_EFLAGS_IF:
            if self._ld(abi.LD_IRQ_PENDING) != abi.X86_EFLAGS_IF:
                self._ld_write(abi.LD_IRQ_PENDING, abi.X86_EFLAGS_IF)
            return None
        vec = abi.FIRST_EXTERNAL_VECTOR + irq
        lo, hi = self.b.idt.get(vec, (0, 0))
        if not abi.idt_present(lo, hi):
            return None
        return vec

    def can_upcall(self) -> bool:
        return self.deliverable_irq() is not None and not self.upcall_mask()

    def deliver_upcall(self) -> bool:
        return False          # interrupts are raised on the CPU (dispatch layer)

    def write_timestamp(self) -> None:
        """[LGI] ``write_timestamp``: lguest_data.time = wallclock now."""
        now = self.b.wallclock_base_ns + self.b.m.clock.now_ns
        ld = self.b.lguest_data
        if ld is not None:
            self.b.m.write_phys_data(ld + abi.LD_TIME,
                                     struct.pack("<ii", now // 10**9, now % 10**9))

    # ------------------------------------------------------------------ time
    def fire_timers(self) -> bool:
        """The clock event expired: IRQ 0 pending ([LGI] ``clockdev_fn``)."""
        dl = self.deadline
        if dl is not None and dl <= self.b.m.clock.now_ns:
            self.deadline = None
            self.irqs_pending |= 1
            return True
        return False

    def next_deadline(self) -> int | None:
        return self.deadline

    def idle_until(self, deadline: int) -> None:
        clock = self.b.m.clock
        now = clock.now_ns
        if deadline > now:
            self.blocked_ns += deadline - now
            clock.advance_to(deadline)
        self.fire_timers()

    # the PV members of the Vcpu protocol, unused by lguest
    def deliver_trap(self, vector, error_code, cr2, rip) -> bool:
        return False

    def software_interrupt(self, vector: int, next_rip: int):
        return vector, None, next_rip

    def syscall_from_user(self, ret_rip: int) -> bool:
        return False


class LguestBackend(Backend):
    """lguest at its final mainline ABI (Linux 4.13). ``pae``: a PAE host
    (not offered yet; SET_PMD is then a call)."""

    abi = "lguest"
    CAPABILITIES = frozenset()

    def __init__(self, name: str = "lguest-4.13", version: str = "4.13") -> None:
        self.name = name
        self.version = version
        #: 4.0 and before: LHCALL_NOTIFY and no PCI (the lguest bus) (:data:`ERAS`)
        self.pre_pci = ERAS[version]["pre_pci"]
        self.names = abi.HYPERCALLS_4_0 if self.pre_pci else abi.HYPERCALLS
        self.ver = None
        self.hypercall_page = None
        self.op: dict = {}
        self.unsupported: dict[str, int] = {}
        self.console_out = lambda ch, data: None
        self.events = LguestEvents()
        self.console = LguestConsole()
        self.pinned: dict[int, int] = {}
        self.pae = False
        self._ring_slot = 0
        self.lguest_data: int | None = None
        self.idt: dict[int, tuple[int, int]] = {}
        self.pgdirs: list[int] = []
        self.cur_pgdir: int | None = None
        self.ss1, self.esp1, self.stack_pages = abi.KERNEL_DS, 0, 0
        self.ts = 0
        self.next_hcall = 0
        self.syscall_vec = abi.SYSCALL_VECTOR
        self.noirq_iret = 0
        self.kernel_address = 0
        #: wallclock at virtual time 0 (ns since the epoch; fixed: determinism)
        self.wallclock_base_ns = 1_500_000_000 * 10**9
        self.pci_addr = 0
        self.pci_window = {"bar": 0, "offset": 0, "length": 0}
        self._cons_line = bytearray()

    def describe(self) -> dict:
        return {"name": self.name, "abi": self.abi, "version": self.version,
                "base": None if not self.pre_pci else "lguest-4.13",
                "differences": list(ERAS[self.version]["differences"])}

    def call_name(self, nr: int) -> str:
        """The call's name in this era's table (``lhcall_<nr>`` if none)."""
        return self.names.get(nr, f"lhcall_{nr}")

    # ---------------------------------------------------------------- attach
    def attach(self, machine: Any, layout: Any, guest, platform, memory_bytes: int,
               name: str) -> None:
        self.m = machine
        self.layout = layout
        self.g = guest
        self.p = platform
        self.ram = memory_bytes
        self.vcpu = LguestVcpu(self)
        self.sw = layout.switcher_pa

    # ------------------------------------------------------------------ kill
    def kill(self, msg: str) -> None:
        raise LguestKilled(msg)

    # ------------------------------------------------------------ async ring
    def take_async(self) -> tuple[int, tuple[int, ...]] | None:
        """The next pending entry of the asynchronous hypercall ring, or None
        ([LGHC] ``do_async_hcalls``); :meth:`async_done` marks it done after
        the call, as lguest does."""
        ld = self.lguest_data
        if ld is None:
            return None
        n = self.next_hcall
        try:
            st = self.g.read_machine(ld + abi.LD_HCALL_STATUS + n, 1)[0]
            if st == 0xFF:
                return None
            raw = self.g.read_machine(ld + abi.LD_HCALLS + n * abi.HCALL_ARGS_SIZE,
                                      abi.HCALL_ARGS_SIZE)
        except GuestFault:
            self.p.crash_stop("lguest killed the guest: Fetching async hypercalls",
                              self.p.cur_rip())
            return None
        self._ring_slot = n
        self.next_hcall = (n + 1) % abi.RING_SIZE
        a = struct.unpack("<5I", raw)
        return a[0], a[1:]

    def async_done(self) -> None:
        """Mark the ring entry :meth:`take_async` returned done (0xFF)."""
        self.g.write_machine(self.lguest_data + abi.LD_HCALL_STATUS + self._ring_slot, b"\xff")

    # ------------------------------------------------------------------ call
    def call(self, nr: int, args: tuple[int, ...]) -> int:
        """Run hypercall ``nr`` with (EBX, ECX, EDX, ESI). Returns 0 (lguest
        calls return nothing; EAX is left alone). A call lguest kills the
        guest for ends the run through ``crash_stop`` with its message."""
        self.op = {}
        try:
            if self.lguest_data is None and nr != 1:
                self.kill(f"hypercall {nr} before INIT")
            fn = _CALLS.get(nr)
            if (fn is None or (nr == 13 and not self.pae)
                    or (nr == 17 and not self.pre_pci)):
                name = self.call_name(nr)
                self.unsupported[name] = self.unsupported.get(name, 0) + 1
                self.kill(f"Bad hypercall {nr}")
            fn(self, *args)
        except LguestKilled as k:
            self.op["killed"] = str(k)
            self.p.crash_stop(f"lguest killed the guest: {k} ({self.call_name(nr)})",
                              self.p.cur_rip())
        return 0

    def _read(self, pa: int, size: int, what: str) -> bytes:
        try:
            return self.g.read_machine(pa, size)
        except GuestFault:
            self.kill(f"bad {what} address {pa:#x}")
            raise

    def _ram_ok(self, pa: int, size: int) -> bool:
        """[LGHC] ``lguest_address_ok``: inside guest RAM."""
        return 0 <= pa and pa + size <= self.ram

    # the calls ------------------------------------------------------------
    def _flush_async(self, *_a) -> None:
        """LHCALL_FLUSH_ASYNC: nothing beyond the ring (already run)."""

    def _init(self, pa, *_a) -> None:
        """LHCALL_LGUEST_INIT [LGHC] ``initialize``."""
        if self.lguest_data is not None:
            self.kill("already have lguest_data")
        if not self._ram_ok(pa, abi.LGUEST_DATA_SIZE):
            self.kill(f"bad guest page {pa:#x}")
        raw = self._read(pa + abi.LD_NOIRQ_IRET, 12, "lguest_data")
        self.noirq_iret, self.kernel_address, self.syscall_vec = struct.unpack("<3I", raw)
        if self.syscall_vec != abi.SYSCALL_VECTOR:
            self.kill("bad syscall vector")
        self.lguest_data = pa
        self.g.write_machine(pa + abi.LD_RESERVE_MEM, struct.pack("<II", B.RESERVE_MEM, 0))
        self.vcpu.write_timestamp()
        self.op = {"lguest_data": pa, "noirq_iret": self.noirq_iret,
                   "kernel_address": self.kernel_address, "syscall_vec": self.syscall_vec}

    def _shutdown(self, pa, reason, *_a) -> None:
        """LHCALL_SHUTDOWN: the guest dies with its message ([LGHC])."""
        msg = "Unknown"
        if self._ram_ok(pa, 1):
            raw = self.g.read_machine(pa, min(128, self.ram - pa))
            msg = raw.split(b"\0", 1)[0][:127].decode("latin-1")
        self.op = {"reason": reason, "msg": msg}
        self.p.end_run_shutdown(msg, reason)

    def _new_pgtable(self, pa, *_a) -> None:
        """LHCALL_NEW_PGTABLE [LGP] ``guest_new_pagetable``: CR3 = ``pa``."""
        if pa & (0x1F if self.pae else 0xFFF) or not self._ram_ok(pa, 32 if self.pae else 4096):
            self.kill(f"bad page table {pa:#x} (pvmon's wording: lguest fails reading it)")
        if pa not in self.pgdirs:
            self.pgdirs.append(pa)
            del self.pgdirs[:-4]       # lguest caches 4 shadow pgdirs
        self.cur_pgdir = pa
        self._map_switcher(pa)
        self.m.write_cr3(pa)
        self.op = {"pgdir": pa}

    def _map_switcher(self, pgdir: int) -> None:
        """Put the Switcher's page table in the top slot of ``pgdir`` (the
        slot reserve_mem keeps the guest out of); PAE: entry 510 of the page
        directory PDPT entry 3 points to, which the guest must provide."""
        spt = self.sw + 2 * B.PAGE
        if not self.pae:
            self.g.write_machine(pgdir + 4 * B.SWITCHER_PDE,
                                 struct.pack("<I", spt | B.P | B.RW))
            return
        pdpte = struct.unpack("<Q", self.g.read_machine(pgdir + 8 * B.PAE_SWITCHER_PDPTE, 8))[0]
        pd = pdpte & 0x000FFFFFFFFFF000
        if not pdpte & B.P or not self._ram_ok(pd, 4096):
            self.kill("Cannot populate switcher mapping (no page directory for the top "
                      "GiB; pvmon's wording)")
        self.g.write_machine(pd + 8 * B.PAE_SWITCHER_PDE, struct.pack("<Q", spt | B.P | B.RW))

    def _flush_tlb(self, all_, *_a) -> None:
        """LHCALL_FLUSH_TLB: drop user (0) or all mappings [LGP]."""
        self.op = {"all": bool(all_)}
        self.m.flush_tlb()

    def _load_idt_entry(self, num, lo, hi, *_a) -> None:
        """LHCALL_LOAD_IDT_ENTRY [LGI] ``load_guest_idt_entry``/``set_trap``."""
        self.op = {"vec": num, "lo": lo, "hi": hi}
        if num in abi.IGNORED_IDT:
            return
        if num >= 256:
            self.kill(f"Setting idt entry {num}")
        if not abi.idt_present(lo, hi):
            self.idt.pop(num, None)
        else:
            t = abi.idt_type(lo, hi)
            if t not in (0xE, 0xF):
                self.kill(f"bad IDT type {t}")
            self.idt[num] = ((abi.KERNEL_CS << 16) | (lo & 0xFFFF), hi & 0xFFFFEF00)
        self._write_host_gate(num)

    def direct_trap(self, num: int) -> bool:
        """[LGI] ``direct_trap``: goes straight to the guest, no host exit."""
        if num >= abi.FIRST_EXTERNAL_VECTOR and num != self.syscall_vec:
            return False
        return num not in (7, 13, 14, abi.LGUEST_TRAP_ENTRY)

    def _write_host_gate(self, num: int) -> None:
        lo, hi = self.idt.get(num, (0, 0))
        dpl = (hi >> 13) & 3 if abi.idt_present(lo, hi) else 1
        if abi.idt_present(lo, hi) and abi.idt_type(lo, hi) == 0xF and self.direct_trap(num):
            off = (hi & 0xFFFF0000) | (lo & 0xFFFF)
        else:
            off = B.SWITCHER_VA + B.STUBS_OFF + 8 * num
            dpl = max(dpl, 1)
        self.m.write_phys_data(self.sw + B.IDT_OFF + 8 * num, abi.gate(abi.KERNEL_CS, off, 0xF, dpl))

    def guest_gate(self, num: int) -> tuple[int, int] | None:
        """The guest's handler for ``num``: (offset, type), or None."""
        lo, hi = self.idt.get(num, (0, 0))
        if not abi.idt_present(lo, hi):
            return None
        return (hi & 0xFFFF0000) | (lo & 0xFFFF), abi.idt_type(lo, hi)

    def _set_stack(self, seg, esp, pages, *_a) -> None:
        """LHCALL_SET_STACK [LGS]/[LGI] ``guest_set_stack``."""
        self.op = {"ss": seg, "esp": esp, "pages": pages}
        if seg & 3 != abi.GUEST_PL:
            self.kill(f"bad stack segment {seg}")
        if pages > 2:
            self.kill(f"bad stack pages {pages}")
        self.ss1, self.esp1, self.stack_pages = seg, esp, pages
        self.m.write_phys_data(self.sw + B.TSS_OFF + 12, struct.pack("<II", esp, seg))

    def _ts(self, val, *_a) -> None:
        """LHCALL_TS: the guest's CR0.TS (value & 8)."""
        self.ts = val & 8
        self.op = {"ts": bool(self.ts)}
        self.p.set_ts(bool(self.ts))

    def _set_clockevent(self, delta, *_a) -> None:
        """LHCALL_SET_CLOCKEVENT: relative ns; 0 cancels ([LGI] ``guest_set_clockevent``)."""
        self.op = {"delta_ns": delta}
        v = self.vcpu
        if delta == 0:
            v.deadline = None
        else:
            v.deadline = self.m.clock.now_ns + delta

    def _halt(self, *_a) -> None:
        """LHCALL_HALT: sleep until an interrupt is pending."""
        self.vcpu.halted = True

    def _set_pte(self, pgdir, vaddr, lo, hi=0, *_a) -> None:
        """LHCALL_SET_PTE [LGP] ``guest_set_pte``/``check_gpte``."""
        pte = lo | (hi << 32) if self.pae else lo
        self.op = {"pgdir": pgdir, "va": vaddr, "pte": pte}
        if vaddr >= B.SWITCHER_VA:
            self.kill("attempt to set pte into Switcher pages")
        pfn = (pte & 0x000FFFFFFFFFF000) >> 12
        if pte & B.P and (pte & 0x80 or pfn >= self.ram >> 12):
            self.kill("bad page table entry")
        self.m.flush_tlb()

    def _set_pgd(self, pgdir, idx, *_a) -> None:
        """LHCALL_SET_PGD [LGP] ``guest_set_pgd``."""
        self.op = {"pgdir": pgdir, "idx": idx}
        ptrs = 4 if self.pae else 1024
        if idx > ptrs:                     # (sic: "idx > PTRS_PER_PGD" in 4.x)
            self.kill(f"Attempt to set pgd {idx}/{ptrs}")
        if pgdir in self.pgdirs:
            # that might have been the Switcher mapping: remap it (4.x
            # allocate_switcher_mapping)
            self._map_switcher(pgdir)
        self.m.flush_tlb()

    def _set_pmd(self, pmdp, idx, *_a) -> None:
        self.op = {"pmd": pmdp, "idx": idx}
        self.m.flush_tlb()

    def _load_tls(self, pa, cpu, *_a) -> None:
        """LHCALL_LOAD_TLS: 3 descriptors at ``pa`` into GDT 6-8 [LGS]."""
        self.op = {"tls": pa}
        raw = self._read(pa, 24, "TLS")
        for i in range(3):
            lo, hi = struct.unpack_from("<II", raw, 8 * i)
            self._gdt_entry(abi.GDT_ENTRY_TLS_MIN + i, lo, hi)

    def _load_gdt_entry(self, num, lo, hi, *_a) -> None:
        """LHCALL_LOAD_GDT_ENTRY [LGS] ``load_guest_gdt_entry``."""
        self.op = {"idx": num, "lo": lo, "hi": hi}
        if num >= abi.GDT_ENTRIES:
            self.kill(f"too many gdt entries {num}")
        self._gdt_entry(num, lo, hi)

    def _gdt_entry(self, num: int, lo: int, hi: int) -> None:
        if num in abi.IGNORED_GDT:
            return
        if not (hi >> 13) & 3:
            hi |= abi.GUEST_PL << 13              # DPL 0 -> 1
        hi |= 1 << 8                              # accessed
        self.m.write_phys_data(self.sw + B.GDT_OFF + 8 * num, struct.pack("<II", lo, hi))

    def _notify(self, addr, *_a) -> None:
        """LHCALL_NOTIFY (until 4.0): the Launcher's ``handle_output``. With
        no lguest-bus devices here, every address is the early console: the
        NUL-terminated string there is written out; an address beyond guest
        memory makes the Launcher exit ("Bad NOTIFY") [LGL]."""
        self.op = {"addr": addr}
        if addr >= self.ram:
            self.p.crash_stop(f"the Launcher exited: Bad NOTIFY {addr:#x}", self.p.cur_rip())
            return
        raw = self.g.read_machine(addr, min(4096, self.ram - addr))
        text = raw.split(b"\0", 1)[0]
        self.op["len"] = len(text)
        if text:
            self.console_out("console", text)

    def _send_interrupts(self, *_a) -> None:
        """LHCALL_SEND_INTERRUPTS: delivery happens on the way back."""

    # ----------------------------------------------------- Launcher: port I/O
    def port_in(self, port: int, size: int) -> int:
        """[LGL] ``emulate_insn``: PCI config reads; 0x64 reads 1; others
        float high."""
        if self.pre_pci:
            return (1 << (8 * size)) - 1
        if port == PCI_CONF_ADDR and size == 4:
            return self.pci_addr
        if PCI_CONF_DATA <= port < PCI_CONF_DATA + 4:
            off = (self.pci_addr & 0xFC) + (port - PCI_CONF_DATA)
            if not self.pci_addr & 0x80000000 or self.pci_addr & 0x00FFFF00 != CONSOLE_DEVFN << 8:
                return (1 << (8 * size)) - 1
            cfg = self._config_space()
            return int.from_bytes(cfg[off:off + size], "little")
        if port == 0x64:
            return 1
        return (1 << (8 * size)) - 1

    def port_out(self, port: int, size: int, value: int) -> None:
        if self.pre_pci:
            return
        if port == PCI_CONF_ADDR and size == 4:
            self.pci_addr = value & U32
            return
        if not PCI_CONF_DATA <= port < PCI_CONF_DATA + 4:
            return
        if self.pci_addr & 0x00FFFF00 != CONSOLE_DEVFN << 8:
            return
        off = (self.pci_addr & 0xFC) + (port - PCI_CONF_DATA)
        w = self.pci_window
        if off == CAP_PCI_CFG + 4:
            w["bar"] = value & 0xFF
        elif off == CAP_PCI_CFG + 8:
            w["offset"] = value
        elif off == CAP_PCI_CFG + 12:
            w["length"] = value
        elif off == PCI_CFG_DATA and w["bar"] == 0 and w["offset"] == EMERG_WR:
            self.console_out("console", bytes([value & 0xFF]))

    def _config_space(self) -> bytes:
        cfg = bytearray(256)
        struct.pack_into("<I", cfg, 0, VIRTIO_CONSOLE_ID)
        struct.pack_into("<I", cfg, 4, 0x10 << 16)             # status: capabilities
        struct.pack_into("<I", cfg, 8, 0x07800001)
        struct.pack_into("<HH", cfg, 0x2C, 0x1AF4, 0x0003)
        cfg[0x34] = CAP_DEVICE_CFG
        cfg[0x3C], cfg[0x3D] = 1, 1
        # virtio_pci_cap VIRTIO_PCI_CAP_DEVICE_CFG (4): BAR 0, offset 0, 12 bytes
        cfg[CAP_DEVICE_CFG:CAP_DEVICE_CFG + 16] = struct.pack("<BBBBB3xII", 9, CAP_PCI_CFG, 16,
                                                              4, 0, 0, 12)
        w = self.pci_window
        cfg[CAP_PCI_CFG:CAP_PCI_CFG + 20] = struct.pack("<BBBBB3xIII", 9, 0, 20, 5, w["bar"],
                                                        w["offset"], w["length"], 0)
        return bytes(cfg)


_CALLS = {
    0: LguestBackend._flush_async, 1: LguestBackend._init, 2: LguestBackend._shutdown,
    4: LguestBackend._new_pgtable, 5: LguestBackend._flush_tlb,
    6: LguestBackend._load_idt_entry, 7: LguestBackend._set_stack, 8: LguestBackend._ts,
    9: LguestBackend._set_clockevent, 10: LguestBackend._halt, 13: LguestBackend._set_pmd,
    14: LguestBackend._set_pte, 15: LguestBackend._set_pgd, 16: LguestBackend._load_tls, 17: LguestBackend._notify,
    18: LguestBackend._load_gdt_entry, 19: LguestBackend._send_interrupts,
}


#: The eras pvmon offers: version -> what differs from the final ABI, with sources.
ERAS: dict[str, dict] = {
    "4.13": {"pre_pci": False, "differences": [
        {"what": "final mainline lguest ABI (4.1-4.13): int $0x1f, EAX number, "
                 "EBX/ECX/EDX/ESI arguments; LHCALL_NOTIFY (17) gone (Bad hypercall); the "
                 "console is the Launcher's virtio-PCI device; a non-PAE host (SET_PMD is a "
                 "bad hypercall)",
         "source": "arch/x86/include/asm/lguest_hcall.h, drivers/lguest/hypercalls.c, "
                   "tools/lguest/lguest.c (Linux 4.13)", "hypercall": "LHCALL_NOTIFY"}]},
    "4.0": {"pre_pci": True, "differences": [
        {"what": "LHCALL_NOTIFY (17) exists: the early console writes the NUL-terminated "
                 "string at the guest-physical address given (an address beyond guest "
                 "memory: the Launcher exits, \"Bad NOTIFY\"); NOTIFY went with the lguest "
                 "bus in 4.1",
         "source": "arch/x86/include/asm/lguest_hcall.h (2.6.2x-4.0), tools/lguest/lguest.c "
                   "handle_output (4.0)", "hypercall": "LHCALL_NOTIFY"},
        {"what": "no PCI: the Launcher has no virtio-PCI console (devices are on the lguest "
                 "bus, a descriptor page above RAM: none offered here); port reads float "
                 "high, writes are dropped",
         "source": "tools/lguest/lguest.c (4.0: lguest_device_desc; PCI emulation came in "
                   "4.1)", "hypercall": "io"}]},
}


def make_backend() -> LguestBackend:
    """``lguest-4.13``."""
    return LguestBackend()


def make_backend_4_0() -> LguestBackend:
    """``lguest-4.0``: the last era with LHCALL_NOTIFY and the lguest bus."""
    return LguestBackend("lguest-4.0", "4.0")
