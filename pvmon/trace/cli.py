"""`pvmon trace ...`: inspect recorded traces (info, cat, stats, pvops, export)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click
from rich.table import Table

from pvmon.errors import TraceError
from pvmon.files import check_output
from pvmon.literal import console as plain_console
from pvmon.literal import text
from pvmon.trace.export import EXPORTERS, large_export_warning
from pvmon.trace.reader import TraceReader
from pvmon.trace.render import FAULT_NAMES, event_label, format_line, format_time, jsonable
from pvmon.trace.stats import TraceStats, default_jobs

_TIME_UNITS = {"": 1_000_000_000, "s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def parse_time(text: str) -> int:
    """``"1.5"``/``"1.5s"``/``"250ms"``/``"10us"``/``"100ns"`` -> nanoseconds."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(s|ms|us|ns)?\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a time (examples: 1.5, 250ms, 10us, 100ns)")
    return round(float(m.group(1)) * _TIME_UNITS[m.group(2) or ""])


@contextmanager
def _open(path: str) -> Iterator[TraceReader]:
    reader = TraceReader(path)
    try:
        yield reader
    finally:
        reader.close()


def _status(reader: TraceReader) -> str:
    if reader.complete:
        return "complete"
    if reader.truncated_after is None or reader.truncated_after < 0:
        return "truncated before the first event"
    return f"truncated after event {reader.truncated_after}"


def _ending(reader: TraceReader) -> str:
    """How the recorded run ended: its exit record, or that it has none."""
    n = len(reader)
    last = next(reader.events(n - 1, n), None) if n else None
    if last is None or last.get("k") != "exit":
        return "no exit record (the recording was cut short or stopped)"
    return f"{last.get('reason')}: {last.get('detail')} (event {n - 1:,})"


def _pipe_safe(write: Any) -> Any:
    """Run ``write``; a closed pipe (``| head``) ends output quietly."""
    try:
        return write()
    except BrokenPipeError:
        sys.stdout = None  # type: ignore[assignment]  # keep Python from flushing a dead pipe
        return None


def _write_lines(lines: Any) -> None:
    """Write an iterable of output lines to stdout in batches of 1,024; a closed
    pipe (``| head``) ends output quietly."""
    out: TextIO = sys.stdout
    batch: list[str] = []

    def write() -> None:
        for line in lines:
            batch.append(line)
            if len(batch) >= 1024:
                out.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
        out.flush()

    _pipe_safe(write)


@click.group()
def trace() -> None:
    """Inspect recorded .pvt traces."""


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False))
def info(path: str) -> None:
    """Header, event counts, duration, size and integrity of a trace."""
    console = plain_console()
    with _open(path) as reader:
        stats = TraceStats.of(reader, jobs=default_jobs())
        h = reader.header
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()

        def sub(key: str) -> dict[str, Any]:
            v = h.get(key)
            return v if isinstance(v, dict) else {}

        guest, backend, machine = sub("guest"), sub("backend"), sub("machine")
        n = len(reader)
        rows = [
            ("file", str(path)),
            ("format", f"{h.get('format')} version {reader.version} (pvmon {h.get('pvmon')})"),
            ("guest", " ".join(str(guest.get(k)) for k in ("name", "package", "version")
                               if guest.get(k) is not None)),
            ("guest sha256", str(guest.get("sha256"))),
            ("backend", " ".join(str(backend.get(k)) for k in ("name", "version")
                                 if backend.get(k) is not None)),
            *([("profile", _profile_line(backend))] if backend.get("profile") else []),
            ("machine", f"{_size(machine.get('memory'))} memory, {machine.get('vcpus')} vCPU(s)"
                        + (f", {machine['platform']}" if isinstance(machine.get("platform"), str)
                           else "")),
            ("cmdline", str(machine.get("cmdline"))),
            ("vtime base", f"{h.get('vtime_base_ns')} ns, TSC {h.get('tsc_khz')} kHz")
            if "tsc_khz" in h or "clock" not in machine else     # UML: host time (docs/uml.md)
            ("clock", f"{machine.get('clock')}"
                      + (", not deterministic" if machine.get("deterministic") is False else "")),
            ("recorded", f"{h.get('recorded_at')} on {h.get('host')}"),
            *([("imported", _imported_line(h["imported"]))]
              if isinstance(h.get("imported"), dict) else []),
            ("events", f"{n:,}"),
            ("virtual duration", format_time(stats.duration_ns)),
            ("file size", f"{_size(reader.file_size)}"
                          + (f", {reader.file_size / n:.1f} bytes/event" if n else "")),
            ("frames", f"{len(reader.frames)}"),
            ("status", _status(reader)),
            ("ended", _ending(reader)),
        ]
        for k, v in rows:     # every value as it is: a header may hold markup or escapes
            table.add_row(k, text(v, multiline=k == "backend"))
        console.print(table)
        kinds = Table(title="events by kind")
        kinds.add_column("kind")
        kinds.add_column("count", justify="right")
        for k, c in stats.by_kind.most_common():
            note = {"tsc_run": f" ({stats.tsc_reads:,} reads)",
                    "io_run": f" ({stats.port_reads:,} port reads in all)"}.get(k, "")
            kinds.add_row(text(k), f"{c:,}{note}")
        console.print(kinds)
        calls = Table(title="hypercalls by name")
        calls.add_column("name")
        calls.add_column("count", justify="right")
        for name, hs in sorted(stats.hypercalls.items(), key=lambda kv: -kv[1].count):
            calls.add_row(text(name), f"{hs.count:,}")
        console.print(calls)


