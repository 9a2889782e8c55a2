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
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import msgpack

from pvmon.backends.xen.backend import XenBackend
from pvmon.backends.xen.versions import XenVersion
from pvmon.engine.machine import Stop
from pvmon.guests.code import code_at
from pvmon.replay.compare import ALIGNED_KINDS, Delta, align_stream, compare
from pvmon.replay.explain import differences, explain_event, rule_verdict
from pvmon.replay.report import Divergence, Report, Site
from pvmon.replay.source import RecordedRun, frame_inputs
from pvmon.replay.spill import Spill
from pvmon.session import Session
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
        self._next_frame()

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

def replay_closed(run: RecordedRun, version: XenVersion | None = None, *,
                  timeout: float | None = None, verify: bool | None = None) -> Report:
    """Rerun ``run``'s guest on ``version`` (default: the recorded backend)
    and compare. ``timeout``: wall seconds before giving up (reported as
    hung). Returns a :class:`Report`; raises PvmonError subclasses on
    missing guest images or unreadable traces."""
    rec = run.version
    version = version or rec
    verify = (version.name == rec.name) if verify is None else verify
    backend = XenBackend(version)
    sess = Session(run.guest, backend=backend, keep_console=False, **run.session_args())
    # Recorded console input goes back in at its recorded event seq
    # (pvmon.dispatch.console_input), all scheduled before the run starts.
    for i in range(len(run.reader.frames)):
        for seq, data in frame_inputs(run.reader, i):
            sess.dispatch.schedule_input(seq, data)
    if run.reader.version == 1:
        sess.dispatch.tsc_run_max = 0   # version 1 recorded an event per TSC read
    cmp = _StreamCompare(run)
    sess.access.record = True
    sess.dispatch.record = cmp
    sess.dispatch.record_hc = cmp.hc
    last_t = run.reader.last_t or 0
    limit = max(last_t * HANG_FACTOR, last_t + HANG_SLACK_NS)
    clock = sess.machine.clock

    def hang_check() -> Stop | None:
        if clock.now_ns > limit:
            return Stop("limit", f"still running at {format_time(clock.now_ns)}, "
                                 f"{HANG_FACTOR}x the recording", sess.machine.reg("rip"))
        return None
    sess.dispatch.exit_hook = hang_check
    t0 = time.monotonic()
    result = sess.run(timeout=timeout)
    wall = time.monotonic() - t0

    mode = "verify" if verify else "closed-loop"
    report = Report(mode, run.label, f"{run.header['guest'].get('name')} on {version.name}"
                                     f" (replayed)")
    report.stats = {"replay_wall_s": round(wall, 3), "events_replayed": sess.dispatch.seq,
                    "events_recorded": len(run.reader)}
    report.compared = cmp.compared
    if cmp.diverged_at is None and cmp.frame < len(run.reader.frames):
        # the replay ended early: everything it did matched, the rest is missing
        cmp.diverged_at = sess.dispatch.seq
    if cmp.diverged_at is not None:
        _diverged(report, run, cmp, version)
    rec_exit = _recorded_exit(run)
    report.ending = {"left": rec_exit,
                     "right": f"{result.exit_kind}: {result.detail} at {result.symbol}"}
    report.ending["outcome"] = _outcome(report, rec_exit, result)
    if not verify and version.name != rec.name:
        report.notes.append(rule_verdict(rec, version))
    return report


def _recorded_exit(run: RecordedRun) -> str:
    n = len(run.reader)
    if not n:
        return "empty trace"
    last = next(run.reader.events(n - 1, n))
    if last.get("k") != "exit":
        return f"trace ends at event {n - 1} without an exit record"
    sym = ""
    if run.guest is not None and isinstance(last.get("rip"), int):
        try:
            sym = " at " + run.guest.symbols().format(last["rip"])
        except Exception:  # noqa: BLE001 - symbols are a nicety
            sym = f" at {last['rip']:#x}"
    return f"{last.get('reason')}: {last.get('detail')}{sym}"


def _outcome(report: Report, rec_exit: str, result) -> str:
    same_end = rec_exit.split(" at ")[0] == f"{result.exit_kind}: {result.detail}"
    if not report.total:
        return "identical"
    if same_end:
        return "the guest tolerated every difference and ended as recorded"
    if result.exit_kind == "limit":
        return "the guest hung (ran past the recording without ending)"
    if result.exit_kind in ("crash", "triple_fault"):
        return f"the guest crashed ({result.detail})"
    if result.exit_kind == "stuck":
        return f"the guest got stuck ({result.detail})"
    return f"the guest ended differently: {result.exit_kind} ({result.detail})"


def _diverged(report: Report, run: RecordedRun, cmp: _StreamCompare,
              version: XenVersion) -> None:
    """Align what remains of the recording (from the first divergence on) with
    the replayed events spilled by ``cmp``, window by window, and add every
    difference to ``report``. Holds a bounded window of each stream."""
    s = cmp.diverged_at
    facts = differences(run.version, version)
    ctx_src = [e for e in run.reader.events(max(0, s - 64), s) if e.get("k") in ALIGNED_KINDS]
    before: deque[dict] = deque(ctx_src[-5:], maxlen=5)   # the recorded events before
    left = (e for e in run.reader.events(s) if e.get("k") in ALIGNED_KINDS)
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
