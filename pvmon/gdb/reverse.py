"""Reverse execution on a replay: snapshots and deterministic re-execution.

A snapshot must hold everything the rest of the run depends on: the vCPU,
guest RAM, and the platform's and backend's own state (event channels,
timers, pinned tables, the replay's position in the trace). pvmon keeps
all of it in one process, so a snapshot is a ``fork()`` of that process
(as rr's checkpoints are): the child runs on, the parent waits, holding
the state copy-on-write (guest RAM is a private mapping, so only pages
written afterwards cost memory). Going back to a snapshot tells the live
process's ancestor to take over and the live process to exit.

Snapshots are taken at every stop gdb sees and, while the guest runs, right
after a call (hypercall) that returns :attr:`Reverse.spacing_s` CPU seconds
after the last snapshot (checked every 32 calls): a stop there is exact, while one
asked for from inside an RDTSC hook lands somewhere in the rest of the
block and was seen to change what a Debian guest does later. At most :attr:`Reverse.max_snapshots` are
kept: beyond that the oldest but one are dropped (the first, before the
first instruction, is the process the user started and stays).

A position is (event count, virtual time, registers). From a snapshot S
before the current position P:

- ``reverse-continue`` runs S -> P with the breakpoints (and an exit at P's
  RIP to recognise P), counting breakpoint and watchpoint hits; then goes
  back to S and runs to the last hit. No hit: the segment before S, and so
  on; none at all: the first snapshot, reported as the start of history.
  A segment whose code (:mod:`pvmon.gdb.codepages`: the blocks Unicorn
  translated in it, recorded when the snapshot ending it is taken) holds no
  breakpoint address and that does not start on one cannot hold a hit and is
  skipped without re-executing it (:meth:`Reverse.scan_before`).
- ``reverse-stepi``: if P was reached by a single step from a snapshot, that
  snapshot; else S -> P counting arrivals at P's RIP and calls, then from S
  again to the later of the last arrival and the last call before P (a stop
  right after a call is exact), and single steps from there to find the
  instruction before P, at most :attr:`Reverse.max_steps` of them (beyond:
  an error, back at P).
- ``monitor goto-event N`` behind P: the last snapshot at or before event N,
  then run until event N.

Every plan carries gdb's breakpoints and watchpoints of now; the resumed
snapshot sets them before anything else (it was taken with those of its time).

Limits (docs/gdb.md): reverse-stepi beyond max_steps single steps from the
nearest earlier stop or snapshot is refused with a message.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass

from pvmon.gdb import target
from pvmon.gdb.codepages import CodePages, Ranges, union

#: Messages from the live process to a waiting snapshot (one line each).
_RESUME, _EXIT = b"R", b"X"


@dataclass
class Snapshot:
    """A waiting process: ``pid``, ``wake`` (the write end of its pipe),
    ``pos`` (its position), ``by_step``: index of the snapshot it is one
    single step after (or None)."""

    pid: int
    wake: int
    pos: tuple
    by_step: int | None = None


class ReverseError(Exception):
    """Reverse execution cannot do what gdb asked (the message goes to gdb)."""


class Reverse:
    """Reverse execution for the stub of ``attachment`` (a
    :class:`pvmon.gdb.attach.GdbAttachment` on a replay)."""

    spacing_s = 0.25
    max_snapshots = 64
    max_steps = 100_000

    def __init__(self, attachment) -> None:
        self.att = attachment
        self.snaps: list[Snapshot] = []
        self.root = os.getpid()
        self.taken = 0
        self.dropped = 0
        #: Calls (hypercalls) so far: part of a position.
        self.calls = 0
        self.restores = 0
        self._last_snap_cpu = time.process_time()
        self._step_from: int | None = None   # snapshot index the next stop is one step after
        self.plan: dict | None = None         # what a resumed snapshot does next
        #: The code each snapshot segment ran (:class:`~pvmon.gdb.codepages.Ranges`):
        #: ``segs[i]`` between snapshots i and i + 1 (None: unknown); ``cur`` since
        #: the newest snapshot, up to the last :meth:`take` (the translation cache
        #: holds the rest).
        self.code = CodePages(attachment.session.machine.uc)
        self.segs: list[Ranges | None] = []
        self.cur: Ranges | None = Ranges()
        #: Segments reverse-continue re-executed / skipped as their code held no
        #: breakpoint (counted across the processes a search goes through).
        self.scanned = 0
        self.skipped = 0
        #: The going-back under way: {"t0": wall clock at the request (time.time()),
        #: "cpu": CPU seconds the processes it went through spent before this one}.
        self.search: dict | None = None
        self._cpu_mark = time.process_time()
        #: (wall s, CPU s of every process it went through) of the last going-back.
        self.last_search: tuple[float, float] | None = None
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # reap exited processes at once
        attachment.session.dispatch.call_listeners.append(self._on_call)

    def _on_call(self, _ev: dict) -> None:
        self.calls += 1
        stub = self.att.stub
        if stub is None:
            return
        seek = stub.seek
        if seek is not None:
            # re-running towards P: stop right after P's last call to arm P's exit
            if not seek.get("armed", True) and self.calls == seek["arm_at"] \
                    and seek["op"] != "tohit":
                stub.m.debug_break = True
                stub.m.uc.emu_stop()
            return
        if not self.calls & 31 and self.snapshot_due():    # (the CPU clock is a system call)
            stub.snapshot_soon()

    def snapshot_due(self) -> bool:
        """True when this process has run :attr:`spacing_s` CPU seconds since
        the last snapshot. CPU, not wall, time: on a loaded machine the
        snapshots (their number, memory, and the re-execution a segment costs)
        stay where they are on a quiet one."""
        return time.process_time() - self._last_snap_cpu > self.spacing_s

    # ------------------------------------------------------------ positions
    def position(self) -> tuple:
        """(events, virtual ns, calls, every register packed as gdb's ``g``)."""
        s = self.att.session
        return (s.dispatch.seq, s.machine.clock.now_ns, self.calls,
                target.read_all(s.machine))

    @staticmethod
    def _pos_json(pos: tuple) -> list:
        return [pos[0], pos[1], pos[2], pos[3].hex()]

    @staticmethod
    def _pos_from(js: list) -> tuple:
        return (js[0], js[1], js[2], bytes.fromhex(js[3]))

    @staticmethod
    def rip_of(pos: tuple) -> int:
        off = sum(r.size for r in target.REGS[:target.REG_INDEX["rip"]])
        return int.from_bytes(pos[3][off:off + 8], "little")

    # ------------------------------------------------------------ snapshots
    def take(self, *, by_step: int | None = None) -> None:
        """Snapshot the whole process here (fork). Returns in the live process;
        a snapshot process returns from here only when it is resumed, with
        :attr:`plan` set."""
        pos = self.position()
        if self.snaps and self.snaps[-1].pos == pos:
            return
        if len(self.snaps) >= self.max_snapshots:
            self._drop(1)
        # the code run since the newest snapshot ends here: a segment
        code = union(self.cur, self.code.harvest())
        self.code.restart()
        conn = self.att.stub.conn
        conn.pause_reader()
        sys.stdout.flush()
        sys.stderr.flush()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # the child runs on
            os.close(r)
            if self.snaps:
                self.segs.append(code)
            self.cur = Ranges()
            self._cpu_mark = time.process_time()       # a new process: its own CPU clock
            self._last_snap_cpu = self._cpu_mark
            self.snaps.append(Snapshot(os.getppid(), w, pos, by_step))
            self.taken += 1
            conn.start_reader()
            return
        os.close(w)                                    # the parent waits, as the snapshot
        self.cur = code                                # (it appends the segment when resumed)
        msg = b""
        while not msg.endswith(b"\n"):
            chunk = os.read(r, 65536)
            if not chunk:                              # the live process died: so do we
                os._exit(1)
            msg += chunk
        os.close(r)
        if msg.startswith(_EXIT):
            os._exit(int(msg[1:].strip() or b"0"))
        conn.drain()                                   # what the live process already took
        info = json.loads(msg[1:])
        self.plan = info["plan"]
        self.taken, self.dropped = info["taken"], info["dropped"]
        self.restores = info["restores"] + 1
        self.scanned, self.skipped = info["scanned"], info["skipped"]
        self.search = info["search"]
        self.last_search = tuple(info["last"]) if info["last"] else None
        # stay a snapshot of this point: fork again, the child goes on
        self.take(by_step=by_step)

    def _drop(self, index: int) -> None:
        """Let snapshot ``index`` (>= 1) go: the segments before and after it merge."""
        snap = self.snaps.pop(index)
        before = self.segs.pop(index - 1)
        if index - 1 < len(self.segs):
            self.segs[index - 1] = union(before, self.segs[index - 1])
        else:
            self.cur = union(before, self.cur)
        try:
            os.write(snap.wake, _EXIT + b"0\n")
        except OSError:
            pass
        os.close(snap.wake)
        self.dropped += 1

    def restore(self, index: int, plan: dict) -> None:
        """Go back to snapshot ``index`` and carry out ``plan`` there. Never
        returns: this process exits."""
        snap = self.snaps[index]
        for later in self.snaps[index + 1:]:
            try:
                os.write(later.wake, _EXIT + b"0\n")
            except OSError:
                pass
        plan = {**self._stops(), **plan}
        if self.search is None:                    # a new request from gdb
            self.search = {"t0": time.time(), "cpu": 0.0}
        search = {"t0": self.search["t0"],
                  "cpu": self.search["cpu"] + time.process_time() - self._cpu_mark}
        msg = {"plan": plan, "taken": self.taken, "dropped": self.dropped,
               "restores": self.restores, "scanned": self.scanned, "skipped": self.skipped,
               "search": search, "last": self.last_search}
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(snap.wake, _RESUME + json.dumps(msg).encode() + b"\n")
        os._exit(0)

    def end(self, status: int) -> None:
        """The replay is over: every snapshot process exits with ``status``
        (the first one is the process the user started)."""
        for snap in self.snaps:
            try:
                os.write(snap.wake, _EXIT + b"%d\n" % status)
            except OSError:
                pass
        self.snaps.clear()

    def memory_bytes(self) -> tuple[int, int]:
        """Memory of the snapshot processes (Linux smaps_rollup), in bytes:
        (the sum of their private dirty pages: held by one snapshot only, a
        lower bound; the sum of their proportional set sizes: pages shared
        with other processes count by share, an upper bound of what they add)."""
        private = pss = 0
        for snap in self.snaps:
            try:
                with open(f"/proc/{snap.pid}/smaps_rollup") as fh:
                    for line in fh:
                        if line.startswith("Private_Dirty:"):
                            private += int(line.split()[1]) * 1024
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1]) * 1024
            except OSError:
                pass
        return private, pss

    def summary(self) -> str:
        return (f"gdb reverse execution: {self.taken} snapshots taken, {len(self.snaps)} kept "
                f"(at most {self.max_snapshots}, every {self.spacing_s:g} CPU s of running and at "
                f"each stop), {self.dropped} dropped, {self.restores} restores; "
                f"reverse-continue re-executed {self.scanned} segments and skipped "
                f"{self.skipped} whose code held no breakpoint")

    def search_done(self) -> None:
        """A going-back has reported its stop to gdb: remember what it took."""
        if self.search is not None:
            self.last_search = (time.time() - self.search["t0"],
                                self.search["cpu"] + time.process_time() - self._cpu_mark)
            self.search = None

    def info(self, _args: str = "") -> str:
        private, pss = self.memory_bytes()
        ram = self.att.session.machine.ram_bytes
        last = ""
        if self.last_search is not None:
            wall, cpu = self.last_search
            last = (f"last going back (reverse-stepi, reverse-continue, goto-event): "
                    f"{wall:.3f} s wall, {cpu:.3f} s CPU in the processes it went through\n")
        return (f"{self.summary()}\nsnapshot memory: {private / 2**20:.1f} MiB private "
                f"({private / ram:.2f}x guest RAM of {ram // 2**20} MiB), "
                f"{pss / 2**20:.1f} MiB proportional ({pss / ram:.2f}x)\n{last}")

    # ---------------------------------------------------- stops seen by gdb
    def at_stop(self, *, stepped: bool = False) -> None:
        """A stop gdb sees: snapshot it (after a single step, remember which
        snapshot it is one step after)."""
        by = len(self.snaps) - 1 if stepped and self.snaps else None
        self.take(by_step=by)

    # ------------------------------------------------------------- requests
    def _before(self, pos: tuple) -> int:
        """Index of the newest snapshot strictly before ``pos``."""
        for i in range(len(self.snaps) - 1, -1, -1):
            if self.snaps[i].pos != pos and self.snaps[i].pos[:3] <= pos[:3]:
                return i
        raise ReverseError("no snapshot before this point")

    def step_back(self) -> None:
        pos = self.position()
        if not self.snaps or self.snaps[0].pos == pos:
            raise ReverseError("at the start of the replay's history")
        last = self.snaps[-1]
        if last.pos == pos and last.by_step is not None and last.by_step < len(self.snaps):
            self.restore(last.by_step, {"op": "stop", "reply": "T05thread:01;"})
        i = self._before(pos)
        self.restore(i, {"op": "pred", "target": self._pos_json(pos), "phase": "count",
                         "snap": i})

    def _stops(self) -> dict:
        """gdb's breakpoints and watchpoints now, for a plan: the resumed
        snapshot sets the same (it may have been taken with others)."""
        stub = self.att.stub
        return {"bps": sorted(stub.breakpoints),
                "watch": [list(key) for key in sorted(stub.watchpoints)]}

    def _may_hit(self, start: Snapshot, code: Ranges | None) -> bool:
        """Whether the segment from snapshot ``start`` that ran ``code`` may
        hold a breakpoint or watchpoint hit. It does not when it starts on no
        breakpoint and no breakpoint address is in its code (every hit a
        re-execution counts is an instruction executed there); watchpoints
        or unknown code: it may."""
        stub = self.att.stub
        if code is None or stub.watchpoints or self.rip_of(start.pos) in stub.breakpoints:
            return True
        return any(a in code for a in stub.breakpoints)

    def continue_back(self) -> None:
        pos = self.position()
        if not self.snaps or self.snaps[0].pos == pos:
            raise ReverseError("at the start of the replay's history")
        i = self._before(pos)
        here = union(self.cur, self.code.harvest())      # snapshot i up to here
        for seg in self.segs[i:]:
            here = union(seg, here)
        if self._may_hit(self.snaps[i], here):
            self.scanned += 1
            self.restore(i, {"op": "scan", "target": self._pos_json(pos), "snap": i})
        self.skipped += 1
        self.scan_before(i)

    def scan_before(self, i: int) -> None:
        """No hit from snapshot ``i`` on: re-execute the newest earlier segment
        that may hold one (:meth:`_may_hit`), counting hits;
        none left: the start of history. Never returns."""
        for j in range(i - 1, -1, -1):
            if self._may_hit(self.snaps[j], self.segs[j]):
                self.scanned += 1
                self.restore(j, {"op": "scan", "snap": j,
                                 "target": self._pos_json(self.snaps[j + 1].pos)})
            self.skipped += 1
        self.restore(0, {"op": "stop", "reply": "T05thread:01;replaylog:begin;"})

    def goto_event(self, n: int) -> str:
        d = self.att.session.dispatch
        if n >= d.seq:
            self.att.arm_event(n)
            return f"the guest stops at event {n:,}: continue\n"
        best = None
        for i, snap in enumerate(self.snaps):
            if snap.pos[0] <= n:   # events so far
                best = i
        if best is None:
            raise ReverseError(f"no snapshot at or before event {n:,}")
        self.restore(best, {"op": "event", "n": n, "snap": best})
        return ""   # not reached