def _imported_line(info: dict[str, Any]) -> str:
    """Where an imported trace came from (docs/xentrace.md), in one line."""
    dom = info.get("domain")
    parts = [f"from {info.get('format')} file {info.get('file')}",
             f"domain {dom}" if dom is not None else "domain not named in the file",
             f"{info.get('records'):,} records" if type(info.get("records")) is int else ""]
    if info.get("lost_records"):
        parts.append(f"{info['lost_records']:,} lost by the hypervisor")
    if info.get("truncated_at") is not None:
        parts.append(f"file cut short at byte {info['truncated_at']}")
    return ", ".join(p for p in parts if p) + "; no guest memory (cannot be replayed)"


def _profile_line(backend: dict[str, Any]) -> str:
    """The recorded profile in one line: its name, base and source file (the
    header holds its whole TOML text, which replay rebuilds it from)."""
    import tomllib
    text = backend.get("profile")
    try:
        base = tomllib.loads(text).get("base") if isinstance(text, str) else None
    except tomllib.TOMLDecodeError:
        base = None
    source = backend.get("profile_source")
    version = backend.get("version_string")
    return (f"{backend.get('name')}"
            + (f" (Xen {version})" if isinstance(version, str) else "")
            + (f", based on {base}" if isinstance(base, str) else "")
            + (f", from {source}" if isinstance(source, str) and source
               else ", recorded before pvmon kept its source file")
            + " (its TOML is recorded in the trace)")


def _size(n: Any) -> str:
    if type(n) is not int:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--from", "from_", type=click.IntRange(min=0), default=0,
              help="First event (seq) to show.")
@click.option("--to", "to", type=click.IntRange(min=0), default=None,
              help="Last event (seq) to show, inclusive.")
@click.option("--time", "time_", default=None,
              help="Start at the first event at or after this virtual time (1.5, 250ms, 10us).")
@click.option("--filter", "filter_", default=None,
              help="Comma-separated hypercall names, event kinds, families, ABIs or sub-ops "
                   "to show (mmu_update,fault; mmu; PIN_L4_TABLE; tsc also shows format 2's "
                   "tsc_run, io format 4's io_run). An unknown term is an error.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (bytes as hex).")
@click.option("--pvops", "with_pvops", is_flag=True,
              help="Under each event, the canonical operations it carries (docs/pvops.md); "
                   "with --json, a \"pvops\" list in each object.")
def cat(path: str, from_: int, to: int | None, time_: str | None, filter_: str | None,
        as_json: bool, with_pvops: bool = False) -> None:
    """Print events, one per line. Seeks without decompressing what it skips."""
    from pvmon.ui.filters import TermFilter
    names = [n.strip() for n in filter_.split(",") if n.strip()] if filter_ else None
    if names is not None:
        for kinds in _READ_KINDS:     # reads, whichever format version recorded them
            if set(names) & kinds:
                names += sorted(kinds - set(names))
    with _open(path) as reader:
        flt = None if names is None else TermFilter.parse(names, lambda: _names_in(reader))
        start = from_
        if time_ is not None:
            start = max(start, reader.seek_time(parse_time(time_)))
        stop = None if to is None else to + 1
        show_cpu = len(reader.frames) > 0 and _vcpus(reader) > 1
        events = reader.events(start, stop)
        if with_pvops:
            _write_lines(_lines_with_pvops(reader, events, start, flt, as_json, show_cpu))
        else:
            _write_lines(json.dumps(jsonable(ev), separators=(",", ":")) if as_json
                         else format_line(ev, show_cpu=show_cpu)
                         for ev in events if flt is None or flt.matches(ev))
        if not reader.complete and (stop is None or stop > len(reader)):
            click.echo(f"pvmon: note: {path}: {_status(reader)}", err=True)


