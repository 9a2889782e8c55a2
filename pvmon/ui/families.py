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
                "irq": "events", "msr": "cpu", "io": "platform", "io_run": "platform",
                "mmio": "platform",
                "halt": "sched",
                # an SMP run's scheduler gave the engine to another vCPU (docs/smp.md)
                "vcpu_switch": "sched"}


#: A UML run's host system calls (ABI ``uml``, docs/uml.md) by family: UML
#: driving its guest processes (ptrace, wait4, clone) is CPU, its memory
#: mappings MMU, its timers TIME, signals EVT, the host waits SCHED; ``read``
#: and ``write`` are CON on fds 0-2 (the console), otherwise no family.
_UML_FAMILIES: dict[str, tuple[str, ...]] = {
    "cpu": ("ptrace", "wait4", "arch_prctl", "clone", "clone3", "fork", "vfork", "execve",
            "prctl", "getpid", "gettid"),
    "mmu": ("mmap", "munmap", "mprotect", "madvise", "mremap", "brk"),
    "time": ("timer_settime", "timer_create", "timer_gettime", "timer_delete", "clock_gettime",
             "clock_nanosleep", "nanosleep", "gettimeofday", "setitimer", "getitimer"),
    "events": ("rt_sigreturn", "rt_sigaction", "rt_sigprocmask", "kill", "tkill", "tgkill",
               "sigaltstack", "rt_sigtimedwait", "epoll_ctl"),
    "sched": ("sched_yield", "epoll_wait", "epoll_pwait", "ppoll", "poll", "pause",
              "rt_sigsuspend", "exit", "exit_group", "reboot"),
}
UML_FAMILY: dict[str, str] = {n: fam for fam, names in _UML_FAMILIES.items() for n in names}
_UML_CONSOLE = frozenset({"read", "write"})


def family_of(ev: dict[Any, Any]) -> str:
    """The family of a trace event: a hypercall's by name (a UML host system
    call's by :data:`UML_FAMILY`), other kinds by kind."""
    if ev.get("k") == "hc":
        name = ev.get("name")
        if ev.get("abi") == "uml":
            if name in _UML_CONSOLE:
                args = ev.get("args")
                return "console" if args and args[0] in (0, 1, 2) else "other"
            return UML_FAMILY.get(name, "other")  # type: ignore[arg-type]
        return HYPERCALL_FAMILY.get(name, "other")  # type: ignore[arg-type]
    return _KIND_FAMILY.get(ev.get("k"), "other")  # type: ignore[arg-type]
