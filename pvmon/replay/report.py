"""Divergence reports: what differed, where, the calls around it, and why.

A :class:`Report` is produced by verify, closed-loop and open-loop replay and
by trace diff; it renders as text for people (:func:`render_text`) and as
JSON for CI (:meth:`Report.write_json`, :meth:`Report.as_dict`). Exit status:
0 no divergence, 1 divergence (2, errors, is raised as PvmonError before a
report exists).

Memory: a report holds the first :data:`DETAILED` divergences in full and
counts for all; every later one is spilled, compressed, to an unnamed
temporary file (:class:`~pvmon.replay.spill.Spill`) and read back one at a
time by :meth:`Report.iter_divergences`, so a replay with millions of
differences holds no more than one with fifty.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console
from rich.table import Table

from pvmon.literal import console as plain_console
from pvmon.literal import markup as escape  # Rich escaping + visible control characters
from pvmon.literal import text as literal_text
from pvmon.replay.compare import Delta, key
from pvmon.replay.explain import Fact
from pvmon.replay.spill import Spill
from pvmon.trace.render import describe, format_time, jsonable

DETAILED = 50          # divergences kept in memory; the rest are spilled and counted


@dataclass
class Site:
    """Where a divergence happened: the recorded event's ``seq`` and virtual
    time ``t`` (ns), the guest ``rip``, its ``symbol`` (System.map or ELF
    symbols) and disassembly ``[(address, hex bytes, text)]``."""

    seq: int | None
    t: int | None
    rip: int | None = None
    symbol: str = ""
    disasm: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"seq": self.seq, "t_ns": self.t, "rip": self.rip, "symbol": self.symbol,
                "disasm": [{"address": a, "size": n, "text": t} for a, n, t in self.disasm]}


@dataclass
class Divergence:
    """One point where the two sides differ. ``left``/``right``: the events
    (None when the call exists on one side only); ``deltas``: how they differ;
    ``context``: rendered events before it (left side); ``explanation``: the
    declared backend differences that account for it."""

    n: int
    deltas: list[Delta]
    left: dict | None
    right: dict | None
    where: Site
    context: list[str] = field(default_factory=list)
    explanation: list[Fact] = field(default_factory=list)

    @property
    def summary(self) -> str:
        ev = self.left or self.right or {}
        what = ", ".join(d.what for d in self.deltas)
        return f"{key(ev)}: {what}"

    def as_dict(self) -> dict:
        return {"n": self.n, "what": [d.as_dict() for d in self.deltas],
                "left": jsonable(self.left) if self.left else None,
                "right": jsonable(self.right) if self.right else None,
                "where": self.where.as_dict(), "context": self.context,
                "explanation": [f.as_dict() for f in self.explanation]}

    def to_record(self) -> list:
        """This divergence as plain msgpack-able values (:meth:`from_record`
        turns them back)."""
        w = self.where
        return [self.n, [[d.what, d.detail] for d in self.deltas], self.left, self.right,
                [w.seq, w.t, w.rip, w.symbol, [list(x) for x in w.disasm]], self.context,
                [[f.hypercall, f.subop, f.text, f.source] for f in self.explanation]]

    @classmethod
    def from_record(cls, rec: list) -> Divergence:
        """The divergence :meth:`to_record` gave ``rec`` for."""
        n, deltas, left, right, (seq, t, rip, symbol, disasm), context, expl = rec
        return cls(n, [Delta(*d) for d in deltas], left, right,
                   Site(seq, t, rip, symbol, [tuple(x) for x in disasm]), context,
                   [Fact(*f) for f in expl])


@dataclass
class Report:
    """The result of one replay or diff. ``mode``: verify | closed-loop |
    open-loop | diff; ``left``/``right``: labels of the two sides;
    ``divergences``: the first :data:`DETAILED`, in memory; ``spilled``: the
    later ones, on disk (None until there are any; read every divergence with
    :meth:`iter_divergences`); ``total``: how many there were;
    ``by_call``: count per (call key, what differed);
    ``ending``: how each side ended and what that means; ``notes``: lines
    worth knowing (rule verdict, mechanism, unrecorded inputs); ``verdict``:
    the sentence that replaces "no divergence ... over N events" when there is
    more to say (a recording compared up to an end the guest did not choose;
    a replay stopped before it could decide); ``status``: an exit status
    other than 0 / 1 (124 timed out, 130 / 143 interrupted), None if none."""

    mode: str
    left: str
    right: str
    divergences: list[Divergence] = field(default_factory=list)
    spilled: Spill | None = field(default=None, repr=False, compare=False)
    total: int = 0
    by_call: Counter = field(default_factory=Counter)
    compared: int = 0
    ending: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    explained: dict = field(default_factory=dict)
    verdict: str | None = None
    status: int | None = None

    def add(self, div: Divergence) -> None:
        self.total += 1
        ev = div.left or div.right or {}
        for d in div.deltas:
            self.by_call[(key(ev), d.what)] += 1
        if len(self.divergences) < DETAILED:
            self.divergences.append(div)
        else:
            if self.spilled is None:
                self.spilled = Spill()
            self.spilled.append(div.to_record())
        for f in div.explanation:
            k = (key(ev), f.text)
            if k not in self.explained:
                self.explained[k] = {"call": key(ev), "seq": ev.get("seq"),
                                     "what": [d.what for d in div.deltas],
                                     "left": _line(div.left), "right": _line(div.right),
                                     "why": f.text, "source": f.source}

    def iter_divergences(self) -> Iterator[Divergence]:
        """Every divergence in order (``n`` = 1 .. ``total``): the ones in
        memory, then the spilled ones, read back one at a time."""
        yield from self.divergences
        if self.spilled is not None:
            for rec in self.spilled:
                yield Divergence.from_record(rec)

    def close(self) -> None:
        """Delete the spilled divergences (the ones in memory stay)."""
        if self.spilled is not None:
            self.spilled.close()
            self.spilled = None

    @property
    def exit_code(self) -> int:
        if self.status is not None:
            return self.status
        return 1 if self.total else 0

    def _head(self, divergences) -> dict:
        return {"mode": self.mode, "left": self.left, "right": self.right,
                "diverged": bool(self.total), "total": self.total,
                "compared": self.compared,
                "by_call": [{"call": k, "what": w, "count": n}
                            for (k, w), n in self.by_call.most_common()],
                "divergences": divergences,
                "explained": list(self.explained.values()),
                "ending": self.ending, "notes": self.notes, "stats": self.stats,
                "verdict": self.verdict, "exit_status": self.exit_code}

    def as_dict(self) -> dict:
        """The report for JSON, every divergence in it (all in memory at
        once: for a report of any size, :meth:`write_json` streams)."""
        return self._head([d.as_dict() for d in self.iter_divergences()])

    def write_json(self, fp: IO[str], indent: int = 1) -> None:
        """Write ``json.dumps(self.as_dict(), indent=indent)`` and a newline to
        ``fp``, the same text, holding one divergence at a time."""
        mark = f"@divergences-{os.urandom(8).hex()}@"
        head, tail = json.dumps(self._head(mark), indent=indent).split(json.dumps(mark), 1)
        fp.write(head)
        pad = "\n" + " " * (2 * indent)
        sep = "["
        for div in self.iter_divergences():
            fp.write(sep + pad + json.dumps(div.as_dict(), indent=indent).replace("\n", pad))
            sep = ","
        fp.write("[]" if sep == "[" else "\n" + " " * indent + "]")
        fp.write(tail + "\n")


def _line(ev: dict | None) -> str:
    if ev is None:
        return "(absent)"
    return f"#{ev.get('seq')} {format_time(ev.get('t'))} {describe(ev)}"


def render_text(report: Report, console: Console | None = None, detail: int = 5) -> None:
    """Print ``report`` for people: a verdict line, the first ``detail``
    divergences in full, a table of divergences by call, how each side ended."""
    con = console or plain_console()
    if not report.total and report.verdict:
        head = "[bold green]no divergence[/]" if not report.exit_code else "[bold yellow]no verdict[/]"
        con.print(f"{head}: {escape(report.verdict)}")
    elif not report.total:
        con.print(f"[bold green]no divergence[/]: {escape(report.right)} matches "
                  f"{escape(report.left)} over {report.compared:,} events")
    else:
        con.print(f"[bold red]{report.total:,} divergence(s)[/] between {escape(report.left)} "
                  f"and {escape(report.right)} ({report.compared:,} events compared)")
    for div in report.divergences[:detail]:
        w = div.where
        con.print()
        head = "first divergence" if div.n == 1 else f"divergence {div.n}"
        loc = f"event {w.seq}" if w.seq is not None else "end of trace"
        if w.t is not None:
            loc += f", {format_time(w.t)}"
        if w.rip is not None:
            loc += f", rip {w.rip:#x} {w.symbol}"
        con.print(f"[bold]{head}[/] at {escape(loc)}")
        for d in div.deltas:
            con.print(f"  [yellow]{escape(d.what)}[/]: {escape(d.detail)}")
        con.print(f"  left : {escape(_line(div.left))}")
        con.print(f"  right: {escape(_line(div.right))}")
        for f in div.explanation:
            con.print(f"  [cyan]why[/]: {escape(f.text)}" + (f" [dim]({escape(f.source)})[/]"
                                                            if f.source else ""))
        if div.context:
            con.print("  before:")
            for line in div.context:
                con.print(f"    {escape(line)}")
        if w.disasm:
            con.print("  code:")
            for addr, _hx, text in w.disasm:
                mark = "=>" if addr == w.rip else "  "
                con.print(f"   {mark} {addr:#x}  {escape(text)}")
    if len(report.explained) > 0 and report.total > detail:
        con.print()
        con.print("[bold]every explained difference[/] (first occurrence of each):")
        for x in report.explained.values():
            con.print(f"  #{x['seq']} {escape(x['call'])} ({escape(', '.join(x['what']))}): "
                      f"{escape(x['why'])}")
            con.print(f"      left {escape(x['left'])}")
            con.print(f"      right {escape(x['right'])}")
    if report.total > detail:
        con.print()
        t = Table(title="divergences by call", show_edge=False)
        t.add_column("call")
        t.add_column("what")
        t.add_column("count", justify="right")
        for (k, w), n in report.by_call.most_common(20):
            t.add_row(literal_text(k), literal_text(w), f"{n:,}")
        con.print(t)
    if report.ending:
        con.print()
        for side in ("left", "right"):
            if side in report.ending:
                con.print(f"{side} ended: {escape(str(report.ending[side]))}")
        if "outcome" in report.ending:
            con.print(f"[bold]outcome[/]: {escape(report.ending['outcome'])}")
    for n in report.notes:
        con.print(f"note: {escape(n)}")
