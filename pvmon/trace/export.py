"""Exporting traces to other tools: Perfetto (Chrome trace-event JSON) and JSON lines."""

from __future__ import annotations

import json
from typing import Any, TextIO

from pvmon.trace.reader import TraceReader
from pvmon.trace.render import describe, fault_name, jsonable

PID = 1
CONSOLE_TID = 10_000  # the console gets a track of its own
LAST_SLICE_NS = 1_000  # duration of a hypercall with no later event on its vCPU


def _us(t_ns: int) -> float:
    return t_ns / 1000.0


def export_jsonl(reader: TraceReader, out: TextIO) -> int:
    """Header on the first line, then one event per line (bytes as hex). Returns events written."""
    out.write(json.dumps(jsonable(reader.header), separators=(",", ":")) + "\n")
    n = 0
    for ev in reader:
        out.write(json.dumps(jsonable(ev), separators=(",", ":")) + "\n")
        n += 1
    return n


def export_perfetto(reader: TraceReader, out: TextIO) -> int:
    """Chrome trace-event JSON (opens in ui.perfetto.dev). Returns trace events written.

    One process (the guest); one thread track per vCPU, plus a console track.
    Hypercalls are complete (``"X"``) slices lasting until the next event on
    the same vCPU (:data:`LAST_SLICE_NS` for the last one; zero when the next
    event has the same virtual time). Faults, upcalls, console output, TSC and
    CPUID reads and the exit are instant (``"i"``) events. Timestamps are
    virtual time in microseconds.
    """
    header = reader.header
    guest = header.get("guest") if isinstance(header.get("guest"), dict) else {}
    backend = header.get("backend") if isinstance(header.get("backend"), dict) else {}
    pname = f"{guest.get('name', 'guest')} on {backend.get('name', '?')}-{backend.get('version', '?')}"
    out.write('{"displayTimeUnit":"ns","otherData":')
    out.write(json.dumps(jsonable({"pvmon_header": header})))
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

    emit({"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": pname}})
    emit({"ph": "M", "name": "thread_name", "pid": PID, "tid": CONSOLE_TID,
          "args": {"name": "console"}})
    named: set[Any] = set()
    pending: dict[int, tuple[int, dict[str, Any]]] = {}
    for ev in reader:
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
                    args[key] = jsonable(ev[key])
            pending[tid] = (t, {"ph": "X", "cat": "hypercall", "name": str(ev.get("name")),
                                **base, "args": args})
            continue
        if k == "con":
            if ev.get("dir") != "out":
                continue
            base["tid"] = CONSOLE_TID
            name = "console"
        elif k == "fault":
            name = fault_name(ev.get("vec"))
        else:
            name = str(k)
        args = jsonable({key: v for key, v in ev.items() if key not in ("t", "k")})
        emit({"ph": "i", "s": "g" if k == "exit" else "t", "cat": str(k), "name": name, **base,
              "args": args})
    for _t, slice_ in pending.values():
        slice_["dur"] = _us(LAST_SLICE_NS)
        emit(slice_)
    out.write("\n]}\n")
    return written
