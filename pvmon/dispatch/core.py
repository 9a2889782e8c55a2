"""The ABI-neutral core of the dispatch layer.

:class:`RunServices` is the one implementation of
:class:`~pvmon.backends.base.PlatformServices` (what a backend calls back:
current RIP, jump, crash, stuck, shutdown): the dispatch layer of a running
guest ends the run on the engine, open-loop replay (no guest) notes the stop.
"""

from __future__ import annotations

from pvmon.engine.machine import Stop


def plain_shutdown(reason: int, rip: int) -> Stop:
    """The stop for a guest shutdown with ``reason`` when the ABI names none."""
    return Stop("shutdown", f"shutdown({reason})", rip, reason)


class RunServices:
    """:class:`~pvmon.backends.base.PlatformServices`, written once.

    Subclasses say how a run ends (:meth:`end_run`) and may name shutdown
    reasons (``shutdown_stop``: ``(reason, rip) -> Stop``, a static function
    of the ABI module). ``_cur_rip`` is where the current call returns to;
    ``_jump`` a target set by the backend during it (None: none); whoever
    enters a call sets both (:meth:`enter`)."""

    shutdown_stop = staticmethod(plain_shutdown)
    _cur_rip: int = 0
    _jump: int | None = None

    def enter(self, rip: int) -> None:
        """A call or delivery begins; it returns to ``rip`` unless the backend jumps."""
        self._cur_rip = rip
        self._jump = None

    def end_run(self, stop: Stop) -> None:
        """End the run with ``stop`` (after the current call returns)."""
        raise NotImplementedError

    def cur_rip(self) -> int:
        return self._jump if self._jump is not None else self._cur_rip

    def jump(self, rip: int) -> None:
        self._jump = rip

    def crash_stop(self, detail: str, rip: int) -> None:
        self.end_run(Stop("crash", detail, rip))

    def stuck(self, detail: str) -> None:
        self.end_run(Stop("stuck", detail, self.cur_rip()))

    def guest_shutdown(self, reason: int) -> None:
        self.end_run(self.shutdown_stop(reason, self.cur_rip()))
