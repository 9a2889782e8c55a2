"""Closed-loop replay: run the recorded guest again, on the recorded backend
(verify, the determinism check) or on another one, with the recorded inputs,
and compare the new event stream with the trace.

Up to the first divergence the two streams are compared as packed msgpack,
byte for byte, frame by frame, without decoding the trace (verify costs
about what recording cost). From the first difference on, the replayed
events are kept packed in a compressed spill file (:mod:`pvmon.replay.spill`),
not in memory; after the run both remaining streams are decoded as they are
aligned call by call in bounded windows (:func:`pvmon.replay.compare.align_stream`),
and every difference is reported with its explanation (the report keeps the
first few in memory and spills the rest). Memory stays bounded however long
the runs are and however much they differ.

A recording the guest did not end itself (a signal, ``--timeout``, Ctrl-],
the TUI's stop, a write failure, or a file cut short) is replayed to its
recorded end and no further (:func:`recorded_end`): those ends came from
outside the guest (a wall clock, a user) and cannot be replayed, so once the
replay has matched every recorded event it stops, and the verdict is "matches
the recording up to its end". A replay that is itself interrupted (SIGINT,
SIGTERM) or runs out of ``timeout`` says where it stopped and gives no
verdict.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from pvmon.backends.registry import backend_for_version
from pvmon.dispatch.core import WALL_TIMEOUT
from pvmon.engine.machine import Stop
from pvmon.engine.signals import exit_status, signal_name
from pvmon.guests.code import code_at
from pvmon.replay.compare import ALIGNED_KINDS, Delta, align_stream, compare
from pvmon.replay.explain import differences, explain_event, rule_verdict
from pvmon.replay.report import Divergence, Report, Site
from pvmon.replay.source import RecordedRun, feed_recorded_input
from pvmon.replay.spill import Spill
from pvmon.session import Session

if TYPE_CHECKING:
    from pvmon.backends.xen.versions import XenVersion
from pvmon.trace.format import hc_event
from pvmon.trace.render import describe, format_time
from pvmon.trace.writer import pack_event

try:
    from pvmon.trace._evpack import pack_hc
except ImportError:  # pragma: no cover - installs without a C compiler
    pack_hc = None

# A replay that runs this much longer (virtual time) than the recording is hung.
HANG_FACTOR = 2
HANG_SLACK_NS = 2_000_000_000

#: Exit status of a replay that ran out of ``--timeout`` (timeout(1)'s).
EXIT_TIMED_OUT = 124

#: Exit reasons that come from outside the guest: the run cannot be replayed past them.
EXTERNAL_EXITS = frozenset({"interrupted", "limit", "error"})


@dataclass
class RecordedEnd:
    """Where and how a recording ended. ``seq``: how many events precede the
    end (the exit record's seq; without one, the event count); ``reason`` and
    ``detail`` of the exit record (None without one); ``external``: the end
    came from outside the guest (a signal, a wall-clock timeout, the user, a
    write failure, a file cut short), so a replay stops there; ``label``: what
    ended it, for people ("interrupted by SIGINT", "timed out", "truncated");
    ``last``: the last event before the end (None if there is none)."""

    seq: int
    reason: str | None
    detail: str
    external: bool
    label: str
    last: dict | None = None
    exit: dict | None = None
    #: the event before ``last`` (None if there is none)
    before_last: dict | None = None

    def runs(self, io_runs: bool = True) -> tuple[int, int | None, int | None] | None:
        """The runs of reads the recording ended inside: ``(seq of the first
        of them, TSC reads of the tsc_run or None, port reads of the io_run
        (or 1 for a one-read ``io`` in event) or None)``; None when it ended
        inside none. Up to two run events end a recording, one of each kind,
        in either order (docs/trace-format.md, "How a recording ends").
        ``io_runs`` False (a trace before format version 4): port reads are
        no runs, and only the last event can be a run (a ``tsc_run``)."""
        found: dict[str, int] = {}
        first = None
        for ev in (self.last, self.before_last) if io_runs else (self.last,):
            if not isinstance(ev, dict):
                break
            k = ev.get("k")
            if k == "tsc_run" and isinstance(ev.get("rip"), list) and "tsc" not in found:
                found["tsc"] = len(ev["rip"])
            elif k == "io_run" and isinstance(ev.get("port"), list) and io_runs \
                    and "io" not in found:
                found["io"] = len(ev["port"])
            elif k == "io" and ev.get("dir") == "in" and io_runs and "io" not in found:
                found["io"] = 1
            else:
                break
            first = ev.get("seq")
        if not found or not isinstance(first, int):
            return None
        return first, found.get("tsc") or None, found.get("io") or None


def recorded_end(run: RecordedRun) -> RecordedEnd:
    """How ``run``'s recording ended (its exit record, or where the file stops)."""
    r = run.reader
    n = len(r)
    tail = list(r.events(max(0, n - 3), n))
    ev = tail[-1] if tail else None
    if ev is not None and ev.get("k") == "exit":
        reason = ev.get("reason")
        detail = ev.get("detail") if isinstance(ev.get("detail"), str) else ""
        before = tail[-2] if len(tail) > 1 else None
        return RecordedEnd(n - 1, reason, detail, reason in EXTERNAL_EXITS,
                           _end_label(reason, detail), before, ev,
                           tail[-3] if len(tail) > 2 else None)
    label = "truncated" if not r.complete else "recording stopped"
    return RecordedEnd(n, None, "", True, label, ev, None,
                       tail[-2] if len(tail) > 1 else None)


def _end_label(reason: str | None, detail: str) -> str:
    if reason == "limit":
        return "timed out"
    if reason == "interrupted":
        if detail.startswith("detached"):
            return "detached"
        if detail.startswith("recording stopped"):
            return "recording stopped"
        return detail or "interrupted"
    if reason == "error":
        return detail or "error"
    return f"{reason}: {detail}"


class _StreamCompare:
    """The record callback of a replayed session: packs each new event and
    compares it with the trace's bytes at the same position; after the first
    mismatch it spills the new events of the aligned kinds, packed, to
    ``live`` (a :class:`~pvmon.replay.spill.Spill`; :meth:`replayed` reads
    them back) for alignment after the run."""

    def __init__(self, run: RecordedRun):
        self.r = run.reader
        self.pack = pack_event
        self.frame = -1
        self.buf = b""
        self.pos = 0
        self.diverged_at: int | None = None
        self.first_live: dict | None = None   # the first replayed event that differed
        self.live = Spill()
        self.compared = 0
        #: Actions to take once that many events matched, soonest first.
        self._marks: list[tuple[int, Callable[[], None]]] = []
        self._next_mark = -1
        self._next_frame()

    def at(self, count: int, action: Callable[[], None]) -> None:
        """Call ``action()`` once ``count`` events have matched (at once if they
        have). Register in increasing ``count``."""
        self._marks.append((count, action))
        self._next_mark = self._marks[0][0]
        if self._next_mark <= self.compared:
            self._fire()

    def _fire(self) -> None:
        while self._marks and self._marks[0][0] <= self.compared:
            self._marks.pop(0)[1]()
        self._next_mark = self._marks[0][0] if self._marks else -1

    def _next_frame(self) -> None:
        self.frame += 1
        self.pos = 0
        self.buf = self.r.frame_bytes(self.frame) if self.frame < len(self.r.frames) else b""

    def _matches(self, data: bytes | bytearray) -> bool:
        """True, and past it, if the trace's next packed event is ``data``."""
        if not self.buf.startswith(data, self.pos):
            return False
        self.compared += 1
        self.pos += len(data)
        if self.pos == len(self.buf):
            self._next_frame()
        if self.compared == self._next_mark:
            self._fire()
        return True

    def __call__(self, ev: dict) -> None:
        aligned = ev.get("k") in ALIGNED_KINDS
        if self.diverged_at is None:
            data = self.pack(ev)
            if self._matches(data):
                return
            self.diverged_at = ev["seq"]
            self.first_live = msgpack.unpackb(data, raw=False)
        elif aligned:
            data = self.pack(ev)
        if aligned:
            self.live.append_packed(data)

    def hc(self, *values) -> None:
        """The dispatch's ``record_hc``: a hypercall event as its values (the
        arguments of :func:`pvmon.trace.format.hc_event`), packed without the
        dict, as the recorder packed it."""
        if pack_hc is not None:
            data = bytearray()
            try:
                pack_hc(data, *values)
            except (TypeError, ValueError, OverflowError):
                pass
            else:
                if self.diverged_at is not None:
                    self.live.append_packed(data)    # hc is an aligned kind
                    return
                if self._matches(data):
                    return
        self(hc_event(*values))

    def replayed(self) -> Iterator[dict]:
        """The replayed events of the aligned kinds from the first divergence
        on, decoded one at a time from the spill."""
        return iter(self.live)


def _discard(ev: dict) -> None:
    """The record callback once the replay has reached the recording's end."""


def replay_closed(run: RecordedRun, version: XenVersion | None = None, *,
                  timeout: float | None = None, verify: bool | None = None,
                  on_session: Callable[[Session], None] | None = None,
                  stop_on_signals: bool = False) -> Report:
    """Rerun ``run``'s guest on ``version`` (default: the recorded backend)
    and compare, up to the recording's end (:func:`recorded_end`).
    ``timeout``: wall seconds before giving up (the report says "replay timed
    out at event N", no verdict, exit status :data:`EXIT_TIMED_OUT`).
    ``on_session``: called with the replay's session just before it runs (a
    progress display reads ``session.dispatch.seq`` from it).
    ``stop_on_signals``: SIGINT / SIGTERM stop the replay at a safe point (the
    report says "interrupted at event N", no verdict, exit status 130 / 143).
    Returns a :class:`Report`; raises PvmonError subclasses on missing guest
    images or unreadable traces."""
    rec = run.version
    version = version or rec
    if getattr(version, "abi", "xen") != getattr(rec, "abi", "xen"):
        from pvmon.errors import BackendError
        raise BackendError(f"{run.path.name} was recorded on the {getattr(rec, 'abi', 'xen')} "
                           f"ABI; {version.name} is a backend of the {getattr(version, 'abi', 'xen')} ABI "
                           "(replay on a backend of the same ABI)")
    verify = (version.name == rec.name) if verify is None else verify
    backend = backend_for_version(version)
    sess = Session(run.guest, backend=backend, keep_console=False, **run.session_args())
    # Recorded console input: at its recorded event seq in verify, at the idle
    # point the guest reaches on another backend (pvmon.dispatch.console_input).
    feed_recorded_input(sess.dispatch, run.reader, by_seq=verify)
    if run.reader.version == 1:
        sess.dispatch.tsc_run_max = 0   # version 1 recorded an event per TSC read
    if run.reader.version <= 3:
        sess.dispatch.io_run_max = 0    # versions 1-3 recorded an event per port read
    cmp = _StreamCompare(run)
    sess.access.record = True
    sess.dispatch.record = cmp
    sess.dispatch.record_hc = cmp.hc
    sess.dispatch.record_ev = None      # every event reaches the comparison as a dict
    end = recorded_end(run)
    last_t = run.reader.last_t or 0
    limit = max(last_t * HANG_FACTOR, last_t + HANG_SLACK_NS)
    clock = sess.machine.clock
    reached_end = False
    if end.external:
        # Replay to the recorded end and no further. The run was stopped from
        # outside right after event end.seq - 1, possibly inside a run of TSC
        # reads and/or a run of port reads (a tsc_run / io_run event cut
        # short, the last one or two before the end), so once the events
        # before them have matched, the replay's runs are cut at the same reads.
        runs = end.runs(io_runs=run.reader.version >= 4)
        if runs:
            first, tsc, io = runs

            def cut() -> None:
                sess.dispatch.cut_runs(tsc, io)
            cmp.at(first, cut)

        def at_end() -> None:
            nonlocal reached_end
            reached_end = True
            sess.dispatch.record = _discard
            sess.dispatch.record_hc = None
            sess.dispatch.record_ev = None
            sess.machine.stop(Stop("recording_end", f"stopped at the recording's end "
                                   f"(event {end.seq:,})", sess.machine.reg("rip")))
        cmp.at(end.seq, at_end)
        # Past a difference, nothing after the recording's end can be compared.
        limit = end.exit.get("t", last_t) if end.exit and isinstance(end.exit.get("t"), int) \
            else last_t

    def hang_check() -> Stop | None:
        if end.external:
            if cmp.diverged_at is not None and clock.now_ns > limit:
                return Stop("recording_end", f"ran past the recording's end "
                            f"({format_time(limit)})", sess.machine.reg("rip"))
            return None
        if clock.now_ns > limit:
            return Stop("limit", f"still running at {format_time(clock.now_ns)}, "
                                 f"{HANG_FACTOR}x the recording", sess.machine.reg("rip"))
        return None
    sess.dispatch.exit_hook = hang_check

    def before_exit_record(stop: Stop) -> None:
        if (stop.signal is not None or stop.kind == "recording_end"
                or (stop.kind == "limit" and stop.detail == WALL_TIMEOUT)):
            sess.dispatch.record = _discard   # the recording cannot have this exit
    sess.before_exit_record = before_exit_record
    if on_session is not None:
        on_session(sess)
    t0 = time.monotonic()
    result = sess.run(timeout=timeout, stop_on_signals=stop_on_signals)
    wall = time.monotonic() - t0

    mode = "verify" if verify else "closed-loop"
    report = Report(mode, run.label, f"{run.header['guest'].get('name')} on {version.name}"
                                     f" (replayed)")
    report.stats = {"replay_wall_s": round(wall, 3), "events_replayed": sess.dispatch.seq,
                    "events_recorded": len(run.reader)}
    report.compared = cmp.compared
    rec_exit = _recorded_exit(run, end)
    report.ending = {"left": rec_exit,
                     "right": f"{result.exit_kind}: {result.detail} at {result.symbol}"}
    if not verify and version.name != rec.name:
        report.notes.append(rule_verdict(rec, version))
    at_event = sess.dispatch.seq
    if not reached_end and (result.signal or (result.exit_kind == "limit"
                                              and result.detail == WALL_TIMEOUT)):
        # The replay itself was stopped from outside: say where, and no verdict.
        if result.signal:
            what = f"replay interrupted by {signal_name(result.signal)} at event {at_event:,}"
            report.status = exit_status(result.signal)
        else:
            what = f"replay timed out at event {at_event:,}"
            report.status = EXIT_TIMED_OUT
        report.verdict = f"{what} ({cmp.compared:,} events compared)"
        report.ending["outcome"] = what
        if cmp.diverged_at is not None:
            report.notes.append(f"the streams differed from event {cmp.diverged_at:,} on")
        return report
    if reached_end:
        report.verdict = (f"{report.right} matches the recording up to its end "
                          f"({end.label} at event {end.seq:,}) over {cmp.compared:,} events")
    elif cmp.diverged_at is None and cmp.frame < len(run.reader.frames):
        # the replay ended early: everything it did matched, the rest is missing
        cmp.diverged_at = sess.dispatch.seq
    if cmp.diverged_at is not None:
        _diverged(report, run, cmp, version, end)
    report.ending["outcome"] = _outcome(report, rec_exit, result, end, reached_end)
    return report


def _recorded_exit(run: RecordedRun, end: RecordedEnd) -> str:
    """How the recording ended, for people."""
    if end.exit is None:
        if not end.seq:
            return "empty trace" if run.reader.complete else "truncated before its first event"
        if end.label == "truncated":
            return f"truncated after event {end.seq - 1:,}"
        return f"trace ends at event {end.seq - 1:,} without an exit record"
    last = end.exit
    sym = ""
    if run.guest is not None and isinstance(last.get("rip"), int):
        try:
            sym = " at " + run.guest.symbols().format(last["rip"])
        except Exception:  # noqa: BLE001 - symbols are a nicety
            sym = f" at {last['rip']:#x}"
    return f"{last.get('reason')}: {last.get('detail')}{sym}"


def _outcome(report: Report, rec_exit: str, result, end: RecordedEnd,
             reached_end: bool) -> str:
    if reached_end:
        return f"identical up to the recording's end ({end.label} at event {end.seq:,})"
    same_end = rec_exit.split(" at ")[0] == f"{result.exit_kind}: {result.detail}"
    if not report.total:
        return "identical"
    if same_end:
        return "the guest tolerated every difference and ended as recorded"
    if result.exit_kind == "recording_end":
        return (f"the replay ran on to the recording's end ({end.label} at event "
                f"{end.seq:,}) after the differences")
    if result.exit_kind == "limit":
        return "the guest hung (ran past the recording without ending)"
    if result.exit_kind in ("crash", "triple_fault"):
        return f"the guest crashed ({result.detail})"
    if result.exit_kind == "stuck":
        return f"the guest got stuck ({result.detail})"
    return f"the guest ended differently: {result.exit_kind} ({result.detail})"


def _diverged(report: Report, run: RecordedRun, cmp: _StreamCompare,
              version: XenVersion, end: RecordedEnd) -> None:
    """Align what remains of the recording (from the first divergence on, up
    to its end) with the replayed events spilled by ``cmp``, window by window,
    and add every difference to ``report``. Holds a bounded window of each
    stream."""
    s = cmp.diverged_at
    # A recording ended from outside is compared up to that end, its exit record
    # aside (the replay, stopped there too, has none to match it).
    stop = end.seq if end.external else None
    facts = differences(run.version, version)
    ctx_src = [e for e in run.reader.events(max(0, s - 64), s) if e.get("k") in ALIGNED_KINDS]
    before: deque[dict] = deque(ctx_src[-5:], maxlen=5)   # the recorded events before
    left = (e for e in run.reader.events(s, stop) if e.get("k") in ALIGNED_KINDS)
    n = 0
    for tag, la, rb in align_stream(left, cmp.replayed()):
        if tag == "equal":
            report.compared += len(la)
            for lev, rev in zip(la, rb, strict=True):
                d = compare(lev, rev, reads=False)
                if d:
                    n += 1
                    report.add(_divergence(n, d, lev, rev, run, facts, before))
                before.append(lev)
            continue
        at_block = list(before)
        pairs = min(len(la), len(rb)) if tag == "replace" else 0
        for lev, rev in zip(la[:pairs], rb[:pairs], strict=True):
            n += 1
            report.add(_divergence(n, compare(lev, rev, reads=False), lev, rev, run, facts,
                                   before))
            before.append(lev)
        for lev in la[pairs:]:
            n += 1
            report.add(_divergence(n, [Delta("call", "only in the recording")], lev, None,
                                   run, facts, before))
            before.append(lev)
        for rev in rb[pairs:]:
            n += 1
            report.add(_divergence(n, [Delta("call", "only in the replay")], None, rev,
                                   run, facts, at_block))
    cmp.live.close()
    if n == 0:
        # only unaligned events (TSC reads, times) differ
        lev = next(run.reader.events(s, s + 1), None)
        d = compare(lev, cmp.first_live) if lev and cmp.first_live else []
        what = d or [Delta("result", "event stream differs (TSC reads or virtual time)")]
        report.add(_divergence(1, what, lev, cmp.first_live, run, facts, ctx_src))


def _divergence(n: int, deltas: list[Delta], left: dict | None, right: dict | None,
                run: RecordedRun, facts, context) -> Divergence:
    """Divergence ``n`` between recorded event ``left`` and replayed ``right``;
    ``context``: the recorded events before it (a sequence, the last five
    are shown for the first five divergences)."""
    ev = left or right or {}
    site = Site(ev.get("seq"), ev.get("t"), ev.get("rip"))
    want_detail = n <= 5
    if want_detail and site.rip is not None and run.guest is not None:
        site.symbol, site.disasm = code_at(run.guest, site.rip)
    expl = explain_event(facts, ev)
    ctx = [f"#{e.get('seq')} {describe(e)}" for e in list(context)[-5:]] if want_detail else []
    return Divergence(n, deltas, left, right, site, ctx, expl)
