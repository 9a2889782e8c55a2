"""Exporting traces to other tools: Perfetto (Chrome trace-event JSON) and JSON lines.

The Perfetto export is read by JavaScript (``JSON.parse`` in ui.perfetto.dev,
chrome://tracing), which parses every number as a double: integers beyond
2**53 come back rounded. So every address-like value (the keys
:data:`pvmon.trace.render.HEX_KEYS` names: RIPs, frame numbers, PTEs, ...,
and raw hypercall argument registers) and every other integer a double cannot
hold exactly is written as a hex string (``"0xffffffff81c91797"``). Console
output is text. The JSON lines export keeps the trace's values as they are
(integers exact, bytes as hex), for tools that read 64-bit integers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, TextIO

from rich import filesize

from pvmon.trace.reader import TraceReader
from pvmon.trace.render import _is_hex_key, describe, fault_name, jsonable

PID = 1
CONSOLE_TID = 10_000  # the console gets a track of its own
LAST_SLICE_NS = 1_000  # duration of a hypercall with no later event on its vCPU
#: The largest integer a JSON parser that uses doubles reads back exactly.
MAX_SAFE_INT = 2**53 - 1
#: Exports estimated above this many bytes get a warning before they are written.
LARGE_EXPORT_BYTES = 512 * 1024 * 1024
#: Keys whose integer values are shown in hex in the Perfetto export, beside
#: :data:`~pvmon.trace.render.HEX_KEYS`: a hypercall's raw argument registers.
_EXTRA_HEX_KEYS = frozenset({"args"})
#: Events between two calls of an export's ``progress`` callback.
PROGRESS_EVERY = 4096

Progress = Callable[[int], None]
"""An export's progress callback: called with the number of events written so far."""


def _us(t_ns: int) -> float:
    return t_ns / 1000.0


