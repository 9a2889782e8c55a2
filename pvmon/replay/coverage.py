"""``pvmon replay TRACE --backend B --coverage``: which of a trace's calls and
sub-ops backend B lacks or answers differently, by declaration alone.

No call is executed. Each distinct (hypercall, sub-op) the trace makes (a
multicall's entries count as calls of their own) is looked up in the target's
declared tables (missing hypercalls and sub-ops, forced failures) and in the
declared differences between the version the trace was recorded on and the
target (:func:`pvmon.replay.explain.differences`: removed hypercalls, XENFEAT
bits, capabilities, security fixes, version numbers), each with its source.
A trace imported from xentrace names no version; it is compared with the
reference version (``xen-4.17``) and says so.

This is the question a hypervisor developer asks before shipping: what in
this field trace would the new build refuse or answer differently?
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvmon.errors import BackendError
from pvmon.trace.reader import TraceReader

#: Verdicts, worst first.
MISSING, FAILS, DIFFERS, UNKNOWN_SUBOP, SAME = ("missing", "fails", "differs",
                                                "sub-op unknown", "same")
_ORDER = {MISSING: 0, FAILS: 1, DIFFERS: 2, UNKNOWN_SUBOP: 3, SAME: 4}


@dataclass
class Row:
    """One distinct call of the trace: ``hypercall``, ``subop`` (None: the
    call has none, or the trace does not say), ``count`` in the trace,
    ``verdict`` on the target and the declared facts behind it (``why``: one
    line each, ``sources``)."""

    hypercall: str
    subop: str | None
    count: int
    verdict: str = SAME
    why: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"hypercall": self.hypercall, "subop": self.subop, "count": self.count,
                "verdict": self.verdict, "why": self.why, "sources": self.sources}


@dataclass
class Coverage:
    """The coverage of one trace on one target backend."""

    trace: str
    target: str
    baseline: str
    baseline_note: str
    calls: int
    rows: list[Row]

    @property
    def exit_code(self) -> int:
        """0 when every call is the same by declaration, 1 otherwise."""
        return 0 if all(r.verdict == SAME for r in self.rows) else 1

    def as_dict(self) -> dict[str, Any]:
        return {"trace": self.trace, "target": self.target, "baseline": self.baseline,
                "baseline_note": self.baseline_note, "calls": self.calls,
                "verdicts": dict(Counter(r.verdict for r in self.rows)),
                "rows": [r.as_dict() for r in self.rows]}


def call_counts(reader: TraceReader) -> Counter:
    """(hypercall, sub-op) -> count over a trace's ``hc`` events (Xen ABI),
    a multicall's entries counted as calls of their own (sub-op None)."""
    from pvmon.replay.compare import subop_of
    out: Counter = Counter()
    for ev in reader:
        if ev.get("k") != "hc" or ev.get("abi", "xen") != "xen":
            continue
        name = ev.get("name")
        if not isinstance(name, str):
            continue
        sub = subop_of(ev)
        out[(name, sub if isinstance(sub, str) else None)] += 1
        op = ev.get("op")
        if name == "multicall" and isinstance(op, dict) and isinstance(op.get("calls"), list):
            for c in op["calls"]:
                if isinstance(c, str):
                    out[(c, None)] += 1
    return out


def _declared(version: Any, name: str) -> Any:
    """``version`` when it carries Xen's declared tables, else a BackendError."""
    if not all(hasattr(version, a) for a in ("missing", "missing_subops", "subop_error",
                                            "all_changes")):
        raise BackendError(f"backend {name} declares no version tables, so --coverage cannot "
                           "say what it lacks (only Xen versions and profiles do)")
    return version


def coverage(path: str | Path, target_name: str) -> Coverage:
    """The coverage of trace ``path`` on backend ``target_name`` (a name the
    registry resolves: a version or a profile). Raises PvmonError (unreadable
    trace, unknown backend, a backend without declarations)."""
    from pvmon.backends.registry import require_version
    from pvmon.replay.explain import differences, explain
    p = Path(path)
    target = _declared(require_version(target_name), target_name)
    with TraceReader(p) as reader:
        h = reader.header
        if isinstance(h.get("imported"), dict):
            baseline = _declared(require_version(_reference_name()), _reference_name())
            note = (f"imported from {h['imported'].get('format')}, which names no Xen version: "
                    f"compared with the reference {baseline.name}")
        else:
            from pvmon.replay.source import recorded_version
            baseline = _declared(recorded_version(h, p), "recorded")
            note = f"recorded on {baseline.name}"
        counts = call_counts(reader)
    facts = differences(baseline, target)
    restricted = {f.hypercall for f in facts if f.subop is not None} | set(target.gated)
    rows: list[Row] = []
    for (name, sub), n in counts.items():
        row = Row(name, sub, n)
        err = target.subop_error(name, sub)
        if name in target.missing:
            row.verdict = MISSING
            row.why.append(f"{target.name} has no {name} (-ENOSYS)")
        elif err is not None:
            row.verdict = MISSING if sub is not None and sub in target.missing_subops.get(
                name, ()) else FAILS
            from pvmon.backends.xen import abi
            row.why.append(f"{target.name} answers {name}({sub}) with "
                           f"-{abi.ERRNO_NAMES.get(err, err)}" if sub else
                           f"{target.name} answers {name} with -{abi.ERRNO_NAMES.get(err, err)}")
        for f in explain(facts, name, sub):
            if f.text not in row.why:
                row.why.append(f.text)
                row.sources.append(f.source)
        if row.verdict == SAME and row.why:
            row.verdict = DIFFERS
        if row.verdict == SAME and sub is None and name in restricted:
            row.verdict = UNKNOWN_SUBOP
            subs = sorted({f.subop for f in facts if f.hypercall == name and f.subop}
                          | set(target.missing_subops.get(name, ())))
            row.why.append(f"the trace does not say which sub-op (no guest memory); "
                           f"{target.name} differs on {', '.join(subs) or 'some'}")
        rows.append(row)
    rows.sort(key=lambda r: (_ORDER[r.verdict], -r.count, r.hypercall, r.subop or ""))
    return Coverage(str(p), target.name, baseline.name, note, sum(counts.values()), rows)


def _reference_name() -> str:
    from pvmon.backends.xen.versions import REFERENCE
    return REFERENCE.name


def render_coverage(cov: Coverage, console: Any = None) -> None:
    """The coverage as a table: one row per call, worst verdict first."""
    from rich.table import Table

    from pvmon.literal import console as plain_console
    from pvmon.literal import text
    con = console or plain_console()
    con.print(text(f"{Path(cov.trace).name}: {cov.calls:,} calls on {cov.target} "
                   f"({cov.baseline_note})"))
    t = Table(title=text(f"coverage on {cov.target}"), show_edge=False)
    for col, just in (("call", "left"), ("count", "right"), ("on target", "left"),
                      ("why (declared)", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    style = {MISSING: "red", FAILS: "red", DIFFERS: "yellow", UNKNOWN_SUBOP: "cyan",
             SAME: "green"}
    for r in cov.rows:
        call = f"{r.hypercall}({r.subop})" if r.subop else r.hypercall
        t.add_row(text(call), f"{r.count:,}", f"[{style[r.verdict]}]{r.verdict}[/]",
                  text("; ".join(r.why)))
    con.print(t)
    worst = Counter(r.verdict for r in cov.rows)
    con.print(text(", ".join(f"{worst[v]} {v}" for v in _ORDER if worst[v])))
