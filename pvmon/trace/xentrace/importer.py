"""``pvmon trace import``: a xentrace file into a pvmon trace of the calls it holds.

Two passes over the file. The first follows which domain and vCPU run on
each physical CPU (``TRC_SCHED_RUNSTATE_CHANGE`` to running,
``TRC_SCHED_SWITCH``'s next vCPU, the current vCPU a ``TRC_LOST_RECORDS``
names) and counts the PV records per domain, to choose the domain (and
vCPUs) and to write a complete header. The second writes one pvmon event per
record of the chosen domain:

- ``TRC_PV_HYPERCALL_V2`` (and the older ``TRC_PV_HYPERCALL``) -> ``hc`` with
  ``nr``, ``name``, ``args`` (five; an argument the record does not carry is
  0), ``op`` decoded from the argument
  registers where the sub-op is one (``sched_op``, ``vcpu_op``, ...; not where
  it sits in guest memory, as ``mmuext_op``'s), ``ret`` None (xentrace does
  not trace results); the ``TRC_PV_HYPERCALL_SUBCALL`` records after a
  ``multicall`` become its ``op["calls"]``, as pvmon records a multicall.
- ``TRC_PV_TRAP`` / ``TRC_PV_PAGE_FAULT`` -> ``fault``; pvmon's
  ``TRC_PVMON_UPCALL`` -> ``upcall``; ``TRC_LOST_RECORDS`` -> ``lost`` (``n``
  records the hypervisor dropped on that CPU); the domain's last
  ``TRC_SCHED_SHUTDOWN`` (or ``_CODE``) -> the trace's ``exit`` (``shutdown``,
  or ``crash`` for SHUTDOWN_crash), written last as pvmon's recorder does.

Virtual time is the TSC since the file's first record, in ns at ``tsc_khz``.
The header says the trace was imported (``imported``): it holds no guest
memory, so replay refuses to verify it or replay it closed-loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvmon import __version__
from pvmon.backends.xen import abi
from pvmon.errors import TraceError
from pvmon.trace.xentrace import records as R
from pvmon.trace.xentrace.reader import Record, XentraceReader

#: The TSC rate assumed when the user gives none: pvmon's own (1 GHz), which
#: its exports use.
DEFAULT_TSC_KHZ = 1_000_000
#: Hypercalls whose first argument register is the sub-op (the others that
#: :data:`abi.SUBOPS` names read it from guest memory).
_CMD_IN_ARG0 = frozenset(abi.SUBOPS) - {"mmuext_op", "event_channel_op_compat",
                                        "set_segment_base"}
#: Events held behind a multicall whose vCPU has not run since, before the
#: multicall is closed as it stands (bounds the importer's memory).
MAX_HELD = 65536
#: Key of an unknown domain (a file without scheduler records).
UNKNOWN = -1


@dataclass
class Survey:
    """What the first pass found: PV records per (domain, vCPU) (domain
    :data:`UNKNOWN` when no scheduler record said), records in all, lost
    records, TSC backsteps, and the first TSC."""

    pv: Counter = field(default_factory=Counter)
    records: int = 0
    lost: int = 0
    backsteps: int = 0
    first_tsc: int | None = None


class _Current:
    """Which (domain, vCPU) runs on each physical CPU, from scheduler records."""

    def __init__(self) -> None:
        self.now: dict[int, tuple[int, int]] = {}

    def see(self, rec: Record) -> None:
        ev, d = rec.event, rec.data
        if ev & 0x0FFFF00F == R.TRC_SCHED_RUNSTATE_CHANGE and d:
            if (ev >> 4) & 0xF == R.RUNSTATE_RUNNING:
                self.now[rec.cpu] = (d[0] >> 16, d[0] & 0xFFFF)
        elif ev == R.TRC_SCHED_SWITCH and len(d) >= 4:
            self.now[rec.cpu] = (d[2], d[3])
        elif ev == R.TRC_LOST_RECORDS and len(d) >= 2:
            self.now[rec.cpu] = (d[1] & 0xFFFF, d[1] >> 16)

    def of(self, cpu: int) -> tuple[int, int]:
        return self.now.get(cpu, (UNKNOWN, cpu))


def _is_pv(ev: int) -> bool:
    base = ev & ~R.TRC_64_FLAG
    return base in (R.TRC_PV_HYPERCALL, R.TRC_PV_HYPERCALL_V2, R.TRC_PV_HYPERCALL_SUBCALL,
                    R.TRC_PV_TRAP, R.TRC_PV_PAGE_FAULT) or ev == R.TRC_PVMON_UPCALL


def survey(reader: XentraceReader, progress: Callable[[int], None] | None = None) -> Survey:
    """The first pass (see :class:`Survey`)."""
    s = Survey()
    cur = _Current()
    for rec in reader.records():
        s.records += 1
        if progress is not None and s.records % 65536 == 0:
            progress(rec.offset)
        if s.first_tsc is None and rec.tsc is not None:
            s.first_tsc = rec.tsc
        s.backsteps += rec.backstep
        cur.see(rec)
        if rec.event == R.TRC_LOST_RECORDS and rec.data:
            s.lost += rec.data[0]
        elif _is_pv(rec.event):
            s.pv[cur.of(rec.cpu)] += 1
    return s


def _domain_name(d: int) -> str:
    return "unknown (no scheduler records)" if d == UNKNOWN else str(d)


def choose_domain(s: Survey, domain: int | None, vcpu: int | None, name: str) -> int:
    """The domain to import: ``domain`` when it has PV records, else the one
    non-idle domain that has. Raises TraceError naming the candidates."""
    doms = Counter()
    for (d, v), n in s.pv.items():
        if d != R.IDLE_DOMAIN and (vcpu is None or v == vcpu):
            doms[d] += n
    listed = ", ".join(f"{_domain_name(d)} ({n:,} records)" for d, n in doms.most_common())
    if not doms:
        what = f" on vCPU {vcpu}" if vcpu is not None else ""
        raise TraceError(f"{name}: no PV hypercall, trap or upcall records{what} "
                         f"({s.records:,} records read; an HVM or Arm trace has none)")
    if domain is not None:
        if domain not in doms:
            raise TraceError(f"{name}: domain {domain} has no PV records"
                             + (f" on vCPU {vcpu}" if vcpu is not None else "")
                             + f"; domains with some: {listed}")
        return domain
    if len(doms) > 1:
        raise TraceError(f"{name}: PV records of several domains: {listed}; choose one with "
                         "--domain")
    return next(iter(doms))


def _decode_op(name: str, args: list[int | None]) -> dict[str, Any]:
    """The sub-op (and what else the registers say) of a call, as pvmon decodes it."""
    op: dict[str, Any] = {}
    a0 = args[0]
    if name in _CMD_IN_ARG0 and a0 is not None:
        table = abi.SUBOPS[name]
        cmd = a0 & abi.GNTTABOP_CMD_MASK if name == "grant_table_op" else a0
        op["cmd"] = table.get(cmd, cmd)
        if name == "vm_assist" and args[1] is not None:
            op["type"] = abi.VMASST_TYPES.get(args[1], args[1])
        if name == "vcpu_op" and args[1] is not None:
            op["vcpu"] = args[1]
        if name == "grant_table_op" and args[2] is not None:
            op["count"] = args[2]
    elif name == "set_segment_base" and a0 is not None:
        op["which"] = abi.SEGBASE_NAMES.get(a0, a0)
        if args[1] is not None:
            op["base"] = args[1]
    elif name in ("mmu_update", "mmuext_op", "multicall") and args[1] is not None:
        op["count"] = args[1] & ~abi.MMU_UPDATE_PREEMPTED & 0xFFFF_FFFF
    return op


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_xentrace(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                    domain: int | None = None, vcpu: int | None = None,
                    tsc_khz: int = DEFAULT_TSC_KHZ,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Read xentrace file ``src`` and write pvmon trace ``dst`` holding the PV
    calls, traps and upcalls of ``domain`` (default: the only domain with
    some) on ``vcpu`` (default: all). Returns the header's ``imported`` map
    plus ``events`` (written). Raises :class:`~pvmon.errors.TraceError` (one
    line) for a file that is not a readable x86 xentrace file or holds no PV
    records to import; ``progress`` gets byte offsets of the second pass."""
    from pvmon.trace.writer import TraceWriter
    src = Path(src)
    if not 1 <= tsc_khz <= 100_000_000:
        raise TraceError(f"--tsc-khz {tsc_khz}: outside 1 to 100,000,000 kHz")
    with XentraceReader(src) as reader:
        s = survey(reader)
        dom = choose_domain(s, domain, vcpu, src.name)
        vcpus = sorted({v for (d, v) in s.pv if d == dom and (vcpu is None or v == vcpu)})
        info: dict[str, Any] = {
            "format": "xentrace", "file": src.name, "size": reader.size, "sha256": _sha256(src),
            "domain": None if dom == UNKNOWN else dom, "vcpus": vcpus,
            "records": s.records, "lost_records": s.lost, "tsc_backsteps": s.backsteps,
            "truncated_at": reader.truncated_at,
        }
        header = {
            "pvmon": __version__,
            "guest": {"name": f"xentrace:{src.name}", "package": None, "version": None,
                      "sha256": None},
            "backend": {"name": None, "abi": "xen", "version": None},
            "machine": {"vcpus": len(vcpus)},
            "vtime_base_ns": 0, "tsc_khz": tsc_khz, "imported": info,
        }
        first = s.first_tsc or 0
        w = _EventWriter(TraceWriter(dst, header), first, tsc_khz, vcpus)
        cur = _Current()
        try:
            for i, rec in enumerate(reader.records()):
                if progress is not None and i % 65536 == 0:
                    progress(rec.offset)
                cur.see(rec)
                d, v = cur.of(rec.cpu)
                if rec.event == R.TRC_LOST_RECORDS and rec.data:
                    w.emit({"k": "lost", "n": rec.data[0]}, rec, v if d == dom else None)
                    continue
                if (rec.event in (R.TRC_SCHED_SHUTDOWN, R.TRC_SCHED_SHUTDOWN_CODE)
                        and len(rec.data) >= 3 and rec.data[0] == dom
                        and (vcpu is None or rec.data[1] == vcpu)):
                    w.shutdown = (rec, rec.data[1], rec.data[2])
                    continue
                if d != dom or (vcpu is not None and v != vcpu) or not _is_pv(rec.event):
                    continue
                w.pv(rec, v)
            w.close()
        except BaseException:
            w.abort()
            raise
    info["events"] = w.seq
    return info