#: Kinds that record the same reads one by one or in runs (format versions 2 and 4).
_READ_KINDS = (frozenset({"tsc", "tsc_run"}), frozenset({"io", "io_run"}))


def _lines_with_pvops(reader: TraceReader, events, start: int, flt, as_json: bool,
                      show_cpu: bool):
    """``trace cat --pvops``: each shown event with its canonical operations
    (every event feeds the mapping's state, shown or not; from mid-trace the
    state starts as ``resume_state`` would, docs/pvops.md)."""
    from pvmon.pvops import Deriver
    from pvmon.pvops.render import format_op
    deriver = Deriver(_trace_abi(reader), reader.header, resume=start > 0)
    for ev in events:
        ops = list(deriver.ops(ev))
        if flt is not None and not flt.matches(ev):
            continue
        if as_json:
            yield json.dumps(jsonable({**ev, "pvops": [o.as_dict() for o in ops]}),
                             separators=(",", ":"))
            continue
        yield format_line(ev, show_cpu=show_cpu)
        for o in ops:
            yield "    = " + format_op(o, format_time(o.t)).lstrip()


def _trace_abi(reader: TraceReader) -> str:
    backend = reader.header.get("backend")
    a = backend.get("abi") if isinstance(backend, dict) else None
    return a if isinstance(a, str) else "xen"


def _names_in(reader: TraceReader) -> set[str]:
    """Every event name and sub-op in the trace (read only when a filter term is
    unknown to pvmon's tables)."""
    from pvmon.replay.compare import subop_of
    out: set[str] = set()
    for ev in reader:
        out.add(event_label(ev))
        sub = subop_of(ev) if ev.get("k") == "hc" else None
        if isinstance(sub, str):
            out.add(sub)
    return out


def _vcpus(reader: TraceReader) -> int:
    machine = reader.header.get("machine")
    v = machine.get("vcpus") if isinstance(machine, dict) else None
    return v if type(v) is int else 1


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
@click.option("--top", type=click.IntRange(min=1), default=8,
              help="Sub-operations shown per hypercall.")
@click.option("--pvops", "with_pvops", is_flag=True,
              help="Also the canonical operations by family (as `trace pvops` counts them).")
