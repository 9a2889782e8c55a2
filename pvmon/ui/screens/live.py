"""The live view: a guest booting, watched while it runs.

The engine runs in a Textual thread worker (:class:`~pvmon.ui.live_session.LiveSession`);
this screen drains its buffers on a timer (:data:`REFRESH_HZ`), so the
refresh rate is bounded however fast the guest makes hypercalls. While the
guest runs, redraws are also spaced out to keep the UI thread's CPU within
:data:`UI_CPU_BUDGET` (it shares the GIL with the engine's hooks). Keys are
answered by Textual's event loop at once, independently of the timer.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import Counter, deque
from dataclasses import replace
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from pvmon.engine.disasm import disassemble_around, label
from pvmon.errors import PvmonError
from pvmon.files import check_output
from pvmon.trace.render import describe
from pvmon.ui.filters import EventFilter, unknown_canonical_message
from pvmon.ui.live_session import BootSpec, LiveSession
from pvmon.ui.screens.guest_panes import compose_guest_panes, title_guest_panes
from pvmon.ui.screens.prompt import PromptScreen
from pvmon.ui.widgets.console import GuestConsole
from pvmon.ui.widgets.disasm import DisassemblyPane
from pvmon.ui.widgets.hypercalls import EventRows, HypercallStream
from pvmon.ui.widgets.registers import RegisterPane
from pvmon.ui.widgets.stats import StatsPane, compact, rate_caption
from pvmon.ui.widgets.status import StatusLine

REFRESH_HZ = 5           # pane refreshes per second at most while the guest runs
UI_CPU_BUDGET = 0.015    # share of one core the UI thread may use while the guest runs
MAX_SKIP = 4             # ... but it redraws at least every 5 refreshes (1 Hz)
STATS_EVERY = 3          # the counts pane redraws every Nth draw
SAMPLE_EVERY = 2         # registers and code redraw every Nth draw while the guest runs
RATE_SAMPLES = 60        # sparkline values kept (one per >= 0.2 s of wall time)


class LiveScreen(Screen[None]):
    """Boots ``live`` (already built) and shows it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_pause", "Pause"),
        Binding("n", "step", "Step"),
        Binding("b", "break_on", "Break"),
        Binding("f", "filter", "Filter"),
        Binding("p", "toggle_pvops", "Pv-ops", show=False),   # footer is full: in ? and ^p
        Binding("v", "cycle_vcpu", "vCPU registers", show=False),
        Binding("r", "toggle_record", "Record"),
        Binding("o", "open_trace", "Open"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "app.quit", "Quit"),
    ]

    class Rebooted(Message):
        """The screen now shows ``live``, a new run (``r`` rebooted to record):
        the app's result is this run's from now on."""

        def __init__(self, live: LiveSession) -> None:
            super().__init__()
            self.live = live

    def __init__(self, live: LiveSession) -> None:
        super().__init__()
        self.live = live
        self.rows = EventRows()
        self.counts: Counter[str] = Counter()
        self.rate_samples: deque[float] = deque(maxlen=RATE_SAMPLES)
        self._rate_mark: tuple[float, int] | None = None
        self._shown_sample: Any = None
        self._ticks = 0
        self._worker: Worker[Any] | None = None
        self._finished_shown = False
        self._cpu_mark = time.thread_time()
        self._skip = 0
        self._console_buf: list[bytes] = []
        #: The vCPU whose registers the register pane shows (an SMP run; ``v``
        #: cycles it); None: the vCPU on the engine.
        self.shown_vcpu: int | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield from compose_guest_panes(self.rows, live=True)
        yield Footer(compact=True)

    @property
    def stream_name(self) -> str:
        """What the stream pane lists: a UML run's are host system calls."""
        return "host system calls" if self.live.native else "hypercalls"

    def on_mount(self) -> None:
        title_guest_panes(self, stream=self.stream_name, console="console")
        self.query_one(HypercallStream).show_cpu = self.live.vcpus > 1
        if self.live.native:   # a UML run: no registers or code (docs/uml.md)
            self.query_one("#regs").display = False
            self.query_one("#code").display = False
        # Boot once the first frame is on screen: the screen appears at once and
        # Textual's start-up does not compete with the guest for the GIL.
        self.call_after_refresh(self._start)
        self._timer = self.set_interval(1 / REFRESH_HZ, self.refresh_view)
        self.refresh_view()

    # -- engine -------------------------------------------------------------------------
    def _start(self) -> None:
        self._worker = self.run_worker(self.live.run, thread=True, name="engine",
                                       group="engine", exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._worker and event.state in (WorkerState.SUCCESS,
                                                             WorkerState.ERROR):
            self.refresh_view()

    async def shutdown(self, timeout: float = 2.0) -> None:
        """Stop the guest and wait for the engine thread (used when quitting)."""
        if self.live.phase == "finished" or self._worker is None:
            return
        self.live.stop()
        w = self._worker
        deadline = time.monotonic() + timeout
        while not w.is_finished and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if not w.is_finished:
            self.live.force_stop()
            await w.wait()

    # -- refreshing ---------------------------------------------------------------------
    def _over_budget(self) -> bool:
        """True if this refresh should only drain, not draw. The UI thread needs
        the GIL that the engine's hooks also need, so its CPU time is the
        guest's loss: after each draw, skip as many refreshes as keep the UI
        thread's CPU (the draw, Textual's compositing and output since the last
        draw) within :data:`UI_CPU_BUDGET` of a core, redrawing at least every
        :data:`MAX_SKIP` + 1 refreshes. Keys are answered regardless."""
        if self.live.phase != "running":
            return False
        if self._skip:
            self._skip -= 1
            return True
        cpu = time.thread_time()
        spent, self._cpu_mark = cpu - self._cpu_mark, cpu
        self._skip = min(MAX_SKIP, int(spent / (UI_CPU_BUDGET / REFRESH_HZ)))
        return False

    def refresh_view(self) -> None:
        """Drain what the engine published and redraw the panes that changed."""
        live = self.live
        q = live.events
        batch = [q.popleft() for _ in range(len(q))]
        if batch:
            self.rows.extend(batch)
            self.counts.update(ev.get("name") for ev in batch if ev.get("k") == "hc")
        cq = live.console
        if cq:
            self._console_buf.append(b"".join(cq.popleft() for _ in range(len(cq))))
        if self._over_budget():
            return
        self.query_one(HypercallStream).sync()
        self._sample_rate()
        if self._console_buf:
            self.query_one(GuestConsole).feed(b"".join(self._console_buf))
            self._console_buf.clear()
        sample = live.sample
        if sample is not None and sample is not self._shown_sample and \
                (self._ticks % SAMPLE_EVERY == 0 or live.phase != "running"):
            self._shown_sample = sample
            self._show_sample(sample)
        self._ticks += 1
        finished = live.phase == "finished" and not q
        if self._ticks % STATS_EVERY == 0 or finished:
            self._show_stats()
        self._show_status()
        if live.phase == "running":
            live.request_sample()
        if finished and not self._finished_shown and not q and not cq:
            self._finished_shown = True
            self._show_stats()
            self._timer.pause()

    def _sample_rate(self) -> None:
        """One sparkline value: hypercalls per wall second since the last one
        (paused time excluded; nothing while paused or finished)."""
        now, calls = self.live.clock(), self.live.hypercalls
        mark = self._rate_mark
        self._rate_mark = (now, calls)
        if mark is None or self.live.phase != "running" or now - mark[0] < 0.2:
            if mark is not None and now - mark[0] < 0.2 and self.live.phase == "running":
                self._rate_mark = mark  # too soon: measure over a longer span
            return
        self.rate_samples.append((calls - mark[1]) / (now - mark[0]))

    def _show_stats(self) -> None:
        series = list(self.rate_samples)
        total = sum(self.counts.values())
        wall = self.live.wall_running_s()
        if self.live.phase == "finished":
            caption = f"calls {total} · avg {compact(total / wall)}/s" if wall > 0 else \
                f"calls {total}"
        else:
            caption = rate_caption(total, series[-1] if series else 0.0,
                                   max(series, default=0.0), "s")
        self.query_one(StatsPane).show(self.counts, series, caption)

    def _show_sample(self, sample: Any) -> None:
        sym = self.live.session.guest.symbols()
        hit = sym.lookup(sample.rip)
        func = sample.rip - hit[1] if hit else None
        insns = disassemble_around(sample.code, sample.code_base, sample.rip, func_start=func)
        self._show_registers(sample)
        self.query_one(DisassemblyPane).show(insns, label(sample.rip, sym.format))

    def _show_registers(self, sample: Any) -> None:
        """The register pane: the vCPU on the engine at ``sample``, or (after
        ``v``, an SMP run) the saved registers of the vCPU chosen."""
        at = f"registers at #{sample.seq if sample.seq >= 0 else '-'}"
        shown = self.shown_vcpu
        if self.live.vcpus <= 1:
            self.query_one(RegisterPane).show(sample.regs)
        elif shown is None or shown == sample.cpu:
            self.query_one(RegisterPane).show(sample.regs)
            at += f" · vCPU {sample.cpu} (on the engine)"
        elif shown in sample.others:
            self.query_one(RegisterPane).show(sample.others[shown], "saved when it left "
                                              "the engine")
            at += f" · vCPU {shown} (saved)"
        else:
            self.query_one(RegisterPane).show(None, f"vCPU {shown} is not up")
            at += f" · vCPU {shown}"
        self.query_one("#regs").border_title = at

    def _show_status(self) -> None:
        live = self.live
        spec = live.spec
        res = live.result
        vt = res.vtime_ns if res and not live.native else live.vtime_ns
        wall = live.wall_running_s()
        parts = [("", spec.guest.name), ("", spec.backend),
                 ("t" if live.native else "vt", f"{vt / 1e9:.6f}s"),
                 ("syscalls" if live.native else "calls", f"{live.hypercalls}"),
                 ("wall", f"{wall:.2f}s")]
        if wall > 0 and not live.native:    # a UML run's clock is the host's
            parts.append(("speed", f"{vt / 1e9 / wall:.3f}x"))
        if live.vcpus > 1:     # the vCPU on the engine (at the sample shown when finished)
            parts.append(("vcpu", f"{live.session.dispatch.cpu} of {live.vcpus}"))
        if live.recording is not None:
            parts.append(("rec", live.recording.name))
        if live.breakpoints:
            parts.append(("break", ",".join(sorted(live.breakpoints))))
        note = ""
        if live.phase == "paused" and live.paused_at is not None:
            ev = live.paused_at
            seq = ev.get("seq")
            what = ev.get("name") if ev.get("k") == "hc" else describe(ev)
            note = (f"paused after #{seq if isinstance(seq, int) else '-'} {what} "
                    "(space: resume, n: step)")
        elif res is not None:
            note = f"exit: {res.exit_kind} - {res.detail}" + \
                ("" if live.native else f" at {res.symbol}")
        elif live.error:
            note = f"engine error: {live.error}"
        state = "finished" if live.phase == "finished" else live.phase
        gdb = live.gdb_status
        if gdb is not None and live.phase != "finished":
            note = f"{note} · {gdb.text}" if note else gdb.text
            if gdb.stopped and state == "running":
                state = "stopped"     # gdb holds the guest
            elif gdb.state == "listening" and live.wall_start is None:
                state = "waiting"
        self.query_one(StatusLine).show(state, parts, note)

    # -- messages -----------------------------------------------------------------------
    def on_guest_console_typed(self, message: GuestConsole.Typed) -> None:
        self.live.send_console(message.data)

    # -- actions ------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        if self.live.phase in ("paused", "pausing"):
            self.live.resume()
        else:
            self.live.pause()
        self._show_status()

    def action_step(self) -> None:
        self.live.step()
        self._show_status()

    def action_break_on(self) -> None:
        def done(text: str | None) -> None:
            if text is None:
                return
            names = {t for t in text.replace(",", " ").split() if t}
            self.live.set_breakpoints(names)
            self.notify(f"break after: {', '.join(sorted(names))}" if names
                        else "breakpoints cleared", markup=False)
            self._show_status()

        self.app.push_screen(PromptScreen(
            "Break after hypercalls named (space separated, empty clears):",
            " ".join(sorted(self.live.breakpoints)),
            hint="names (mmu_update) or sub-ops (PIN_L4_TABLE)", placeholder="sched_op"), done)

    def action_filter(self) -> None:
        def done(text: str | None) -> None:
            if text is None:
                return
            self.set_filter(text)

        from pvmon.ui.screens.help import FILTER_HELP
        self.app.push_screen(PromptScreen("Show only:", self.rows.filter.text,
                                          hint=FILTER_HELP, placeholder="mmu -mmu_update"),
                             done)

    def set_filter(self, text: str) -> None:
        """Show only the events matching ``text`` (see :mod:`pvmon.ui.filters`);
        a dotted term (``mmu.set_pte``, ``irq.``) derives canonical operations."""
        flt = EventFilter.parse(text)
        unknown = flt.unknown_canonical()
        if unknown:
            self.notify(unknown_canonical_message(unknown), severity="warning", markup=False)
        if flt.canonical:
            self._derive_pvops()
        self.rows.set_filter(flt)
        self._title_stream()
        self.query_one(HypercallStream).sync()

    def _title_stream(self) -> None:
        stream = self.query_one(HypercallStream)
        text = self.rows.filter.text
        name = self.stream_name
        title = f"{name} \\[{escape(text)}]" if text else name
        stream.border_title = title + (" · pv-ops" if stream.show_pvops else "")

    def _derive_pvops(self) -> None:
        self.rows.derive_pvops(self.live.abi, self.live.header())
        if self.rows.canonical.error:
            self.notify(self.rows.canonical.error, severity="warning", markup=False)

    def action_toggle_pvops(self) -> None:
        """Show or hide the canonical operations column (docs/pvops.md)."""
        stream = self.query_one(HypercallStream)
        if not stream.show_pvops:
            self._derive_pvops()
        stream.show_pvops = not stream.show_pvops
        self._title_stream()

    def action_cycle_vcpu(self) -> None:
        """Show the registers of the next vCPU (an SMP run): the one on the
        engine, then each other in turn, as saved when it left the engine."""
        n = self.live.vcpus
        if n <= 1:
            self.notify("one vCPU: the registers are its own", markup=False)
            return
        sample = self.live.sample
        on = sample.cpu if sample is not None else 0
        cur = on if self.shown_vcpu is None else self.shown_vcpu
        nxt = (cur + 1) % n
        self.shown_vcpu = None if nxt == on else nxt
        self.query_one(RegisterPane).forget()
        if sample is not None:
            self._show_registers(sample)

    def action_toggle_record(self) -> None:
        live = self.live
        if live.native:
            self.notify(f"a UML run records from its start: `pvmon boot {live.spec.guest.name} "
                        "--record FILE`; this one " + ("records to " + str(live.recording)
                                                       if live.recording else "does not record"),
                        markup=False)
            return
        if live.recording is not None:
            path = live.recording
            live.stop_recording()
            self.notify(f"recording stopped: {path} (a complete trace up to here)",
                        markup=False)
            return
        default = datetime.datetime.now().strftime("pvmon-%Y%m%d-%H%M%S.pvt")

        def done(text: str | None) -> None:
            if text:
                guest = live.spec.guest
                try:    # never onto the guest's files, nor over a file that is not a trace
                    path = check_output(text, inputs=[guest.vmlinux, guest.vmlinuz],
                                        option="record to", force_option=None)
                except PvmonError as exc:
                    self.notify(str(exc), severity="error", markup=False)
                    return
                self.reboot(replace(live.spec, record=path))

        self.app.push_screen(PromptScreen(
            "A trace records a whole run: reboot the guest now, recording to:", default,
            hint="enter: reboot and record · escape: cancel"), done)

    @work(exclusive=True, group="reboot")
    async def reboot(self, spec: BootSpec) -> None:
        """Stop this boot and start ``spec`` from the beginning in the same screen."""
        await self.shutdown()
        try:
            live = LiveSession.create(spec)
        except Exception as exc:  # noqa: BLE001 - a bad path or image: say so, keep the screen
            self.notify(f"cannot reboot: {exc}", severity="error", markup=False)
            return
        self.live = live
        self.post_message(self.Rebooted(live))
        self.rows = EventRows()
        self.counts = Counter()
        self.rate_samples: deque[float] = deque(maxlen=RATE_SAMPLES)
        self._rate_mark: tuple[float, int] | None = None
        self._shown_sample = None
        self._finished_shown = False
        self._console_buf.clear()
        self.shown_vcpu = None
        stream = self.query_one(HypercallStream)
        stream.show_cpu = live.vcpus > 1
        stream.set_source(self.rows)
        if stream.show_pvops:
            self._derive_pvops()
        self.query_one(GuestConsole).clear()
        self.query_one(RegisterPane).show(None)
        self._start()
        self._timer.resume()
        self.notify(f"rebooted{', recording to ' + str(spec.record) if spec.record else ''}",
                    markup=False)

    def action_open_trace(self) -> None:
        def done(text: str | None) -> None:
            if text:
                self.app.open_trace(text)  # type: ignore[attr-defined]

        self.app.push_screen(PromptScreen("Open trace:", "", placeholder="run.pvt"), done)

    def action_help(self) -> None:
        from pvmon.ui.screens.help import HelpScreen
        self.app.push_screen(HelpScreen(self, "live"))