class _EventWriter:
    """Turns PV records into pvmon events in order, holding a multicall back
    until the records after it show all its entries."""

    def __init__(self, writer: Any, first_tsc: int, tsc_khz: int, vcpus: list[int]) -> None:
        self.w = writer
        self.first = first_tsc
        self.khz = tsc_khz
        self.cpu_of = {v: i for i, v in enumerate(vcpus)} if len(vcpus) > 1 else {}
        self.seq = 0
        self.last_t = 0
        self.pending: list[dict[str, Any]] = []   # events held behind an open multicall
        self.multicall: dict[int, dict[str, Any]] = {}   # vCPU -> its open multicall
        #: the domain's last shutdown record, vCPU and reason, written as the exit
        self.shutdown: tuple[Record, int, int] | None = None

    def _t(self, rec: Record) -> int:
        if rec.tsc is None:
            return self.last_t
        t = max(self.last_t, (rec.tsc - self.first) * 1_000_000 // self.khz)
        if t >= 1 << 63:
            raise TraceError(f"byte {rec.offset:#x}: TSC {rec.tsc:#x} is {t:,} ns after the "
                             "first record, beyond pvmon's 64-bit virtual time (a corrupt "
                             "record, or --tsc-khz too small)")
        self.last_t = t
        return t

    def emit(self, ev: dict[str, Any], rec: Record, v: int | None) -> None:
        ev["seq"] = -1
        ev["t"] = self._t(rec)
        ev["cpu"] = self.cpu_of.get(v, 0) if v is not None else 0
        self.pending.append(ev)
        self._drain()

    def _drain(self) -> None:
        if len(self.pending) > MAX_HELD:      # a vCPU silent after its multicall: let go
            self.multicall.clear()
        held = {id(e) for e in self.multicall.values()}
        i = 0
        while i < len(self.pending) and id(self.pending[i]) not in held:
            ev = self.pending[i]
            ev["seq"] = self.seq
            self.w.append(ev)
            self.seq += 1
            i += 1
        del self.pending[:i]

    def pv(self, rec: Record, v: int) -> None:
        ev, d = rec.event, rec.data
        base = ev & ~R.TRC_64_FLAG
        if base == R.TRC_PV_HYPERCALL_SUBCALL:
            nr, args = R.hypercall_args(d)
            mc = self.multicall.get(v)
            if mc is not None:
                mc["op"]["calls"].append(abi.hypercall_name(nr))
                return
            self._hypercall(rec, v, nr, args, rip=None)
            return
        if v in self.multicall:          # any other record of this vCPU closes its multicall
            del self.multicall[v]
            self._drain()
        if base == R.TRC_PV_HYPERCALL_V2:
            nr, args = R.hypercall_args(d)
            self._hypercall(rec, v, nr, args, rip=None)
        elif base == R.TRC_PV_HYPERCALL:
            wide = bool(ev & R.TRC_64_FLAG)
            need = 3 if wide else 2
            if len(d) >= need:
                rip = d[0] | d[1] << 32 if wide else d[0]
                self._hypercall(rec, v, d[need - 1], [None] * 6, rip=rip)
        elif base == R.TRC_PV_TRAP:
            wide = bool(ev & R.TRC_64_FLAG)
            need = 3 if wide else 2
            if len(d) >= need:
                rip = d[0] | d[1] << 32 if wide else d[0]
                word = d[need - 1]
                err = word >> 16 if word >> 15 & 1 else None
                self.emit({"k": "fault", "vec": word & 0x7FFF, "err": err, "rip": rip,
                           "cs": None}, rec, v)
        elif base == R.TRC_PV_PAGE_FAULT:
            wide = bool(ev & R.TRC_64_FLAG)
            if len(d) >= (5 if wide else 3):
                rip, cr2, err = ((d[0] | d[1] << 32, d[2] | d[3] << 32, d[4]) if wide
                                 else (d[0], d[1], d[2]))
                self.emit({"k": "fault", "vec": 14, "err": err, "rip": rip, "cr2": cr2,
                           "cs": None}, rec, v)
        elif ev == R.TRC_PVMON_UPCALL and len(d) >= 2:
            self.emit({"k": "upcall", "rip": d[0] | d[1] << 32, "ports": list(d[2:])}, rec, v)

    def _hypercall(self, rec: Record, v: int, nr: int, args: list[int | None],
                   rip: int | None) -> None:
        name = abi.hypercall_name(nr)
        op = _decode_op(name, args)
        ev = {"k": "hc", "abi": "xen", "nr": nr, "name": name,
              "args": [a if a is not None else 0 for a in args[:5]], "op": op,
              "ret": None, "rip": rip, "via": None, "rd": [], "wr": [], "ev": []}
        if name == "multicall":
            op["calls"] = []
            self.multicall[v] = ev
        self.emit(ev, rec, v)

    def close(self) -> None:
        self.multicall.clear()
        self._drain()
        if self.shutdown is not None:
            rec, v, code = self.shutdown
            name = abi.SHUTDOWN_REASONS.get(code, str(code))
            self.emit({"k": "exit", "reason": "crash" if name == "crash" else "shutdown",
                       "rip": None, "detail": f"SCHEDOP_shutdown({name})"}, rec, v)
        if self.seq == 0:
            self.w.close()
            raise TraceError("no events to import")
        self.w.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):   # the first error is the one to report
            self.w.close()
        with contextlib.suppress(OSError):
            Path(self.w.path).unlink()
