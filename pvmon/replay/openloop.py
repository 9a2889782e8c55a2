"""Open-loop replay: feed each recorded hypercall, with the guest memory it
read, to a backend, without running the guest, and compare what the backend
answers (result, memory written, events raised) with the recording.

The backend runs on a real scratch :class:`~pvmon.engine.machine.Machine`
that never executes: the domain's start-of-day layout comes from the trace
header, machine-address reads the recording saw are written into the scratch
RAM before each call, and guest-virtual reads are served from the call's
recorded reads. What open loop cannot see: guest state the guest changes
without a hypercall (for example event-channel mask bits it clears in
shared_info itself) and reads the recording never made (reported as
"unrecorded input"). Closed-loop replay sees both.

:func:`replay_open_many` replays one trace against several backends in one
pass (each event decoded once, each call fed to every backend in turn), which
is how the corpus matrix (:mod:`pvmon.replay.matrix`) uses it.
"""

from __future__ import annotations

import gc
import struct
import time
from collections import deque
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pvmon.backends.base import GuestFault, GuestKind
from pvmon.backends.registry import backend_for_version, guest_kind, kind_for_abi
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.core import RunServices
from pvmon.engine.machine import Machine, Stop
from pvmon.errors import TraceError
from pvmon.guests.code import code_at
from pvmon.replay.compare import Delta, memory_delta, result_text
from pvmon.replay.explain import differences, explain_event
from pvmon.replay.report import Divergence, Report, Site
from pvmon.replay.source import RecordedRun
from pvmon.trace.render import describe

if TYPE_CHECKING:
    from pvmon.backends.xen.versions import XenVersion

class _ScratchMachine(Machine):
    """The machine an open-loop backend works on. It never executes guest code,
    so there is no translated code to invalidate: machine-memory writes go
    straight into RAM instead of through Unicorn (about 1 us less per write)."""

    write_phys = Machine.write_phys_data


_NO_WALKS: dict[int, bytes] = {}    # shared, never written


class _RecordedMemory(RecordingGuestAccess):
    """GuestAccess for one replayed call: guest-virtual reads and page walks
    come from the call's recorded reads, machine memory from the scratch RAM
    (primed with the recorded machine reads), and every access is recorded as
    in a live run. Virtual writes are recorded, not applied (there are no
    guest page tables to apply them through)."""

    def __init__(self, machine: Machine) -> None:
        super().__init__(machine, record=True)
        self.virt: dict[tuple[int, int], bytes] = {}
        self.walks: dict[int, bytes] = {}
        self.unrecorded: list[int] = []

    def begin(self, rd=()) -> None:
        self.reads = []
        self.writes = []
        if self.unrecorded:
            self.unrecorded = []
        if len(rd) == 1 and rd[0][0] == "v":       # most calls: one guest-virtual read
            _, addr, data = rd[0]
            self.virt = {(addr, len(data)): data}
            self.walks = _NO_WALKS
            return
        virt = self.virt = {}
        walks = self.walks = {}
        m = self.m
        primed: set[int] = set()
        for sp, addr, data in rd:
            if sp == "v":
                virt.setdefault((addr, len(data)), data)
            elif sp == "p" and addr not in primed and m.valid_phys(addr, len(data)):
                # only the first read of an address shows the state before the
                # call; later ones already include the call's own writes
                primed.add(addr)
                m.write_phys_data(addr, data)
            elif sp == "w" and len(data) == 16:
                walks[addr] = data

    def walk(self, va: int) -> tuple[int, int]:
        data = self.walks.get(va)
        if data is None:
            self.unrecorded.append(va)
            raise GuestFault(va)
        self.reads.append(["w", va, data])
        return struct.unpack("<QQ", data)

    def read(self, va: int, size: int) -> bytes:
        data = self.virt.get((va, size))
        if data is None:
            data = self._read_inside(va, size)
        if data is None:
            self.unrecorded.append(va)
            raise GuestFault(va)
        self.reads.append(["v", va, data])
        return data

    def _read_inside(self, va: int, size: int) -> bytes | None:
        for (a, n), d in self.virt.items():
            if a <= va and va + size <= a + n:
                return d[va - a:va - a + size]
        return None

    def write(self, va: int, data: bytes) -> None:
        self.writes.append(["v", va, bytes(data)])


class _NoGuestPlatform(RunServices):
    """The platform services a backend calls (jumps, stops), for a domain
    whose guest does not run: a jump is kept only for :meth:`cur_rip`, a stop
    is noted in ``stopped``, not executed. ``shutdown_stop``: the ABI's
    ``(reason, rip) -> Stop`` (its dispatch layer's; default: the Xen PV kind's)."""

    def __init__(self, shutdown_stop: Callable[[int, int], Stop] | None = None) -> None:
        super().__init__()
        self.shutdown_stop = (shutdown_stop if shutdown_stop is not None
                              else kind_for_abi("xen").dispatch_class().shutdown_stop)
        self.stopped: Stop | None = None

    def end_run(self, stop: Stop) -> None:
        self.stopped = stop


