"""``pvmon diff``: two traces side by side, typically two guest kernels on
the same backend ("does kernel N+1 need calls deployed hypervisors lack?").

Reports the hypercall mechanism of each side (hypercall page or direct
``syscall``), per-call count deltas, calls (and sub-ops) only one side
makes, the aligned call sequence's inserted and removed runs, and argument
and result differences at aligned points.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pvmon.literal import console as plain_console
from pvmon.literal import markup as escape  # Rich escaping + visible control characters
from pvmon.literal import text
from pvmon.replay.compare import align, key, operation, subop_of
from pvmon.trace.reader import TraceReader
from pvmon.trace.render import describe

EXAMPLES = 3


@dataclass
class Side:
    """One trace: ``label``, ``mechanism`` (declared by the kernel image),
    ``via`` (calls per entry path), ``calls`` (per name), ``subops`` (per
    name:sub-op), ``faults`` (per vector), ``events`` (hypercall events).
    Every count is of what the file holds. ``recorded``: events in the file;
    ``truncated_after``: None for a complete trace, else the seq of its last
    intact event (-1: none), as :class:`~pvmon.trace.reader.TraceReader` says."""

    path: Path
    label: str
    mechanism: str
    via: Counter
    calls: Counter
    subops: Counter
    faults: Counter
    events: list[dict] = field(repr=False, default_factory=list)
    recorded: int = 0
    truncated_after: int | None = None
    #: The guest mode (header ``machine.mode``: "pv" when absent, "pvh").
    mode: str = "pv"
    header: dict = field(repr=False, default_factory=dict)
    #: Every guest-host interaction by (family, item) (pvmon.backends.kvm.surface).
    surface: Counter = field(default_factory=Counter)

    @property
    def truncated(self) -> bool:
        return self.truncated_after is not None

    @property
    def hypercalls(self) -> int:
        return sum(self.calls.values())

    @property
    def status(self) -> str:
        """``complete``, ``truncated after event N`` or ``truncated before the first event``."""
        if self.truncated_after is None:
            return "complete"
        if self.truncated_after < 0:
            return "truncated before the first event"
        return f"truncated after event {self.truncated_after}"

    def as_dict(self) -> dict:
        return {"path": str(self.path), "label": self.label, "mechanism": self.mechanism,
                "mode": self.mode,
                "status": self.status, "truncated_after": self.truncated_after,
                "events": self.recorded, "via": dict(self.via), "hypercalls": self.hypercalls,
                "calls": dict(self.calls), "faults": dict(self.faults)}


@dataclass
class DiffResult:
    """The comparison of ``left`` and ``right``. ``count_deltas``: [(call,
    left, right)] for calls whose counts differ; ``only_left``/``only_right``:
    call or call:sub-op keys one side never makes; ``runs``: inserted/removed
    runs of the aligned sequence [(tag, left seq, right seq, length, keys)];
    ``arg_diffs``/``ret_diffs``: per key, count and examples at aligned points;
    ``drift``: operations each side reaches through a different interface
    (``sched_op_compat`` vs ``sched_op``) [{operation, left, right}]. Calls are
    aligned by operation, so drift does not break the alignment."""

    left: Side
    right: Side
    count_deltas: list[tuple[str, int, int]]
    only_left: list[str]
    only_right: list[str]
    aligned: int
    runs: list[dict]
    arg_diffs: dict[str, dict]
    ret_diffs: dict[str, dict]
    mechanism_differs: bool
    drift: list[dict] = field(default_factory=list)
    #: When the guest modes differ: [{family, left, right}] canonical
    #: operations (pvmon.pvops) per family each side asks the hypervisor for,
    #: for families where the counts differ; else [].
    mode_families: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if (self.count_deltas or self.only_left or self.only_right or self.runs
                     or self.ret_diffs or self.mechanism_differs or self.drift
                     or self.left.mode != self.right.mode) else 0

    @property
    def shows_surface(self) -> bool:
        """True when either trace is of an HVM guest (KVM, Xen PVH): the diff
        then also compares the interface by family (a Xen PV diff is as before)."""
        hvm = {"msr", "port I/O", "MMIO", "idle"}
        return any(f in hvm for s in (self.left, self.right) for f, _ in s.surface)

    def as_dict(self) -> dict:
        if self.shows_surface:
            return {**self._as_dict(), "interface": [
                {"family": f, "item": i, "left": self.left.surface.get((f, i), 0),
                 "right": self.right.surface.get((f, i), 0)}
                for f, i in sorted(set(self.left.surface) | set(self.right.surface))]}
        return self._as_dict()

    def _as_dict(self) -> dict:
        return {"left": self.left.as_dict(), "right": self.right.as_dict(),
                "mechanism_differs": self.mechanism_differs,
                "count_deltas": [{"call": k, "left": a, "right": b}
                                 for k, a, b in self.count_deltas],
                "only_left": self.only_left, "only_right": self.only_right,
                "interface_drift": self.drift, "mode_families": self.mode_families,
                "aligned_calls": self.aligned, "runs": self.runs,
                "argument_differences": self.arg_diffs, "result_differences": self.ret_diffs}


def _side(path: Path) -> Side:
    r = TraceReader(path)
    h = r.header
    g = h.get("guest") if isinstance(h.get("guest"), dict) else {}
    b = h.get("backend") if isinstance(h.get("backend"), dict) else {}
    label = f"{g.get('name', path.name)}"
    if g.get("version"):
        label += f" {g.get('version')}"
    label += f" on {b.get('name', '?')}"
    from pvmon.backends.kvm.surface import family_counts
    via, calls, subops, faults = Counter(), Counter(), Counter(), Counter()
    surface: Counter = Counter()
    events = []
    for ev in r.events():
        k = ev.get("k")
        for fam, n in family_counts(ev):
            surface[fam] += n
        if k == "hc":
            events.append(ev)
            name = str(ev.get("name"))
            calls[name] += 1
            via[str(ev.get("via", "?"))] += 1
            sub = subop_of(ev)
            if sub is not None:
                subops[f"{name}:{sub}"] += 1
        elif k == "fault":
            faults[str(ev.get("vec"))] += 1
    recorded, truncated_after = len(r), r.truncated_after
    r.close()
    mech = str(g.get("mechanism") or ("page" if via.get("page") else "syscall"))
    m = h.get("machine") if isinstance(h.get("machine"), dict) else {}
    b = h.get("backend") if isinstance(h.get("backend"), dict) else {}
    from pvmon.backends.registry import MODES_BY_ABI
    default = MODES_BY_ABI.get(b.get("abi", "xen"), ("pv",))[0] \
        if isinstance(b.get("abi", "xen"), str) else "pv"
    mode = m.get("mode") if isinstance(m.get("mode"), str) else default
    return Side(path, label, mech, via, calls, subops, faults, events, recorded,
                truncated_after, mode, h, surface)


def _abi(side: Side) -> str:
    b = side.header.get("backend")
    a = b.get("abi") if isinstance(b, dict) else None
    return a if isinstance(a, str) else "xen"


def _platform(side: Side) -> str:
    """The header's ``machine.platform`` (xen-pv, xen-pvh, kvm...), or the mode."""
    m = side.header.get("machine")
    p = m.get("platform") if isinstance(m, dict) else None
    return p if isinstance(p, str) else f"{_abi(side)}-{side.mode}"