def js_value(value: Any, key: Any = None) -> Any:
    """``value`` ready for a JSON parser that reads numbers as doubles.

    Integers on address-like ``key`` s (:func:`pvmon.trace.render._is_hex_key`,
    and ``args``) and integers outside +-:data:`MAX_SAFE_INT` become hex strings
    (``-0x10`` for negatives); bytes become hex strings; map keys strings; lists
    and maps are converted element by element (a list's elements take its key).
    """
    if type(value) is int:
        if abs(value) > MAX_SAFE_INT or (
                isinstance(key, str) and (key in _EXTRA_HEX_KEYS or _is_hex_key(key))):
            return hex(value)
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): js_value(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [js_value(v, key) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return value


def console_text(data: Any) -> str:
    """Console bytes as text: UTF-8, undecodable bytes as ``\\xNN``."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", "backslashreplace")
    return str(data)


def _console_name(ev: dict[str, Any], text: str) -> str:
    """The name a console instant is shown under: its first line of text."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) > 80:
        line = line[:79] + "\u2026"
    shown = line or repr(text)
    return f"typed: {shown}" if ev.get("dir") == "in" else shown


def process_name(header: dict[str, Any]) -> str:
    """``"debian-6.12 on xen-4.17"``: the recorded guest and backend names."""
    guest = header.get("guest") if isinstance(header.get("guest"), dict) else {}
    backend = header.get("backend") if isinstance(header.get("backend"), dict) else {}
    return f"{guest.get('name', 'guest')} on {backend.get('name', '?')}"


def export_jsonl(reader: TraceReader, out: TextIO, *, start: int = 0, stop: int | None = None,
                 progress: Progress | None = None) -> int:
    """Header on the first line, then one event per line (bytes as hex, integers as
    recorded). ``start``/``stop``: the event range (seq, ``stop`` exclusive).
    ``progress``: see :data:`Progress`. Returns events written."""
    out.write(json.dumps(jsonable(reader.header), separators=(",", ":")) + "\n")
    n = 0
    for ev in reader.events(start, stop):
        out.write(json.dumps(jsonable(ev), separators=(",", ":")) + "\n")
        n += 1
        if progress is not None and not n % PROGRESS_EVERY:
            progress(n)
    return n


def export_perfetto(reader: TraceReader, out: TextIO, *, start: int = 0,
                    stop: int | None = None, progress: Progress | None = None) -> int:
    """Chrome trace-event JSON (opens in ui.perfetto.dev). Returns trace events written.

    One process (the guest, named ``"<guest> on <backend>"``); one thread
    track per vCPU, plus a console track. Hypercalls are complete (``"X"``)
    slices lasting until the next event on the same vCPU
    (:data:`LAST_SLICE_NS` for the last one; zero when the next event has the
    same virtual time). Faults, upcalls, console output and input (named by
    their text, the text in ``args.text``), TSC and CPUID reads and the exit
    are instant (``"i"``) events. Timestamps are virtual time in microseconds.
    Values are written as :func:`js_value` makes them (addresses as hex
    strings). ``start``/``stop``: the event range (seq, ``stop`` exclusive);
    ``progress``: see :data:`Progress`.
    """
    header = reader.header
    out.write('{"displayTimeUnit":"ns","otherData":')
    out.write(json.dumps(js_value({"pvmon_header": header})))
    out.write(',"traceEvents":[\n')
    first = True
    written = 0

    def emit(obj: dict[str, Any]) -> None:
        nonlocal first, written
        if not first:
            out.write(",\n")
        first = False
        out.write(json.dumps(obj, separators=(",", ":")))
        written += 1

    emit({"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
          "args": {"name": process_name(header)}})
    emit({"ph": "M", "name": "thread_name", "pid": PID, "tid": CONSOLE_TID,
          "args": {"name": "console"}})
    named: set[Any] = set()
    pending: dict[int, tuple[int, dict[str, Any]]] = {}
    n = 0
    for ev in reader.events(start, stop):
        n += 1
        if progress is not None and not n % PROGRESS_EVERY:
            progress(n)
        cpu = ev.get("cpu")
        tid = cpu if type(cpu) is int else 0
        t = ev["t"]
        if tid not in named:
            named.add(tid)
            emit({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid,
                  "args": {"name": f"vCPU {tid}"}})
        prev = pending.pop(tid, None)
        if prev is not None:
            prev[1]["dur"] = _us(t - prev[0])
            emit(prev[1])
        k = ev["k"]
        base = {"pid": PID, "tid": tid, "ts": _us(t)}
        if k == "hc":
            args = {"seq": ev["seq"], "call": describe(ev)}
            for key in ("op", "ret", "rip", "args", "via", "abi", "nr", "ev"):
                if key in ev:
                    args[key] = js_value(ev[key], key)
            pending[tid] = (t, {"ph": "X", "cat": "hypercall", "name": str(ev.get("name")),
                                **base, "args": args})
            continue
        if k == "con":
            text = console_text(ev.get("data"))
            base["tid"] = CONSOLE_TID
            emit({"ph": "i", "s": "t", "cat": "con", "name": _console_name(ev, text), **base,
                  "args": {"seq": ev.get("seq"), "dir": str(ev.get("dir")),
                           "ch": str(ev.get("ch")), "text": text}})
            continue
        name = fault_name(ev.get("vec")) if k == "fault" else str(k)
        args = js_value({key: v for key, v in ev.items() if key not in ("t", "k")})
        emit({"ph": "i", "s": "g" if k == "exit" else "t", "cat": str(k), "name": name, **base,
              "args": args})
    for _t, slice_ in pending.values():
        slice_["dur"] = _us(LAST_SLICE_NS)
        emit(slice_)
    out.write("\n]}\n")
    return written


EXPORTERS = {"perfetto": export_perfetto, "jsonl": export_jsonl}


class _Count(io.TextIOBase):
    """A text sink that only counts what is written to it (UTF-8 bytes)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, s: str) -> int:
        self.n += len(s.encode("utf-8"))
        return len(s)


def estimate_size(reader: TraceReader, fmt: str, *, start: int = 0,
                  stop: int | None = None, sample_frames: int = 8) -> int:
    """Estimated bytes of exporting events ``[start, stop)`` of ``reader`` as
    ``fmt`` (``perfetto`` or ``jsonl``): the mean size per event of up to
    ``sample_frames`` frames spread over the range, times its events."""
    stop = len(reader) if stop is None else min(stop, len(reader))
    count = max(0, stop - start)
    frames = [i for i, f in enumerate(reader.frames)
              if f.first_seq < stop and f.first_seq + f.count > start]
    if not count or not frames:
        return 0
    step = max(1, len(frames) // sample_frames)
    sampled = frames[::step][:sample_frames]
    sink, events = _Count(), 0
    for i in sampled:
        f = reader.frames[i]
        lo, hi = max(start, f.first_seq), min(stop, f.first_seq + f.count)
        EXPORTERS[fmt](reader, sink, start=lo, stop=hi)
        events += hi - lo
    return round(sink.n / events * count) if events else 0


def large_export_warning(reader: TraceReader, fmt: str, *, start: int = 0,
                         stop: int | None = None,
                         threshold: int = LARGE_EXPORT_BYTES) -> str | None:
    """One line warning that exporting ``[start, stop)`` as ``fmt`` will write
    more than ``threshold`` bytes (with the estimate), or None when it will not."""
    size = estimate_size(reader, fmt, start=start, stop=stop)
    if size <= threshold:
        return None
    stop = len(reader) if stop is None else min(stop, len(reader))
    where = (" (ui.perfetto.dev and chrome://tracing may fail to open a JSON trace this "
             "large)" if fmt == "perfetto" else "")
    return (f"this export will write about {filesize.decimal(int(size))} for {stop - start:,} events"
            f"{where}")

