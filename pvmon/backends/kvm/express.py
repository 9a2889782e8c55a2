"""How KVM expresses each canonical operation (cross-ABI replay,
:mod:`pvmon.replay.crossabi`), per Linux's KVM guest (arch/x86/kernel/kvm.c,
kvmclock.c; Documentation/virt/kvm/x86/msr.rst, hypercalls.rst).

A KVM guest is an HVM guest: the CPU does the MMU, descriptor tables, traps,
halts and interrupt masking itself, devices are emulated or virtio, and the
paravirtual interface is a few MSRs (kvmclock, steal time, PV EOI) and five
hypercalls (IPIs, kicks, yield, clock pairing, GPA-range attributes). Its
timer is the local APIC's TSC deadline: absolute TSC cycles at the frequency
the guest was told (the trace header's ``tsc_khz``), so a ns deadline is
rounded to a TSC cycle.
"""

from __future__ import annotations

from pvmon.backends.kvm import abi
from pvmon.platforms.hvm.native import HVM_NATIVE, HVM_NATIVE_WHY
from pvmon.pvops import PvOp
from pvmon.replay.crossabi import (
    Call,
    Ctx,
    Expressed,
    Loss,
    Way,
    call,
    cycles_to_ns,
    deadline_of,
    every_op,
    native,
    never,
    ns_to_cycles,
)

ABI = "kvm"
LABEL = "KVM"
#: The domain the target backend is attached to: the KVM reference guest's
#: (pvtest-kvm, entered through its PVH note).
REFERENCE_GUEST = "pvtest-kvm"
MODE = None
RET_IS_STATUS = True
_K = "arch/x86/kernel/kvm.c"
_HVM = HVM_NATIVE_WHY
_NR = abi.HYPERCALL_NUMBERS

WAYS: dict[str, Way] = {
    **{op: native(ev, _HVM) for op, ev in HVM_NATIVE.items()},
    **{op: native(ev, _HVM) for op, ev in (
        ("cpu.set_callback", "the guest's IDT vectors"), ("cpu.cpuid", "cpuid (a VM exit)"),
        ("cpu.vcpu_up", "LAPIC INIT/SIPI"), ("cpu.vcpu_down", "the vCPU halts"),
        ("cpu.vcpu_init", "the SIPI vector's real-mode start"),
        ("irq.mask", "cli / IOAPIC / LAPIC mask"), ("irq.unmask", "sti / IOAPIC / LAPIC"),
        ("irq.eoi", "LAPIC EOI write (or the PV EOI byte)"),
        ("irq.notify", "a virtio notify write (PIO/MMIO)"), ("irq.send_nmi", "LAPIC ICR write"),
        ("irq.bind", "an IOAPIC redirection entry / MSI"), ("irq.unbind", "IOAPIC / MSI"),
        ("irq.set_affinity", "IOAPIC / MSI destination"), ("irq.set_priority", "the LAPIC TPR"),
        ("irq.query", "IOAPIC / LAPIC registers"),
        ("mmu.pin", "nothing: EPT/NPT guest tables are ordinary memory"),
        ("mmu.unpin", "nothing: guest tables are ordinary memory"),
        ("time.periodic", "the LAPIC timer in periodic mode"),
        ("time.stop", "wrmsr IA32_TSC_DEADLINE 0"),
        ("time.read_clock", "rdtsc + kvmclock"), ("time.runstate", "the steal-time area"),
        ("lock.wait", "hlt (kvm_wait)"), ("sched.block", "hlt"),
        ("power.shutdown", "i8042 reset / ACPI"),
        ("power.set_reason", "the pvpanic device (port 0x505)"),
        ("console.write", "the 8250 UART"), ("console.read", "the 8250 UART"),
        ("info.version", "cpuid 0x40000000"), ("info.features", "cpuid 0x40000001"),
        ("info.platform", "cpuid / boot_params"), ("info.vcpu", "the APIC ID / ACPI MADT"),
        ("memory.populate", "the virtio-balloon device"),
        ("memory.release", "the virtio-balloon device"),
        ("memory.query", "the e820 map in boot_params"),
        ("memory.map", "the e820 map in boot_params"),
        ("batch.submit", "nothing to batch: the MMU operations are the CPU's"))},
    "time.oneshot": native("wrmsr IA32_TSC_DEADLINE", "absolute TSC cycles at tsc_khz",
                           "arch/x86/kernel/apic/apic.c lapic_next_deadline"),
    "irq.send_ipi": call("send_ipi", source=_K + " kvm_send_ipi_mask (KVM_HC_SEND_IPI)"),
    "irq.setup": call("wrmsr MSR_KVM_PV_EOI_EN", source=_K + " kvm_guest_cpu_init"),
    "lock.kick": call("kick_cpu", source=_K + " kvm_kick_cpu (KVM_HC_KICK_CPU)"),
    "sched.yield": call("sched_yield", source=_K + " kvm_smp_send_call_func_ipi "
                        "(KVM_HC_SCHED_YIELD)"),
    "memory.physmap": call("map_gpa_range", source="arch/x86/kernel/kvm.c "
                           "kvm_sev_hc_page_enc_status (KVM_HC_MAP_GPA_RANGE)"),
    "memory.share_area": call("wrmsr MSR_KVM_SYSTEM_TIME_NEW",
                              source="arch/x86/kernel/kvmclock.c kvm_register_clock"),
    "cpu.set_callback": native("the guest's IDT vectors", _HVM),
    "sched.watchdog": never("KVM has no paravirtual watchdog (an emulated i6300esb is a "
                            "device, not the hypervisor's)"),
    "sched.pin_override": never("KVM has no vCPU pinning call"),
    "info.assist": never("KVM has no optional hypervisor behaviours to switch by call"),
    "memory.exchange": never("KVM has no frame exchange: guest memory is the host's mapping"),
    "memory.set_m2p": never("an HVM guest has no machine-to-physical table"),
    "memory.grant_map": never("KVM has no grant tables (virtio: the host maps all guest memory)"),
    "memory.grant_unmap": never("KVM has no grant tables"),
    "memory.grant_copy": never("KVM has no grant tables"),
    "memory.grant_transfer": never("KVM has no grant tables"),
    "memory.grant_setup": never("KVM has no grant tables"),
    "memory.cache_flush": never("KVM has no grant tables (and this is ARM only)"),
}
assert set(WAYS) == set(every_op()), set(every_op()) ^ set(WAYS)


