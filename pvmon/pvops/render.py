"""Text and JSON forms of canonical operations for ``pvmon trace pvops``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pvmon.pvops import PvOp
from pvmon.pvops.vocab import FAMILIES, family_of

# Argument keys shown in hex (addresses, page-table flags, raw descriptors).
_HEX = frozenset({"va", "entry_ma", "flags", "base", "sp", "address", "desc", "event",
                  "failsafe", "syscall", "rip", "tsc"})


def format_args(args: dict[str, Any]) -> str:
    """``k=v`` pairs, addresses and flags in hex."""
    out = []
    for k, v in args.items():
        if type(v) is int and k in _HEX:
            out.append(f"{k}={v:#x}")
        else:
            out.append(f"{k}={v}")
    return " ".join(out)


def format_op(o: PvOp, time: str) -> str:
    """One line of ``--list``: seq, virtual time, operation, arguments, then the
    original call (and its batch, or the native evidence)."""
    where = f"{o.call}" + ("" if o.ret is None else f" = {o.ret}")
    for b in o.batch:
        where += f" [{b.call} #{b.seq} entry {b.index + 1}/{b.size}]"
    if o.native is not None:
        where += f" (native: {o.native})"
    args = format_args(o.args)
    return f"{o.seq:>8} {time} {o.op:<22} {args}{'  ' if args else ''}<- {where}"


@dataclass
class OpCounts:
    """Operations per canonical name and, for each, per original call; bounded
    by the vocabulary and the ABI's calls, never by the trace."""
    ops: Counter[str] = field(default_factory=Counter)
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    native: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, ops: Iterable[PvOp]) -> OpCounts:
        c = cls()
        for o in ops:
            c.ops[o.op] += 1
            c.calls.setdefault(o.op, Counter())[o.call] += 1
            if o.native is not None:
                c.native[o.op] += 1
        return c

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def by_family(self) -> dict[str, dict[str, int]]:
        """{family: {operation: count}}, families in vocabulary order, operations
        by count (then name)."""
        out: dict[str, dict[str, int]] = {}
        for fam in FAMILIES:
            ops = sorted(((op, n) for op, n in self.ops.items() if family_of(op) == fam),
                         key=lambda kv: (-kv[1], kv[0]))
            if ops:
                out[fam] = dict(ops)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"operations": self.total, "families": self.by_family(),
                "calls": {op: dict(c.most_common()) for op, c in sorted(self.calls.items())},
                "native": dict(sorted(self.native.items()))}
