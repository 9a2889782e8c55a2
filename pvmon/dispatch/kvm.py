"""The dispatch layer for KVM guests, over the HVM platform
(:mod:`pvmon.dispatch.hvm`).

A KVM guest reaches the host through CPUID, MSRs, port I/O, MMIO, ``hlt``
and, rarely, ``vmcall`` (RAX = number, RBX/RCX/RDX/RSI = arguments, result
in RAX; ``Documentation/virt/kvm/x86/hypercalls.rst``). The HVM core records
each of them; this module adds what is KVM's or belongs to the minimal PC a
KVM guest runs on:

* CPUID: :func:`pvmon.backends.kvm.backend.kvm_cpuid_policy`;
* the paravirtual MSRs: :meth:`pvmon.backends.kvm.backend.KvmBackend.msr`;
  IA32_TSC_DEADLINE (0x6E0), the local APIC's TSC-deadline timer, here;
* ``vmcall``: :meth:`KvmBackend.call`, recorded as an ``hc`` event with
  ``abi`` "kvm" (-KVM_EPERM from CPL > 0, as ``kvm_emulate_hypercall``);
* devices: the 8250 UART at 0x3F8 (:mod:`pvmon.platforms.hvm.uart8250`;
  its output is the console, channel "ring"), the I/O APIC at 0xFEC00000
  (:mod:`pvmon.platforms.hvm.ioapic`; MMIO events like the local APIC's),
  the i8042's status port and its reset command (0xFE to port 0x64, and
  0xCF9 bit 2: the run ends with exit kind "shutdown", code 1 = reboot).
  Every other port floats (reads all ones, writes dropped), and so does
  every address below 4 GiB with neither RAM nor a device (open bus: an
  ``mmio`` event, counted in :attr:`KvmDispatch.open_bus`);
* console input enters the UART at an ``hlt`` with interrupts enabled (the
  guest's idle point), the boundary where a KVM guest waits for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pvmon.backends.kvm import abi
from pvmon.backends.kvm.backend import MSR_TSC_DEADLINE, KvmBackend, kvm_cpuid_policy
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.hvm import HvmDispatchCore
from pvmon.engine.hvm import MSR_HANDLED
from pvmon.engine.machine import Machine, Stop
from pvmon.platforms.hvm.ioapic import IOAPIC_BASE, IOAPIC_SIZE, IoApic
from pvmon.platforms.hvm.lapic import EOI as APIC_EOI
from pvmon.platforms.hvm.lapic import LAPIC_BASE
from pvmon.platforms.hvm.uart8250 import COM1_BASE, COM1_IRQ, PORTS, Uart8250

U64 = (1 << 64) - 1
I8042_DATA, I8042_STATUS = 0x60, 0x64
I8042_RESET = 0xFE
#: i8042 status with nothing to read and the input buffer empty (QEMU
#: hw/input/pckbd.c after self-test: SELFTEST | CMD | UNLOCKED)
I8042_STATUS_IDLE = 0x1C
RESET_CONTROL = 0xCF9
#: KVM's local APIC timer counts one bus cycle per nanosecond: a 1 GHz bus
#: (arch/x86/kvm/lapic.c ``APIC_BUS_CYCLE_NS 1`` since KVM's first APIC; 6.10+
#: ``APIC_BUS_CYCLE_NS_DEFAULT``), not the 100 MHz of Xen's vlapic that the
#: HVM platform's LocalApic defaults to. pvtest-kvm's one-shot check measures it.
KVM_APIC_BUS_HZ = 1_000_000_000


def reset_stop(detail: str, rip: int) -> Stop:
    """The stop for a guest reset (exit kind "shutdown", code 1 = reboot)."""
    return Stop("shutdown", detail, rip, 1)


class KvmDispatch(HvmDispatchCore):
    """TrapHandler for one KVM guest on pvmon's minimal PC."""

    def __init__(self, machine: Machine, backend: KvmBackend, guest: RecordingGuestAccess,
                 record: Callable[[dict], None] | None = None) -> None:
        super().__init__(machine, backend, guest, record)
        self.policy = kvm_cpuid_policy(backend.ver)
        self.ioapic = IoApic(self._ioapic_deliver)
        self.uart = Uart8250(self._uart_output, self._uart_irq)
        self.lapic.on_eoi = self._on_eoi
        self.lapic.bus_hz = KVM_APIC_BUS_HZ
        self._pv_eoi_pending: int | None = None     # the PV EOI word's address, bit set
        #: EOIs the guest did through the PV EOI word (no APIC register write).
        self.pv_eois = 0
        #: The guest's exits by kind (cpuid, msr, io, mmio, irq), recorded or not.
        self.exits: Counter = Counter()
        backend.lapic = self.lapic
        backend.uart = self.uart
        machine.uc.mmio_map(IOAPIC_BASE, IOAPIC_SIZE, self._ioapic_read, None,
                            self._ioapic_write, None)
        #: MMIO accesses that reached no device (open bus), counted.
        self.open_bus = 0
        for start, end in self._holes(machine.ram_bytes):
            machine.uc.mmio_map(start, end - start, self._open_read, start, self._open_write,
                                start)

    @staticmethod
    def _holes(ram_bytes: int) -> list[tuple[int, int]]:
        """Guest-physical ranges below 4 GiB with neither RAM nor a device."""
        lo = -(-ram_bytes // 0x1000) * 0x1000
        ranges = [(lo, IOAPIC_BASE), (IOAPIC_BASE + IOAPIC_SIZE, LAPIC_BASE),
                  (LAPIC_BASE + 0x1000, 1 << 32)]
        return [(a, b) for a, b in ranges if b > a]

    def run_extra(self) -> dict:
        """What a run's result adds for a KVM guest (``RunResult.extra``):
        ``exits``, the guest's ways to the host by kind, in a fixed order:
        ``{"cpuid", "msr", "port I/O", "MMIO", "open bus", "interrupts",
        "PV EOIs", "halts", "hypercalls": count}``."""
        return {"exits": {"cpuid": self.exits["cpuid"], "msr": self.exits["msr"],
                          "port I/O": self.exits["io"], "MMIO": self.exits["mmio"],
                          "open bus": self.open_bus, "interrupts": self.exits["irq"],
                          "PV EOIs": self.pv_eois, "halts": self.halts,
                          "hypercalls": sum(self.hypercalls.values())}}

    # ------------------------------------------------------------ devices
    def _uart_output(self, data: bytes) -> None:
        self._console("ring", data)

    def _uart_irq(self, level: bool) -> None:
        self.ioapic.set_irq(COM1_IRQ, level)

    def _ioapic_deliver(self, vector: int, level: bool) -> None:
        self.lapic.raise_vector(vector, level)
        self.update_irq()

    def _on_eoi(self, vector: int, level: bool) -> None:
        if level:
            self.ioapic.eoi(vector)

    def _ioapic_read(self, uc, offset: int, size: int, _data) -> int:
        self.exits["mmio"] += 1
        v = self.ioapic.read(offset, size)
        if self.record is not None:
            self._emit({"k": "mmio", "dir": "rd", "addr": IOAPIC_BASE + offset, "size": size,
                        "val": v})
        return v

    def _ioapic_write(self, uc, offset: int, size: int, value: int, _data) -> None:
        self.exits["mmio"] += 1
        if self.record is not None:
            self._emit({"k": "mmio", "dir": "wr", "addr": IOAPIC_BASE + offset, "size": size,
                        "val": value})
        self.ioapic.write(offset, size, value)

    def _open_read(self, uc, offset: int, size: int, base: int) -> int:
        """Open bus: nothing answers, the read floats high (all ones)."""
        self.open_bus += 1
        v = (1 << (8 * size)) - 1
        if self.record is not None:
            self._emit({"k": "mmio", "dir": "rd", "addr": base + offset, "size": size,
                        "val": v})
        return v

    def _open_write(self, uc, offset: int, size: int, value: int, base: int) -> None:
        self.open_bus += 1
        if self.record is not None:
            self._emit({"k": "mmio", "dir": "wr", "addr": base + offset, "size": size,
                        "val": value})

    def on_cpuid(self) -> None:
        self.exits["cpuid"] += 1
        super().on_cpuid()

    def port_in(self, port: int, size: int) -> int | None:
        self.exits["io"] += 1
        if COM1_BASE <= port < COM1_BASE + PORTS:
            return self.uart.read(port - COM1_BASE)
        if port == I8042_STATUS:
            return I8042_STATUS_IDLE
        if port == I8042_DATA:
            return 0
        return None

    def port_out(self, port: int, size: int, value: int) -> bool:
        self.exits["io"] += 1
        if COM1_BASE <= port < COM1_BASE + PORTS:
            self.uart.write(port - COM1_BASE, value & 0xFF)
            return True
        if port == I8042_STATUS and value & 0xFF == I8042_RESET:
            self.m.stop(reset_stop("reset through the i8042 (0xFE to port 0x64)",
                                   self.m.reg("rip")))
            return True
        if port == RESET_CONTROL and value & 0x4:
            self.m.stop(reset_stop("reset through port 0xCF9", self.m.reg("rip")))
            return True
        return False

    # ------------------------------------------------------------ MSRs
    def msr(self, write: bool, msr: int, value: int) -> tuple[int, int] | None:
        self.exits["msr"] += 1
        if msr == MSR_TSC_DEADLINE:
            vcpu = self.b.vcpu
            if not write:
                return MSR_HANDLED, vcpu.tsc_deadline
            vcpu.tsc_deadline = value
            vcpu.refresh()
            # a deadline already reached fires at once (KVM start_sw_tscdeadline:
            # apic_timer_expired when the deadline is not after the guest TSC; SDM
            # vol. 3 11.5.4.1), not at the guest's next TSC read or exit
            if vcpu.fire_timers():
                self.update_irq()
            return MSR_HANDLED, value
        # the memory a KVM MSR write fills (kvmclock, steal time) belongs to no
        # hypercall: start a fresh access record so no later call event lists it
        self.guest.begin()
        return self.b.msr(write, msr, value)

    # ------------------------------------------------------------ PV EOI
    # KVM's arch/x86/kvm/lapic.c: when the guest runs with exactly one vector in
    # service, none pending, and that vector needs no I/O APIC EOI (edge), the
    # host sets bit 0 of the guest's PV EOI word (apic_sync_pv_eoi_to_guest);
    # the guest then clears the bit instead of writing the APIC EOI register
    # (kvm_guest_apic_eoi_write). At its next exit the host looks: bit cleared
    # means the guest did its EOI, which the host performs; bit still set, the
    # host clears it and the guest will write the register itself
    # (apic_sync_pv_eoi_from_guest). pvmon's "exits" for this are the points
    # where the local APIC's state matters: an APIC access, an interrupt about
    # to be raised, a halt.

    def _pv_eoi_arm(self) -> None:
        gpa = self.b.pv_eoi_gpa
        lapic = self.lapic
        isr = lapic.isr
        if (gpa is None or lapic.irr or not isr or isr & (isr - 1)
                or lapic.tmr & isr or not self.m.valid_phys(gpa, 4)):
            return
        word = int.from_bytes(self.m.read_phys(gpa, 4), "little")
        self.m.write_phys_data(gpa, (word | 1).to_bytes(4, "little"))
        self._pv_eoi_pending = gpa

    def _pv_eoi_sync(self) -> None:
        gpa = self._pv_eoi_pending
        if gpa is None:
            return
        self._pv_eoi_pending = None
        word = int.from_bytes(self.m.read_phys(gpa, 4), "little")
        if word & 1:
            self.m.write_phys_data(gpa, (word & ~1).to_bytes(4, "little"))
        else:
            self.pv_eois += 1
            self.lapic.write(APIC_EOI, 4, 0)

    def _on_irq_taken(self, vector: int, rip: int) -> None:
        self.exits["irq"] += 1
        self._pv_eoi_sync()
        super()._on_irq_taken(vector, rip)
        self._pv_eoi_arm()

    def _lapic_read(self, uc, offset: int, size: int, _data) -> int:
        self.exits["mmio"] += 1
        self._pv_eoi_sync()
        return super()._lapic_read(uc, offset, size, _data)

    def _lapic_write(self, uc, offset: int, size: int, value: int, _data) -> None:
        self.exits["mmio"] += 1
        self._pv_eoi_sync()
        super()._lapic_write(uc, offset, size, value, _data)

    # ------------------------------------------------------------ interrupts, idle
    def update_irq(self) -> None:
        self._pv_eoi_sync()
        vcpu = self.b.vcpu
        if vcpu is not None:
            vcpu.refresh()
        super().update_irq()

    def _halt(self) -> None:
        self._pv_eoi_sync()
        super()._halt()

    def _idle_point(self) -> bool:
        """An ``hlt`` with interrupts enabled: the guest idles. Console input
        due here (verify's recorded input at its seq, carried-over bytes, live
        typing) goes into the UART first, then the core's idle rules run
        (script, replayed and live input, the idle limit). Input that raised
        the UART's interrupt ends the ``hlt`` at once (True: do not sleep)."""
        inp = self.input
        if (inp.carry or inp.scheduled or inp.live_ready) and self._inject_due():
            return True
        stopped = super()._idle_point()
        return stopped or self.lapic.highest_deliverable() is not None

    # ------------------------------------------------------------ hypercalls
    def on_vmcall(self, rip: int, size: int) -> None:
        m = self.m
        g = m.gprs
        self._cur_rip = rip + size
        self._jump = None
        nr = g[0]
        args = (g[3], g[1], g[2], g[6])          # RBX, RCX, RDX, RSI
        self.clock.advance(self.clock.costs.hypercall_ns)
        self.guest.begin()
        if m.cpl:
            ret = -abi.KVM_EPERM
            self.b.op = {}
        else:
            ret = self.b.call(nr, args)
        name = abi.hypercall_name(nr)
        self.hypercalls[name] += 1
        g[0] = ret & U64
        self.record_call("kvm", nr, name, args, ret, rip, "vmcall")
        m.set_reg("rip", rip + size)
        if m.stop_reason is None:
            self.update_irq()
        self._check_wall()


__all__ = ["KvmDispatch", "reset_stop"]
