"""Put a gdb stub on a :class:`~pvmon.session.Session`: listen, wait for gdb,
stop before the first instruction, add the ``monitor`` commands that know
about calls and trace events, and tell gdb when the run ends.

Used by ``pvmon run --gdb``, ``pvmon boot --headless --gdb`` and
``pvmon replay --gdb``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvmon.gdb.server import GdbServer, parse_address
from pvmon.gdb.stub import GdbStub, MonitorError

if TYPE_CHECKING:
    from pvmon.session import RunResult, Session
    from pvmon.trace.reader import TraceReader


def _say(text: str) -> None:
    print(f"pvmon: {text}", file=sys.stderr, flush=True)


class GdbAttachment:
    """A listening stub for ``session``. ``address``: ``HOST:PORT`` (see
    :func:`pvmon.gdb.server.parse_address`); ``reader``: the trace being
    replayed (for ``monitor info event`` and ``goto-event``), or None.
    Binding happens here: raises PvmonError when the port is taken."""

    def __init__(self, session: Session, address: str, *,
                 reader: TraceReader | None = None, server: GdbServer | None = None,
                 say: Callable[[str], None] = _say) -> None:
        self.session = session
        self.reader = reader
        self.say = say
        if server is None:
            host, port = parse_address(address)
            server = GdbServer(host, port)
        self.server = server
        self.stub: GdbStub | None = None
        self.hc_breaks: set[str] = set()
        self.reverse = None
        self._goto: int | None = None

    def attach_reverse(self) -> None:
        """Offer reverse execution (a replay: the run is deterministic)."""
        from pvmon.gdb.reverse import Reverse
        self.reverse = Reverse(self)

    def wait(self) -> bool:
        """Wait for gdb to connect; the guest then stops before its next
        instruction. False if nobody came (the listener was closed)."""
        self.say(f"waiting for gdb on {self.server.address} "
                 f"(gdb -ex 'target remote {self.server.address}')")
        conn = self.server.accept()
        if conn is None:
            return False
        self.say("gdb attached; the guest is stopped before its next instruction")
        sess = self.session
        monitor = {
            "info event": self._info_event,
            "break-hypercall": self._break_hc,
            "delete-hypercall": self._delete_hc,
            "goto-event": self._goto_event,
        }
        if self.reverse is not None:
            monitor["info snapshots"] = self.reverse.info
        self.stub = GdbStub(sess.machine, conn, monitor=monitor, reverse=self.reverse,
                            log=self.say)
        self.stub.attach_event = self.arm_event
        self.stub.call_listeners = sess.dispatch.call_listeners
        self.stub.attach()
        return True

    def finish(self, result: RunResult | None) -> None:
        """The run ended (``result`` None: by an exception): a continuing gdb
        gets the exit; close everything."""
        if self.stub is not None and result is not None:
            self.stub.finish(result.exit_kind, result.shutdown_reason)
        elif self.stub is not None:
            self.stub.detach()
        self.server.close()

    # ------------------------------------------------------------- monitor
    def _where(self) -> str:
        sess = self.session
        m = sess.machine
        rip = m.reg("rip")
        try:
            sym = sess.guest.symbols().format(rip)
        except Exception:  # noqa: BLE001 - symbols are a nicety
            sym = f"{rip:#x}"
        return f"rip {rip:#x} ({sym}), virtual time {m.clock.now_ns:,} ns"

    def _info_event(self, _args: str) -> str:
        d = self.session.dispatch
        seq = d.seq
        if self.reader is None:
            if d.record is None:
                return f"no events are numbered (not recording); {self._where()}\n"
            return f"{seq:,} events so far; {self._where()}\n"
        from pvmon.trace.render import describe, format_time
        if seq == 0:
            return f"before event 0; {self._where()}\n"
        ev = next(iter(self.reader.events(seq - 1, seq)), None)
        if ev is None:
            return f"past the recording's end ({len(self.reader):,} events); {self._where()}\n"
        return (f"after event {seq - 1:,} of {len(self.reader):,}: "
                f"{format_time(ev.get('t'))} {describe(ev)}\n{self._where()}\n")

    def _break_hc(self, args: str) -> str:
        names = args.split()
        if not names:
            if not self.hc_breaks:
                return "no hypercall breakpoints\n"
            return "stop after: " + ", ".join(sorted(self.hc_breaks)) + "\n"
        d = self.session.dispatch
        if not self.hc_breaks:
            d.call_listeners.append(self._on_call)
        self.hc_breaks.update(names)
        return f"the guest stops after each {', '.join(names)} call\n"

    def _delete_hc(self, args: str) -> str:
        names = args.split()
        if names:
            self.hc_breaks.difference_update(names)
        else:
            self.hc_breaks.clear()
        if not self.hc_breaks:
            try:
                self.session.dispatch.call_listeners.remove(self._on_call)
            except ValueError:
                pass
        return "hypercall breakpoints: " + (", ".join(sorted(self.hc_breaks)) or "none") + "\n"

    def _on_call(self, ev: dict) -> None:
        name = ev.get("name")
        if name in self.hc_breaks and self.stub is not None:
            self.stub.stop_soon(str(name))

    def _goto_event(self, args: str) -> str:
        try:
            n = int(args.replace(",", "").replace("_", ""), 0)
        except ValueError:
            raise MonitorError("usage: monitor goto-event N (an event number)") from None
        if n < 0:
            raise MonitorError("event numbers start at 0")
        d = self.session.dispatch
        if self.reader is not None and n >= len(self.reader):
            raise MonitorError(f"the recording has {len(self.reader):,} events")
        if n >= d.seq:
            self.arm_event(n)
            return f"the guest stops right after event {n:,}: continue to get there\n"
        if self.reverse is None:
            raise MonitorError(f"event {n:,} is behind (at {d.seq:,}); going back needs a "
                               "replay (pvmon replay TRACE --gdb)")
        self.stub.goto_back = n
        return f"event {n:,} is behind: reverse-continue to get there\n"

    def arm_event(self, n: int) -> None:
        """Stop right after event ``n`` is numbered (the recorder's callbacks are
        wrapped once; they pass every event through unchanged)."""
        self._goto = n
        d = self.session.dispatch
        if getattr(d, "_gdb_wrapped", False):
            return
        rec, rec_hc, rec_ev = d.record, d.record_hc, d.record_ev

        def check() -> None:
            if self._goto is not None and d.seq > self._goto and self.stub is not None:
                self._goto = None
                self.stub.stop_soon("event")
        if rec is not None:
            def record(ev: dict) -> None:
                rec(ev)
                check()
            d.record = record
        if rec_hc is not None:
            def record_hc(*values) -> None:
                rec_hc(*values)
                check()
            d.record_hc = record_hc
        if rec_ev is not None:
            def record_ev(*values) -> bool:
                done = rec_ev(*values)
                if done:
                    check()
                return done
            d.record_ev = record_ev
        d._gdb_wrapped = True


class _ReplayUnderGdb:
    """``pvmon replay TRACE --gdb``: the closed-loop replay with a stub on its
    session. Callable: ``(path, guest, version, address, timeout=)`` ->
    ``(report, run)``; then :meth:`finish` with the exit status (ends the
    snapshot processes of reverse execution, which exit with it)."""

    def __init__(self) -> None:
        self.attachment: GdbAttachment | None = None

    def __call__(self, path, guest, version, address: str, *, timeout=None):
        from pvmon.replay.closed import replay_closed
        from pvmon.replay.source import open_run
        run = open_run(path, guest)
        holder: list[GdbAttachment] = []
        host, port = parse_address(address)
        server = GdbServer(host, port)          # bind before the long part: port in use -> exit 2

        def on_session(sess) -> None:
            att = GdbAttachment(sess, address, reader=run.reader, server=server)
            holder.append(att)
            self.attachment = att
            att.attach_reverse()
            att.wait()
            # the run's end (the recording's end, or the guest's own) reaches gdb
            stop_cb = sess.before_exit_record

            def before_exit(stop) -> None:
                if stop_cb is not None:
                    stop_cb(stop)
                if att.stub is not None:
                    att.stub.finish(stop.kind, stop.code)
            sess.before_exit_record = before_exit

        report = replay_closed(run, version, timeout=timeout, on_session=on_session,
                               stop_on_signals=True)
        if holder and holder[0].reverse is not None:
            report.notes.append(holder[0].reverse.summary())
        return report, run

    def finish(self, status: int) -> None:
        att = self.attachment
        if att is not None:
            att.server.close()
            if att.reverse is not None:
                att.reverse.end(status)


#: ``pvmon replay --gdb`` (see :class:`_ReplayUnderGdb`).
replay_under_gdb = _ReplayUnderGdb()
