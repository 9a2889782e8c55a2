"""The disassembly pane: instructions around RIP (capstone), RIP marked ``>``,
titled with the symbol (``sym+0xoff``)."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.markup import escape
from textual.widgets import Static

from pvmon.engine.disasm import Insn


class DisassemblyPane(Static):
    """Shows a list of :class:`~pvmon.engine.disasm.Insn`."""

    def show(self, insns: list[Insn], symbol: str = "", note: str = "") -> None:
        self.border_title = f"code {escape(symbol)}" if symbol else "code"
        if not insns:
            self.update(Text(note or "no code at RIP", style="dim"), layout=False)
            return
        if not note and all(i.text == "int3" for i in insns):
            note = "only int3 filler here in the image: this code is written at run time " \
                "(e.g. a hypercall page)"
            insns = [i for i in insns if i.at_rip]
        text = Text(no_wrap=True, overflow="ellipsis")
        for ins in insns:
            mark = "> " if ins.at_rip else "  "
            style = "bold reverse" if ins.at_rip else ""
            text.append(mark, style="bold")
            text.append(f"{ins.address & 0xFFFFFFFF:08x} ", style="dim")
            text.append(ins.text + "\n", style=style)
        text.rstrip()
        if note:
            self.update(Group(text, Text(note, style="dim italic")), layout=False)
        else:
            self.update(text, layout=False)
