"""The debugger on the engine thread: what each remote-protocol packet does
to a :class:`~pvmon.engine.machine.Machine`.

How it meets the engine (:mod:`pvmon.engine.machine`):

- a stop is :attr:`Machine.debug_break`: the run loop calls :meth:`GdbStub.on_break`
  before the next instruction, and the stub answers packets there until gdb
  resumes the guest; without a debugger the loop pays one attribute test per
  slice;
- breakpoints (``Z0``, ``Z1``) are Unicorn exit addresses
  (:meth:`Machine.set_exits`): ``emu_start`` returns before executing one.
  Nothing is written into guest memory, so the guest never sees them, and
  no hook runs per instruction;
- watchpoints (``Z2``-``Z4``) are Unicorn memory hooks over the watched bytes,
  installed only while one is set. The stop comes at the end of the
  translation block holding the access (Unicorn cannot stop right after an
  instruction from a memory hook without re-running it), so gdb shows a PC
  up to a few instructions after the one that wrote;
- single steps are :meth:`Machine.step_one`;
- Ctrl-C sets :attr:`Machine.debug_break` and asks Unicorn to leave
  ``emu_start`` (repeated until the engine thread takes it).

A stop never runs the platform's between-slices work (timers, event
delivery) where an undebugged run would not, so what the guest sees does
not change: a replay with gdb attached and continuing still verifies. The
exception is a stop inside a block in which the platform asked to preempt
the guest: the delivery then comes at the stop, not at the block's end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from unicorn import unicorn_const as ucc

from pvmon.engine.machine import GuestPageFault, Machine, Stop
from pvmon.gdb import rsp, target
from pvmon.gdb.server import Connection

SIGINT, SIGTRAP = 2, 5
#: Wall seconds a Ctrl-C waits for the guest's next call before stopping it anywhere.
INTERRUPT_GRACE_S = 0.25
#: The most bytes one ``m`` packet reads (gdb asks for less: PacketSize).
MAX_READ = 0x4000
PACKET_SIZE = 0x4000 * 2 + 64


class MonitorError(Exception):
    """A ``monitor`` command that cannot be done: its message goes to gdb."""


class GdbStub:
    """gdb's view of ``machine``, over ``conn``.

    ``monitor``: extra ``monitor`` commands, name -> function(args: str) -> str
    (the text gdb prints); ``reverse``: an object with ``step_back()`` and
    ``continue_back(stop_at)`` (a replay's :class:`pvmon.gdb.reverse.Reverse`),
    or None on a live run (gdb is then told reverse execution is unsupported).
    """

    def __init__(self, machine: Machine, conn: Connection, *,
                 monitor: dict[str, Callable[[str], str]] | None = None,
                 reverse=None, log: Callable[[str], None] = lambda s: None) -> None:
        self.m = machine
        self.conn = conn
        self.monitor = dict(monitor or {})
        self.monitor.setdefault("help", self._help)
        self.reverse = reverse
        self.log = log
        self.breakpoints: set[int] = set()      # Z0 and Z1 alike
        #: (type, address, length) -> its Unicorn memory hooks
        self.watchpoints: dict[tuple[int, int, int], list[int]] = {}
        self.attached = False
        self.running = False          # gdb is waiting for a stop reply
        self.last_stop = b"S05"
        self._interrupted = False
        self._watch_hit: tuple[int, int] | None = None
        self._paused = False          # the platform asked for a slice end since the resume
        self._orig_pause = None
        self._hc_hit: str | None = None      # the hypercall a break-hypercall stopped at
        self._early_interrupt = False
        self._interrupt_wanted = False       # Ctrl-C waiting for the next call
        #: The dispatch's call listeners (``call_listeners`` of
        #: :class:`pvmon.dispatch.core`), where a waiting Ctrl-C listens; None: none.
        self.call_listeners: list | None = None
        self.seek: dict | None = None        # a re-execution after going back (reverse.py)
        self._snap_due = False
        #: ``monitor goto-event N`` behind the current event: the next reverse-continue
        self.goto_back: int | None = None
        #: arms a stop at an event number (set by the attachment)
        self.attach_event: Callable[[int], None] = lambda n: None
        self._orig_resume = None
        self.stops = 0
        #: Told on the engine thread of each change gdb makes to the guest's state
        #: (for a status display, e.g. the TUI's): "running" when gdb resumes it,
        #: the reason of a stop reported to gdb ("breakpoint", "watchpoint",
        #: "step", "interrupt", "hypercall NAME", "event", "reverse"), "detached".
        self.on_state: Callable[[str], None] = lambda why: None
        self._why = "interrupt"

    # ------------------------------------------------------------ attaching
    def attach(self) -> None:
        """Take the machine: it stops before its next instruction (the first,
        if it has not run yet) and waits for gdb."""
        m = self.m
        self.attached = True
        m.debugger = self
        self._orig_pause = m.pause

        def pause() -> None:
            self._paused = True
            self._orig_pause()
        m.pause = pause                      # instance attribute: only while attached
        handler = m.handler
        self._orig_resume = handler.on_resume

        def on_resume() -> None:
            self._paused = False
            self._orig_resume()
        handler.on_resume = on_resume
        self.conn.on_interrupt = self.interrupt
        m.debug_break = True

    def detach(self) -> None:
        """Let go: breakpoints and watchpoints removed, the guest runs on."""
        if not self.attached:
            return
        self.attached = False
        self.running = False
        m = self.m
        self.breakpoints.clear()
        if m.exits:
            m.set_exits([])
        for hooks in self.watchpoints.values():
            for h in hooks:
                m.uc.hook_del(h)
        if self.watchpoints:
            m.uc.ctl_flush_tb()
        self.watchpoints.clear()
        if self._orig_pause is not None:
            del m.pause
            del m.handler.on_resume
        m.debug_break = False
        self._drop_call_listener()
        self.conn.on_interrupt = lambda: None
        self.conn.close()
        self.on_state("detached")

    def interrupt(self) -> None:
        """Ctrl-C from gdb (the reader thread): stop at the next safe point."""
        if not self.attached:
            return
        if not self.running:
            # the continue it interrupts may still be queued: stop as soon as it runs
            self._early_interrupt = True
            return
        # Prefer to stop right after the next call (where a stop is exact, see
        # docs/gdb.md); a guest that makes none within INTERRUPT_GRACE_S is
        # stopped wherever it is.
        self._interrupt_wanted = True
        m = self.m
        if self.call_listeners is not None and self._at_call not in self.call_listeners:
            self.call_listeners.append(self._at_call)    # removed on the engine thread

        def force() -> None:
            deadline = time.monotonic() + INTERRUPT_GRACE_S
            while self.running and self.attached and self._interrupt_wanted:
                if time.monotonic() >= deadline:
                    self._interrupted = True
                    m.debug_break = True
                    m.uc.emu_stop()           # repeated: one landing before emu_start is lost
                time.sleep(0.02)
        threading.Thread(target=force, daemon=True).start()

    def _drop_call_listener(self) -> None:
        """Stop listening for calls (on the engine thread)."""
        self._interrupt_wanted = False
        if self.call_listeners is not None and self._at_call in self.call_listeners:
            self.call_listeners.remove(self._at_call)

    def _at_call(self, _ev: dict) -> None:
        """A call has just been handled (a call listener while a Ctrl-C waits):
        the guest stops right after it."""
        if self._interrupt_wanted and self.running:
            self._interrupted = True
            self.m.debug_break = True
            self.m.uc.emu_stop()

    def finish(self, exit_kind: str, code: int | None = None) -> None:
        """The run has ended: tell a waiting gdb (``W`` exit code) and close."""
        if self.attached:
            if self.running:
                self.conn.send(b"W%02x" % (0 if exit_kind == "shutdown" and code in (0, 1, None)
                                           else 1))
            self.detach()

    # ------------------------------------------------------------- stopping
    def on_break(self) -> None:
        """Called by the run loop with the guest stopped before an instruction.
        Reports why to gdb and serves packets until gdb resumes the guest."""
        if not self.attached:
            return
        m = self.m
        if self._paused and self.running:
            # the platform ended this slice too: do its between-slices work as an
            # undebugged run would, then stop only if there is still a reason to
            self._paused = False
            rip = m.reg("rip")
            m.handler.on_resume()
            if m.stop_reason is not None:
                self._report_exit()
                return
            if m.reg("rip") != rip and not self._pending():
                return
        if self.seek is not None and self.running:
            if self._seek_stop():
                return                 # the seek runs on
            self.serve()
            return
        if self._snap_due and self.running:
            self._snap_due = False
            if not self._pending() and m.reg("rip") not in self.breakpoints:
                if self._snapshot() == "serve":
                    self.serve()
                return                 # a periodic snapshot: run on
        if self.running:
            reply = self._stop_reply()
            if reply is None:          # not ours after all (a stale request): run on
                return
            self.running = False
            self._drop_call_listener()
            self.last_stop = reply
            self.stops += 1
            self.conn.send(reply)
            self.on_state(self._why)
            if self.reverse is not None:
                self.reverse.search_done()     # a goto-event back ends at its event
        if self.reverse is not None and self._snapshot(stop=True) == "run":
            return
        self.serve()

    # ------------------------------------------------- reverse execution
    def snapshot_soon(self) -> None:
        """Take a snapshot right after the current call returns (from a call
        listener: a stop there is exact and changes nothing the guest sees)."""
        if self.seek is None and self.running and self.attached:
            self._snap_due = True
            self.m.debug_break = True
            self.m.uc.emu_stop()

    def _snapshot(self, *, stop: bool = False, stepped: bool = False) -> str | None:
        """Snapshot here. In a process resumed from a snapshot this returns
        after carrying out its plan: "run" (the guest runs on), "serve" (a
        stop was reported), or None (the live process, nothing to do)."""
        rv = self.reverse
        if stop:
            rv.at_stop(stepped=stepped)
        else:
            rv.take()
        plan, rv.plan = rv.plan, None
        if plan is None:
            return None
        return self._start_plan(plan)

    def _start_plan(self, plan: dict) -> str:
        """Carry out what a going-back asked for, in the resumed snapshot."""
        m = self.m
        self._sync_stops(plan)
        self._interrupted = False
        self._hc_hit = None
        self._watch_hit = None
        self._paused = False
        op = plan["op"]
        if op == "stop":
            return self._seek_report(plan["reply"].encode())
        if op == "event":
            self.seek = None
            self.attach_event(plan["n"])
            self.running = True
            m.debug_break = False
            return self._seek_go()
        seek = dict(plan)
        seek["target_pos"] = self.reverse._pos_from(plan["target"])
        seek["count"] = 0
        seek["steps"] = 0
        seek.setdefault("k", 0)
        # The exit at P's RIP (to recognise P) is armed only once the last call
        # before P has returned: before that every arrival there is not P, and
        # an exit hit costs a stop (a hypercall's return address is hit 50,000
        # times in a Debian boot). A stop right after a call is exact.
        seek["base"] = sorted(self.breakpoints) if op in ("scan", "tohit") else []
        seek["arm_at"] = seek["target_pos"][2]
        seek["armed"] = False
        m.set_exits(seek["base"])
        self.seek = seek
        self.running = True
        if self._seek_stop():
            return "run"
        return "serve"

    def _sync_stops(self, plan: dict) -> None:
        """Set the breakpoints and watchpoints gdb has now (``plan``'s ``bps``
        and ``watch``): this snapshot may have been taken with others."""
        if "bps" not in plan:
            return
        want = set(plan["bps"])
        if want != self.breakpoints:
            self.breakpoints = want
            self.m.set_exits(sorted(want))
        watch = {tuple(key) for key in plan.get("watch", [])}
        if watch != set(self.watchpoints):
            for key in set(self.watchpoints) - watch:
                self._breakpoint(False, b"%d,%x,%x" % key)
            for key in watch - set(self.watchpoints):
                self._breakpoint(True, b"%d,%x,%x" % key)
            # nothing ran since the snapshot emptied the translation cache: the
            # flush a watchpoint change makes loses no code pages
            self.reverse.code.restart()

    def _seek_report(self, reply: bytes) -> str:
        self.seek = None
        self.reverse.search_done()
        self.m.set_exits(sorted(self.breakpoints))
        self.running = False
        self.last_stop = reply
        self.stops += 1
        self.conn.send(reply)
        self.on_state("reverse")
        return "serve"

    def _seek_go(self) -> str:
        """Run on after a plan that only armed a stop (the run loop steps off
        a breakpoint under RIP)."""
        if self.m.reg("rip") in self.breakpoints:
            self.m.step_one()
            self.m.debug_break = False
        return "run"

    def _seek_stop(self) -> bool:
        """A stop during a seek: count it, go back, stop, or run on. True: the
        guest runs on (return to the run loop); False: a stop was reported."""
        m = self.m
        rv = self.reverse
        while True:
            seek = self.seek
            op = seek["op"]
            if not seek.get("armed", True) and rv.calls >= seek["arm_at"] \
                    and op != "tohit":
                seek["armed"] = True
                m.set_exits(sorted(set(seek["base"]) | {rv.rip_of(seek["target_pos"])}))
            pos = rv.position()
            rip = self.reverse.rip_of(pos)
            watch, self._watch_hit = self._watch_hit, None
            self._interrupted = False
            self._hc_hit = None
            if pos == seek["target_pos"]:
                if op == "scan":
                    n = seek["count"]
                    if n:
                        rv.restore(seek["snap"], {"op": "tohit", "n": n, "snap": seek["snap"],
                                                  "target": seek["target"]})
                    rv.scan_before(seek["snap"])
                if op == "pred" and seek["phase"] == "count":
                    rv.restore(seek["snap"], {"op": "pred", "phase": "walk", "snap": seek["snap"],
                                              "k": seek["count"], "target": seek["target"]})
                if op == "pred" and seek["phase"] == "walk":
                    rv.restore(seek["snap"], {"op": "pred", "phase": "final",
                                              "snap": seek["snap"], "k": seek["k"],
                                              "m": seek["steps"], "target": seek["target"]})
                if op == "return":
                    self._seek_report(seek["reply"])
                    return False
                return self._seek_report(b"E.reverse: lost the way back") == "run"
            if op in ("scan", "tohit"):
                hit = rip in self.breakpoints or watch is not None
                if hit:
                    seek["count"] += 1
                    if op == "tohit" and seek["count"] == seek["n"]:
                        if watch is not None:
                            name = {2: b"watch", 3: b"rwatch", 4: b"awatch"}[watch[0]]
                            reply = b"T05thread:01;%s:%x;" % (name, watch[1])
                        else:
                            reply = b"T05thread:01;swbreak:;"
                        self._seek_report(reply)
                        return False
            elif op == "pred":
                trip = rv.rip_of(seek["target_pos"])
                armed = seek["armed"]
                if armed and rip == trip and (seek["phase"] == "count"
                                              or seek["count"] < seek["k"]):
                    seek["count"] += 1     # an arrival at P's RIP after P's last call
                if seek["phase"] != "count" and armed and seek["count"] >= seek["k"]:
                    # past P's last call and the last arrival before P: single steps
                    if seek["phase"] == "final" and seek["steps"] >= seek["m"] - 1:
                        self._seek_report(b"T05thread:01;")
                        return False
                    if seek["steps"] >= rv.max_steps:
                        self.seek = {"op": "return", "target_pos": seek["target_pos"],
                                     "reply": b"E.reverse-stepi: more than %d instructions "
                                              b"since the last call or arrival here"
                                              % rv.max_steps}
                        m.set_exits([trip])
                        continue
                    m.step_one()
                    m.debug_break = False
                    seek["steps"] += 1
                    if m.stop_reason is not None:
                        self._report_exit()
                        return True
                    continue
            # run on: step off an exit under RIP first
            if rip in m.exits:
                m.step_one()
                m.debug_break = False
                if m.stop_reason is not None:
                    self._report_exit()
                    return True
                continue
            self.running = True
            return True

    def _pending(self) -> bool:
        """A stop reason other than a breakpoint under RIP is waiting."""
        return self._watch_hit is not None or self._interrupted or self._hc_hit is not None

    def _stop_reply(self) -> bytes | None:
        rip = self.m.reg("rip")
        if self._watch_hit is not None:
            kind, addr = self._watch_hit
            self._watch_hit = None
            self._interrupted = False
            name = {2: b"watch", 3: b"rwatch", 4: b"awatch"}[kind]
            self._why = "watchpoint"
            return b"T05thread:01;%s:%x;" % (name, addr)
        if self._hc_hit is not None:
            self._why = "event" if self._hc_hit == "event" else f"hypercall {self._hc_hit}"
            self._hc_hit = None
            self._interrupted = False
            return b"T05thread:01;"
        if rip in self.breakpoints:
            self._interrupted = False
            self._why = "breakpoint"
            return b"T05thread:01;swbreak:;"
        if self._interrupted:
            self._interrupted = False
            self._interrupt_wanted = False
            self._why = "interrupt"
            return b"T02thread:01;"
        return None

    def _report_exit(self) -> None:
        st = self.m.stop_reason
        ok = st is not None and st.kind == "shutdown" and st.code in (0, 1, None)
        self.conn.send(b"W%02x" % (0 if ok else 1))
        self.running = False
        self.detach()

    # -------------------------------------------------------------- serving
    def serve(self) -> None:
        """Answer packets until one resumes the guest (or gdb goes)."""
        while self.attached:
            pkt = self.conn.get()
            if pkt is None:                          # gdb went away: detach, run on
                self.log("gdb disconnected; the guest continues")
                self.detach()
                return
            try:
                reply = self.handle(pkt)
            except Exception as exc:  # noqa: BLE001 - a packet never kills the run
                self.log(f"gdb packet {pkt[:40]!r}: {exc}")
                reply = b"E01"
            if reply is _RESUME:
                return
            if reply is not None:
                self.conn.send(reply)

    def handle(self, pkt: bytes) -> bytes | object | None:
        """The reply to one packet (bytes), :data:`_RESUME` when the guest was
        resumed, or None when the reply was already sent."""
        if not pkt:
            return b""
        c = pkt[:1]
        body = pkt[1:]
        if c not in (b"c", b"C", b"s", b"S", b"v"):
            self._early_interrupt = False
        if pkt == b"\x00bad":
            return b"E01"
        if c == b"?":
            return self.last_stop
        if c == b"g":
            return rsp.hex_bytes(target.read_all(self.m))
        if c == b"G":
            return b"OK" if target.write_all(self.m, bytes.fromhex(body.decode())) else b"E01"
        if c == b"p":
            num = rsp.parse_hex(body)
            if num >= len(target.REGS):
                return b"E00"
            return rsp.hex_bytes(target.read_one(self.m, num))
        if c == b"P":
            num, _, val = body.partition(b"=")
            n = rsp.parse_hex(num)
            if n >= len(target.REGS):
                return b"E00"
            return b"OK" if target.write_one(self.m, n, bytes.fromhex(val.decode())) else b"E01"
        if c == b"m":
            addr, length = (rsp.parse_hex(x) for x in body.split(b","))
            return self._read_mem(addr, min(length, MAX_READ))
        if c == b"M":
            where, _, data = body.partition(b":")
            addr, length = (rsp.parse_hex(x) for x in where.split(b","))
            raw = bytes.fromhex(data.decode())
            if len(raw) != length:
                return b"E01"
            return self._write_mem(addr, raw)
        if c in (b"c", b"C"):
            return self._resume(step=False, addr=body if c == b"c" else
                                body.partition(b";")[2])
        if c in (b"s", b"S"):
            return self._resume(step=True, addr=body if c == b"s" else
                                body.partition(b";")[2])
        if c in (b"Z", b"z"):
            return self._breakpoint(c == b"Z", body)
        if c == b"D":
            self.conn.send(b"OK")
            self.log("gdb detached; the guest continues")
            self.detach()
            return _RESUME
        if c == b"k":
            self._kill()
            return _RESUME
        if c == b"H" or c == b"T":
            return b"OK"
        if c == b"v":
            return self._v(pkt)
        if c == b"q" or c == b"Q":
            return self._query(pkt)
        if c == b"b" and body in (b"s", b"c"):
            return self._reverse(body == b"s")
        return b""

    # ------------------------------------------------------------- queries
    def _query(self, pkt: bytes) -> bytes:
        if pkt.startswith(b"qSupported"):
            feats = [b"PacketSize=%x" % PACKET_SIZE, b"qXfer:features:read+",
                     b"swbreak+", b"hwbreak+", b"vContSupported+", b"QStartNoAckMode+"]
            if self.reverse is not None:
                feats += [b"ReverseStep+", b"ReverseContinue+"]
            return b";".join(feats)
        if pkt == b"QStartNoAckMode":
            self.conn.send(b"OK")
            self.conn.ack = False
            return None
        if pkt.startswith(b"qXfer:features:read:"):
            annex, _, span = pkt[len(b"qXfer:features:read:"):].partition(b":")
            if annex != b"target.xml":
                return b"E00"
            off, length = (rsp.parse_hex(x) for x in span.split(b","))
            xml = target.target_xml().encode()
            chunk = xml[off:off + length]
            return (b"l" if off + length >= len(xml) else b"m") + chunk
        if pkt == b"qAttached" or pkt.startswith(b"qAttached:"):
            return b"1"
        if pkt == b"qC":
            return b"QC01"
        if pkt == b"qfThreadInfo":
            return b"m01"
        if pkt == b"qsThreadInfo":
            return b"l"
        if pkt.startswith(b"qSymbol"):
            return b"OK"
        if pkt.startswith(b"qRcmd,"):
            return self._monitor(bytes.fromhex(pkt[6:].decode()).decode(errors="replace"))
        return b""

    def _v(self, pkt: bytes) -> bytes | object:
        if pkt == b"vCont?":
            return b"vCont;c;C;s;S"
        if pkt.startswith(b"vCont;"):
            # the first action that applies to our one thread (or to all)
            for action in pkt[6:].split(b";"):
                act, _, tid = action.partition(b":")
                if tid and tid not in (b"1", b"01", b"-1", b"p1.1", b"p1.-1"):
                    continue
                if act[:1] in (b"c", b"C"):
                    return self._resume(step=False)
                if act[:1] in (b"s", b"S"):
                    return self._resume(step=True)
                return b"E01"
            return b"E01"
        if pkt.startswith(b"vKill"):
            self.conn.send(b"OK")
            self._kill()
            return _RESUME
        return b""

    # --------------------------------------------------------------- memory
    def _read_mem(self, addr: int, length: int) -> bytes:
        """Read through the guest page tables: as much as is mapped from
        ``addr`` on; nothing mapped -> E14 (EFAULT)."""
        out = bytearray()
        m = self.m
        while len(out) < length:
            va = (addr + len(out)) & 0xFFFF_FFFF_FFFF_FFFF
            n = min(length - len(out), 0x1000 - (va & 0xFFF))
            try:
                out += m.read_virt(va, n)
            except GuestPageFault:
                break
        if not out and length:
            return b"E14"
        return rsp.hex_bytes(bytes(out))

    def _write_mem(self, addr: int, data: bytes) -> bytes:
        """Write through the guest page tables; a debugger may write read-only
        pages (as gdb writes breakpoints into text on real hardware).
        Unmapped -> E14, nothing written."""
        m = self.m
        chunks = []
        off = 0
        while off < len(data):
            va = addr + off
            n = min(len(data) - off, 0x1000 - (va & 0xFFF))
            try:
                pa, _ = m.walk(va)
            except GuestPageFault:
                return b"E14"
            if not m.valid_phys(pa, n):
                return b"E14"
            chunks.append((pa, data[off:off + n]))
            off += n
        for pa, chunk in chunks:
            m.write_phys(pa, chunk)
        return b"OK"

    # ---------------------------------------------------------- breakpoints
    def _breakpoint(self, insert: bool, body: bytes) -> bytes:
        kind_s, addr_s, size_s = (body.split(b";")[0].split(b",") + [b"", b""])[:3]
        kind = int(kind_s)
        addr = rsp.parse_hex(addr_s)
        size = rsp.parse_hex(size_s) if size_s else 1
        m = self.m
        if kind in (0, 1):
            if insert:
                if addr in self.breakpoints:
                    return b"OK"
                self.breakpoints.add(addr)
            else:
                if addr not in self.breakpoints:
                    return b"OK"
                self.breakpoints.discard(addr)
            m.set_exits(sorted(self.breakpoints))
            return b"OK"
        if kind in (2, 3, 4):
            if not 0 < size <= 4096:
                return b"E01"
            key = (kind, addr, size)
            if insert:
                if key in self.watchpoints:
                    return b"OK"
                what = {2: ucc.UC_HOOK_MEM_WRITE, 3: ucc.UC_HOOK_MEM_READ,
                        4: ucc.UC_HOOK_MEM_READ | ucc.UC_HOOK_MEM_WRITE}[kind]

                def hit(uc, access, a, sz, value, data, kind=kind, addr=addr) -> None:
                    if self._watch_hit is None:
                        self._watch_hit = (kind, addr)
                    m.debug_break = True
                    uc.emu_stop()
                # Unicorn 2.1.4 passes memory hooks the machine (physical) address when
                # paging is on: watch the frames the bytes are mapped to now (so a write
                # through another mapping of them is caught too)
                try:
                    spans = self._machine_spans(addr, size)
                except GuestPageFault:
                    return b"E14"
                self.watchpoints[key] = [m.uc.hook_add(what, hit, None, pa, pa + n - 1)
                                         for pa, n in spans]
            else:
                hooks = self.watchpoints.pop(key, None)
                if hooks is None:
                    return b"OK"
                for h in hooks:
                    m.uc.hook_del(h)
            m.uc.ctl_flush_tb()
            m.flush_tlb()
            return b"OK"
        return b""

    def _machine_spans(self, addr: int, size: int) -> list[tuple[int, int]]:
        """Guest-virtual ``[addr, addr+size)`` as (machine address, length) pieces.
        Raises GuestPageFault if a byte is unmapped."""
        spans = []
        off = 0
        while off < size:
            va = addr + off
            n = min(size - off, 0x1000 - (va & 0xFFF))
            spans.append((self.m.walk(va)[0], n))
            off += n
        return spans

    # ------------------------------------------------------------- resuming
    def _resume(self, *, step: bool, addr: bytes = b"") -> bytes | object | None:
        m = self.m
        if addr:
            m.set_reg("rip", rsp.parse_hex(addr))
        self._paused = False
        self._interrupted = False
        self._interrupt_wanted = False
        self._watch_hit = None
        self._hc_hit = None
        if step:
            m.step_one()
            m.debug_break = False
            if m.stop_reason is not None:
                self._report_exit()
                return _RESUME
            if self._paused:
                # a preemption asked for during the step: deliver it as the
                # undebugged run would at the end of the slice
                self._paused = False
                m.handler.on_resume()
                if m.stop_reason is not None:
                    self._report_exit()
                    return _RESUME
            reply = b"T05thread:01;"
            why = "step"
            if self._watch_hit is not None:
                kind, waddr = self._watch_hit
                self._watch_hit = None
                reply += b"%s:%x;" % ({2: b"watch", 3: b"rwatch", 4: b"awatch"}[kind], waddr)
                why = "watchpoint"
            self.last_stop = reply
            self.on_state(why)
            if self.reverse is not None:
                self.conn.send(reply)
                done = self._snapshot(stop=True, stepped=True)
                if done == "run":
                    return _RESUME
                return None
            return reply
        if self._early_interrupt:            # Ctrl-C came before this continue ran
            self._early_interrupt = False
            self.last_stop = b"T02thread:01;"
            self.on_state("interrupt")
            return self.last_stop
        rip = m.reg("rip")
        if rip in self.breakpoints:
            # leave the breakpoint under us first (gdb usually steps over it itself)
            m.step_one()
            m.debug_break = False
            if m.stop_reason is not None:
                self._report_exit()
                return _RESUME
            if m.reg("rip") in self.breakpoints:
                m.debug_break = True
        self.running = True
        self.on_state("running")
        return _RESUME

    def _kill(self) -> None:
        self.log("gdb killed the guest")
        self.m.request_stop(Stop("interrupted", "killed by the debugger"))
        self.running = False
        self.detach()

    def stop_soon(self, why: str) -> None:
        """Stop at the next safe point, from inside a trap on the engine thread
        (a ``break-hypercall`` listener): right after the trap returns."""
        if self.attached and self.running:
            self._hc_hit = why
            self.m.debug_break = True
            self.m.uc.emu_stop()

    def _reverse(self, step: bool) -> bytes | object:
        """bs / bc: go back to a snapshot and re-execute (this process then
        exits; the snapshot's answers gdb). Errors are E. replies."""
        if self.reverse is None:
            return b"E.reverse execution needs a replay (pvmon replay TRACE --gdb)"
        from pvmon.gdb.reverse import ReverseError
        try:
            if step:
                self.reverse.step_back()
            elif self.goto_back is not None:
                n, self.goto_back = self.goto_back, None
                self.reverse.goto_event(n)
            else:
                self.reverse.continue_back()
        except ReverseError as exc:
            return b"E." + str(exc).encode()
        return b"E.reverse: nothing to do"

    # -------------------------------------------------------------- monitor
    def _monitor(self, line: str) -> bytes:
        words = line.split(None, 1)
        if not words:
            return self._out(self._help(""))
        name, args = words[0], (words[1] if len(words) > 1 else "")
        # two-word commands ("info event", "goto-event" ...)
        two = " ".join(line.split()[:2])
        if two in self.monitor:
            fn, args = self.monitor[two], " ".join(line.split()[2:])
        elif name in self.monitor:
            fn = self.monitor[name]
        else:
            return self._out(f"unknown monitor command {name!r}; 'monitor help' lists them\n")
        try:
            text = fn(args)
        except MonitorError as exc:
            text = f"error: {exc}\n"
        return self._out(text)

    def _out(self, text: str) -> bytes:
        """Send ``text`` as console output (``O`` packets), then reply OK."""
        data = text.encode()
        for i in range(0, len(data), 1024):
            self.conn.send(b"O" + rsp.hex_bytes(data[i:i + 1024]))
        return b"OK"

    def _help(self, _args: str) -> str:
        return "monitor commands: " + ", ".join(sorted(self.monitor)) + "\n"


class _Resume:
    def __repr__(self) -> str:
        return "<resume>"


#: What :meth:`GdbStub.handle` returns when the guest was resumed.
_RESUME = _Resume()

__all__ = ["GdbStub", "MonitorError"]