def _layout(run: RecordedRun, machine: Machine, kind: GuestKind) -> Any:
    lay = kind.layout_from(run.header.get("layout"))
    if lay is not None:
        return lay
    if run.guest is not None:   # older traces: lay the domain out again from the image
        kernel = kind.load_kernel(Path(run.guest.vmlinux))
        return kind.build(machine, kernel, run.cmdline)
    raise TraceError(f"{run.path}: trace header has no domain layout and no guest image "
                     "was found to rebuild it (pass --guest PATH)")


class _Side:
    """One backend under open-loop replay: its scratch machine (built from the
    trace header's layout, never executed), the recorded-memory access layer,
    and the report being filled."""

    def __init__(self, run: RecordedRun, version: XenVersion) -> None:
        memory = run.memory
        self.run = run
        self.version = version
        self.backend = backend = backend_for_version(version)
        kind = guest_kind(backend, run.mode)
        self.machine = machine = _ScratchMachine(memory, kind.extra_bytes_for(memory))
        layout = _layout(run, machine, kind)
        self.access = access = _RecordedMemory(machine)
        self.platform = _NoGuestPlatform(kind.dispatch_class().shutdown_stop)
        name = run.header.get("guest", {}).get("name", "guest")
        backend.attach(machine, layout, access, self.platform, memory, str(name))
        # Console output is the guest's side of console_io; open loop compares the
        # call's memory effects, so the backend's output goes nowhere.
        backend.console_out = lambda ch, data: None
        self.facts = differences(run.version, version)
        self.report = Report("open-loop", run.label, f"{version.name} (open loop, no guest)")
        self.unrecorded = 0
        # bound once: the per-call path below runs once per call and backend
        self.clock = machine.clock
        self.raised = backend.events.raised
        self.backend_call = backend.call
        self.begin = access.begin

    def feed(self, ev: dict, now_ns: int, args: tuple[int, ...], recent: deque) -> None:
        """Run recorded call ``ev`` (raw ``args``) on this backend at virtual time
        ``now_ns`` and compare what it does with the recording."""
        self.clock.now_ns = now_ns
        platform = self.platform    # RunServices.enter, inlined: once per call and backend
        platform._cur_rip = ev.get("rip", 0)
        platform._jump = None
        self.begin(ev.get("rd") or ())
        raised = self.raised
        if raised:
            del raised[:]
        ret = self.backend_call(ev["nr"], args)
        access = self.access
        # iret never returns to its caller: its "result" is the restored RAX and
        # its effect is on vCPU registers, which open loop does not model.
        if (ret != ev.get("ret") and ev.get("name") != "iret") or \
                access.writes != (ev.get("wr") or []) or raised != (ev.get("ev") or []):
            self._diverged(ev, ret, recent)

    def _diverged(self, ev: dict, ret: int, recent: deque) -> None:
        """Add the divergence of recorded call ``ev`` (the backend answered
        ``ret``, wrote ``access.writes`` and raised ``raised``) to the report."""
        access, raised, report = self.access, self.raised, self.report
        deltas = []
        if ret != ev.get("ret") and ev.get("name") != "iret":
            deltas.append(Delta("result", f"{result_text(ev.get('ret'))} vs "
                                          f"{result_text(ret)}"))
        if access.writes != (ev.get("wr") or []):
            deltas.append(Delta("memory", memory_delta(ev.get("wr"), access.writes, "writes")
                                or "writes in a different order"))
        if raised != (ev.get("ev") or []):
            deltas.append(Delta("events", f"raised {ev.get('ev')} vs {list(raised)}"))
        if access.unrecorded:
            self.unrecorded += 1
            deltas.append(Delta("unrecorded-input",
                                f"{self.version.name} read guest memory the recording did "
                                f"not capture (v:{access.unrecorded[0]:#x})"))
        right = dict(ev, ret=ret, wr=access.writes, ev=list(raised), op=self.backend.op)
        n = report.total + 1
        site = Site(ev.get("seq"), ev.get("t"), ev.get("rip"))
        run = self.run
        if n <= 5 and run.guest is not None and isinstance(site.rip, int):
            site.symbol, site.disasm = code_at(run.guest, site.rip)
        report.add(Divergence(
            n, deltas, ev, right, site,
            [f"#{e.get('seq')} {describe(e)}" for e in recent] if n <= 5 else [],
            explain_event(self.facts, ev)))


def replay_open(run: RecordedRun, version: XenVersion, *, limit: int | None = None,
                progress: Callable[[int], None] | None = None) -> Report:
    """Feed every recorded hypercall of ``run`` to a fresh ``version``
    backend and compare. ``limit``: stop after this many calls. ``progress``:
    called with the number of events read so far, once per trace frame.
    Returns a :class:`Report` with ``stats`` holding calls and calls per
    second."""
    return replay_open_many(run, [version], limit=limit, progress=progress)[0]


