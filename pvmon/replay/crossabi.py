"""Cross-ABI open-loop replay: a trace of one ABI replayed, operation by
operation, against a backend of another ABI (docs/pvops.md, "Cross-ABI
replay").

Each event of the trace is read as canonical operations
(:class:`pvmon.pvops.Deriver`, the source ABI's mapping). Each operation is
handed to the target ABI's *express* module (``pvmon/backends/<abi>/express.py``,
found through :data:`pvmon.backends.registry.EXPRESS_BY_ABI`), which says how
that ABI expresses it: the call(s) and their arguments, ``native`` (the CPU
does it, no call), or ``inexpressible``, with what precision the translation
loses, in numbers. The calls are fed to a real backend of the target ABI,
attached to a real domain of the target's reference guest that is built and
never run (as same-ABI open loop feeds a backend without the guest), and its
answers are compared with what the source answered.

This module knows no ABI. An express module provides:

* ``ABI`` (the key: ``xen``, ``xen-pvh``, ``kvm``, ``lguest``, ``vmi``),
  ``LABEL`` (``"Xen PV"``), ``REFERENCE_GUEST`` (the built-in guest whose domain
  the target backend is attached to) and ``MODE`` (its guest mode, or None);
* ``WAYS``: canonical operation -> :class:`Way`, for every operation of
  :data:`pvmon.pvops.vocab.OPS` (a test fails when one is missing);
* ``express(op, ctx) -> Expressed | None`` for the operations whose way is
  ``call``, and for the native ones named in ``EXPRESS_NATIVE`` (optional: a
  native way may still lose precision, such as a TSC deadline's rounding);
  None: as the table says, no call and nothing lost;
* ``setup(ctx) -> list[Call]``: calls the target domain needs before any
  other (lguest's LGUEST_INIT), or none;
* ``batch_calls(n) -> int``: the target calls a source batch whose entries
  became ``n`` calls costs in all (one multicall; ``n`` ring entries and one
  FLUSH_ASYNC; ``n`` calls and two SetLazyMode; ...);
* ``RET_IS_STATUS``: whether a call's return value is a status (negative: refused);
  optionally ``VIRTUAL_ARGS`` (the calls read guest-virtual pointers, served from
  each :class:`Call`'s ``v`` memory), ``EXPRESS_NATIVE`` (above) and
  ``cycle_hz(target)`` (the frequency of the target's cycles, default the source's).

Units: times in ns (absolute or relative as the canonical op says), cycles at
the frequency the guest was told (:func:`ns_to_cycles`, :func:`cycles_to_ns`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from pvmon.errors import BackendError, TraceError
from pvmon.pvops import Deriver, PvOp
from pvmon.pvops.vocab import OPS

_U64 = (1 << 64) - 1
#: Operations that arm a timer (counted in the report's ``timers``).
_TIMERS = frozenset({"time.oneshot", "time.periodic"})
#: The kinds of :class:`Way`.
HOW = ("call", "native", "inexpressible")


@dataclass(frozen=True, slots=True)
class Way:
    """How one ABI expresses one canonical operation. ``how``: ``call``,
    ``native`` or ``inexpressible``; ``calls``: the call names (``call``), or
    the evidence (``native``: ``("wrmsr IA32_TSC_DEADLINE",)``); ``why``: the
    reason an operation is native or inexpressible; ``source``: the header,
    source file or document it comes from."""
    how: str
    calls: tuple[str, ...] = ()
    why: str = ""
    source: str = ""


def call(*names: str, source: str = "", why: str = "") -> Way:
    """A :class:`Way` through the ABI's call(s) ``names``."""
    return Way("call", names, why, source)


def native(evidence: str, why: str = "", source: str = "") -> Way:
    """A :class:`Way` the CPU (or an emulated device) performs without a call."""
    return Way("native", (evidence,), why, source)


def never(why: str, source: str = "") -> Way:
    """A :class:`Way` saying the ABI cannot express the operation, and why."""
    return Way("inexpressible", (), why, source)


@dataclass(slots=True)
class Call:
    """One call to feed the target backend. ``kind``: ``hc`` (``backend.call(nr,
    args)``) or ``msr`` (``backend.msr(True, nr, args[0])``); ``mem``: guest memory
    the call reads, as ``(space, address, bytes)`` (``v`` guest-virtual, served
    to the backend as recorded reads; ``p`` guest-physical, written into the
    target domain's RAM first); ``fed``: False for a call that acts on vCPU
    registers open loop does not model (counted, not run)."""
    name: str
    nr: int
    args: tuple[int, ...]
    mem: tuple[tuple[str, int, bytes], ...] = ()
    kind: str = "hc"
    fed: bool = True


