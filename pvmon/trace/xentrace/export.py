"""``pvmon trace export --format xentrace``: a pvmon trace as xentrace records.

What is written, per pvmon event (vCPU ``v`` of the trace runs on physical
CPU ``v``; the TSC is the event's virtual time in the trace's TSC units):

- ``hc`` -> ``TRC_PV_HYPERCALL_V2`` (arguments with presence bits, see
  :func:`~pvmon.trace.xentrace.records.hypercall_words`); a ``multicall`` is
  followed by one ``TRC_PV_HYPERCALL_SUBCALL`` per entry, its op and arguments
  read from the multicall list the call read from guest memory (recorded in
  the event's ``rd``), as Xen traces each entry before running it.
- ``fault`` -> ``TRC_PV_PAGE_FAULT`` (vector 14) or ``TRC_PV_TRAP``, 64-bit forms.
- ``upcall`` -> pvmon's ``TRC_PVMON_UPCALL`` (Xen traces no PV event delivery).
- ``exit`` of a guest that shut down or crashed -> ``TRC_SCHED_SHUTDOWN`` with
  the SHUTDOWN_* reason, as Xen traces SCHEDOP_shutdown.
- each CPU's first window starts with a ``TRC_SCHED_RUNSTATE_CHANGE`` of the
  guest's domain and vCPU from runnable to running, so xenalyze files the
  records under it.

Console bytes, CPUID and TSC reads have no xentrace record and are left out.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

from pvmon.backends.xen import abi
from pvmon.trace.xentrace import records as R

#: Bytes of records per window before a new CPU_CHANGE record (xentrace's
#: windows are at most one per-CPU buffer, a few pages to a few MB).
WINDOW_BYTES = 64 * 1024
#: Domain id written for the guest when the trace does not name one.
DEFAULT_DOMID = 1
PROGRESS_EVERY = 4096


def _multicall_entries(ev: dict[str, Any]) -> list[tuple[int, list[int]]]:
    """``(op, args)`` of each multicall entry, from the bytes the call read at
    its list address (``args[0]``); names only (no arguments) when the bytes
    were not recorded."""
    args = ev.get("args") or []
    op = ev.get("op") if isinstance(ev.get("op"), dict) else {}
    count = op.get("count") if type(op.get("count")) is int else 0
    base = args[0] if args and type(args[0]) is int else None
    size = abi.MULTICALL_ENTRY_SIZE
    got: dict[int, bytes] = {}
    for item in ev.get("rd") or []:
        if (isinstance(item, (list, tuple)) and len(item) == 3 and item[0] == "v"
                and type(item[1]) is int and isinstance(item[2], (bytes, bytearray))
                and base is not None):
            data = bytes(item[2])
            for i in range(count):
                lo = base + i * size - item[1]
                if 0 <= lo and lo + size <= len(data) and i not in got:
                    got[i] = data[lo:lo + size]
    out: list[tuple[int, list[int]]] = []
    names = op.get("calls") if isinstance(op.get("calls"), list) else []
    for i in range(max(0, min(count, 4096))):
        if i in got:
            words = struct.unpack("<8Q", got[i])
            out.append((words[0], list(words[2:8])))
        elif i < len(names) and isinstance(names[i], str):
            out.append((abi.HYPERCALL_NUMBERS.get(names[i], 0xFFFFF), []))
    return out


def _shutdown_code(ev: dict[str, Any]) -> int | None:
    """The SHUTDOWN_* reason of an ``exit`` the guest caused by shutting down
    (its detail names it: ``SCHEDOP_shutdown(poweroff)``) or crashing; None
    for any other ending."""
    reason, detail = ev.get("reason"), ev.get("detail")
    if reason not in ("shutdown", "crash"):
        return None
    codes = {v: k for k, v in abi.SHUTDOWN_REASONS.items()}
    m = re.search(r"\((\w+)\)", detail) if isinstance(detail, str) else None
    if m and m.group(1) in codes:
        return codes[m.group(1)]
    return codes["crash"] if reason == "crash" else codes["poweroff"]


def records_of(ev: dict[str, Any], tsc: int, domid: int = DEFAULT_DOMID) -> list[bytes]:
    """The xentrace records of one pvmon event (none for kinds xentrace has no
    record for); ``domid``: the guest's domain, for records that name it."""
    k = ev.get("k")
    if k == "exit":
        code = _shutdown_code(ev)
        cpu = ev.get("cpu") if type(ev.get("cpu")) is int else 0
        return [] if code is None else [R.pack_record(R.TRC_SCHED_SHUTDOWN,
                                                      (domid, cpu, code), tsc)]
    if k == "hc":
        if ev.get("abi", "xen") != "xen" or type(ev.get("nr")) is not int:
            return []
        args = [a for a in (ev.get("args") or []) if type(a) is int]
        out = [R.pack_record(R.TRC_PV_HYPERCALL_V2, R.hypercall_words(ev["nr"], args), tsc)]
        if ev.get("name") == "multicall":
            out += [R.pack_record(R.TRC_PV_HYPERCALL_SUBCALL, R.hypercall_words(op, a), tsc)
                    for op, a in _multicall_entries(ev)]
        return out
    if k == "fault":
        vec, err, rip = ev.get("vec"), ev.get("err"), ev.get("rip")
        rip = rip if type(rip) is int else 0
        if type(vec) is not int:
            return []
        if vec == 14:
            cr2 = ev.get("cr2") if type(ev.get("cr2")) is int else 0
            return [R.pack_record(R.TRC_PV_PAGE_FAULT | R.TRC_64_FLAG,
                                  (rip, rip >> 32, cr2, cr2 >> 32,
                                   err if type(err) is int else 0), tsc)]
        word = (vec & 0x7FFF) | ((1 << 15 | (err & 0xFFFF) << 16) if type(err) is int else 0)
        return [R.pack_record(R.TRC_PV_TRAP | R.TRC_64_FLAG, (rip, rip >> 32, word), tsc)]
    if k == "upcall":
        rip = ev.get("rip") if type(ev.get("rip")) is int else 0
        ports = [p for p in (ev.get("ports") or []) if type(p) is int][:5]
        return [R.pack_record(R.TRC_PVMON_UPCALL, (rip, rip >> 32, *ports), tsc)]
    return []


