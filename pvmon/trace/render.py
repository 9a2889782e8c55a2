"""Turning trace events into text: one readable line per event, or JSON-ready values.

Everything here tolerates any shape of event field (a trace may come from a
newer recorder or be hand-made): unknown kinds and odd values are printed
generically rather than raising.
"""

from __future__ import annotations

import errno
from collections import Counter
from typing import Any

from pvmon.literal import printable

# Integer fields printed in hex: addresses, frame numbers, register values.
HEX_KEYS = frozenset({
    "mfn", "gmfn", "pfn", "gfn", "gpfn", "addr", "va", "vaddr", "linear_addr", "ptr", "val",
    "base", "esp", "rsp", "rip", "cr2", "cr3", "gpa", "gva", "pte", "mask", "flags", "err",
    "cs", "ss", "entry", "address", "callback", "eip",
})
_HEX_SUFFIXES = ("mfn", "pfn", "gfn", "addr", "ptr", "_va", "_base")

FAULT_NAMES = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
    10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC",
    19: "#XM", 20: "#VE", 21: "#CP",
}


def fault_name(vec: Any) -> str:
    """``14`` -> ``#PF``; unknown vectors as ``vec N``."""
    name = FAULT_NAMES.get(vec) if type(vec) is int else None
    return name or f"vec {vec!r}"


def format_time(t_ns: Any) -> str:
    """Virtual time in ns as seconds with 9 decimals, e.g. ``0.012345678s``."""
    if type(t_ns) is not int:
        return f"{t_ns!r}"
    sign = "-" if t_ns < 0 else ""
    s, ns = divmod(abs(t_ns), 1_000_000_000)
    return f"{sign}{s}.{ns:09d}s"


def _is_hex_key(key: Any) -> bool:
    return isinstance(key, str) and (key in HEX_KEYS or key.endswith(_HEX_SUFFIXES))


def format_value(value: Any, key: Any = None) -> str:
    """One argument value: hex for address-like keys and large ints, else compact."""
    if type(value) is int:
        if _is_hex_key(key) or value >= 0x10000:
            return hex(value)
        return str(value)
    if isinstance(value, bytes):
        return _bytes(value)
    if isinstance(value, dict):
        return "{" + format_op(value) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v, key) for v in value[:8]) + \
            (", ..." if len(value) > 8 else "") + "]"
    if isinstance(value, str):
        return value
    return repr(value)


def _bytes(data: bytes, limit: int = 32) -> str:
    text = data[:limit].hex()
    return f"<{len(data)}B {text}{'...' if len(data) > limit else ''}>"


def _cmd(op: dict[Any, Any]) -> Any:
    return op.get("cmd", op.get("op"))


def summarize_ops(ops: list[Any]) -> str:
    """A batch of sub-operations: each inline if there are at most 2, else counted by cmd."""
    if len(ops) <= 2:
        return "[" + ", ".join(format_value(o) for o in ops) + "]"
    counts = Counter(str(_cmd(o)) if isinstance(o, dict) else type(o).__name__ for o in ops)
    return "[" + ", ".join(f"{c} x{n}" for c, n in counts.most_common()) + "]"


def format_op(op: dict[Any, Any]) -> str:
    """Decoded arguments: the ``cmd``/``op`` value first, then ``key=value``; batches summarized.

    ``{"cmd": "PIN_L4_TABLE", "mfn": 0x1234}`` -> ``PIN_L4_TABLE, mfn=0x1234``;
    ``{"count": 1, "ops": [{"cmd": "NEW_BASEPTR", "mfn": 0x42}]}`` ->
    ``count=1, [{NEW_BASEPTR, mfn=0x42}]``.
    """
    parts = []
    cmd_key = "cmd" if "cmd" in op else "op" if "op" in op else None
    if cmd_key is not None and not isinstance(op[cmd_key], (list, dict)):
        parts.append(format_value(op[cmd_key]))
    for key, value in op.items():
        if key == cmd_key and parts:
            continue
        if key == "ops" and isinstance(value, list):
            parts.append(summarize_ops(value))
        else:
            parts.append(f"{key}={format_value(value, key)}")
    return ", ".join(parts)


def format_ret(ret: Any) -> str:
    """A return value: errno name for negatives (``-38 (ENOSYS)``), hex for big values."""
    if type(ret) is not int:
        return repr(ret)
    if ret < 0:
        name = errno.errorcode.get(-ret)
        return f"{ret} ({name})" if name else str(ret)
    return hex(ret) if ret >= 0x10000 else str(ret)


#: Names of common x86-64 Linux system calls, for ``syscall`` events (numbers from
#: Linux arch/x86/entry/syscalls/syscall_64.tbl; a guest process's RAX at ``syscall``).
LINUX_X86_64_SYSCALLS = {
    0: "read", 1: "write", 2: "open", 3: "close", 4: "stat", 5: "fstat", 6: "lstat",
    7: "poll", 8: "lseek", 9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk",
    13: "rt_sigaction", 14: "rt_sigprocmask", 15: "rt_sigreturn", 16: "ioctl", 17: "pread64",
    19: "readv", 20: "writev", 21: "access", 22: "pipe", 23: "select", 24: "sched_yield",
    28: "madvise", 32: "dup", 33: "dup2", 35: "nanosleep", 39: "getpid", 41: "socket",
    56: "clone", 57: "fork", 58: "vfork", 59: "execve", 60: "exit", 61: "wait4",
    62: "kill", 63: "uname", 72: "fcntl", 78: "getdents", 79: "getcwd", 80: "chdir",
    83: "mkdir", 87: "unlink", 89: "readlink", 96: "gettimeofday", 99: "sysinfo",
    102: "getuid", 104: "getgid", 107: "geteuid", 108: "getegid", 109: "setpgid",
    110: "getppid", 111: "getpgrp", 112: "setsid", 158: "arch_prctl", 165: "mount",
    169: "reboot", 186: "gettid", 202: "futex", 217: "getdents64", 218: "set_tid_address",
    228: "clock_gettime", 231: "exit_group", 257: "openat", 262: "newfstatat",
    273: "set_robust_list", 293: "pipe2", 302: "prlimit64", 318: "getrandom", 334: "rseq",
}


