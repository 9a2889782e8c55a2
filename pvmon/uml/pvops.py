"""User-Mode Linux's host system calls as canonical paravirtual operations
(:mod:`pvmon.pvops`).

UML's "hypervisor" is the host kernel, so the calls the UML kernel process
makes (``hc`` events of ABI ``uml``, docs/uml.md) are its interface. Each
maps to what that call does for the guest in UML 6.1 (arch/um/os-Linux/ of
Linux 6.1: skas/process.c, time.c, signal.c, mem.c):

* resuming a guest process with ``ptrace(PTRACE_SYSEMU / CONT / SINGLESTEP,
  ...)`` is the return to the interrupted user context, ``cpu.iret``
  (skas/process.c ``userspace``); ``PTRACE_ARCH_PRCTL`` sets its FS/GS base
  (``cpu.set_segment_base``), ``PTRACE_SET_THREAD_AREA`` a TLS descriptor
  (``cpu.write_descriptor``), ``PTRACE_POKEUSER`` into ``u_debugreg`` a debug
  register (``cpu.set_debugreg``; ``struct user`` of <sys/user.h>, offset 848
  on x86-64). The register and signal-information transfers around each trap
  (GETREGS, SETREGS, GETREGSET, SETREGSET, GETSIGINFO, ...) are the trap path
  itself and no operation;
* the clock event is a POSIX timer (time.c ``os_timer_one_shot``,
  ``os_timer_set_interval``): ``timer_settime`` is ``time.oneshot`` (the
  recorder does not read the ``itimerspec``, so a periodic setting is not
  told apart; UML's clockevent runs one-shot under NO_HZ), ``timer_delete``
  ``time.stop``, ``timer_gettime``/``clock_gettime``/``gettimeofday`` read
  the clock;
* idling is a host wait: ``epoll_wait``, ``ppoll``, ``rt_sigsuspend``,
  ``nanosleep`` ... are ``sched.block`` (os_idle_sleep, the signal loop);
  ``sched_yield`` is ``sched.yield``;
* the console is the host's file descriptors 0 (read), 1 and 2 (write);
* the kernel's own memory is the host's ``mmap``/``munmap``/``mprotect`` of
  its physical-memory file (mem.c), ``memory.map``;
* ``reboot``, ``exit`` and ``exit_group`` end the machine (``power.shutdown``).

Host calls outside that interface (files, sockets, signals UML sends, process
creation for guest address spaces) give no operation, and neither do the
recovered guest ``syscall``/``sysret`` events: they pass between a guest
process and the UML kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pvmon.pvops import PvOp, stateless_continue, stateless_state
from pvmon.uml import ptrace as pt

#: ptrace requests that resume a traced guest process
_RESUME = frozenset({pt.PTRACE_CONT, pt.PTRACE_SINGLESTEP, pt.PTRACE_SYSCALL,
                     pt.PTRACE_SYSEMU, pt.PTRACE_SYSEMU_SINGLESTEP})
#: offsetof(struct user, u_debugreg) on x86-64 (<sys/user.h>), 8 registers of 8 bytes
_U_DEBUGREG = 848

#: host system call name -> canonical operation
OPS: dict[str, str] = {
    "timer_settime": "time.oneshot", "timer_delete": "time.stop",
    "timer_gettime": "time.read_clock", "clock_gettime": "time.read_clock",
    "gettimeofday": "time.read_clock", "time": "time.read_clock",
    "epoll_wait": "sched.block", "epoll_pwait": "sched.block", "ppoll": "sched.block",
    "poll": "sched.block", "select": "sched.block", "pselect6": "sched.block",
    "rt_sigsuspend": "sched.block", "pause": "sched.block", "nanosleep": "sched.block",
    "clock_nanosleep": "sched.block", "sched_yield": "sched.yield",
    "mmap": "memory.map", "munmap": "memory.map", "mprotect": "memory.map",
    "reboot": "power.shutdown", "exit": "power.shutdown", "exit_group": "power.shutdown",
    "uname": "info.version",
}
_CONSOLE = {("write", 1): "console.write", ("write", 2): "console.write",
            ("read", 0): "console.read"}


# No state across events (pvmon/pvops/__init__.py).
new_state = resume_state = stateless_state
continue_state = stateless_continue


def translate(ev: dict[str, Any], state: tuple) -> Iterator[PvOp]:
    """Canonical operations of one event of a UML trace (see the module doc)."""
    get = ev.get
    if get("k") != "hc":
        return
    name = get("name")
    args = get("args")
    if not isinstance(name, str) or not isinstance(args, list) or not args:
        return
    seq, t, ret = get("seq"), get("t"), get("ret")
    seq = seq if type(seq) is int else -1
    t = t if type(t) is int else 0
    ret = ret if type(ret) is int else None
    a0 = args[0] if type(args[0]) is int else -1
    if name == "ptrace":
        pid = args[1] if len(args) > 1 else None
        if a0 in _RESUME:
            yield PvOp("cpu.iret", seq, t, f"ptrace({_REQ.get(a0, a0)})", {"pid": pid}, ret)
        elif a0 == pt.PTRACE_ARCH_PRCTL:
            yield PvOp("cpu.set_segment_base", seq, t, "ptrace(ARCH_PRCTL)", {"pid": pid}, ret)
        elif a0 == pt.PTRACE_SET_THREAD_AREA:
            yield PvOp("cpu.write_descriptor", seq, t, "ptrace(SET_THREAD_AREA)",
                       {"pid": pid}, ret)
        elif a0 == pt.PTRACE_POKEUSER and len(args) > 2 and type(args[2]) is int \
                and _U_DEBUGREG <= args[2] < _U_DEBUGREG + 64:
            yield PvOp("cpu.set_debugreg", seq, t, "ptrace(POKEUSER u_debugreg)",
                       {"pid": pid, "reg": (args[2] - _U_DEBUGREG) // 8}, ret)
        return
    op = _CONSOLE.get((name, a0)) or OPS.get(name)
    if op is None:
        return
    if op.startswith("console."):
        n = args[2] if len(args) > 2 and type(args[2]) is int else None
        yield PvOp(op, seq, t, f"{name}({a0})", {"bytes": ret if ret and ret > 0 else n}, ret)
    elif op == "memory.map":
        yield PvOp(op, seq, t, name, {"bytes": args[1] if len(args) > 1 else None}, ret)
    else:
        yield PvOp(op, seq, t, name, {}, ret)


#: docs/pvops.md's UML column: operation -> the host calls that carry it
DOC_CELLS: dict[str, list[str]] = {
    "cpu.iret": ["`ptrace(SYSEMU, CONT, SINGLESTEP, ...)`"],
    "cpu.set_segment_base": ["`ptrace(ARCH_PRCTL)`"],
    "cpu.write_descriptor": ["`ptrace(SET_THREAD_AREA)`"],
    "cpu.set_debugreg": ["`ptrace(POKEUSER u_debugreg)`"],
    "console.write": ["`write(1)`, `write(2)`"], "console.read": ["`read(0)`"]}
for _name, _op in OPS.items():
    DOC_CELLS.setdefault(_op, []).append(f"`{_name}`")

_REQ = {pt.PTRACE_CONT: "CONT", pt.PTRACE_SINGLESTEP: "SINGLESTEP",
        pt.PTRACE_SYSCALL: "SYSCALL", pt.PTRACE_SYSEMU: "SYSEMU",
        pt.PTRACE_SYSEMU_SINGLESTEP: "SYSEMU_SINGLESTEP"}

__all__ = ["OPS", "new_state", "translate"]