def _mode_families(a: Side, b: Side) -> list[dict]:
    """Canonical operations per pv-ops family each side makes through the
    hypervisor (``left``/``right``) and performs natively
    (``left_native``/``right_native``), where either differs: what one guest
    mode or ABI needs calls for and the other does natively (page tables,
    stacks, segment bases, iret on Xen PV; done by the CPU on PVH and KVM).
    Each trace is read again whole (every event kind carries operations)."""
    from pvmon.pvops import derive
    from pvmon.pvops.vocab import family_of

    def families(side: Side) -> tuple[Counter, Counter]:
        calls, native = Counter(), Counter()
        try:
            with TraceReader(side.path) as r:
                for o in derive(r, _abi(side), r.header):
                    (native if o.native is not None else calls)[family_of(o.op)] += 1
        except Exception:  # noqa: BLE001, S110 - an ABI with no mapping, a damaged trace:
            pass           # no family view for that side, the rest of the diff stands
        return calls, native
    (ca, na), (cb, nb) = families(a), families(b)
    fams = set(ca) | set(cb) | set(na) | set(nb)
    rows = [{"family": f, "left": ca.get(f, 0), "right": cb.get(f, 0),
             "left_native": na.get(f, 0), "right_native": nb.get(f, 0)} for f in fams]
    return sorted((r for r in rows if (r["left"], r["left_native"])
                   != (r["right"], r["right_native"])),
                  key=lambda r: -abs(r["left"] - r["right"]))


