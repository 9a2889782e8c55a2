"""The register pane: general-purpose and control registers; values that
changed since the previous sample are highlighted (bold, and marked ``*``
so the change is visible without colour)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

# Hypercall number and arguments first (Xen x86-64: rax, rdi, rsi, rdx, r10, r8),
# so a short pane still shows what the call was given.
ORDER = ("rip", "rax", "rdi", "rsi", "rdx", "r10", "r8", "rsp", "rbx", "rcx", "rbp", "r9",
         "r11", "r12", "r13", "r14", "r15", "rflags", "cr2", "cr3", "fs_base", "gs_base")


class RegisterPane(Static):
    """Shows a ``name -> value`` dict (a sample, or the argument registers a
    trace records for a hypercall)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._last: dict[str, int] = {}
        self.note = ""

    def forget(self) -> None:
        """Compare the next :meth:`show` with nothing (another vCPU's registers
        follow: none of them is a change)."""
        self._last = {}

    def show(self, regs: dict[str, int] | None, note: str = "") -> None:
        """Draw ``regs`` (None: nothing to show); highlight changes since the last call."""
        if not regs:
            self.update(Text(note or "no registers yet", style="dim"), layout=False)
            return
        text = Text(no_wrap=True)
        names = [n for n in ORDER if n in regs] + [n for n in regs if n not in ORDER]
        for n in names:
            v = regs[n]
            changed = n in self._last and self._last[n] != v
            text.append(f"{n:>7} ", style="dim")
            text.append(f"{v & (2**64 - 1):016x}", style="bold yellow" if changed else "")
            text.append("*\n" if changed else " \n")
        if note:
            text.append(note, style="dim italic")
        else:
            text.rstrip()
        self._last = dict(regs)
        self.update(text, layout=False)
