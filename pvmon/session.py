"""A run of one guest on one backend: builds the machine, the domain and the
dispatch layer, optionally records a trace, and reports how it ended.

Used by ``pvmon run``, ``pvmon boot`` (the TUI) and replay.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform as host_platform
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pvmon import __version__
from pvmon.backends.base import Backend
from pvmon.backends.registry import get_backend, guest_kind
from pvmon.dispatch.access import RecordingGuestAccess
from pvmon.dispatch.console_input import DEFAULT_IDLE_LIMIT_NS
from pvmon.engine.machine import VECTOR_NAMES, Machine, Stop
from pvmon.engine.signals import StopOnSignals
from pvmon.errors import TraceError
from pvmon.guests.catalog import GuestImage
from pvmon.trace import format as fmt

DEFAULT_CMDLINE = "console=hvc0 earlyprintk=xen"
MiB = 1 << 20


def parse_memory(text: str | int) -> int:
    """A memory size -> bytes: MiB by default (``256``), or ``512M``, ``1G``,
    ``1.5G``, ``524288K`` (QEMU's ``-m`` units), 32 MiB to 8 GiB in whole
    4 KiB pages (the bounds replay also applies to trace headers). Raises
    PvmonError with a readable message. See :mod:`pvmon.units`."""
    from pvmon.units import parse_memory as parse
    return parse(text)


def check_vcpus(vcpus: int, backend: Backend, mode: str | None) -> int:
    """``--vcpus``: 1 to :data:`~pvmon.backends.xen.pv.smp.MAX_VCPUS`, more
    than one only for a Xen PV guest. Returns it; raises PvmonError."""
    from pvmon.backends.xen.pv.smp import MAX_VCPUS
    from pvmon.errors import PvmonError
    if type(vcpus) is not int or not 1 <= vcpus <= MAX_VCPUS:
        raise PvmonError(f"--vcpus: {vcpus!r} is not a vCPU count from 1 to {MAX_VCPUS}")
    if vcpus > 1 and (backend.abi != "xen" or mode not in (None, "pv")):
        raise PvmonError(f"--vcpus {vcpus}: only Xen PV guests run more than one vCPU "
                         f"(this guest is {backend.abi}{' ' + mode if mode else ''})")
    return vcpus


@dataclass
class RunResult:
    """How a run ended. ``exit_kind``: shutdown | crash | triple_fault | stuck |
    idle | limit | interrupted | error; ``vtime_ns``: virtual time at the end (ns);
    ``wall_s``: host seconds; ``hypercalls``: counts by name; ``faults``: counts
    by vector name; ``events``: events numbered (recorded, when recording);
    ``signal``: the signal that interrupted the run (None if none);
    ``trace_error``: why writing the trace failed (None if it did not; the file
    is then a truncated trace of every complete frame, ``events`` of them)."""

    exit_kind: str
    detail: str
    rip: int
    symbolize: Callable[[int], str]
    shutdown_reason: int | None
    vtime_ns: int
    wall_s: float
    hypercalls: Counter
    faults: Counter
    upcalls: int
    unsupported: dict
    events: int
    console: bytes = b""
    trace_path: Path | None = None
    extra: dict = field(default_factory=dict)
    signal: int | None = None
    trace_error: str | None = None

    @property
    def symbol(self) -> str:
        """``name+0xoff`` of the final RIP (symbols load on first use)."""
        try:
            return self.symbolize(self.rip)
        except Exception:  # noqa: BLE001 - symbols are a nicety; never fail on them
            return f"{self.rip:#x}"

    @property
    def clean(self) -> bool:
        return self.exit_kind == "shutdown" and self.shutdown_reason in (0, 1)


class Session:
    """One guest on one backend. ``record``: path of a .pvt trace to write."""

    def __init__(self, guest: GuestImage, *, memory: int = 256 * MiB,
                 cmdline: str = DEFAULT_CMDLINE, backend: str | Backend = "xen-4.17",
                 record: str | Path | None = None, initrd: bytes | None = None,
                 initrd_info: dict | None = None, keep_console: bool = True,
                 script: list[bytes] | None = None,
                 idle_limit_ns: int | None = DEFAULT_IDLE_LIMIT_NS,
                 mode: str | None = None, vcpus: int = 1) -> None:
        self.guest = guest
        self.initrd_info = dict(initrd_info or {})
        if initrd:
            # the header always names the initrd's real size and digest, whatever
            # the caller passed: replay checks both against the file it loads
            import hashlib
            self.initrd_info.setdefault("name", None)
            self.initrd_info.update(size=len(initrd),
                                    sha256=hashlib.sha256(initrd).hexdigest())
        self.memory = memory
        self.cmdline = cmdline
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.backend_name = self.backend.name
        # before building anything: a backend of an ABI with no guest kind is refused
        #: How guests of this backend's ABI are built and run (loader, builder,
        #: dispatch layer): :class:`~pvmon.backends.base.GuestKind`.
        self.kind = kind = guest_kind(self.backend, mode)
        #: The guest mode ("pv", "pvh"): the kind's, or None for an ABI with one.
        self.mode = getattr(kind, "mode", None)
        #: vCPUs of the guest (``--vcpus``; more than one: Xen PV only, docs/smp.md).
        self.vcpus = check_vcpus(vcpus, self.backend, self.mode)
        dispatch_cls = kind.dispatch_class()
        self.kernel = kind.load_kernel(Path(guest.vmlinux))
        self.machine = Machine(memory, kind.extra_bytes_for(memory))
        self.layout = kind.build(self.machine, self.kernel, cmdline, initrd)
        kind.prepare(self.backend, self.kernel)
        self.trace_path = Path(record) if record else None
        self.writer = None
        self.access = RecordingGuestAccess(self.machine, record=self.trace_path is not None)
        self.dispatch = dispatch_cls(self.machine, self.backend, self.access, None)
        if vcpus > 1:
            self.backend.nr_vcpus = vcpus
        self.backend.attach(self.machine, self.layout, self.access, self.dispatch, memory,
                            guest.name)
        self.machine.attach(self.dispatch)
        self.dispatch.input.idle_limit_ns = idle_limit_ns
        if script:
            self.dispatch.input.add_script(script)
        #: Called with the :class:`Stop` when the run loop has ended, before the
        #: exit record is written (replay uses it to keep an exit that came from
        #: outside the replayed guest out of its comparison).
        self.before_exit_record: Callable[[Stop], None] | None = None
        self.console = bytearray()
        if keep_console:
            self.dispatch.console_listeners.append(lambda ch, d: self.console.extend(d))
        if self.trace_path is not None:
            from pvmon.trace.writer import TraceWriter
            self.writer = TraceWriter(self.trace_path, self.header(),
                                      on_error=self._trace_write_failed)
            self.dispatch.record = self.writer.append
            self.dispatch.record_hc = self.writer.append_hc
            self.dispatch.record_ev = self.writer.append_ev

    def header(self) -> dict:
        g = self.guest
        return {
            "format": fmt.FORMAT_NAME, "version": fmt.FORMAT_VERSION, "pvmon": __version__,
            "guest": {"name": g.name, "kind": g.kind, "package": g.package,
                      "version": g.version, "release": g.release, "sha256": g.sha256,
                      "mechanism": getattr(self.kind, "mechanism", None)
                      or self.kernel.mechanism},
            "backend": self._backend_identity(),
            "machine": {"platform": self.kind.name,
                        "memory": self.memory, "vcpus": self.vcpus, "cmdline": self.cmdline,
                        "cpuid_policy": self.kind.cpuid_policy, "tsc_khz": self.machine.clock.tsc_khz,
                        "initrd": self.initrd_info or None,
                        "idle_limit_ns": self.dispatch.input.idle_limit_ns,
                        **({"mode": self.mode} if self.mode not in (None, "pv") else {})},
            "layout": {k: v for k, v in dataclasses.asdict(self.layout).items()
                       if k != "extras"},
            "vtime_base_ns": 0, "tsc_khz": self.machine.clock.tsc_khz,
            "host": host_platform.node(),
            "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }

    def _backend_identity(self) -> dict:
        b = self.backend
        out = {"name": b.name, "abi": b.abi, "version": b.version}
        ver = getattr(b, "ver", None)
        if ver is not None:
            out["version_string"] = ver.version_string
            if ver.profile_toml:
                out["profile"] = ver.profile_toml
                out["profile_source"] = ver.profile_source
        return out

    def on_console(self, fn: Callable[[str, bytes], None]) -> None:
        self.dispatch.console_listeners.append(fn)

    def _trace_write_failed(self, exc: BaseException) -> None:
        """The writer could not write (a full disk): end the run at its next
        safe point (called on the writer thread, or inside a hook)."""
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self.machine.request_stop(Stop("error", f"writing the trace failed: {why}"))

    def stop_recording(self, detail: str = "recording stopped; the guest ran on") -> Path | None:
        """Close the trace now; the run goes on unrecorded. The file stays a
        complete, readable trace of the run up to this point, ending in an
        ``exit`` record with reason ``interrupted`` and ``detail`` (its seq
        is the next event's, which the run goes on numbering as if nothing
        was written). Returns its path, or None if nothing was recorded.
        Call it on the engine thread (e.g. from a call listener), never while
        another thread runs the machine. What the guest sees does not change.
        Raises TraceError if writing the trace failed."""
        if self.writer is None:
            return None
        d = self.dispatch
        d.flush_runs()
        self.writer.append({"k": "exit", "reason": "interrupted", "rip": d.cur_rip(),
                            "detail": detail, "seq": d.seq, "t": self.machine.clock.now_ns,
                            "cpu": d.cpu})
        d.record = None
        d.record_hc = None
        d.record_ev = None
        writer, self.writer = self.writer, None
        writer.close()
        return self.trace_path

    def run(self, timeout: float | None = None, *, stop_on_signals: bool = False) -> RunResult:
        """Run to the end. ``timeout``: wall seconds before stopping with
        exit kind "limit" (the event stream up to that point is unaffected).
        ``stop_on_signals`` (main thread only; pvmon run and replay): SIGINT and
        SIGTERM end the run at the next safe point with exit kind
        "interrupted" (:mod:`pvmon.engine.signals`) until the trace is closed;
        the previous handlers are restored before returning.

        The recording ends with an ``exit`` record, and every event before it
        is complete (the recording is a prefix of the uninterrupted run's). A
        failed trace write (a full disk) ends the run with exit kind "error"
        and :attr:`RunResult.trace_error`; it never raises."""
        guard = StopOnSignals(self.machine) if stop_on_signals else nullcontext()
        with guard:
            t0 = time.monotonic()
            if timeout:
                self.dispatch.deadline_wall = t0 + timeout
            try:
                stop = self.machine.run()
            except KeyboardInterrupt:
                stop = Stop("interrupted", "interrupted by the user", self.machine.reg("rip"))
            finally:
                wall = time.monotonic() - t0
            trace_error = None
            if self.before_exit_record is not None:
                self.before_exit_record(stop)
            if self.dispatch.record is not None:
                self.dispatch._emit({"k": "exit", "reason": stop.kind, "rip": stop.rip,
                                     "detail": stop.detail})
            if self.writer is not None:
                writer, self.writer = self.writer, None
                try:
                    writer.close()
                except TraceError as exc:
                    trace_error = str(exc)
                    kept = writer.kept_events
        result = self._result(stop, wall)
        if trace_error is not None:
            result.events = kept
        result.signal = stop.signal
        result.trace_error = trace_error
        return result

    def _result(self, stop: Stop, wall: float) -> RunResult:
        d = self.dispatch
        faults = Counter({VECTOR_NAMES.get(v, f"vector {v}"): n for v, n in d.faults.items()})
        return RunResult(stop.kind, stop.detail, stop.rip,
                         self.guest.format_address, stop.code,
                         self.machine.clock.now_ns, wall, d.hypercalls, faults, d.upcalls,
                         dict(self.backend.unsupported), d.seq, bytes(self.console),
                         self.trace_path, extra=dict(getattr(d, "run_extra", dict)()))