def _example(ev_a: dict, ev_b: dict) -> dict:
    return {"left_seq": ev_a.get("seq"), "right_seq": ev_b.get("seq"),
            "left": describe(ev_a), "right": describe(ev_b)}


def diff_traces(left: Path, right: Path) -> DiffResult:
    """Compare two traces. Raises TraceError for an unreadable one."""
    a, b = _side(left), _side(right)
    names = sorted(set(a.calls) | set(b.calls))
    deltas = [(n, a.calls.get(n, 0), b.calls.get(n, 0)) for n in names
              if a.calls.get(n, 0) != b.calls.get(n, 0)]
    keys_a = set(a.calls) | set(a.subops)
    keys_b = set(b.calls) | set(b.subops)
    only_left = sorted(keys_a - keys_b)
    only_right = sorted(keys_b - keys_a)
    runs: list[dict] = []
    arg_diffs: dict[str, dict] = {}
    ret_diffs: dict[str, dict] = {}
    aligned = 0
    ea, eb = a.events, b.events
    for tag, a0, a1, b0, b1 in align(ea, eb, operation):
        if tag == "equal":
            aligned += a1 - a0
            for i, j in zip(range(a0, a1), range(b0, b1), strict=True):
                x, y = ea[i], eb[j]
                k = operation(x)
                if x.get("ret") != y.get("ret"):
                    d = ret_diffs.setdefault(k, {"count": 0, "examples": []})
                    d["count"] += 1
                    if len(d["examples"]) < EXAMPLES:
                        d["examples"].append(_example(x, y))
                elif x.get("op") != y.get("op"):
                    d = arg_diffs.setdefault(k, {"count": 0, "examples": []})
                    d["count"] += 1
                    if len(d["examples"]) < EXAMPLES:
                        d["examples"].append(_example(x, y))
            continue
        if a1 > a0:
            runs.append({"tag": "only_left", "left_seq": ea[a0].get("seq"),
                         "right_seq": eb[b0].get("seq") if b0 < len(eb) else None,
                         "length": a1 - a0, "calls": dict(Counter(operation(e) for e in ea[a0:a1])),
                         "past_truncated_end": b.truncated and b0 >= len(eb)})
        if b1 > b0:
            runs.append({"tag": "only_right", "left_seq": ea[a0].get("seq") if a0 < len(ea)
                         else None, "right_seq": eb[b0].get("seq"), "length": b1 - b0,
                         "calls": dict(Counter(operation(e) for e in eb[b0:b1])),
                         "past_truncated_end": a.truncated and a0 >= len(ea)})
    mech = a.mechanism != b.mechanism or set(a.via) != set(b.via)
    return DiffResult(a, b, deltas, only_left, only_right, aligned, runs, arg_diffs,
                      ret_diffs, mech, _drift(a, b),
                      _mode_families(a, b) if a.mode != b.mode or _abi(a) != _abi(b)
                      else [])


