"""The UML tracer: run a User-Mode Linux kernel process under pvmon's ptrace and
turn its host system calls into trace events.

A UML kernel is an ordinary Linux process whose "hypervisor" is the host
kernel: it makes host system calls, and runs each guest address space as a
child process that it traces itself with ``PTRACE_SYSEMU`` (the child stops at
each of its system calls, which the host then skips; UML reads the call from
the child's registers, runs it in the guest kernel and writes the result back).

How pvmon traces it (docs/uml.md):

* the UML binary is started by ``fork`` + ``PTRACE_TRACEME`` + ``execve`` in a
  process group of its own (a Ctrl-C at the terminal reaches pvmon, not UML),
  stdin and stdout/stderr on pipes of pvmon's;
* options ``PTRACE_O_TRACESYSGOOD | TRACECLONE | TRACEEXEC | EXITKILL``: every
  system call stop of the kernel process and of its helper threads (UML starts
  them with ``clone(CLONE_VM | CLONE_FILES)``, no exit signal: caught by
  TRACECLONE) stops in pvmon. UML's guest-process children are created with
  ``clone(CLONE_FILES | SIGCHLD)``, which Linux treats as a fork, and are NOT
  followed (no ``TRACEFORK``): a process has one tracer, and those children
  call ``PTRACE_TRACEME`` for UML, which would fail with EPERM if pvmon had
  attached them first (UML then panics);
* each host system call is one ``hc`` event of ABI ``uml`` at its exit
  (``nr``, ``name``, ``args`` = rdi, rsi, rdx, r10, r8, r9, ``ret`` = signed
  rax, ``rip``; ``op`` decodes ptrace and wait4). Everything is read at the
  exit stop, one PTRACE_GETREGS per call: x86-64 Linux returns from a system
  call with every register but rax, rcx and r11 as it was at entry. Two calls
  replace the registers: ``rt_sigreturn`` (recorded with the restored
  context's registers and rax; Linux sets orig_rax to -1 there, which is how
  it is recognized) and a successful ``execve`` (the new program's);
* the guest processes' own system calls are recovered from UML's ptrace
  requests: after UML's ``wait4`` on a child reports a syscall stop
  (``SIGTRAP | 0x80``: UML sets TRACESYSGOOD on its children), the next
  ``ptrace(PTRACE_GETREGS, child, 0, buf)`` returns the child's registers in
  ``buf`` in UML's memory; pvmon reads that ``struct user_regs_struct`` with
  ``process_vm_readv`` and records a ``syscall`` event (``nr`` = orig_rax,
  ``args``, ``rip``, ``proc`` = the child's host pid); the next
  ``ptrace(PTRACE_SETREGS, child, 0, buf)`` writes the call's result back:
  its rax is recorded as a ``sysret`` event (a call UML never returns from,
  ``exit``/``exit_group``, has none);
* the console: what UML writes to fd 1 and 2 (``con``/``out``) and reads from
  fd 0 (``con``/``in``), read from UML's buffers at the system call's exit;
* the stop loop (waitpid, GETREGS, the memory reads above, resuming) is C,
  :mod:`pvmon.uml._stoploop`, when it is built: it handles every stop itself,
  the GIL released, and hands the completed host calls to Python in batches,
  where one recorder (:meth:`UmlTracer._recorder`) turns them into events. The
  same loop in Python is the fallback (``PVMON_UML_PYLOOP=1`` forces it); it
  reads the same bytes (:func:`_wanted`) and gives the same events.

Times are host monotonic nanoseconds since the UML process started: a UML
boot is not deterministic (host time, pids, scheduling), and the trace header
says so (``machine.deterministic`` false).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pvmon.uml import ptrace as pt
from pvmon.uml.syscalls import NUMBERS, SYSCALLS

_SYSGOOD_TRAP = signal.SIGTRAP | 0x80
_OPTIONS = (pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_TRACECLONE | pt.PTRACE_O_TRACEEXEC
            | pt.PTRACE_O_EXITKILL)

_NR_READ, _NR_WRITE, _NR_RT_SIGRETURN, _NR_PTRACE, _NR_WAIT4 = (
    NUMBERS[n] for n in ("read", "write", "rt_sigreturn", "ptrace", "wait4"))
_NO_SYSCALL = (1 << 64) - 1
_R = pt.REG
_RDI, _RSI, _RDX, _R10, _R8, _R9 = (_R[n] for n in pt.SYSCALL_ARGS)
_ORIG_RAX, _RAX, _RIP = _R["orig_rax"], _R["rax"], _R["rip"]
#: Console file descriptors and the ``ch`` their bytes are recorded under.
_CONSOLE_OUT = {1: "stdout", 2: "stderr"}

try:        # the stop loop in C (setup.py builds it; optional)
    from pvmon.uml._stoploop import StopLoop as _StopLoop
except ImportError:
    _StopLoop = None
#: :meth:`pvmon.uml._stoploop.StopLoop.run`'s reasons to return (see _stoploop.c).
_WHY_MAIN_EXIT, _WHY_DONE = 2, 3


def _wanted(nr: int, args: list[int], ret: int) -> tuple[int, int] | None:
    """What of the tracee's memory a completed host call needs read at its exit
    stop, as ``(address, size)``, or None: the status word ``wait4`` stored, the
    ``struct user_regs_struct`` a ``PTRACE_GETREGS`` filled, the rax of the one
    a ``PTRACE_SETREGS`` wrote, the console bytes of a read from fd 0 or a write
    to fd 1 or 2. The C loop reads the same (pvmon/uml/_stoploop.c)."""
    if nr == _NR_WAIT4:
        return (args[1], 4) if ret > 0 and args[1] else None
    if nr == _NR_PTRACE:
        if ret == 0 and args[0] == pt.PTRACE_GETREGS:
            return args[3], pt.USER_REGS_STRUCT.size
        if ret == 0 and args[0] == pt.PTRACE_SETREGS:
            return args[3] + 8 * _RAX, 8
        return None
    if ret > 0 and ((nr == _NR_WRITE and args[0] in _CONSOLE_OUT)
                    or (nr == _NR_READ and args[0] == 0)):
        return args[1], ret
    return None


class StartError(Exception):
    """The UML process could not be started: ``what`` is ``"ptrace"``
    (PTRACE_TRACEME refused: a seccomp profile, Yama, a tracer already there),
    ``"exec"`` (the binary cannot be executed) or ``"setup"``; ``errno`` the
    error number."""

    def __init__(self, what: str, errno: int) -> None:
        super().__init__(f"{what}: {os.strerror(errno)}")
        self.what = what
        self.errno = errno


@dataclass
class TraceStats:
    """Counts of one traced run: host system calls, recovered guest system calls,
    helper threads followed, signals passed on to UML."""

    host_syscalls: int = 0
    guest_syscalls: int = 0
    threads: int = 1
    signals: int = 0
    by_name: dict[str, int] = field(default_factory=dict)


@dataclass
class Outcome:
    """How the traced UML process ended: ``reason`` (``shutdown`` exit status
    0, ``crash`` another status or a signal, ``interrupted``, ``limit``,
    ``idle``), ``detail`` a sentence, ``status`` the exit status or -signal."""

    reason: str
    detail: str
    status: int | None


class UmlTracer:
    """Run ``argv`` (``argv[0]`` the UML binary) under ptrace.

    ``emit(event)`` receives each event as a dict in ``seq`` order (``seq`` and
    ``t`` filled in; ``cpu`` is the traced thread's index: 0 the UML kernel
    process, 1, 2, ... its helper threads in the order they appeared);
    ``emit_hc(abi, nr, name, args, op, ret, rip, via, rd, wr, ev, seq, t, cpu)``,
    when given, receives host system calls instead (the trace writer's fast
    path, :meth:`pvmon.trace.writer.TraceWriter.append_hc`). ``env``: the
    process environment; ``cwd``: its working folder (None: pvmon's).
    :meth:`start` forks; :meth:`run` traces until the UML process has ended
    and returns an :class:`Outcome`. :meth:`stop` (any thread, a signal
    handler included) asks UML to end (SIGTERM, then SIGKILL
    after :attr:`kill_after` seconds) with the given reason.
    """

    kill_after = 3.0

    def __init__(self, argv: list[str], env: dict[str, str],
                 emit: Callable[[dict], None],
                 emit_hc: Callable[..., None] | None = None, cwd: str | None = None) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self._emit = emit
        self._emit_hc = emit_hc
        self.pid = 0
        self.stdin_fd = -1
        self.stdout_fd = -1
        self.stats = TraceStats()
        self.seq = 0
        self._t0 = 0
        self._stop: tuple[str, str] | None = None

    def set_sinks(self, emit: Callable[[dict], None],
                  emit_hc: Callable[..., None] | None = None) -> None:
        """Where events go (as the constructor's ``emit``/``emit_hc``); before :meth:`run`."""
        self._emit = emit
        self._emit_hc = emit_hc

    # ---------------------------------------------------------------- process

    def start(self) -> None:
        """Fork and exec the UML binary as a tracee stopped at its exec. Raises
        :class:`StartError` when ptrace is not permitted (``what`` "ptrace") or
        the binary cannot be executed (``what`` "exec"), OSError when the fork
        fails."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()             # the child's failure, if any; closed by exec
        os.set_inheritable(err_w, False)
        pid = os.fork()
        if pid == 0:                         # child: no Python objects beyond here matter
            step = b"setup"
            try:
                os.close(err_r)
                os.setpgid(0, 0)
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                for fd in (in_r, in_w, out_r, out_w):
                    os.close(fd)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_DFL)
                if self.cwd is not None:
                    os.chdir(self.cwd)
                step = b"ptrace"
                pt.traceme()
                step = b"exec"
                os.execve(self.argv[0], self.argv, self.env)
            except OSError as exc:
                os.write(err_w, step + b":%d" % (exc.errno or 0))
            finally:
                os._exit(127)
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        with os.fdopen(err_r, "rb") as fh:   # EOF at a successful exec
            failure = fh.read()
        if failure:
            os.waitpid(pid, 0)
            for fd in (in_w, out_r):
                os.close(fd)
            what, _, num = failure.decode().partition(":")
            raise StartError(what, int(num or 0))
        self.pid = pid
        self.stdin_fd = in_w
        self.stdout_fd = out_r
        self._t0 = time.monotonic_ns()
        _, status = os.waitpid(pid, pt.WALL)
        if not os.WIFSTOPPED(status):       # killed before its first instruction
            self._first_status = status
            return
        self._first_status = None
        pt.setoptions(pid, _OPTIONS)
        pt.cont_syscall(pid)

    def stop(self, reason: str, detail: str) -> None:
        """Ask the run to end: UML gets SIGTERM (its own clean-up: it kills its
        guest processes), SIGKILL if it is still
        there :attr:`kill_after` seconds later. The first request's reason wins.
        Safe from a signal handler and from any thread."""
        if self._stop is not None or not self.pid:
            return
        self._stop = (reason, detail)
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        pid = self.pid

        def killer() -> None:
            time.sleep(self.kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        threading.Thread(target=killer, name="pvmon-uml-kill", daemon=True).start()

    def abort(self) -> None:
        """Kill a started UML that will not be traced after all (SIGKILL to its
        process group) and reap it."""
        if not self.pid:
            return
        self._kill_leftovers(self.pid)
        try:
            os.waitpid(self.pid, pt.WALL)
        except ChildProcessError:
            pass

    # ---------------------------------------------------------------- tracing

    def run(self) -> Outcome:
        """Trace until the UML kernel process has exited; returns how it ended.
        Every event is emitted before this returns. The stop loop is the
        compiled :mod:`pvmon.uml._stoploop` when it is built, else (or with
        ``PVMON_UML_PYLOOP=1`` in the environment) the same loop in Python: the
        same events either way."""
        if self._first_status is not None:
            return self._ended(self._first_status)
        if _StopLoop is not None and not os.environ.get("PVMON_UML_PYLOOP"):
            return self._run_c()
        return self._run_python()

    def _recorder(self) -> Callable[[int, list, int, int, int, int, bytes | None], None]:
        """The function both stop loops give each completed host call:
        ``record(nr, args, ret, rip, t, cpu, data)`` (``data`` the bytes
        :func:`_wanted` names, read at the call's exit stop, or None) emits its
        ``hc`` event and the ``syscall``/``sysret``/``con`` event it gives."""
        wait_status: dict[int, int] = {}   # UML's child -> last status its wait4 returned
        in_guest_call: dict[int, int] = {}  # UML's child -> the guest call it is in
        names = SYSCALLS
        emit, emit_hc = self._emit, self._emit_hc
        stats = self.stats
        by_name = stats.by_name
        regs_size = pt.USER_REGS_STRUCT.size
        unpack_regs = pt.USER_REGS_STRUCT.unpack

        def record(nr: int, args: list, ret: int, rip: int, t: int, cpu: int,
                   data: bytes | None) -> None:
            name = names.get(nr) or f"syscall_{nr}"
            by_name[name] = by_name.get(name, 0) + 1
            op: dict = {}
            extra = None
            if nr == _NR_PTRACE:
                req = args[0]
                op = {"cmd": pt.REQUESTS.get(req, req), "pid": args[1]}
                if req == pt.PTRACE_GETREGS and ret == 0:
                    child = args[1]
                    ws = wait_status.pop(child, None)
                    if ws is not None and (ws & 0xff) == 0x7f \
                            and (ws >> 8) & 0xff == _SYSGOOD_TRAP \
                            and data is not None and len(data) == regs_size:
                        # the child's registers UML just read into its buffer
                        r = unpack_regs(data)
                        stats.guest_syscalls += 1
                        gnr = r[_ORIG_RAX]
                        extra = {"k": "syscall", "nr": gnr,
                                 "name": names.get(gnr) or f"syscall_{gnr}",
                                 "args": [r[_RDI], r[_RSI], r[_RDX], r[_R10], r[_R8], r[_R9]],
                                 "rip": r[_RIP], "proc": child}
                        in_guest_call[child] = gnr
                elif req == pt.PTRACE_SETREGS and ret == 0 and args[1] in in_guest_call:
                    # the result UML writes back (the rax in its buffer)
                    gnr = in_guest_call.pop(args[1])
                    if data is not None and len(data) == 8:
                        extra = {"k": "sysret", "nr": gnr,
                                 "name": names.get(gnr) or f"syscall_{gnr}",
                                 "ret": pt.signed(int.from_bytes(data, "little")),
                                 "proc": args[1]}
            elif nr == _NR_WAIT4:
                op = {"pid": args[0]}
                if ret > 0 and args[1]:
                    if data is not None and len(data) == 4:
                        ws = int.from_bytes(data, "little")
                        wait_status[ret] = ws
                        op["status"] = ws
                    in_guest_call.pop(ret, None)   # a call UML never returned from
            elif nr == _NR_WRITE and ret > 0 and args[0] in _CONSOLE_OUT and data:
                extra = {"k": "con", "dir": "out", "ch": _CONSOLE_OUT[args[0]], "data": data}
            elif nr == _NR_READ and ret > 0 and args[0] == 0 and data:
                extra = {"k": "con", "dir": "in", "ch": "stdin", "data": data}
            seq = self.seq
            if emit_hc is not None:
                emit_hc("uml", nr, name, args, op, ret, rip, "syscall", [], [], [],
                        seq, t, cpu)
            else:
                emit({"k": "hc", "abi": "uml", "nr": nr, "name": name, "args": args,
                      "op": op, "ret": ret, "rip": rip, "via": "syscall", "rd": [],
                      "wr": [], "ev": [], "seq": seq, "t": t, "cpu": cpu})
            seq += 1
            if extra is not None:
                extra["seq"] = seq
                extra["t"] = t
                extra["cpu"] = cpu
                emit(extra)
                seq += 1
            self.seq = seq
            stats.host_syscalls += 1

        return record

    def _run_c(self) -> Outcome:
        """The stop loop in C (:mod:`pvmon.uml._stoploop`): it resumes the
        tracee at every stop itself and hands back the completed host calls in
        batches (at most 1,024 or 20 ms of them, and at once after a console
        read or write), which are recorded here while UML runs on."""
        main = self.pid
        record = self._recorder()
        loop = _StopLoop(main, self._t0)
        stats = self.stats
        outcome = None
        while True:
            why, batch = loop.run(1024, 20_000_000)
            for nr, args, ret, rip, t, cpu, data in batch:
                record(nr, args, ret, rip, t, cpu, data)
            stats.signals = loop.signals
            stats.threads = 1 + loop.new_threads
            if why == _WHY_MAIN_EXIT:
                outcome = self._ended(loop.main_status)
                self._kill_leftovers(main)
                if not loop.kill_threads():    # helper threads outliving UML
                    break
            elif why == _WHY_DONE:
                break
        if outcome is None:
            outcome = Outcome("crash", "the UML process disappeared", None)
        return outcome

    def _run_python(self) -> Outcome:
        """The stop loop in Python (the fallback when :mod:`pvmon.uml._stoploop`
        is not built): the same stops, reads and events as :meth:`_run_c`."""
        main = self.pid
        regs = pt.Regs().get
        cpu_of = {main: 0}
        entry: dict[int, bool] = {main: False}   # pid -> inside a system call
        new_threads: set[int] = set()      # cloned, initial SIGSTOP not seen yet
        record = self._recorder()
        read_memory = pt.read_memory
        resume, SYSCALL = pt.ptrace_raw, pt.PTRACE_SYSCALL   # errors: see ptrace_raw
        monotonic_ns = time.monotonic_ns
        t0 = self._t0
        stats = self.stats
        outcome = None
        while True:
            try:
                pid, status = os.waitpid(-1, pt.WALL)
            except ChildProcessError:
                break
            if status & 0xFF != 0x7F:         # not a stop (WIFSTOPPED, inlined: hot path)
                entry.pop(pid, None)
                if pid == main:
                    outcome = self._ended(status)
                    self._kill_leftovers(main)
                    if not entry:
                        break
                    for other in list(entry):     # helper threads outliving UML
                        try:
                            os.kill(other, signal.SIGKILL)
                        except ProcessLookupError:
                            entry.pop(other, None)
                    if not entry:
                        break
                    continue
                if outcome is not None and not entry:
                    break
                continue
            sig = (status >> 8) & 0xFF        # WSTOPSIG
            if sig == _SYSGOOD_TRAP:
                if not entry.get(pid):        # entry: nothing to read yet (see below)
                    entry[pid] = True
                    resume(SYSCALL, pid, 0, 0)
                    continue
                # exit: x86-64 Linux returns from a system call with every register
                # but rax, rcx and r11 as it was at entry, so the number (orig_rax),
                # the arguments and rip are read here, one GETREGS per call
                entry[pid] = False
                try:
                    r = regs(pid)
                except OSError:               # gone (a SIGKILL): waitpid reports its end
                    resume(SYSCALL, pid, 0, 0)
                    continue
                nr = r[_ORIG_RAX]
                if nr == _NO_SYSCALL:
                    # only rt_sigreturn leaves orig_rax at -1 (restore_sigcontext: "disable
                    # syscall checks"); its registers are then the restored context's
                    nr = _NR_RT_SIGRETURN
                ret = r[_RAX]
                if ret & (1 << 63):
                    ret -= 1 << 64
                t = monotonic_ns() - t0       # CLOCK_MONOTONIC never goes back
                args = [r[_RDI], r[_RSI], r[_RDX], r[_R10], r[_R8], r[_R9]]
                want = _wanted(nr, args, ret)
                data = None
                if want is not None:          # read while UML is stopped
                    try:
                        data = read_memory(pid, *want)
                    except OSError:
                        pass
                resume(SYSCALL, pid, 0, 0)
                record(nr, args, ret, r[_RIP], t, cpu_of.get(pid, 0), data)
                continue
            event = status >> 16
            if sig == signal.SIGTRAP and event:
                if event in (pt.PTRACE_EVENT_CLONE, pt.PTRACE_EVENT_FORK,
                             pt.PTRACE_EVENT_VFORK):
                    child = pt.geteventmsg(pid)
                    if child not in entry:
                        entry[child] = False
                        cpu_of[child] = len(cpu_of)
                        stats.threads += 1
                        new_threads.add(child)
                resume(SYSCALL, pid, 0, 0)
                continue
            if pid not in entry or pid in new_threads:
                # a new thread's first stop (its SIGSTOP; it may come before the
                # parent's clone event): start tracing its system calls
                if pid not in entry:
                    entry[pid] = False
                    cpu_of[pid] = len(cpu_of)
                    stats.threads += 1
                else:
                    new_threads.discard(pid)
                if sig == signal.SIGSTOP:
                    resume(SYSCALL, pid, 0, 0)
                    continue
            # a signal for UML (its timer's SIGALRM, SIGIO, SIGCHLD, ...): pass it on
            stats.signals += 1
            resume(SYSCALL, pid, 0, sig)
        if outcome is None:
            outcome = Outcome("crash", "the UML process disappeared", None)
        return outcome

    @staticmethod
    def _kill_leftovers(main: int) -> None:
        """SIGKILL whatever is left in UML's process group once UML has exited.
        UML ends its guest processes itself on SIGTERM, but once (of some dozens
        of stopped runs, not reproduced since) a UML process outlived it: in
        group-stop (``T``), no tracer, init as its parent, its memory file open,
        most likely a child UML had just forked and that had stopped itself
        with SIGSTOP for UML to attach. Such a process is still in UML's
        process group (UML makes its children in its own group, which
        :meth:`start` made UML's pid), and the group id cannot have been reused
        while a member is left."""
        try:
            os.killpg(main, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _ended(self, status: int) -> Outcome:
        if self._stop is not None:
            reason, detail = self._stop
            return Outcome(reason, detail, _status_value(status))
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            if code == 0:
                return Outcome("shutdown", "the UML kernel exited with status 0", 0)
            return Outcome("crash", f"the UML kernel exited with status {code}", code)
        sig = os.WTERMSIG(status)
        return Outcome("crash", f"the UML kernel was killed by {_signame(sig)}", -sig)


def _status_value(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