@dataclass(slots=True)
class Loss:
    """Precision an expression lost: ``what`` (a short class, the report's
    key: ``"deadline rounded to cycles"``), ``detail`` (with the numbers) and,
    for time, ``err_ns`` (target minus source, ns)."""
    what: str
    detail: str
    err_ns: int | None = None


@dataclass(slots=True)
class Expressed:
    """One canonical operation in the target ABI: ``how`` as :class:`Way`,
    the ``calls`` to make, the ``losses``, and ``why`` (inexpressible)."""
    how: str
    calls: list[Call] = field(default_factory=list)
    losses: list[Loss] = field(default_factory=list)
    why: str = ""


# ------------------------------------------------------------------ units
def ns_to_cycles(ns: int, hz: int) -> int:
    """``ns`` nanoseconds as cycles of a ``hz`` counter, rounded to nearest
    (half up). Round trip: ``|cycles_to_ns(ns_to_cycles(ns, hz), hz) - ns| <=
    ceil(5e8 / hz)`` ns."""
    return (ns * hz + 500_000_000) // 1_000_000_000


def cycles_to_ns(cycles: int, hz: int) -> int:
    """``cycles`` of a ``hz`` counter in nanoseconds, rounded to nearest."""
    return (cycles * 1_000_000_000 + hz // 2) // hz


def rounding_bound_ns(hz: int) -> int:
    """The largest error (ns) of a ns -> cycles -> ns round trip at ``hz``."""
    return -(-500_000_000 // hz)


@dataclass(slots=True)
class Deadline:
    """A timer operation's deadline in ns: ``abs_ns`` (absolute virtual time)
    and ``rel_ns`` (from the operation's own time), both known once
    normalized, and ``given`` how the source ABI gave it."""
    abs_ns: int
    rel_ns: int
    given: str


def deadline_of(op: PvOp, src_hz: int) -> Deadline | None:
    """The deadline of a ``time.oneshot`` (or the period of a
    ``time.periodic``, as ``rel_ns``) from its canonical arguments, whatever
    the source ABI: ``deadline_ns`` absolute (Xen), ``delta_ns`` relative
    (lguest), ``deadline_cycles`` absolute cycles (VMI, at ``src_hz``),
    ``deadline_tsc`` (an HVM guest's TSC deadline, at ``src_hz``), ``period_ns``
    / ``period_cycles``. None when the operation carries none."""
    a, now = op.args, op.t
    if op.op == "time.periodic":
        p = a.get("period_ns")
        if type(p) is int:
            return Deadline(now + p, p, "period ns")
        p = a.get("period_cycles")
        if type(p) is int:
            ns = cycles_to_ns(p, src_hz)
            return Deadline(now + ns, ns, f"period in cycles at {src_hz:,} Hz")
        return None
    v = a.get("deadline_ns")
    if type(v) is int:
        return Deadline(v, v - now, "absolute ns")
    v = a.get("delta_ns")
    if type(v) is int:
        return Deadline(now + v, v, "relative ns")
    for key, what in (("deadline_cycles", "absolute cycles"), ("deadline_tsc", "TSC deadline")):
        v = a.get(key)
        if type(v) is int:
            ns = cycles_to_ns(v, src_hz)
            return Deadline(ns, ns - now, f"{what} at {src_hz:,} Hz")
    return None


# ------------------------------------------------- page-table arguments
def pte_parts(args: dict[str, Any]) -> tuple[int, int]:
    """A ``mmu.set_pte``'s (frame, flags) whatever the source: ``frame`` and
    ``flags`` (Xen, lguest), or the raw entry ``pte`` (VMI's 32-bit SetPxE:
    frame bits 12-31, flags 0-11)."""
    frame, flags = args.get("frame"), args.get("flags")
    if type(frame) is int:
        return frame & _U64, flags & _U64 if type(flags) is int else 0
    pte = args.get("pte")
    pte = pte & _U64 if type(pte) is int else 0
    return pte >> 12, pte & 0xFFF


def pte32(frame: int, flags: int, losses: list[Loss]) -> int:
    """A page-table entry's ``frame`` (4 KiB) and ``flags`` as a 32-bit
    non-PAE PTE (frame bits 12-31, flags 0-11; Intel SDM vol. 3, 4.3), adding
    to ``losses`` what does not fit: a frame at or above 4 GiB keeps its low 20
    bits, flags above bit 11 (NX at 63, the software bits 52-62) are dropped."""
    if frame >> 20:
        why = "" if flags & 1 else " (a non-present entry: Linux inverts its frame bits " \
            "against L1TF)"
        losses.append(Loss("frame above 4 GiB into a 32-bit PTE",
                           f"frame {frame:#x} (at {frame << 12:#x}) keeps its low 20 bits: "
                           f"{frame & 0xFFFFF:#x}{why}"))
    if flags >> 12:
        losses.append(Loss("PTE flags above bit 31 dropped",
                           f"flags {flags:#x}: bits 52-63 (NX at 63) have no place in a "
                           f"32-bit PTE; kept {flags & 0xFFF:#x}"))
    return ((frame & 0xFFFFF) << 12) | (flags & 0xFFF)


def frame_arg(args: dict[str, Any]) -> int:
    """The frame an MMU operation names: ``frame``, ``pfn`` (VMI's
    AllocatePage), or a CR3 value ``val`` (VMI's SetCR3) / ``pgdir`` as a frame."""
    for key, shift in (("frame", 0), ("pfn", 0), ("val", 12), ("pgdir", 12)):
        v = args.get(key)
        if type(v) is int:
            return (v & _U64) >> shift
    return 0


def entry_index(args: dict[str, Any], per_table: int) -> int:
    """The index of a page-table entry in its table (``per_table`` entries):
    from its virtual address ``va``, its machine address ``entry_ma`` (8-byte
    entries) or pointer ``ptr`` (VMI: 4-byte entries), or ``index``."""
    va = args.get("va")
    if type(va) is int:
        return (va >> 12) % per_table
    ma = args.get("entry_ma")
    if type(ma) is int:
        return ((ma & 0xFFF) // 8) % per_table
    ptr = args.get("ptr")
    if type(ptr) is int:
        return ((ptr & 0xFFF) // 4) % per_table
    idx = args.get("index")
    return idx % per_table if type(idx) is int else 0


# ------------------------------------------------------------- registry
def express_module(abi: str) -> Any:
    """The express module of target ABI key ``abi`` (:data:`EXPRESS_BY_ABI`);
    BackendError when pvmon has none."""
    from pvmon.backends.registry import EXPRESS_BY_ABI
    where = EXPRESS_BY_ABI.get(abi)
    if where is None:
        raise BackendError(f"no cross-ABI expression for {abi!r} (known: "
                           f"{', '.join(sorted(EXPRESS_BY_ABI))})")
    module, _, attr = where.partition(":")
    mod = import_module(module)
    return getattr(mod, attr) if attr else mod


def abi_key(abi: str, mode: str | None) -> str:
    """The express key of an ABI in a guest mode: ``xen`` + ``pvh`` ->
    ``xen-pvh``; the default mode (or None) -> the ABI itself."""
    from pvmon.backends.registry import MODES_BY_ABI
    modes = MODES_BY_ABI.get(abi, ())
    if mode is None or (modes and mode == modes[0]):
        return abi
    return f"{abi}-{mode}"


def split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME[:MODE]`` -> (backend name, guest mode or None): ``xen-4.17:pvh``."""
    name, _, mode = spec.strip().partition(":")
    return name, mode or None


def is_cross(run: Any, spec: str) -> bool:
    """Whether replaying ``run`` (a :class:`~pvmon.replay.source.RecordedRun`)
    on backend ``spec`` (``NAME[:MODE]``) crosses ABIs (another ABI, or the
    same ABI in another guest mode). BackendError for an unknown backend."""
    from pvmon.backends.registry import require_version
    name, mode = split_spec(spec)
    ver = require_version(name)
    tgt_abi = getattr(ver, "abi", "xen")
    src_abi = getattr(run.version, "abi", "xen")
    if tgt_abi != src_abi:
        return True
    return mode is not None and abi_key(tgt_abi, mode) != abi_key(src_abi, run.mode)


def canonical_route(run: Any, spec: str) -> bool:
    """Whether an open-loop matrix replays ``run`` on ``spec`` through
    canonical operations: across ABIs (:func:`is_cross`), or a trace of an ABI
    with no same-ABI open loop (:data:`~pvmon.backends.registry.OPEN_LOOP_ABIS`)."""
    from pvmon.backends.registry import OPEN_LOOP_ABIS
    return is_cross(run, spec) or getattr(run.version, "abi", "xen") not in OPEN_LOOP_ABIS


# ------------------------------------------------------------- the target
class Target:
    """A real backend of the target ABI attached to a domain of that ABI's
    reference guest, built (never run) on a scratch machine of ``memory``
    bytes: the domain the translated calls land in. ``spec``:
    ``NAME[:MODE]``. Raises BackendError for an unknown backend or mode."""

    def __init__(self, spec: str, memory: int) -> None:
        from pvmon.backends.registry import backend_for_version, guest_kind, require_version
        from pvmon.dispatch.access import RecordingGuestAccess
        from pvmon.guests.catalog import resolve
        name, mode = split_spec(spec)
        ver = require_version(name)
        self.version = ver
        self.backend = backend = backend_for_version(ver)
        self.kind = kind = guest_kind(backend, mode)
        self.key = abi_key(backend.abi, getattr(kind, "mode", None) or mode)
        self.mod = express_module(self.key)
        self.name = f"{ver.name}" + (f":{mode}" if mode else "")
        self.label = self.mod.LABEL
        kernel = kind.load_kernel(Path(resolve(self.mod.REFERENCE_GUEST).vmlinux))
        self.machine = machine = _machine_class()(memory, kind.extra_bytes_for(memory))
        self.layout = kind.build(machine, kernel, "", None)
        kind.prepare(backend, kernel)
        self.memory = memory
        if getattr(self.mod, "VIRTUAL_ARGS", False):
            # calls that read their arguments through guest-virtual pointers:
            # served from each call's own memory, as open loop serves recorded reads
            from pvmon.replay.openloop import _NoGuestPlatform, _RecordedMemory
            self.access = _RecordedMemory(machine)
            self.platform = _NoGuestPlatform(kind.dispatch_class().shutdown_stop)
            self.platform.stopped = None
            self._virt = True
        else:
            self.access = RecordingGuestAccess(machine, record=True)
            self.platform = kind.dispatch_class()(machine, backend, self.access, None)
            self._virt = False
        backend.attach(machine, self.layout, self.access, self.platform, memory,
                       self.mod.REFERENCE_GUEST)
        backend.console_out = lambda ch, data: None
        #: a scratch area of the target domain for call arguments and tables:
        #: the last 64 KiB of guest RAM
        self.scratch = memory - 0x10000
        self.clock = machine.clock

    def feed(self, c: Call, now_ns: int,
             expect_stop: bool = False) -> tuple[int | None, str | None]:
        """Make call ``c`` at virtual time ``now_ns``. Returns (the value the
        backend answered, a one-line note when it stopped the run (unless
        ``expect_stop``: a shutdown's own call) or raised #GP, else None). A
        stop is cleared afterwards: the replay goes on."""
        m = self.machine
        self.clock.now_ns = max(self.clock.now_ns, now_ns)
        virt = []
        for space, addr, data in c.mem:
            if space == "p":
                if m.valid_phys(addr, len(data)):
                    m.write_phys_data(addr, data)
            else:
                virt.append(("v", addr, data))
        if self._virt:
            self.access.begin(virt)
        plat = self.platform
        plat._cur_rip = 0
        plat._jump = None
        note = None
        if c.kind == "msr":
            from pvmon.engine.hvm import MSR_GP
            got = self.backend.msr(True, c.nr, c.args[0])
            ret = 0
            if got is not None and got[0] == MSR_GP:
                ret, note = -1, f"wrmsr {c.name}: #GP"
        else:
            ret = self.backend.call(c.nr, c.args)
        stop = m.stop_reason or getattr(plat, "stopped", None)
        if stop is not None:
            m.stop_reason = None
            if self._virt:
                plat.stopped = None
            if not expect_stop:
                note = f"{stop.kind}: {stop.detail}"
        return ret, note


def _machine_class() -> type:
    from pvmon.replay.openloop import _ScratchMachine
    return _ScratchMachine


@dataclass(slots=True)
class Ctx:
    """What an express module sees of the replay: the ``target``, the source
    ABI key ``src``, the frequency (Hz) of the source's cycles ``src_hz`` and
    of the target's ``hz`` (the frequency the target's guest is told), and
    ``state`` (the express module's own, per replay)."""
    target: Target
    src: str
    src_hz: int
    hz: int
    state: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------- the report
@dataclass
class CrossReport:
    """The result of one cross-ABI replay (:func:`replay_cross`). Counts are
    of canonical operations unless named calls. ``exit_code``: 0 when every
    operation was expressed and answered alike, 1 otherwise."""
    trace: str
    source: str
    target: str
    source_label: str
    target_label: str
    ops: int = 0
    by_how: Counter = field(default_factory=Counter)
    #: op -> Counter of how it was expressed
    by_op: dict[str, Counter] = field(default_factory=dict)
    #: target calls made (and counted, fed or not), by call name
    calls: Counter = field(default_factory=Counter)
    fed: int = 0
    setup_calls: list[str] = field(default_factory=list)
    #: op -> (count, why)
    inexpressible: dict[str, list] = field(default_factory=dict)
    #: loss class -> {"count", "max_err_ns", "sum_err_ns", "first"}
    losses: dict[str, dict] = field(default_factory=dict)
    #: source call (op) -> {"count", "calls" (target calls), "ops"}: ops whose
    #: source made fewer calls than the target
    more_calls: dict[str, dict] = field(default_factory=dict)
    #: source batches: (batch call) -> {"batches", "entries", "target_calls"}
    batches: dict[str, dict] = field(default_factory=dict)
    #: "op -> target call: what" -> {"count", "first"}
    answered: dict[str, dict] = field(default_factory=dict)
    timers: dict[str, int] = field(default_factory=lambda: {"deadlines": 0, "exact": 0})
    wall_s: float = 0.0

    @property
    def differing(self) -> int:
        return sum(v["count"] for v in self.answered.values())

    @property
    def exit_code(self) -> int:
        return 1 if self.by_how["inexpressible"] or self.answered else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stable key order; no wall time unless asked)."""
        return {
            "trace": self.trace, "source": self.source, "target": self.target,
            "source_label": self.source_label, "target_label": self.target_label,
            "ops": self.ops, "by_how": {h: self.by_how[h] for h in HOW},
            "target_calls": sum(self.calls.values()), "fed": self.fed,
            "calls": dict(sorted(self.calls.items())),
            "setup_calls": self.setup_calls,
            "inexpressible": {k: {"count": v[0], "why": v[1]}
                              for k, v in sorted(self.inexpressible.items())},
            "losses": {k: dict(v) for k, v in sorted(self.losses.items())},
            "more_calls": {k: dict(v) for k, v in sorted(self.more_calls.items())},
            "batches": {k: dict(v) for k, v in sorted(self.batches.items())},
            "answered_differently": {k: dict(v) for k, v in sorted(self.answered.items())},
            "timers": dict(self.timers),
            "by_op": {k: {h: v[h] for h in HOW if v[h]} for k, v in sorted(self.by_op.items())},
        }

    def summary(self) -> str:
        """One line for a matrix cell's first difference."""
        parts = []
        if self.by_how["inexpressible"]:
            parts.append(f"{self.by_how['inexpressible']} inexpressible")
        if self.losses:
            parts.append(f"{sum(v['count'] for v in self.losses.values())} lossy")
        if self.answered:
            parts.append(f"{self.differing} answered differently")
        return ", ".join(parts) or "all expressed alike"


def _src_hz(header: dict) -> int:
    machine = header.get("machine") if isinstance(header, dict) else None
    khz = machine.get("tsc_khz") if isinstance(machine, dict) else None
    if type(khz) is not int:
        khz = header.get("tsc_khz") if isinstance(header, dict) else None
    return khz * 1000 if type(khz) is int and khz > 0 else 1_000_000_000


def _ok(ret: int | None) -> bool:
    return ret is None or ret >= 0


def replay_cross(run: Any, spec: str, *, limit: int | None = None,
                 progress: Callable[[int], None] | None = None,
                 target: Target | None = None) -> CrossReport:
    """Replay ``run`` (a :class:`~pvmon.replay.source.RecordedRun`) open loop
    on backend ``spec`` (``NAME[:MODE]``) of another ABI: every canonical
    operation expressed in the target ABI and its calls fed to a real target
    backend. ``limit``: stop after this many operations. ``progress``: called
    with the events read so far, once per trace frame. Raises BackendError
    (unknown backend, no expression for the target), TraceError (a trace whose
    ABI has no canonical mapping, or with no canonical operation at all)."""
    header = run.header
    src_abi = getattr(run.version, "abi", "xen")
    src = abi_key(src_abi, run.mode)
    src_mod = express_module(src)
    tgt = target or Target(spec, domain_memory(header))
    mod = tgt.mod
    src_hz = _src_hz(header)
    ctx = Ctx(tgt, src, src_hz, getattr(mod, "cycle_hz", lambda t: src_hz)(tgt))
    rep = CrossReport(str(run.path), src, tgt.name, src_mod.LABEL, mod.LABEL)
    for c in mod.setup(ctx):
        rep.setup_calls.append(c.name)
        rep.calls[c.name] += 1
        if c.fed:
            tgt.feed(c, 0)
            rep.fed += 1
    deriver = Deriver(src_abi, header)
    by_op = rep.by_op
    express_native = getattr(mod, "EXPRESS_NATIVE", frozenset())
    # a TSC run's reads, when the target reads the clock natively too, need no
    # expression one by one
    from pvmon.pvops.render import tsc_runs_are_clock_reads
    read_way = mod.WAYS.get("time.read_clock")
    clock_whole = (limit is None and tsc_runs_are_clock_reads(src_abi)
                   and read_way is not None and read_way.how == "native"
                   and "time.read_clock" not in express_native)
    calls = rep.calls
    ways = mod.WAYS
    express = mod.express
    batches = _Batches(rep, mod.batch_calls)
    t0 = time.perf_counter()
    reader = run.reader

    for i in range(len(reader.frames)):
        if progress is not None:
            progress(reader.frames[i].first_seq)
        for ev in reader.frame_events(i):
            if clock_whole and batches.key is None and ev.get("k") == "tsc_run" \
                    and "abi" not in ev:
                vals = ev.get("val")
                n = len(vals) if isinstance(vals, list) else 0
                if n:       # n native clock reads, counted at once (as trace stats does)
                    rep.ops += n
                    rep.by_how["native"] += n
                    c_op = by_op.get("time.read_clock")
                    if c_op is None:
                        c_op = by_op["time.read_clock"] = Counter()
                    c_op["native"] += n
                continue
            for op in deriver.ops(ev):
                name = op.op
                if name == "unmapped":
                    continue
                rep.ops += 1
                in_batch = batches.see(op) if (op.batch or batches.key is not None
                                               or name == "batch.submit") else False
                way = ways.get(name)
                if way is None:
                    way = never("no express entry")
                how = way.how
                if how == "native" and name not in express_native and name not in _TIMERS:
                    # the common case (clock reads, an HVM guest's MMU): nothing to express
                    rep.by_how["native"] += 1
                    c_op = by_op.get(name)
                    if c_op is None:
                        c_op = by_op[name] = Counter()
                    c_op["native"] += 1
                    continue
                x = express(op, ctx) if how != "inexpressible" else None
                if x is None:
                    x = Expressed(way.how, why=way.why)
                how = x.how
                rep.by_how[how] += 1
                c_op = by_op.get(name)
                if c_op is None:
                    c_op = by_op[name] = Counter()
                c_op[how] += 1
                if how == "inexpressible":
                    e = rep.inexpressible.setdefault(name, [0, x.why or way.why])
                    e[0] += 1
                    continue
                for loss in x.losses:
                    d = rep.losses.setdefault(loss.what, {"count": 0, "max_err_ns": None,
                                                          "sum_abs_err_ns": 0,
                                                          "first": loss.detail})
                    d["count"] += 1
                    if loss.err_ns is not None:
                        err = abs(loss.err_ns)
                        d["sum_abs_err_ns"] += err
                        d["max_err_ns"] = max(d["max_err_ns"] or 0, err)
                if name in _TIMERS:
                    rep.timers["deadlines"] += 1
                    if not any(loss.what.startswith("deadline") or loss.what.startswith("period")
                               for loss in x.losses):
                        rep.timers["exact"] += 1
                if name == "batch.submit":
                    # the bracket's own calls are counted by batch_calls
                    for c in x.calls:
                        rep.calls[c.name] += 1
                    continue
                n = len(x.calls)
                if in_batch:
                    batches.calls += n
                src_calls = 0 if op.native else 1
                if n > src_calls:
                    key = f"{name} ({op.call})"
                    m = rep.more_calls.get(key)
                    if m is None:
                        m = rep.more_calls[key] = {"count": 0, "target_calls": 0,
                                                   "as": _calls_text(x.calls)}
                    m["count"] += 1
                    m["target_calls"] += n
                for c in x.calls:
                    calls[c.name] += 1
                    if not c.fed:
                        continue
                    rep.fed += 1
                    ret, note = tgt.feed(c, op.t, name == "power.shutdown")
                    tgt_ok = note is None and (c.kind == "msr" or _ok(ret)
                                               or not mod.RET_IS_STATUS)
                    if tgt_ok != _ok(op.ret) or note is not None:
                        what = note or (f"returned {ret}" if not tgt_ok
                                        else f"accepted (source answered {op.ret})")
                        key = f"{name} -> {c.name}: {_class(what)}"
                        d = rep.answered.setdefault(key, {"count": 0, "first": None})
                        d["count"] += 1
                        if d["first"] is None:
                            d["first"] = f"#{op.seq} {op.call}: {what}"
                if limit is not None and rep.ops >= limit:
                    break
            if limit is not None and rep.ops >= limit:
                break
        if limit is not None and rep.ops >= limit:
            break
    batches.close()
    rep.wall_s = time.perf_counter() - t0
    if rep.ops == 0:
        raise TraceError(f"{Path(run.path).name}: the trace holds no canonical operation to "
                         "replay across ABIs")
    return rep


class _Batches:
    """The source's batches and what their entries cost the target. A batch
    is a ``batch.submit`` with a ``count`` and the operations carrying its
    :class:`~pvmon.pvops.BatchRef` (a Xen multicall or array); a
    ``batch.submit`` with a ``mode`` and the operations up to the one with
    mode 0 (VMI's lazy mode); a run of operations from lguest's asynchronous
    ring with the ``LHCALL_FLUSH_ASYNC`` that runs them."""

    def __init__(self, rep: CrossReport, batch_calls: Callable[[int], int]) -> None:
        self.rep = rep
        self.batch_calls = batch_calls
        self.key: tuple[str, Any] | None = None     # (batch name, seq or "ring"/"lazy")
        self.calls = 0          # target calls of the open batch's entries

    def _open(self, name: str, tag: Any) -> None:
        self.close()
        self.key = (name, tag)
        b = self.rep.batches.get(name)
        if b is None:
            b = self.rep.batches[name] = {"batches": 0, "entries": 0, "target_calls": 0}
        b["batches"] += 1

    def close(self) -> None:
        if self.key is not None:
            self.rep.batches[self.key[0]]["target_calls"] += self.batch_calls(self.calls)
        self.key, self.calls = None, 0

    def see(self, op: PvOp) -> bool:
        """Account ``op``; True when it is an entry of the open batch (its
        target calls then count toward the batch)."""
        key = self.key
        if op.op == "batch.submit" and not op.batch:
            a = op.args
            if "mode" in a:                     # VMI SetLazyMode
                if a["mode"]:
                    self._open(op.call, "lazy")
                elif key is not None and key[1] == "lazy":
                    self.close()
                return False
            if a.get("ring"):                   # lguest FLUSH_ASYNC: ends the ring run
                if key is None or key[1] != "ring":
                    self._open("lguest async ring", "ring")
                self.close()
                return False
            self._open(op.call.split(" ", 1)[0], op.seq)
            return False
        if op.batch:
            outer = op.batch[0]
            if outer.call == "lguest async ring":
                if key is None or key[1] != "ring":
                    self._open(outer.call, "ring")
            elif key is None or key[1] != outer.seq:
                self._open(outer.call, outer.seq)
        elif key is None or key[1] != "lazy":
            if key is not None:
                self.close()
            return False
        self.rep.batches[self.key[0]]["entries"] += 1
        return True


def _class(what: str) -> str:
    """A difference's class for grouping: addresses and large numbers made
    ``N`` (``crash: ... bad page table 0x1000`` -> ``crash: ... bad page table
    N``); small numbers such as an errno stay."""
    out = []
    for word in what.split():
        core = word.strip("(),:")
        if core.lower().startswith("0x") or (core.isdigit() and len(core) > 3):
            word = word.replace(core, "N")
        out.append(word)
    return " ".join(out)


def _calls_text(calls: list[Call]) -> str:
    """``SetLazyMode + SetPxE`` or ``32 x LHCALL_LOAD_GDT_ENTRY``."""
    c = Counter(x.name for x in calls)
    return " + ".join(n if k == 1 else f"{k} x {n}" for n, k in c.items())


def domain_memory(header: dict) -> int:
    """The guest RAM (bytes) a target domain gets: the trace's (header
    ``machine.memory``, 16 MiB-4 GiB), else 256 MiB."""
    machine = header.get("machine") if isinstance(header, dict) else None
    mem = machine.get("memory") if isinstance(machine, dict) else None
    return mem if type(mem) is int and 16 << 20 <= mem <= 4 << 30 else 256 << 20


def open_cross(path: Path) -> Any:
    """The recorded run of trace ``path`` for cross-ABI replay (no guest image
    needed). PvmonError for an unreadable trace."""
    from pvmon.replay.source import open_run
    return open_run(path, None, need_guest=False)


# ------------------------------------------------------------- rendering
def render_cross(rep: CrossReport, console: Any = None) -> None:
    """The report as text: what could not be expressed, what lost precision,
    what needed more calls, what the target answered differently."""
    from rich.table import Table

    from pvmon.literal import console as plain_console
    from pvmon.literal import markup as escape
    con = console or plain_console()
    h = rep.by_how
    con.print(f"[bold]{escape(Path(rep.trace).name)}[/] ({escape(rep.source_label)}) on "
              f"[bold]{escape(rep.target)}[/] ({escape(rep.target_label)}), open loop across "
              f"ABIs: {rep.ops:,} canonical operations: {h['call']:,} through calls, "
              f"{h['native']:,} native, {h['inexpressible']:,} inexpressible; "
              f"{sum(rep.calls.values()):,} target calls ({rep.fed:,} fed to the backend)")
    if rep.setup_calls:
        con.print(f"setup the target needs first: {escape(', '.join(rep.setup_calls))}")
    if rep.inexpressible:
        t = Table(title="inexpressible", show_edge=False)
        t.add_column("operation")
        t.add_column("count", justify="right")
        t.add_column("why")
        for k, (n, why) in sorted(rep.inexpressible.items()):
            t.add_row(escape(k), f"{n:,}", escape(why))
        con.print(t)
    if rep.losses:
        t = Table(title="precision lost", show_edge=False)
        t.add_column("what")
        t.add_column("count", justify="right")
        t.add_column("max error", justify="right")
        t.add_column("first")
        for k, d in sorted(rep.losses.items()):
            t.add_row(escape(k), f"{d['count']:,}",
                      "" if d["max_err_ns"] is None else f"{d['max_err_ns']:,} ns",
                      escape(d["first"]))
        con.print(t)
    if rep.more_calls or rep.batches:
        t = Table(title="more calls", show_edge=False)
        t.add_column("source")
        t.add_column("count", justify="right")
        t.add_column("target calls", justify="right")
        t.add_column("as")
        for k, d in sorted(rep.more_calls.items()):
            t.add_row(escape(k), f"{d['count']:,}", f"{d['target_calls']:,}", escape(d["as"]))
        for k, d in sorted(rep.batches.items()):
            t.add_row(escape(f"batch {k}"), f"{d['batches']:,}", f"{d['target_calls']:,}",
                      f"{d['entries']:,} entries")
        con.print(t)
    if rep.answered:
        t = Table(title="answered differently", show_edge=False)
        t.add_column("operation -> target call")
        t.add_column("count", justify="right")
        t.add_column("first")
        for k, d in sorted(rep.answered.items()):
            t.add_row(escape(k), f"{d['count']:,}", escape(d["first"] or ""))
        con.print(t)
    tm = rep.timers
    if tm["deadlines"]:
        con.print(f"timers: {tm['exact']:,} of {tm['deadlines']:,} deadlines expressed exactly")
    con.print("verdict: " + ("every operation expressed and answered alike"
                             if not rep.exit_code else rep.summary()))


def cross_cell(run: Any, spec: str) -> dict[str, Any]:
    """One matrix cell (:mod:`pvmon.replay.matrix`) of a cross-ABI replay:
    ``total`` (inexpressible + answered differently), ``calls`` (canonical
    operations), ``first`` (the summary) and ``cross`` (the report's dict)."""
    rep = replay_cross(run, spec)
    return {"total": rep.by_how["inexpressible"] + rep.differing, "calls": rep.ops,
            "calls_per_s": round(rep.ops / rep.wall_s) if rep.wall_s else None,
            "backend_calls_per_s": None, "first": rep.summary(), "why": [],
            "by_call": [], "cross": rep.as_dict()}


def every_op() -> Iterable[str]:
    """Every canonical operation an express table must answer for."""
    return (o for o in OPS if o != "unmapped")


__all__ = [
    "HOW",
    "Call",
    "CrossReport",
    "Ctx",
    "Deadline",
    "Expressed",
    "Loss",
    "Target",
    "Way",
    "abi_key",
    "call",
    "canonical_route",
    "cross_cell",
    "cycles_to_ns",
    "deadline_of",
    "domain_memory",
    "entry_index",
    "every_op",
    "express_module",
    "frame_arg",
    "is_cross",
    "native",
    "never",
    "ns_to_cycles",
    "open_cross",
    "pte_parts",
    "render_cross",
    "replay_cross",
    "rounding_bound_ns",
    "split_spec",
]
