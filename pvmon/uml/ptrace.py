"""ptrace(2) for x86-64 Linux through ctypes: the requests, options, events and
register layout the UML tracer (:mod:`pvmon.uml.tracer`) uses.

Every number here is a fact of the Linux user ABI, with its source:

* requests ``PTRACE_*`` and options ``PTRACE_O_*``, events ``PTRACE_EVENT_*``:
  ``<sys/ptrace.h>`` (glibc) and ``<linux/ptrace.h>`` (UAPI:
  ``include/uapi/linux/ptrace.h``); ``PTRACE_GETREGS``/``SETREGS``/
  ``GETFPREGS``/``SETFPREGS``/``SYSEMU`` and friends from
  ``arch/x86/include/uapi/asm/ptrace-abi.h``;
* the register block ``struct user_regs_struct``: ``<sys/user.h>`` (glibc,
  x86-64), the same layout as Linux ``arch/x86/include/asm/user_64.h``:
  27 unsigned 64-bit words in :data:`USER_REGS` order;
* ``__WALL``: ``<linux/wait.h>`` (wait for every child, clone children
  included);
* ``process_vm_readv``: ``<sys/uio.h>`` (Linux 3.2+).

This module is pvmon's own (python-ptrace is GPL-2.0 and not a dependency).
Functions raise :class:`OSError` with the C library's errno on failure.
"""

from __future__ import annotations

import ctypes
import os
import struct

# glibc's soname on x86-64 Linux (ctypes.util.find_library would run ldconfig for it)
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
# glibc's ptrace is variadic (request, pid, addr, data); on x86-64 the four
# arguments go in registers the same way as for a fixed prototype.
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

# ---- requests (<sys/ptrace.h>, <linux/ptrace.h>, asm/ptrace-abi.h) ----------------------
PTRACE_TRACEME = 0
PTRACE_PEEKDATA = 2
PTRACE_PEEKUSER = 3
PTRACE_POKEDATA = 5
PTRACE_POKEUSER = 6
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_GETFPREGS = 14
PTRACE_SETFPREGS = 15
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_GET_THREAD_AREA = 25
PTRACE_SET_THREAD_AREA = 26
PTRACE_ARCH_PRCTL = 30
PTRACE_SYSEMU = 31
PTRACE_SYSEMU_SINGLESTEP = 32
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETSIGINFO = 0x4203
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

#: Request number -> name, for decoding the requests a traced process makes.
REQUESTS: dict[int, str] = {
    v: k.removeprefix("PTRACE_").lower() for k, v in dict(globals()).items()
    if k.startswith("PTRACE_") and not k.startswith("PTRACE_O_") and isinstance(v, int)
}

# ---- options (PTRACE_SETOPTIONS; <linux/ptrace.h>) ---------------------------------------
PTRACE_O_TRACESYSGOOD = 0x01
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEVFORKDONE = 0x20
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

# ---- events (status >> 16 of a stop; <linux/ptrace.h>) -----------------------------------
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_VFORK_DONE = 5
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

#: ``waitpid`` option: wait for all children, "clone" children included (<linux/wait.h>).
WALL = 0x40000000

#: ``struct user_regs_struct`` (x86-64, <sys/user.h>): field names in memory order.
USER_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
             "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
             "fs_base", "gs_base", "ds", "es", "fs", "gs")
#: Index of each register in :data:`USER_REGS` (and in a :func:`getregs` tuple).
REG = {name: i for i, name in enumerate(USER_REGS)}
#: The packed layout of ``struct user_regs_struct``: 27 little-endian u64 (216 bytes).
USER_REGS_STRUCT = struct.Struct("<27Q")

#: The x86-64 system call argument registers, in argument order (syscall(2)).
SYSCALL_ARGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")


def _check(ret: int) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, os.strerror(err))
    return ret


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    """``ptrace(request, pid, addr, data)``; returns the call's value. Raises
    OSError (errno) on failure. For PEEK requests use :func:`peekdata`, whose
    -1 can be a value."""
    ctypes.set_errno(0)
    return _check(_ptrace(request, pid, addr, data))


#: The C library's ``ptrace(request, pid, addr, data)`` itself, for a tracer's hot
#: path: returns -1 on failure and leaves errno unread (resuming a tracee that a
#: SIGKILL just ended fails with ESRCH, and its end is reported by waitpid anyway).
ptrace_raw = _ptrace


def traceme() -> None:
    """``PTRACE_TRACEME``: let the parent trace this process (call in the child
    after fork, before exec; the exec then stops with SIGTRAP)."""
    ptrace(PTRACE_TRACEME, 0)


def setoptions(pid: int, options: int) -> None:
    """``PTRACE_SETOPTIONS``: ``options`` is an OR of ``PTRACE_O_*``."""
    ptrace(PTRACE_SETOPTIONS, pid, 0, options)


def geteventmsg(pid: int) -> int:
    """``PTRACE_GETEVENTMSG``: after a clone/fork event stop, the new thread's pid."""
    out = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(out))
    return out.value


def cont_syscall(pid: int, sig: int = 0) -> None:
    """``PTRACE_SYSCALL``: resume until the next system call entry or exit,
    delivering signal ``sig`` (0: none)."""
    ptrace(PTRACE_SYSCALL, pid, 0, sig)


def cont(pid: int, sig: int = 0) -> None:
    """``PTRACE_CONT``: resume, delivering ``sig`` (0: none)."""
    ptrace(PTRACE_CONT, pid, 0, sig)


def detach(pid: int, sig: int = 0) -> None:
    """``PTRACE_DETACH``: stop tracing ``pid`` (it must be in a ptrace stop)."""
    ptrace(PTRACE_DETACH, pid, 0, sig)


class Regs:
    """A reusable ``struct user_regs_struct`` buffer for :meth:`get` (no
    allocation per stop: the tracer reads registers at every system call stop)."""

    __slots__ = ("_addr", "_buf")

    def __init__(self) -> None:
        self._buf = ctypes.create_string_buffer(USER_REGS_STRUCT.size)
        self._addr = ctypes.addressof(self._buf)

    def get(self, pid: int) -> tuple[int, ...]:
        """``PTRACE_GETREGS`` of stopped tracee ``pid``: the 27 registers as a
        tuple in :data:`USER_REGS` order (index with :data:`REG`)."""
        ctypes.set_errno(0)
        if _ptrace(PTRACE_GETREGS, pid, 0, self._addr) == -1:
            _check(-1)
        return USER_REGS_STRUCT.unpack_from(self._buf)


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                              ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]


def read_memory(pid: int, addr: int, size: int) -> bytes:
    """``size`` bytes of process ``pid``'s memory at ``addr`` (process_vm_readv;
    the caller needs ptrace access to ``pid``, which a tracer has). Returns
    fewer bytes when the range runs into unmapped memory; raises OSError when
    nothing could be read."""
    if size <= 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = _IoVec(ctypes.addressof(buf), size)
    remote = _IoVec(addr, size)
    ctypes.set_errno(0)
    n = _process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[:n]


def signed(value: int) -> int:
    """A 64-bit register as a signed value (a system call's ``rax`` result)."""
    return value - (1 << 64) if value & (1 << 63) else value
