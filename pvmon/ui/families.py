"""Hypercall families: which part of the PV interface a call belongs to.

The stream pane colours calls by family and prints the family's tag, so the
stream stays readable without colour. Names come from the ABI table
(:func:`pvmon.backends.registry.abi_names`); a name missing there is a bug
caught at import.
"""

from __future__ import annotations

from typing import Any

from pvmon.backends.registry import abi_names

# family -> (tag shown in the stream, Rich style)
FAMILY_STYLE: dict[str, tuple[str, str]] = {
    "mmu": ("MMU", "cyan"),
    "cpu": ("CPU", "magenta"),
    "events": ("EVT", "yellow"),
    "time": ("TIME", "green"),
    "console": ("CON", "bright_blue"),
    "sched": ("SCHED", "red"),
    "fault": ("FAULT", "bold red"),
    "platform": ("PLAT", "bright_black"),   # HVM platform devices: port I/O, MMIO
    "other": ("", ""),
}

_XEN_FAMILIES: dict[str, tuple[str, ...]] = {
    "mmu": ("mmu_update", "mmuext_op", "update_va_mapping", "update_va_mapping_otherdomain",
            "memory_op", "grant_table_op", "vm_assist", "set_gdt", "update_descriptor"),
    "cpu": ("set_trap_table", "stack_switch", "set_callbacks", "fpu_taskswitch",
            "set_debugreg", "get_debugreg", "set_segment_base", "iret", "vcpu_op",
            "callback_op", "nmi_op", "xenpmu_op"),
    "events": ("event_channel_op", "event_channel_op_compat", "physdev_op",
               "physdev_op_compat", "hvm_op"),
    "time": ("set_timer_op", "platform_op"),
    "console": ("console_io",),
    "sched": ("sched_op", "sched_op_compat"),
}

HYPERCALL_FAMILY: dict[str, str] = {}
_XEN_NUMBERS = abi_names("xen").HYPERCALL_NUMBERS
for _fam, _names in _XEN_FAMILIES.items():
    for _n in _names:
        assert _n in _XEN_NUMBERS, _n
        HYPERCALL_FAMILY[_n] = _fam

_KIND_FAMILY = {"fault": "fault", "upcall": "events", "con": "console", "tsc": "time",
                "tsc_run": "time",
                "cpuid": "cpu", "exit": "sched",
                # the HVM platform's events (docs/trace-format.md, version 3)
                "irq": "events", "msr": "cpu", "io": "platform", "mmio": "platform",
                "halt": "sched",
                # an SMP run's scheduler gave the engine to another vCPU (docs/smp.md)
                "vcpu_switch": "sched"}


def family_of(ev: dict[Any, Any]) -> str:
    """The family of a trace event: a hypercall's by name, other kinds by kind."""
    if ev.get("k") == "hc":
        return HYPERCALL_FAMILY.get(ev.get("name"), "other")  # type: ignore[arg-type]
    return _KIND_FAMILY.get(ev.get("k"), "other")  # type: ignore[arg-type]