def describe(ev: dict[Any, Any]) -> str:
    """The event without its seq/time prefix, e.g. ``mmuext_op(PIN_L4_TABLE, mfn=0x1234) = 0``:
    one line of visible characters (control characters in recorded strings are
    shown as escapes, :func:`pvmon.literal.printable`)."""
    return printable(_describe(ev))


def _describe(ev: dict[Any, Any]) -> str:
    k = ev.get("k")
    if k == "hc":
        name = ev.get("name") or f"hc{ev.get('nr')!r}"
        op = ev.get("op")
        if isinstance(op, dict) and op:
            inner = format_op(op)
        else:
            args = ev.get("args")
            inner = (", ".join(format_value(a, "addr") for a in args)
                     if isinstance(args, (list, tuple)) else "")
        text = f"{name}({inner}) = {format_ret(ev.get('ret'))}"
        if ev.get("ev"):
            text += f"  ev={format_value(ev['ev'])}"
        return text
    if k == "fault":
        vec = ev.get("vec")
        text = f"fault {fault_name(vec)} err={format_value(ev.get('err'), 'err')}"
        text += f" rip={format_value(ev.get('rip'), 'rip')}"
        if "cr2" in ev:
            text += f" cr2={format_value(ev['cr2'], 'cr2')}"
        return text
    if k == "upcall":
        return f"upcall ports={format_value(ev.get('ports'))} rip={format_value(ev.get('rip'), 'rip')}"
    if k == "con":
        data = ev.get("data")
        shown = repr(bytes(data))[1:] if isinstance(data, (bytes, bytearray)) else repr(data)
        return f"console {ev.get('dir')} {ev.get('ch')} {shown}"
    if k == "tsc":
        return f"rdtsc = {format_value(ev.get('val'), 'val')} rip={format_value(ev.get('rip'), 'rip')}"
    if k == "tsc_run":
        vals, rips = ev.get("val"), ev.get("rip")
        if isinstance(vals, list) and isinstance(rips, list) and vals:
            where = {r for r in rips if isinstance(r, int)}
            at = (f"rip={format_value(rips[0], 'rip')}" if len(where) == 1
                  else f"from {len(where)} RIPs")
            if len(vals) == 1:
                return f"rdtsc = {format_value(vals[0], 'val')} {at}"
            return (f"rdtsc x{len(vals)} = {format_value(vals[0], 'val')}.."
                    f"{format_value(vals[-1], 'val')} {at}")
    if k == "io_run":
        ports, vals, sizes = ev.get("port"), ev.get("val"), ev.get("size")
        if (isinstance(ports, list) and isinstance(vals, list) and ports
                and len(vals) == len(ports)):
            where = list(dict.fromkeys(p for p in ports if isinstance(p, int)))
            at = (f"port={format_value(where[0], 'port')}" if len(where) == 1
                  else f"ports={format_value(where[:4])}{'...' if len(where) > 4 else ''}")
            width = (f" size={sizes[0]}" if isinstance(sizes, list) and sizes
                     and len(set(map(repr, sizes))) == 1 else "")
            return (f"io in x{len(vals)} {at}{width} = {format_value(vals[0], 'val')}.."
                    f"{format_value(vals[-1], 'val')}")
    if k == "cpuid":
        leaf, sub = ev.get("leaf"), ev.get("sub")
        return (f"cpuid({format_value(leaf, 'val')}, {format_value(sub, 'val')}) = "
                f"{format_value(ev.get('out'), 'val')} rip={format_value(ev.get('rip'), 'rip')}")
    if k == "syscall":
        nr = ev.get("nr")
        name = LINUX_X86_64_SYSCALLS.get(nr) if isinstance(nr, int) else None
        return (f"syscall {nr}{f' ({name})' if name else ''} from user "
                f"rip={format_value(ev.get('rip'), 'rip')}")
    if k == "exit":
        return (f"exit {ev.get('reason')}: {ev.get('detail', '')} "
                f"rip={format_value(ev.get('rip'), 'rip')}")
    rest = {key: v for key, v in ev.items() if key not in ("seq", "t", "cpu", "k")}
    return f"{k} {format_op(rest)}"


def format_line(ev: dict[Any, Any], *, show_cpu: bool = False) -> str:
    """``#1234 t=0.012345678s  mmuext_op(PIN_L4_TABLE, mfn=0x1234) = 0``: always
    one line of visible characters (a control character in a recorded string
    is shown as an escape, see :func:`pvmon.literal.printable`)."""
    cpu = f" cpu{ev.get('cpu')}" if show_cpu else ""
    return printable(f"#{ev.get('seq')} t={format_time(ev.get('t'))}{cpu}  {describe(ev)}")


def jsonable(value: Any) -> Any:
    """``value`` with bytes as hex strings and map keys as strings, ready for ``json.dumps``."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def event_label(ev: dict[Any, Any]) -> str:
    """The name ``--filter`` matches: the hypercall name for ``hc``, else the kind."""
    if ev.get("k") == "hc":
        return str(ev.get("name"))
    return str(ev.get("k"))