def _drift(a: Side, b: Side) -> list[dict]:
    """Operations both sides perform through different hypercalls."""
    def by_op(side: Side) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for ev in side.events:
            out.setdefault(operation(ev), Counter())[key(ev).split(":", 1)[1]] += 1
        return out
    oa, ob = by_op(a), by_op(b)
    return [{"operation": op.split(":", 1)[1], "left": dict(oa[op]), "right": dict(ob[op])}
            for op in sorted(set(oa) & set(ob)) if set(oa[op]) != set(ob[op])]


def render_diff(d: DiffResult, console: Console | None = None, show_all: bool = False) -> None:
    """Print a diff for people."""
    con = console or plain_console()
    a, b = d.left, d.right
    for name, s in (("left ", a), ("right", b)):
        cut = f", [yellow]{s.status}[/]" if s.truncated else ""
        con.print(f"[bold]{name}[/]: {escape(s.label)}  ({s.hypercalls:,} hypercalls, "
                  f"mechanism {s.mechanism}: {escape(_via(s))}{cut})")
    for name, s, other in (("left", a, b), ("right", b, a)):
        if s.truncated:
            con.print(f"[yellow]note[/]: the {name} trace is {s.status} (its recording was "
                      f"cut off): every count here is of the {s.recorded:,} events it holds, "
                      f"and what the {'right' if name == 'left' else 'left'} does after that "
                      f"point is listed as made by it alone")
    if a.mode != b.mode or _abi(a) != _abi(b):
        if _abi(a) != _abi(b):
            con.print(f"[yellow]ABI differs[/]: left {_abi(a)} ({_platform(a)}), right "
                      f"{_abi(b)} ({_platform(b)})")
        else:
            con.print(f"[yellow]guest mode differs[/]: left {a.mode.upper()}, right "
                      f"{b.mode.upper()}")
        if d.mode_families:
            t = Table(title="canonical operations by pv-ops family: through the "
                            "hypervisor (native)", show_edge=False)
            for col in ("family", "left", "right", "delta"):
                t.add_column(col, justify="left" if col == "family" else "right")
            for x in d.mode_families:
                nat = lambda n: f" ({n:,})" if n else ""
                t.add_row(text(x["family"]), f"{x['left']:,}{nat(x['left_native'])}",
                          f"{x['right']:,}{nat(x['right_native'])}",
                          f"{x['right'] - x['left']:+,}")
            con.print(t)
            pv_left = a.mode == "pv" and _abi(a) == "xen"
            native = [x["family"] for x in d.mode_families if x["family"] != "unmapped"
                      and 100 * (x["right"] if pv_left else x["left"])
                      < (x["left"] if pv_left else x["right"])]
            if native and (pv_left or (b.mode == "pv" and _abi(b) == "xen")):
                con.print(f"  the {'left' if pv_left else 'right'} (PV) guest asks the "
                          f"hypervisor for these, the other does them natively (under 1% "
                          f"as many calls): {escape(', '.join(native))}")
    if d.mechanism_differs:
        con.print(f"[yellow]mechanism differs[/]: left enters Xen through {escape(_via(a))}, "
                  f"right through {escape(_via(b))}")
    else:
        both = ", ".join(f"{k} (left x{n:,}, right x{b.via.get(k, 0):,})"
                         for k, n in a.via.most_common())
        con.print(f"mechanism: both {escape(both or 'no hypercalls')}")
    if d.drift:
        con.print()
        con.print("[bold]interface drift[/] (same operation, different hypercall):")
        for x in d.drift:
            fmt = lambda m: ", ".join(f"{k} x{n:,}" for k, n in m.items())
            con.print(f"  {escape(x['operation'])}: left {escape(fmt(x['left']))}; "
                      f"right {escape(fmt(x['right']))}")
    if d.only_left or d.only_right:
        con.print()
        if d.only_left:
            con.print("[bold]calls only the left makes[/]: " + escape(", ".join(d.only_left)))
        if d.only_right:
            con.print("[bold]calls only the right makes[/]: " + escape(", ".join(d.only_right)))
    if d.count_deltas:
        t = Table(title="hypercall counts", show_edge=False)
        t.add_column("hypercall")
        t.add_column("left", justify="right")
        t.add_column("right", justify="right")
        t.add_column("delta", justify="right")
        for k, x, y in sorted(d.count_deltas, key=lambda r: -abs(r[2] - r[1])):
            t.add_row(text(k), f"{x:,}", f"{y:,}", f"{y - x:+,}")
        con.print()
        con.print(t)
    if d.shows_surface:
        _render_surface(d, con, show_all)
    total = max(len(a.events), len(b.events))
    con.print()
    con.print(f"aligned: {d.aligned:,} of {len(a.events):,} / {len(b.events):,} calls "
              f"({100 * d.aligned / total:.1f}%)" if total else "aligned: no calls")
    runs = d.runs if show_all else sorted(d.runs, key=lambda r: -r["length"])[:8]
    if runs:
        con.print(f"{len(d.runs):,} inserted/removed run(s)" +
                  ("" if show_all else "; the longest:"))
        for r in runs:
            side = "left only " if r["tag"] == "only_left" else "right only"
            top = ", ".join(f"{k} x{n}" for k, n in Counter(r["calls"]).most_common(3))
            past = (f" (after the end of the truncated {'right' if side[0] == 'l' else 'left'})"
                    if r.get("past_truncated_end") else "")
            con.print(f"  {side} at left #{r['left_seq']} / right #{r['right_seq']}{past}: "
                      f"{r['length']:,} call(s): {escape(top)}")
    for title, diffs in (("result differences at aligned calls", d.ret_diffs),
                         ("argument differences at aligned calls", d.arg_diffs)):
        if not diffs:
            continue
        con.print()
        con.print(f"[bold]{title}[/]:")
        items = sorted(diffs.items(), key=lambda kv: -kv[1]["count"])
        for k, v in items if show_all else items[:10]:
            con.print(f"  {escape(k)} x{v['count']:,}")
            for ex in v["examples"][:1 if not show_all else EXAMPLES]:
                con.print(f"    left  #{ex['left_seq']}: {escape(ex['left'])}")
                con.print(f"    right #{ex['right_seq']}: {escape(ex['right'])}")