def export_xentrace(reader: Any, out: BinaryIO, *,
                    progress: Callable[[int], None] | None = None) -> int:
    """Write the events of ``reader`` (a :class:`~pvmon.trace.TraceReader`) to
    ``out`` as a xentrace file. Returns the number of xentrace records written
    (CPU_CHANGE and SCHED_SWITCH framing records not counted). Raises OSError
    when writing fails."""
    h = reader.header
    khz = h.get("tsc_khz") if type(h.get("tsc_khz")) is int and h.get("tsc_khz") > 0 \
        else 1_000_000
    layout = h.get("layout") if isinstance(h.get("layout"), dict) else {}
    domid = layout.get("domid") if type(layout.get("domid")) is int else DEFAULT_DOMID
    started: set[int] = set()
    window: list[bytes] = []
    size = 0
    cpu_now = -1
    n = 0

    def flush() -> None:
        nonlocal size
        if window:
            out.write(R.cpu_change(cpu_now, size))
            out.writelines(window)
            window.clear()
            size = 0

    for i, ev in enumerate(reader):
        if progress is not None and i % PROGRESS_EVERY == 0:
            progress(i)
        t = ev.get("t")
        tsc = t * khz // 1_000_000 if type(t) is int and t >= 0 else 0
        recs = records_of(ev, tsc, domid)
        if not recs:
            continue
        cpu = ev.get("cpu") if type(ev.get("cpu")) is int and 0 <= ev["cpu"] < R.MAX_PCPUS else 0
        if cpu != cpu_now or size >= WINDOW_BYTES:
            flush()
            cpu_now = cpu
        if cpu not in started:
            started.add(cpu)
            recs = [R.runstate_change(domid, cpu, R.RUNSTATE_RUNNABLE, R.RUNSTATE_RUNNING, tsc),
                    *recs]
            n -= 1
        window.extend(recs)
        size += sum(len(r) for r in recs)
        n += len(recs)
    flush()
    if progress is not None:
        progress(len(reader))
    return n
