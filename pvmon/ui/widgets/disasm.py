"""The disassembly pane: instructions around RIP (capstone), RIP marked ``>``,
titled with the symbol (``sym+0xoff``)."""

from __future__ import annotations

from rich.text import Text
from textual.markup import escape
from textual.widgets import Static

from pvmon.ui.disassembly import Insn


class DisassemblyPane(Static):
    """Shows a list of :class:`~pvmon.ui.disassembly.Insn`."""

    def show(self, insns: list[Insn], symbol: str = "", note: str = "") -> None:
        self.border_title = f"code {escape(symbol)}" if symbol else "code"
        if not insns:
            self.update(Text(note or "no code at RIP", style="dim"), layout=False)
            return
        text = Text(no_wrap=True, overflow="ellipsis")
        for ins in insns:
            mark = "> " if ins.at_rip else "  "
            style = "bold reverse" if ins.at_rip else ""
            text.append(mark, style="bold")
            text.append(f"{ins.address & 0xFFFFFFFF:08x} ", style="dim")
            text.append(ins.text + "\n", style=style)
        if note:
            text.append(note, style="dim italic")
        else:
            text.rstrip()
        self.update(text, layout=False)