def stats(path: str, as_json: bool, top: int, with_pvops: bool = False) -> None:
    """Per-hypercall counts, rates over virtual time and sub-operation histograms."""
    counts = None
    with _open(path) as reader:
        if with_pvops:      # one read of the trace for both
            from pvmon.pvops.render import stats_and_counts
            st, counts = stats_and_counts(reader, _trace_abi(reader), reader.header,
                                          default_jobs())
        else:
            st = TraceStats.of(reader, jobs=default_jobs())
        status = _status(reader)
    if as_json:
        extra = {"pvops": counts.to_dict()} if counts is not None else {}
        click.echo(json.dumps({**st.to_dict(), "status": status, **extra}, indent=1))
        return
    console = plain_console()
    seconds = st.duration_ns / 1e9
    console.print(text(f"{st.events:,} events over {format_time(st.duration_ns)} of virtual "
                       f"time ({status})"))
    calls = Table(title="hypercalls")
    for col, just in (("name", "left"), ("count", "right"), ("%", "right"),
                      ("per s", "right"), ("errors", "right"), ("ops/batch", "right"),
                      ("top sub-op", "left")):
        calls.add_column(col, justify=just)  # type: ignore[arg-type]
    total_hc = sum(hs.count for hs in st.hypercalls.values()) or 1
    for name, hs in sorted(st.hypercalls.items(), key=lambda kv: -kv[1].count):
        subs = sum(hs.subops.values()) or 1
        top_subs = ", ".join(f"{k} {100 * v / subs:.0f}%" for k, v in hs.subops.most_common(1))
        errors = ", ".join(f"{k}x{v}" for k, v in hs.errors.most_common(3)) if hs.errors else ""
        batch = f"{hs.batch_ops / hs.batched:.1f} (max {hs.batch_max})" if hs.batched else ""
        calls.add_row(text(name), f"{hs.count:,}", f"{100 * hs.count / total_hc:.1f}",
                      f"{hs.count / seconds:,.0f}" if seconds else "-", text(errors), batch,
                      text(top_subs))
    console.print(calls)
    for name, hs in sorted(st.hypercalls.items(), key=lambda kv: -kv[1].count):
        if len(hs.subops) < 2:
            continue
        hist = Table(title=text(f"{name}: sub-operations"), title_justify="left")
        hist.add_column("cmd")
        hist.add_column("count", justify="right")
        hist.add_column("%", justify="right")
        hist.add_column("")
        subs = sum(hs.subops.values())
        for k, v in hs.subops.most_common(top):
            hist.add_row(text(k), f"{v:,}", f"{100 * v / subs:.1f}", "#" * round(30 * v / subs))
        if len(hs.subops) > top:
            hist.add_row(f"({len(hs.subops) - top} more)", "", "", "")
        console.print(hist)
    others = Table(title="other events")
    others.add_column("kind")
    others.add_column("count", justify="right")
    others.add_column("detail")
    for k, c in st.by_kind.most_common():
        if k == "hc":
            continue
        detail = ""
        if k == "fault":
            detail = ", ".join(f"{FAULT_NAMES.get(_int(v), v)} x{n}"
                               for v, n in st.faults.most_common())
        elif k == "con":
            detail = ", ".join(f"{d} {n:,} bytes" for d, n in st.console_bytes.items())
        elif k in _READ_KINDS[0]:
            detail = f"{st.tsc_reads:,} TSC reads"
        elif k == "io_run":
            detail = f"{st.port_reads:,} port reads in all (io and io_run)"
        others.add_row(text(k), f"{c:,}", text(detail))
    console.print(others)
    if counts is not None:
        _print_op_counts(console, counts)


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--list", "as_list", is_flag=True,
              help="Print the operation stream, the original call beside each.")
@click.option("--json", "as_json", is_flag=True,
              help="Counts as one JSON object; with --list, one JSON object per operation.")
def pvops(path: str, as_list: bool, as_json: bool) -> None:
    """Canonical paravirtual operations (docs/pvops.md): counts per operation by
    family, or with --list the stream. Derived as the trace is read."""
    from pvmon.pvops import derive
    from pvmon.pvops.render import OpCounts, format_op
    with _open(path) as reader:
        backend = reader.header.get("backend")
        abi_name = backend.get("abi") if isinstance(backend, dict) else None
        abi_name = abi_name if isinstance(abi_name, str) else "xen"
        ops = derive(reader, abi_name, reader.header)
        if as_list:
            _write_lines(json.dumps(jsonable(o.as_dict()), separators=(",", ":"))
                         if as_json else format_op(o, format_time(o.t)) for o in ops)
            if not reader.complete:
                click.echo(f"pvmon: note: {path}: {_status(reader)}", err=True)
            return
        counts = OpCounts.of_trace(reader, abi_name, reader.header, default_jobs())
        status = _status(reader)
        events = len(reader)
    if as_json:
        click.echo(json.dumps({"abi": abi_name, "events": events, **counts.to_dict(),
                               "status": status}, indent=1))
        return
    console = plain_console()
    console.print(text(f"{counts.total:,} canonical operations from {events:,} events "
                       f"({abi_name}, {status})"))
    _print_op_counts(console, counts)


