"""The end-of-run report of ``pvmon run`` and ``pvmon boot``: exit reason,
times, hypercalls, faults, on stderr.

The report is Rich markup and a Rich table (:func:`_print_rich`). Where
Rich would print it as plain text, unstyled and unwrapped (stderr is not a
terminal and nothing in the environment changes that, every line fits the
width Rich would use, every string is plain ASCII), the same characters are
written directly (:func:`plain_summary`), without importing Rich, which
costs about 30 ms of a run's start-up. Anything else goes through Rich.
tests/test_summary.py holds the two to the same bytes.
"""

from __future__ import annotations

import os
import sys

from pvmon.literal import printable

#: Environment variables that change how Rich sizes or styles a console whose
#: file is not a terminal (rich.console.Console: COLUMNS sets the width,
#: FORCE_COLOR and TTY_COMPATIBLE make it a terminal); with any of them set the
#: report goes through Rich.
_RICH_ENVIRON = ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")


def print_summary(res) -> None:
    """Print the report of ``res`` (a :class:`~pvmon.session.RunResult`) on
    stderr. What the guest or the user supplied (exit detail, symbol, names,
    the trace path) is printed literally."""
    symbol = res.symbol         # once: symbols load on first use
    width = _plain_width(sys.stderr)
    out = plain_summary(res, symbol, width) if width is not None else None
    if out is None:
        from pvmon.literal import console
        _print_rich(console(stderr=True), res, symbol)
        return
    sys.stderr.write(out)
    sys.stderr.flush()


def _plain_width(stream) -> int | None:
    """The width a Rich console on ``stream`` would wrap at, when it would
    print plain text there (no terminal, no Jupyter, a UTF encoding, no
    environment variable of :data:`_RICH_ENVIRON`); None otherwise.
    The width is what rich.console.Console.size reads: the first of
    stdin, stdout, stderr that is a terminal, else (or when it says 0) 80."""
    if any(name in os.environ for name in _RICH_ENVIRON):
        return None
    import builtins
    if hasattr(builtins, "get_ipython"):
        return None
    try:
        if stream.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    encoding = getattr(stream, "encoding", "utf-8") or "utf-8"
    if not encoding.lower().startswith("utf"):
        return None
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80


def _plain(value) -> str | None:
    """``value`` as the report prints it (:func:`~pvmon.literal.printable`),
    or None when Rich might print it otherwise: anything but printable ASCII
    (cell widths), or a ``[`` or backslash (markup escapes)."""
    s = printable(value)
    if not (s.isascii() and s.isprintable()) or "[" in s or "\\" in s:
        return None
    return s


def plain_summary(res, symbol: str, width: int) -> str | None:
    """The report of ``res`` as Rich prints it on a console ``width`` cells
    wide that is not a terminal (see the module docstring), or None when
    this cannot be sure of printing the same: then Rich prints it."""
    kind, detail, sym = _plain(res.exit_kind), _plain(res.detail), _plain(symbol)
    if kind is None or detail is None or sym is None:
        return None
    speed = (res.vtime_ns / 1e9) / res.wall_s if res.wall_s else 0.0
    lines = ["",
             f"exit: {kind} - {detail}",
             f"      at {res.rip:#x} {sym}",
             (f"virtual time: {res.vtime_ns / 1e9:.6f} s   "
              f"wall time: {res.wall_s:.3f} s   ({speed:.2f}x real time)")]
    # The table: rich.table.Table(title="hypercalls", show_edge=False,
    # pad_edge=False) with the default HEAVY_HEAD box, the count column
    # right-justified, each column as wide as its widest cell.
    rows = [("hypercall", "count")]
    for name, n in res.hypercalls.most_common():
        name = _plain(name)
        if name is None:
            return None
        rows.append((name, str(n)))
    rows.append(("total", str(sum(res.hypercalls.values()))))
    w0 = max(len(a) for a, _ in rows)
    w1 = max(len(b) for _, b in rows)
    table_width = w0 + w1 + 3
    title = "hypercalls"
    left = (table_width - len(title)) // 2
    lines.append(" " * left + title + " " * (table_width - len(title) - left))
    (h0, h1), *body = rows
    lines.append(f"{h0:<{w0}} ┃ {h1:>{w1}}")
    lines.append("━" * (w0 + 1) + "╇" + "━" * (w1 + 1))
    lines += [f"{a:<{w0}} │ {b:>{w1}}" for a, b in body]
    if res.faults:
        faults = _plain(", ".join(f"{k} x{v}" for k, v in res.faults.most_common()))
        if faults is None:
            return None
        lines.append("faults delivered: " + faults)
    lines.append(f"event upcalls: {res.upcalls}")
    exits = res.extra.get("exits")
    if exits:
        text = _plain(", ".join(f"{k} {v:,}" for k, v in exits.items()))
        if text is None:
            return None
        lines.append("guest exits: " + text)
    if res.unsupported:
        text = _plain(", ".join(f"{k} x{v}" for k, v in sorted(res.unsupported.items())))
        if text is None:
            return None
        lines.append("unsupported (-ENOSYS): " + text)
    if res.trace_path:
        path = _plain(res.trace_path)
        if path is None:
            return None
        lines.append(f"trace: {path} ({res.events} events)")
    # Rich wraps a line as long as the console is wide or longer: leave those to it
    if any(len(line) >= width for line in lines) or width < table_width + 1:
        return None
    return "\n".join(lines) + "\n"


def _print_rich(con, res, symbol: str) -> None:
    """The report through Rich console ``con`` (markup, a Rich table)."""
    from rich.table import Table

    from pvmon.literal import markup, text

    con.print()
    con.print(f"[bold]exit:[/bold] {markup(res.exit_kind)} - {markup(res.detail)}")
    con.print(f"      at {res.rip:#x} {markup(symbol)}")
    speed = (res.vtime_ns / 1e9) / res.wall_s if res.wall_s else 0.0
    con.print(f"[bold]virtual time:[/bold] {res.vtime_ns / 1e9:.6f} s   "
              f"[bold]wall time:[/bold] {res.wall_s:.3f} s   ({speed:.2f}x real time)")
    t = Table(title="hypercalls", show_edge=False, pad_edge=False)
    t.add_column("hypercall")
    t.add_column("count", justify="right")
    for name, n in res.hypercalls.most_common():
        t.add_row(text(name), str(n))
    t.add_row("[bold]total[/bold]", str(sum(res.hypercalls.values())))
    con.print(t)
    if res.faults:
        con.print("[bold]faults delivered:[/bold] " + markup(", ".join(
            f"{k} x{v}" for k, v in res.faults.most_common())))
    con.print(f"[bold]event upcalls:[/bold] {res.upcalls}")
    exits = res.extra.get("exits")
    if exits:       # an HVM guest's other ways to the host (KVM: pvmon.dispatch.kvm)
        con.print("[bold]guest exits:[/bold] " + markup(", ".join(
            f"{k} {v:,}" for k, v in exits.items())))
    if res.unsupported:
        con.print("[bold]unsupported (-ENOSYS):[/bold] " + markup(", ".join(
            f"{k} x{v}" for k, v in sorted(res.unsupported.items()))))
    if res.trace_path:
        con.print(f"[bold]trace:[/bold] {markup(res.trace_path)} ({res.events} events)")
