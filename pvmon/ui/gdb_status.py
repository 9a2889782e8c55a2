"""What the TUI says about a gdb attached to the live guest.

``pvmon boot GUEST --gdb :PORT`` puts the stub of :mod:`pvmon.gdb` on the
live session: :class:`GdbStatus` follows it (the stub's ``on_state`` hook and
the attachment's messages, all on the engine thread) and the live view shows
:attr:`GdbStatus.text` in its status line. The fields are plain attributes
written by the engine thread and read by the UI thread (one assignment each:
a reader sees the old or the new value, never a torn one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: How a stop reason from the stub is shown.
WHY_SHOWN = {"interrupt": "Ctrl-C", "attach": "attached"}


@dataclass
class GdbStatus:
    """The debugger's state as the live view shows it.

    ``address``: where the stub listens (``HOST:PORT``); ``peer``: the
    client's ``HOST:PORT`` once one is attached; ``state``: "listening",
    "stopped", "running", "detached"; ``where``: the symbol (``name+0xoff``)
    of the stop, ``why``: its reason ("breakpoint", "step", "Ctrl-C",
    "watchpoint", "hypercall NAME", "event", "reverse", "attached");
    ``stops``: stops reported so far."""

    address: str
    peer: str | None = None
    state: str = "listening"
    where: str = ""
    why: str = ""
    stops: int = 0

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    @property
    def text(self) -> str:
        """One line: ``gdb: listening on 127.0.0.1:1234``, ``gdb attached from
        127.0.0.1:40000 · stopped at checks_events (breakpoint)``, ``gdb
        attached from ... · running``, ``gdb detached``."""
        if self.state == "listening":
            return f"gdb: listening on {self.address} (gdb -ex 'target remote {self.address}')"
        if self.state == "detached":
            return "gdb detached; the guest runs on"
        head = f"gdb attached from {self.peer or '?'}"
        if self.state == "stopped":
            return f"{head} · stopped at {self.where} ({self.why})"
        return f"{head} · running"

    def follow(self, att, symbol: Callable[[int], str],
               on_stop: Callable[[], None] = lambda: None,
               on_run: Callable[[], None] = lambda: None) -> None:
        """Follow the stub of ``att`` (a :class:`pvmon.gdb.attach.GdbAttachment`
        whose ``wait`` returned True): it is stopped before the guest's next
        instruction now. ``symbol``: RIP -> ``name+0xoff``; ``on_stop``: called
        on the engine thread at each stop (the live session captures the
        registers there), ``on_run`` when the guest runs again (gdb resumed
        it or went away)."""
        stub = att.stub
        m = att.session.machine
        try:
            host, port = stub.conn.sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"

        def on_state(why: str) -> None:
            if why in ("running", "detached"):
                was_stopped = self.state == "stopped"
                self.state = why
                if was_stopped:
                    on_run()
            else:
                self.where = symbol(m.reg("rip"))
                self.why = WHY_SHOWN.get(why, why)
                self.stops += 1
                self.state = "stopped"
                on_stop()
        stub.on_state = on_state
        on_state("attach")


__all__ = ["GdbStatus"]