def _render_surface(d: DiffResult, con: Console, show_all: bool) -> None:
    """The guest-host interface by family: totals, then the items that differ
    (every item with ``show_all``)."""
    a, b = d.left.surface, d.right.surface
    fams = sorted({f for f, _ in a} | {f for f, _ in b})
    t = Table(title="guest-host interface by family", show_edge=False)
    t.add_column("family")
    t.add_column("item")
    t.add_column("left", justify="right")
    t.add_column("right", justify="right")
    for fam in fams:
        ta = sum(n for (f, _), n in a.items() if f == fam)
        tb = sum(n for (f, _), n in b.items() if f == fam)
        t.add_row(text(fam), "(all)", f"{ta:,}", f"{tb:,}")
        items = sorted({i for f, i in a if f == fam} | {i for f, i in b if f == fam})
        rows = [(i, a.get((fam, i), 0), b.get((fam, i), 0)) for i in items]
        if not show_all:
            rows = sorted((r for r in rows if r[1] != r[2]),
                          key=lambda r: (-(r[1] == 0 or r[2] == 0), -abs(r[2] - r[1])))[:8]
        for i, x, y in rows:
            t.add_row("", text(i), f"{x:,}", f"{y:,}")
    con.print()
    con.print(t)


def _via(s: Side) -> str:
    return ", ".join(f"{k} x{n:,}" for k, n in s.via.most_common()) or "no hypercalls"
