"""The help screen: what the panes show and the keys of the screen below."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

ABOUT = {
    "live": "Live boot: the guest runs on a worker thread; the panes refresh up to 10 times a "
            "second (fewer when drawing would slow the guest). Pause, step and breakpoints stop the "
            "guest right after a guest exit (a hypercall, an MSR access, port I/O, an "
            "interrupt, a halt, ...), so they never change what the guest sees; b also "
            "takes exit kinds (msr io mmio irq halt cpuid fault). p shows each event's "
            "canonical pv-ops; v (an SMP run) the registers of each vCPU. With --gdb the status line says whether gdb is attached "
            "and where it stopped the guest. Focus the console "
            "(tab or click) to type into the guest; escape gives the keys back.",
    "player": "Trace player: the same panes over a recorded .pvt trace. Scrub the timeline, "
              "jump to an event or a virtual time, search the events and the console "
              "(output and typed input); the console shows "
              "what the guest had written at the selected event. Registers are the "
              "hypercall's argument registers as recorded; code comes from the guest image.",
    "divergence": "Divergence: both runs' calls aligned side by side (≠ marks a difference), "
                  "the first divergence selected, what differs at the selected call and "
                  "why, and the code at it below. n / N walk every difference.",
}

FILTER_HELP = ("Filter terms (space separated): a name or part of one (mmu), a family (mmu "
               "cpu events time console sched fault), an ABI (xen), a kind (hc fault "
               "upcall vcpu_switch), a sub-op (PIN_L4), a vCPU (cpu:1); -term excludes. In the player, console "
               "events appear when a term names them: console, input (typed), output, "
               "ring, io. A term with a dot names canonical operations (p shows them): "
               "mmu.set_pte, a family irq. or mmu.*, a glob *.eoi.")


class HelpScreen(ModalScreen[None]):
    """Help for ``screen``: its description and its key bindings."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, screen: Screen, kind: str) -> None:
        super().__init__()
        self.target = screen
        self.kind = kind

    def compose(self) -> ComposeResult:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        seen = set()
        for b in [*self.target.BINDINGS, *self.app.BINDINGS]:
            if not hasattr(b, "key") or b.description in seen or not b.description:
                continue
            seen.add(b.description)
            table.add_row(b.key_display or b.key.replace("question_mark", "?"), b.description)
        with VerticalScroll(id="help"):
            yield Static(Text(ABOUT.get(self.kind, ""), style="italic"))
            yield Static(table)
            yield Static(Text(FILTER_HELP, style="dim"))
            yield Static(Text("ctrl+p: command palette · escape: close", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