#: Native operations :func:`express` still sees: a TSC deadline rounds.
EXPRESS_NATIVE = frozenset({"time.oneshot"})


def setup(ctx: Ctx) -> list[Call]:
    """Nothing: KVM answers from the first exit."""
    return []


def batch_calls(n: int) -> int:
    """No batching: each entry is native or its own exit."""
    return n


def _hc(name: str, *args: int) -> Call:
    a = tuple(args) + (0,) * (4 - len(args))
    return Call(name, _NR[name], a[:4])


def express(op: PvOp, ctx: Ctx) -> Expressed | None:
    """``op`` as KVM hypercalls or MSR writes; for a timer (native: TSC
    deadline) the rounding; None for other native ways."""
    name, a = op.op, op.args
    if name == "time.oneshot":
        dl = deadline_of(op, ctx.src_hz)
        if dl is None:
            return Expressed("native", why="the source's LAPIC count is the same device here")
        hz = ctx.hz
        tsc = ns_to_cycles(max(0, dl.abs_ns), hz)
        err = cycles_to_ns(tsc, hz) - dl.abs_ns
        losses = [Loss("deadline rounded to TSC cycles",
                       f"{dl.abs_ns:,} ns at {hz:,} Hz: {tsc:,} cycles = "
                       f"{cycles_to_ns(tsc, hz):,} ns", err)] if err else []
        return Expressed("native", losses=losses)
    way = WAYS[name]
    if way.how != "call":
        return None
    scratch = ctx.target.scratch
    if name == "irq.send_ipi":
        vec = a.get("vector")
        vec = vec & 0xFF if type(vec) is int and vec else 0xFB     # CALL_FUNCTION_VECTOR
        return Expressed("call", [_hc("send_ipi", 1, 0, 0, 0x4000 | vec)])
    if name == "lock.kick":
        return Expressed("call", [_hc("kick_cpu", 0, 0)])
    if name == "sched.yield":
        return Expressed("call", [_hc("sched_yield", 0)])
    if name == "memory.physmap":
        gpa = (a.get("frame") or 0) << 12 if type(a.get("frame")) is int else scratch
        return Expressed("call", [_hc("map_gpa_range", gpa, 1, 0)])
    if name == "memory.share_area":
        return Expressed("call", [Call("wrmsr MSR_KVM_SYSTEM_TIME_NEW",
                                       abi.MSR_KVM_SYSTEM_TIME_NEW,
                                       ((scratch + 0x3000) | abi.KVM_MSR_ENABLED,), (), "msr")])
    if name == "irq.setup":
        return Expressed("call", [Call("wrmsr MSR_KVM_PV_EOI_EN", abi.MSR_KVM_PV_EOI_EN,
                                       ((scratch + 0x3800) | abi.KVM_MSR_ENABLED,), (), "msr")])
    return Expressed("inexpressible", why=f"{name}: no translation written")


def cycle_hz(target) -> int:
    """The TSC frequency the target's guest is told (its machine's ``tsc_khz``)."""
    return target.clock.tsc_khz * 1000