def _feed_all(run: RecordedRun, sides: list[_Side], limit: int | None,
              progress: Callable[[int], None] | None = None) -> int:
    """Feed every recorded Xen hypercall of ``run`` to each side, and recorded
    console input to each backend. Returns the number of calls fed."""
    calls = 0
    recent: deque[dict] = deque(maxlen=5)
    prev_t, prev_con = 0, False   # time of the last event; was it console output?
    cost = sides[0].clock.costs.hypercall_ns if sides else 0
    reader = run.reader
    load = reader.frame_events
    if progress is not None:
        def load(i: int, _load=reader.frame_events, _frames=reader.frames) -> list[dict]:
            progress(_frames[i].first_seq)
            return _load(i)
    # frame by frame through C-level chaining: no generator frame per event
    kvm = getattr(run.version, "abi", "xen") == "kvm"
    if kvm:     # KVM's interface is CPUID leaves and MSRs as well (backends/kvm/openloop.py)
        from pvmon.backends.kvm.openloop import KINDS as kvm_kinds
        from pvmon.backends.kvm.openloop import feed as kvm_feed
    for ev in chain.from_iterable(map(load, range(len(reader.frames)))):
        k = ev["k"]
        if kvm and k in kvm_kinds:
            fed = False
            for side in sides:
                fed = kvm_feed(side, ev, recent)
            if fed:
                calls += 1
                recent.append(ev)
            prev_t, prev_con = ev["t"], False
            continue
        if k != "hc":
            if k == "con":
                if ev.get("dir") == "in":
                    data = ev.get("data") or b""
                    for side in sides:
                        side.backend.console_input(data)
                    prev_con = False
                else:
                    prev_con = ev.get("dir") == "out"
            else:
                prev_con = False
            prev_t = ev["t"]
            continue
        # The clock as the call began: console output emitted inside the call
        # already carries that time; otherwise the last event plus the entry cost.
        now = prev_t if prev_con else prev_t + cost
        prev_t, prev_con = ev["t"], False
        args = ev.get("args")
        if ev.get("abi", "xen") != ("kvm" if kvm else "xen") or type(args) is not list \
                or len(args) != (4 if kvm else 5):
            continue
        calls += 1
        args = tuple(args)
        for side in sides:
            side.feed(ev, now, args, recent)
        recent.append(ev)
        if limit is not None and calls >= limit:
            break
    return calls


def replay_open_many(run: RecordedRun, versions: list[XenVersion], *,
                     limit: int | None = None,
                     progress: Callable[[int], None] | None = None) -> list[Report]:
    """Open-loop replay of ``run`` against each of ``versions`` in one pass over
    the trace: every event is decoded once and each recorded call is fed to
    every backend in turn (decoding costs about as much as one backend's
    work). ``limit``: stop after this many calls. ``progress``: as for
    :func:`replay_open`. Returns one :class:`Report`
    per version, in order; each ``stats`` holds ``calls`` (recorded calls fed to
    that backend), ``wall_s`` (the whole pass), ``calls_per_s`` (calls / wall_s)
    and ``backend_calls_per_s`` (calls x backends / wall_s). Raises
    :class:`~pvmon.errors.TraceError` for an unreadable trace."""
    if run.header["machine"].get("vcpus", 1) != 1:
        from pvmon.errors import BackendError
        raise BackendError(f"{run.path.name}: open-loop replay runs one vCPU's calls; this "
                           f"trace has {run.header['machine']['vcpus']} vCPUs (replay it "
                           "closed loop, on a backend)")
    if getattr(run.version, "abi", "xen") not in ("xen", "kvm"):
        from pvmon.errors import BackendError
        raise BackendError(f"{run.path.name}: open-loop replay feeds recorded Xen hypercalls and "
                           "KVM CPUID leaves and MSRs to a backend without the guest; the calls "
                           f"of a {run.version.abi} trace "
                           "act on the CPU itself, so replay it closed loop (without "
                           "--open-loop)")
    sides = [_Side(run, v) for v in versions]
    # The pass makes and drops many containers (decoded events, each call's reads
    # and writes) and no reference cycles; the collector's passes over every decoded
    # frame cost about a tenth of it (gc.callbacks timing), so it is off meanwhile.
    gc_was_on = gc.isenabled()
    gc.disable()
    t0 = time.perf_counter()
    try:
        calls = _feed_all(run, sides, limit, progress)
    finally:
        wall = time.perf_counter() - t0
        if gc_was_on:
            gc.enable()
    reports = []
    for side in sides:
        report = side.report
        report.compared = calls
        report.stats = {"calls": calls, "wall_s": round(wall, 3),
                        "calls_per_s": round(calls / wall) if wall else None,
                        "backend_calls_per_s":
                            round(calls * len(sides) / wall) if wall else None,
                        "backends_in_pass": len(sides),
                        "unrecorded_input_divergences": side.unrecorded}
        if side.unrecorded:
            report.notes.append(f"{side.unrecorded} divergent call(s) read guest memory the "
                                "recording did not capture; closed-loop replay (pvmon replay "
                                "without --open-loop) can tell whether the guest would notice")
        reports.append(report)
    return reports


__all__ = ["replay_open", "replay_open_many"]