def _print_op_counts(console, counts) -> None:
    """The canonical-operations table (``trace pvops``, ``trace stats --pvops``)."""
    table = Table(title="canonical operations")
    for col, just in (("family", "left"), ("operation", "left"), ("count", "right"),
                      ("%", "right"), ("from", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    total = counts.total or 1
    for fam, ops_ in counts.by_family().items():
        first = True
        for op, n in ops_.items():
            calls = counts.calls[op]
            src = ", ".join(f"{c} {m:,}" for c, m in calls.most_common(3))
            if len(calls) > 3:
                src += f", ({len(calls) - 3} more)"
            if counts.native.get(op):
                src += f" (native {counts.native[op]:,})"
            table.add_row(fam if first else "", op, f"{n:,}", f"{100 * n / total:.1f}",
                          text(src))
            first = False
    console.print(table)


def _int(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "format_", type=click.Choice(["perfetto", "jsonl", "xentrace"]),
              required=True,
              help="perfetto: Chrome trace-event JSON for ui.perfetto.dev; jsonl: JSON lines; "
                   "xentrace: Xen's binary trace records, for xenalyze and xentrace_format "
                   "(docs/xentrace.md).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True,
              help="File to write (never the trace itself; an existing file that is not an "
                   "earlier export only with --force).")
@click.option("--force", is_flag=True, help="Overwrite an existing file that is not an export.")
def export(path: str, format_: str, output: str, force: bool) -> None:
    """Write a trace in another format."""
    if format_ == "xentrace":    # an earlier xentrace export is replaced like any export
        from pvmon.trace.xentrace.reader import is_xentrace
        force = force or is_xentrace(output)
    check_output(output, inputs=[path], force=force, option="-o", kind="export")
    from pvmon.progress import progress
    if format_ == "xentrace":
        _export_xentrace(path, output)
        return
    with _open(path) as reader:
        warning = large_export_warning(reader, format_)
        if warning:
            click.echo(f"pvmon: warning: {warning}", err=True)
        try:
            with Path(output).open("w", encoding="utf-8") as out, \
                    progress(f"exporting {Path(path).name}", len(reader)) as task:
                n = EXPORTERS[format_](reader, out, progress=task.update)
        except OSError as exc:
            raise TraceError(f"{output}: cannot write: {exc.strerror}") from exc
        note = "" if reader.complete else f" ({_status(reader)})"
    click.echo(f"wrote {n:,} {format_} records to {output}{note}", err=True)


def _export_xentrace(path: str, output: str) -> None:
    """``trace export --format xentrace``: binary records (docs/xentrace.md)."""
    from pvmon.progress import progress
    from pvmon.trace.xentrace.export import export_xentrace
    with _open(path) as reader:
        try:
            with Path(output).open("wb") as out, \
                    progress(f"exporting {Path(path).name}", len(reader)) as task:
                n = export_xentrace(reader, out, progress=task.update)
        except OSError as exc:
            raise TraceError(f"{output}: cannot write: {exc.strerror}") from exc
        note = "" if reader.complete else f" ({_status(reader)})"
    click.echo(f"wrote {n:,} xentrace records to {output}{note}", err=True)


@trace.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True,
              help="pvmon trace to write (an existing trace there is replaced; any other "
                   "file only with --force).")
@click.option("--domain", type=click.IntRange(0, 0xFFFF), default=None,
              help="Domain whose calls to import (default: the only one with PV records).")
@click.option("--vcpu", type=click.IntRange(0, 0xFFFF), default=None,
              help="Only this vCPU of the domain (default: all).")
@click.option("--tsc-khz", type=click.IntRange(1, 100_000_000), default=1_000_000,
              show_default=True,
              help="TSC rate of the traced host, for virtual time (xentrace files do not say).")
@click.option("--force", is_flag=True, help="Overwrite an existing file that is not a trace.")
def import_(path: str, output: str, domain: int | None, vcpu: int | None, tsc_khz: int,
            force: bool) -> None:
    """Read a xentrace file (Xen's binary trace) into a pvmon trace of one
    domain's PV hypercalls, traps and event upcalls. The result holds no guest
    memory: trace cat/stats/diff/view and replay --coverage read it; verify and
    closed-loop replay refuse it (docs/xentrace.md)."""
    check_output(output, inputs=[path], force=force, option="-o", kind="trace")
    from pvmon.trace.xentrace.importer import import_xentrace
    info = import_xentrace(path, output, domain=domain, vcpu=vcpu, tsc_khz=tsc_khz)
    notes = []
    if info["lost_records"]:
        notes.append(f"{info['lost_records']:,} records lost by the hypervisor")
    if info["tsc_backsteps"]:
        notes.append(f"the TSC went backwards {info['tsc_backsteps']:,} times")
    if info["truncated_at"] is not None:
        notes.append(f"the file is cut short at byte {info['truncated_at']:#x}")
    dom = "an unnamed domain" if info["domain"] is None else f"domain {info['domain']}"
    vc = ", ".join(str(v) for v in info["vcpus"])
    click.echo(f"imported {info['events']:,} events of {dom} (vCPU {vc}) from "
               f"{info['records']:,} xentrace records into {output}"
               + (f" ({'; '.join(notes)})" if notes else ""), err=True)
