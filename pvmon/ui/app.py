"""The pvmon Textual app and the entry points the CLI calls.

- :func:`run_boot` — ``pvmon boot``: the live view of a guest booting.
- :func:`run_view` — ``pvmon view TRACE``: the trace player.
- :func:`run_divergence` — ``pvmon replay ... --tui``: two runs side by side.

The app starts on one of those screens; ``o`` opens a trace player on top
of any screen. Every screen's keys are in the footer, in its help (``?``)
and in the command palette (ctrl+p).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from pvmon.errors import PvmonError
from pvmon.session import RunResult
from pvmon.ui.divergence import Divergence
from pvmon.ui.live_session import BootSpec, LiveSession
from pvmon.ui.terminal import require_terminal

if TYPE_CHECKING:
    from pvmon.ui.screens.live import LiveScreen
    from pvmon.ui.uml_live import UmlBootSpec


class PvmonApp(App[RunResult | None]):
    """pvmon's TUI. Exactly one of ``live``, ``trace``, ``divergence`` says what
    the first screen shows. The app's return value is the live boot's :class:`RunResult` (None if the
    run had not ended or there was no live boot). ``live`` follows the live
    screen: after an ``r`` reboot it is the new run."""

    CSS_PATH = "pvmon.tcss"
    TITLE = "pvmon"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("f1", "help", "Help", show=False),
    ]
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    def __init__(self, *, live: LiveSession | None = None, trace: str | Path | None = None,
                 divergence: Divergence | None = None) -> None:
        super().__init__()
        if sum(x is not None for x in (live, trace, divergence)) != 1:
            raise ValueError("give exactly one of live, trace, divergence")
        self.live = live
        self.trace = trace
        self.divergence = divergence

    def on_mount(self) -> None:
        if self.live is not None:
            from pvmon.ui.screens.live import LiveScreen
            self.push_screen(LiveScreen(self.live))
        elif self.trace is not None:
            from pvmon.ui.screens.player import PlayerScreen
            self.push_screen(PlayerScreen(self.trace))
        else:
            from pvmon.ui.screens.divergence import DivergenceScreen
            assert self.divergence is not None
            self.push_screen(DivergenceScreen(self.divergence))

    def on_live_screen_rebooted(self, message: LiveScreen.Rebooted) -> None:
        """``r`` replaced the live run: quitting reports the new one."""
        self.live = message.live

    def open_trace(self, path: str | Path) -> bool:
        """Push a player for ``path``; a bad trace is a notification, not a crash."""
        from pvmon.trace.reader import TraceReader
        from pvmon.ui.screens.player import PlayerScreen
        try:
            TraceReader(path).close()
        except PvmonError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
            return False
        self.push_screen(PlayerScreen(path, closable=True))
        return True

    def action_help(self) -> None:
        action = getattr(self.screen, "action_help", None)
        if action is not None:
            action()

    async def action_quit(self) -> None:
        """Stop a running guest cleanly, then exit with the live run's result."""
        for screen in self.screen_stack:
            stop = getattr(screen, "shutdown", None)
            if stop is not None:
                await stop()
        self.exit(self.live.result if self.live is not None else None)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette lists the current screen's key commands, then Textual's own."""
        for b in getattr(screen, "BINDINGS", []):
            if isinstance(b, Binding) and b.description:
                key = b.key_display or b.key
                yield SystemCommand(b.description, f"key: {key}",
                                    partial(self._run_action, screen, b.action))
        yield from super().get_system_commands(screen)

    async def _run_action(self, screen: Screen, action: str) -> None:
        await self.run_action(action, screen)


def run_boot(spec: BootSpec) -> RunResult | None:
    """``pvmon boot``: build the session (raises PvmonError on bad input, before
    the screen opens), show it live, return the result of the run on screen
    when the user quit (after an ``r`` reboot, the last run's), or None if it
    had not ended. Without a terminal, raises
    :class:`~pvmon.ui.terminal.NoTerminalError` before the session exists (so
    that no trace file is created)."""
    from pvmon.backends.registry import get_backend
    get_backend(spec.backend)   # an unknown backend is bad input: say that first
    require_terminal("`pvmon boot` shows the guest live in the TUI",
                     "use `pvmon run` or `pvmon boot --headless`")
    app = PvmonApp(live=LiveSession.create(spec))
    app.run()
    return app.live.result if app.live is not None else None


def run_uml_boot(spec: UmlBootSpec) -> Any:
    """``pvmon boot uml-6.1``: show a UML run live (:mod:`pvmon.ui.uml_live`);
    returns its :class:`~pvmon.uml.runner.UmlResult` when the user quit, or
    None if it had not ended. Raises NoTerminalError without a terminal,
    before UML is started."""
    from pvmon.ui.uml_live import UmlLiveSession
    require_terminal("`pvmon boot` shows the guest live in the TUI",
                     "use `pvmon run` or `pvmon boot --headless`")
    app = PvmonApp(live=UmlLiveSession.create(spec))   # type: ignore[arg-type]
    app.run()
    return app.live.result if app.live is not None else None


def run_view(path: str | Path) -> None:
    """``pvmon view``: play ``path`` back. Raises TraceError (before the screen
    opens) if it is not a readable trace, NoTerminalError without a terminal."""
    from pvmon.trace.reader import TraceReader
    TraceReader(path).close()
    require_terminal("`pvmon view` plays a trace back in the TUI",
                     "use `pvmon trace info` or `pvmon trace cat`")
    PvmonApp(trace=path).run()


def run_divergence(divergence: Divergence) -> None:
    """``pvmon replay ... --tui``: show ``divergence`` (see :mod:`pvmon.ui.divergence`).
    Raises NoTerminalError without a terminal."""
    require_terminal("`pvmon replay --tui` shows the divergences in the TUI",
                     "leave out --tui for the text report, or use --json")
    PvmonApp(divergence=divergence).run()


__all__ = ["BootSpec", "PvmonApp", "run_boot", "run_divergence", "run_uml_boot", "run_view"]
