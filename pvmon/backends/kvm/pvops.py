"""KVM's paravirtual interface in canonical operations (pvmon.pvops,
docs/pvops.md): the KVM mapping module, registered in
:data:`pvmon.pvops.MAPPINGS` as ``"kvm"``.

A KVM guest reaches the hypervisor through MSR writes, a few hypercalls and
its devices, so most operations come from ``msr`` and ``io`` events (sources:
Linux ``Documentation/virt/kvm/x86/msr.rst``, ``hypercalls.rst``,
``arch/x86/kernel/kvm.c``, ``kvmclock.c``):

* MSR_KVM_SYSTEM_TIME(_NEW) and MSR_KVM_STEAL_TIME writes register an area
  the hypervisor keeps up to date (``memory.share_area``: the kvmclock
  record, the steal-time record), MSR_KVM_WALL_CLOCK(_NEW) asks for the wall
  clock once (``time.read_clock``), MSR_KVM_PV_EOI_EN and the async-PF MSRs
  set up interrupt delivery (``irq.setup``);
* hypercalls: KVM_HC_KICK_CPU ``lock.kick``, KVM_HC_SEND_IPI
  ``irq.send_ipi``, KVM_HC_SCHED_YIELD ``sched.yield``, KVM_HC_CLOCK_PAIRING
  ``time.read_clock``, KVM_HC_MAP_GPA_RANGE ``memory.physmap``; others
  ``unmapped``;
* the i8042's reset command (0xFE to port 0x64) ``power.shutdown`` (native);
* the 8250 UART's transmit register (port 0x3F8 written with DLAB clear) is
  ``console.write`` and its receive register read ``console.read``, both
  native (device access, no call);
* CPUID ``cpu.cpuid``; TSC reads ``time.read_clock``; the HVM platform's own
  events (hlt, local APIC, TSC_DEADLINE, segment-base MSRs) as
  :mod:`pvmon.platforms.hvm.pvops` maps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pvmon.backends.kvm import abi
from pvmon.pvops import PvOp, clock_reads, port_reads

_HC = {"kick_cpu": "lock.kick", "send_ipi": "irq.send_ipi", "sched_yield": "sched.yield",
       "clock_pairing": "time.read_clock", "map_gpa_range": "memory.physmap"}
#: KVM hypercalls with no canonical operation, and why.
UNMAPPED: dict[str, str] = {
    "vapic_poll_irq": "a KVM-internal virtual-APIC poll, never made by Linux guests",
    "mmu_op": "the MMU hypercall removed in Linux 2.6.33 (KVM_FEATURE_MMU_OP, deprecated)",
}
_SHARE = {abi.MSR_KVM_SYSTEM_TIME: "kvmclock", abi.MSR_KVM_SYSTEM_TIME_NEW: "kvmclock",
          abi.MSR_KVM_STEAL_TIME: "steal time"}
_WALL = frozenset({abi.MSR_KVM_WALL_CLOCK, abi.MSR_KVM_WALL_CLOCK_NEW})
_IRQ_SETUP = frozenset({abi.MSR_KVM_PV_EOI_EN, abi.MSR_KVM_ASYNC_PF_EN,
                        abi.MSR_KVM_ASYNC_PF_INT})
_COM1, _LCR = 0x3F8, 0x3FB


@dataclass
class KvmState:
    """What the mapping keeps across events: the UART's DLAB (LCR bit 7),
    which turns port 0x3F8 into the divisor latch."""
    dlab: bool = False


def new_state(header: dict[str, Any] | None = None) -> KvmState:
    return KvmState()


def resume_state(header: dict[str, Any] | None = None) -> KvmState:
    """The state a run of frames from mid-trace starts from (counted in
    parallel, pvmon.pvops.render): DLAB clear, as Linux leaves it outside its
    brief divisor writes."""
    return KvmState()


def continue_state(earlier: KvmState, later: KvmState) -> KvmState | None:
    """``later`` (a run counted from :func:`resume_state`) when that start was
    right, i.e. the run before it ended with DLAB clear; None (count again in
    order) otherwise."""
    return None if earlier.dlab else later


def translate(ev: dict[str, Any], state: KvmState) -> Iterator[PvOp]:
    """Canonical operations of one event of a KVM run."""
    get = ev.get
    k = get("k")
    seq, t = get("seq"), get("t")
    seq = seq if type(seq) is int else -1
    t = t if type(t) is int else 0
    if k == "hc":
        name = get("name") if isinstance(get("name"), str) else "?"
        ret = get("ret") if type(get("ret")) is int else None
        yield PvOp(_HC.get(name, "unmapped"), seq, t, name, {}, ret)
    elif k == "msr":
        msr, val, write = get("msr"), get("val"), get("dir") == "wr"
        if write and msr in _SHARE:
            on = type(val) is int and bool(val & abi.KVM_MSR_ENABLED)
            yield PvOp("memory.share_area", seq, t, f"wrmsr {abi.MSR_NAMES.get(msr, msr)}",
                       {"area": _SHARE[msr], "gpa": (val & ~0x3F) if on else None,
                        "enable": on}, native=None)
        elif write and msr in _WALL:
            yield PvOp("time.read_clock", seq, t, f"wrmsr {abi.MSR_NAMES.get(msr, msr)}",
                       {"wallclock_gpa": val})
        elif write and msr in _IRQ_SETUP:
            yield PvOp("irq.setup", seq, t, f"wrmsr {abi.MSR_NAMES.get(msr, msr)}",
                       {"value": val})
        else:
            from pvmon.platforms.hvm import pvops as hvm_pvops
            yield from hvm_pvops.translate(ev, seq, t)
    elif k == "io":
        port, val, out = get("port"), get("val"), get("dir") == "out"
        if port == 0x64 and out and val == 0xFE:
            yield PvOp("power.shutdown", seq, t, "i8042 reset", {"reason": "reset"},
                       native="i8042 pulse reset line (0xFE to port 0x64)")
        elif port == _LCR and out and type(val) is int:
            state.dlab = bool(val & 0x80)
        elif port == _COM1 and not state.dlab:
            if out:
                yield PvOp("console.write", seq, t, "8250 THR", {"bytes": 1},
                           native="UART transmit register write")
            else:
                yield PvOp("console.read", seq, t, "8250 RBR", {"bytes": 1},
                           native="UART receive register read")
    elif k == "io_run":
        for read in port_reads(ev):
            yield from translate(read, state)
    elif k == "cpuid":
        yield PvOp("cpu.cpuid", seq, t, "cpuid", {"leaf": get("leaf"), "sub": get("sub")})
    elif k == "tsc_run":
        yield from clock_reads(ev, seq, t)
    elif k in ("halt", "mmio"):
        from pvmon.platforms.hvm import pvops as hvm_pvops
        yield from hvm_pvops.translate(ev, seq, t)


__all__ = ["UNMAPPED", "KvmState", "continue_state", "count_events", "new_state",
           "resume_state", "translate"]


_CLOCK_KEY = ("time.read_clock", "rdtsc", True)
#: the ports whose accesses carry an operation or the mapping's state
_IO_PORTS = frozenset({0x64, _LCR, _COM1})


def count_events(events, state: KvmState, seen: dict, abi_name: str = "kvm",
                 other=None) -> None:
    """Add to ``seen`` ({(op, call, native): count}, in first-seen order) the
    keys of the operations :func:`translate` yields for each of ``events``, as
    :func:`pvmon.pvops.derive` would count them, without building them for the
    events that make most of a boot: port I/O to a port that carries no
    operation (Linux's PIT calibration reads port 0x42 tens of thousands of
    times; a run of such reads) and TSC runs (one clock read per value). An event whose ``abi``
    names another ABI goes to ``other``. Raises what translate raises."""
    get = seen.get
    for ev in events:
        a = ev.get("abi")
        if a is not None and a != abi_name and type(a) is str:
            other(ev)
            continue
        k = ev.get("k")
        if k == "io" and ev.get("port") not in _IO_PORTS:
            continue
        if k == "io_run" and isinstance(ev.get("port"), list) \
                and not any(type(p) is int and p in _IO_PORTS for p in ev["port"]):
            continue
        if k == "tsc_run":
            vals = ev.get("val")
            if isinstance(vals, list):
                if vals:
                    seen[_CLOCK_KEY] = get(_CLOCK_KEY, 0) + len(vals)
                continue
        for o in translate(ev, state):
            key = (o.op, o.call, o.native is not None)
            seen[key] = get(key, 0) + 1
